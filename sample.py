"""Sample from a trained model: python sample.py --out_dir=RUN (the same as python -m gptjax.sample)."""

import runpy

if __name__ == "__main__":  # gptjax.sample sets the process up first, then imports JAX
    # alter_sys: the module is __main__ itself, so that worker processes it spawns find its functions
    runpy.run_module("gptjax.sample", run_name="__main__", alter_sys=True)
