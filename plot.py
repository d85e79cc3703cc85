"""Plot runs' losses: python plot.py OUT_DIR [OUT_DIR ...] (the same as python -m gptjax.plot)."""

import runpy

if __name__ == "__main__":
    # alter_sys: the module is __main__ itself, so that worker processes it spawns find its functions
    runpy.run_module("gptjax.plot", run_name="__main__", alter_sys=True)
