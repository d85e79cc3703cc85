"""Prepare a dataset: python prepare.py --config configs/gpt2.py (the same as python -m gptjax.prepare)."""

import runpy

if __name__ == "__main__":
    runpy.run_module("gptjax.prepare", run_name="__main__")
