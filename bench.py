"""Measure a config's speed: python bench.py --config configs/char.py (the same as python -m gptjax.bench)."""

import runpy

if __name__ == "__main__":  # gptjax.bench sets the process up first, then imports JAX
    runpy.run_module("gptjax.bench", run_name="__main__")
