"""Prepare a dataset: python prepare.py --config configs/gpt2.py (the same as python -m gptjax.prepare)."""

import runpy

if __name__ == "__main__":
    # alter_sys: the module is __main__ itself, so that worker processes it spawns find its functions
    runpy.run_module("gptjax.prepare", run_name="__main__", alter_sys=True)
