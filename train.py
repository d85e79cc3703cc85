"""Train a GPT: python train.py --config configs/char.py (the same as python -m gptjax.train)."""

import sys

from gptjax.train import main

if __name__ == "__main__":
    main(sys.argv)
