"""A trained model as the programs read it: the options that name it, the model with its
tokenizer (a run's checkpoint or GPT-2's weights), and the text given to it."""

import argparse
import functools
import sys
from pathlib import Path

import numpy as np

from gptjax import checkpoint
from gptjax.errors import UsageError
from gptjax.model import DTYPES, GPT
from gptjax.pretrained import from_pretrained
from gptjax.tokenizers import GPT2Tokenizer, Tokenizer, from_description


def add_model_options(parser: argparse.ArgumentParser, purpose: str) -> None:
    """The options that name the model a program loads (load()): --init_from, --out_dir,
    --checkpoint and --dtype; purpose completes "the training run to ..."."""
    parser.add_argument("--init_from", default="resume",
                        help="resume (the checkpoint in out_dir), gpt2, gpt2-medium, gpt2-large, gpt2-xl, "
                             "or a local Hugging Face GPT-2 directory (GPT-2's tokenizer)")
    parser.add_argument("--out_dir", default="out", help=f"the training run to {purpose}")
    parser.add_argument("--checkpoint", choices=checkpoint.WHICH, default="auto",
                        help="which of out_dir's checkpoints (auto: as nanoGPT's ckpt.pt, the best val loss when the "
                             "run saved only improvements, else the newest)")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="compute dtype (default: as trained)")


def load(init_from: str, out_dir: Path, dtype: str | None, which: str) -> tuple[GPT, Tokenizer, str]:
    """The model (in eval mode), its tokenizer and its name for titles ("out-shakespeare-char,
    iteration 2000", "gpt2"): out_dir's checkpoint (`which` of them, said on stderr) when
    init_from is "resume", else GPT-2 weights (from_pretrained); dtype None keeps the trained one."""
    if init_from == "resume":
        model, meta = checkpoint.load_model(out_dir, dtype, which, warn=functools.partial(print, file=sys.stderr))
        return model, from_description(meta["tokenizer"]), f"{out_dir.absolute().name}, iteration {meta['iter']}"
    model = from_pretrained(init_from, **({"dtype": dtype} if dtype else {}))
    return model, GPT2Tokenizer(), Path(init_from).name


def encode(vocab: Tokenizer, text: str, what: str) -> np.ndarray:
    """vocab's ids of text; a one-line error naming the characters the vocabulary lacks."""
    try:
        return vocab.encode(text)
    except ValueError as e:
        raise UsageError(f"the {what} has {e}; use characters the model was trained on") from None


def read_prompt(start: str, option: str = "--start") -> str:
    """The prompt text: start itself, or the contents of the UTF-8 file that FILE:path names
    (`option`: the command-line option that gave it, for the errors)."""
    if not start.startswith("FILE:"):
        return start
    path = Path(start[len("FILE:"):])
    if not path.is_file():
        raise UsageError(f"{option}={start}: {path.absolute()} does not exist or is not a file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{option}={start}: {path.absolute()} is not UTF-8 text ({e.reason})") from None
