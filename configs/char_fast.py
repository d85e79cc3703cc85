"""configs/char.py (nanoGPT's shakespeare_char, meant for a GPU) with the choices of
configs/char_cpu_fast.py (RoPE, QK-norm and Muon) in half of char.py's iterations. Chosen on the
CPU recipe (docs/performance.md#the-faster-recipe); not yet measured on a GPU."""

import pathlib
import runpy

_char = runpy.run_path(str(pathlib.Path(__file__).with_name("char.py")))
_fast = runpy.run_path(str(pathlib.Path(__file__).with_name("char_cpu_fast.py")))


def get_config():
    config = _char["get_config"]()
    config.update(_fast["FAST"])
    config.out_dir = "out-shakespeare-char-fast"  # beside, not over, the nanoGPT recipes' run
    config.max_iters = 2500
    config.lr_decay_iters = 2500
    return config
