"""configs/char_cpu.py's model (4 layers, 4 heads, 128 wide, block 64, batch 12, float32 on a CPU)
for Chinese text. Its tokenizer is one token per character: of characters, GPT-2's BPE and BPEs of
1024 to 16384 tokens trained on the text, characters reached the lowest val bits per byte at this
size, in the same CPU time and over the whole schedule (docs/performance.md#tokenizers).
Nothing is downloaded: put the text at data/chinese/input.txt, or pass --config.input_file=FILE."""

import pathlib
import runpy

_char_cpu = runpy.run_path(str(pathlib.Path(__file__).with_name("char_cpu.py")))


def get_config():
    config = _char_cpu["get_config"]()
    config.dataset = "chinese"
    config.out_dir = "out-chinese"
    config.tokenizer = "char"
    return config
