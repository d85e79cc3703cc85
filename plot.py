"""Plot runs' losses: python plot.py OUT_DIR [OUT_DIR ...] (the same as python -m gptjax.plot)."""

import runpy

if __name__ == "__main__":
    runpy.run_module("gptjax.plot", run_name="__main__")
