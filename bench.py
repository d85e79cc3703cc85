"""Measure a config's speed: python bench.py --config configs/char.py (the same as python -m gptjax.bench)."""

import sys

from gptjax.bench import main

if __name__ == "__main__":
    main(sys.argv)
