"""Sample from a trained model: python sample.py --out_dir=RUN (the same as python -m gptjax.sample)."""

import runpy

if __name__ == "__main__":  # gptjax.sample sets the process up first, then imports JAX
    runpy.run_module("gptjax.sample", run_name="__main__")
