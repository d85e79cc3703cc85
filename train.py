"""Train a GPT: python train.py --config configs/char.py (the same as python -m gptjax.train)."""

import runpy

if __name__ == "__main__":  # gptjax.train sets the process up first, then imports JAX
    # alter_sys: the module is __main__ itself, so that worker processes it spawns find its functions
    runpy.run_module("gptjax.train", run_name="__main__", alter_sys=True)
