"""Look inside a model: python explain.py --out_dir=RUN --text=TEXT (the same as python -m gptjax.explain)."""

import runpy

if __name__ == "__main__":
    # alter_sys: the module is __main__ itself, so that worker processes it spawns find its functions
    runpy.run_module("gptjax.explain", run_name="__main__", alter_sys=True)
