"""Sample from a trained model: python sample.py --out_dir=RUN (the same as python -m gptjax.sample)."""

import sys

from gptjax.sample import main

if __name__ == "__main__":
    main(sys.argv)
