"""nanoGPT's config/eval_gpt2_xl.py: evaluate OpenAI's gpt2-xl; see configs/eval_gpt2.py."""

import pathlib
import runpy

_eval = runpy.run_path(str(pathlib.Path(__file__).with_name("eval_gpt2.py")))


def get_config():
    return _eval["eval_config"]("gpt2-xl")
