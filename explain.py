"""Look inside a model: python explain.py --out_dir=RUN --text=TEXT (the same as python -m gptjax.explain)."""

import runpy

if __name__ == "__main__":
    runpy.run_module("gptjax.explain", run_name="__main__")
