"""Train a GPT: python train.py --config configs/char.py (the same as python -m gptjax.train)."""

import runpy

if __name__ == "__main__":  # gptjax.train sets the process up first, then imports JAX
    runpy.run_module("gptjax.train", run_name="__main__")
