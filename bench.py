"""Measure a config's speed: python bench.py --config configs/char.py (the same as python -m gptjax.bench)."""

import runpy
from pathlib import Path

if __name__ == "__main__":
    # set the process up first (its re-execution with huge pages), so that JAX is imported once
    runpy.run_path(str(Path(__file__).with_name("gptjax") / "environment.py"))["start_program"]()
    runpy.run_module("gptjax.bench", run_name="__main__")
