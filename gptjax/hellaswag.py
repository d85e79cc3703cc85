"""HellaSwag, the zero-shot number GPT-2 reproductions report: for each context, which of four
endings does the model find most likely?

Scored as build-nanogpt and llm.c score it: each ending is appended to its context (" " + ending,
GPT-2 tokens), and the model's next-token loss is taken over the ending's tokens only. `acc_norm`
picks the ending with the lowest mean loss per token (build-nanogpt's figure: 0.2955 for OpenAI's
GPT-2 124M), `acc` the lowest summed loss. The data: rowanz/hellaswag's hellaswag_val.jsonl
(10,042 examples), downloaded on first use.
"""

import dataclasses
import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gptjax import sources
from gptjax.errors import UsageError
from gptjax.model import GPT
from gptjax.step import token_losses

URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
N_ENDINGS = 4
PAD_TO = 64  # rows are padded to a multiple of this, so a few compiled shapes serve every example


@dataclasses.dataclass(frozen=True)
class Example:
    context: str
    endings: tuple[str, ...]
    label: int  # the index of the true ending


def find_file(file: str, data_dir: str) -> Path:
    """`file` if given, else data_dir/hellaswag/hellaswag_val.jsonl, downloaded there on first use."""
    if file:
        path = Path(file).absolute()
        if not path.is_file():
            raise UsageError(f"config.hellaswag_file {path} {'is a folder' if path.is_dir() else 'does not exist'}: "
                             "give the path of HellaSwag's hellaswag_val.jsonl")
        return path
    path = Path(data_dir).absolute() / "hellaswag" / "hellaswag_val.jsonl"
    if not path.is_file():
        sources.download(URL, path, "the HellaSwag validation set",
                      f"put rowanz/hellaswag's hellaswag_val.jsonl at {path} or pass --config.hellaswag_file=PATH")
    return path


def read_examples(path: Path, limit: int = 0) -> list[Example]:
    """The examples of a HellaSwag .jsonl file ("ctx", "endings", "label" on each line), the first
    `limit` of them (0: all). A line that is not such a record is refused, by file and line."""
    examples = []
    with open(path, "rb") as f:  # bytes, decoded line by line: a line that is not UTF-8 is named too
        for number, line in enumerate(f, start=1):
            if limit and len(examples) == limit:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
                example = Example(record["ctx"], tuple(record["endings"]), record["label"])
                valid = (isinstance(example.context, str) and len(example.endings) == N_ENDINGS
                         and all(isinstance(e, str) for e in example.endings) and type(example.label) is int
                         and example.label in range(N_ENDINGS))
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
                valid = False
            if not valid:
                raise UsageError(f"{path}, line {number}: not a HellaSwag example (a JSON object with a string "
                                 f'"ctx", a list of {N_ENDINGS} string "endings" and an integer "label" 0-3)')
            examples.append(example)
    if not examples:
        raise UsageError(f"{path} holds no HellaSwag example: give rowanz/hellaswag's hellaswag_val.jsonl")
    return examples


def render(example: Example, encode: Callable[[str], Sequence[int]], block_size: int) -> list[tuple[list[int], int]]:
    """For each ending: the tokens of context + " " + ending, and how many of them (from the end)
    are the ending's. A row longer than block_size + 1 keeps its last block_size + 1 tokens."""
    context = np.asarray(encode(example.context), np.int64).tolist()
    rows = []
    for ending in example.endings:
        ending_tokens = np.asarray(encode(" " + ending), np.int64).tolist()
        rows.append(((context + ending_tokens)[-(block_size + 1):], min(len(ending_tokens), block_size)))
    return rows


@functools.partial(jax.jit, static_argnums=0)
def _ending_losses(graphdef: nnx.GraphDef, params, tokens_RxN: jax.Array, mask_RxN: jax.Array):
    """Summed next-token loss and token count over the masked (ending) positions of each row."""
    model = nnx.merge(graphdef, params)
    model.eval()
    losses_RxT = token_losses(model(tokens_RxN[:, :-1]), tokens_RxN[:, 1:])
    mask_RxT = mask_RxN[:, 1:]
    return jnp.sum(losses_RxT * mask_RxT, axis=-1), jnp.sum(mask_RxT, axis=-1)


def ending_losses(model: GPT, examples: Sequence[Example], encode: Callable[[str], Sequence[int]],
                  batch_examples: int = 8, stopping: Callable[[], bool] = lambda: False,
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """Summed loss and token count of every ending, two (len(examples), 4) arrays. Examples run
    batch_examples at a time, rows zero-padded to a multiple of PAD_TO tokens. `stopping` is asked
    between batches; when it says True the scoring is abandoned (None)."""
    graphdef, params = nnx.split(model)
    block_size = model.cfg.block_size
    rows = [row for example in examples for row in render(example, encode, block_size)]
    sums, counts = np.zeros(len(rows)), np.zeros(len(rows))
    per_batch = batch_examples * N_ENDINGS
    for start in range(0, len(rows), per_batch):
        if stopping():
            return None
        batch = rows[start:start + per_batch]
        width = min(-(-max(len(tokens) for tokens, _ in batch) // PAD_TO) * PAD_TO, block_size + 1)
        tokens = np.zeros((per_batch, width), np.int32)  # a short last batch keeps the shape: no recompile
        mask = np.zeros((per_batch, width), np.float32)
        for i, (row, n_ending) in enumerate(batch):
            tokens[i, :len(row)] = row
            mask[i, len(row) - n_ending:len(row)] = 1.0
        batch_sums, batch_counts = jax.device_get(_ending_losses(graphdef, params, tokens, mask))
        sums[start:start + len(batch)] = batch_sums[:len(batch)]
        counts[start:start + len(batch)] = batch_counts[:len(batch)]
    return sums.reshape(-1, N_ENDINGS), counts.reshape(-1, N_ENDINGS)


def evaluate(model: GPT, examples: Sequence[Example], encode: Callable[[str], Sequence[int]],
             stopping: Callable[[], bool] = lambda: False) -> dict | None:
    """{"acc_norm", "acc", "examples"}: the fraction of examples whose true ending has the lowest
    mean loss per token (acc_norm) and the lowest summed loss (acc); None when `stopping` said
    True between batches and the scoring was abandoned."""
    if not examples:
        raise UsageError("HellaSwag needs at least one example")
    if (losses := ending_losses(model, examples, encode, stopping=stopping)) is None:
        return None
    sums, counts = losses
    labels = np.array([example.label for example in examples])
    return {"acc_norm": float(np.mean(np.argmin(sums / counts, axis=1) == labels)),
            "acc": float(np.mean(np.argmin(sums, axis=1) == labels)), "examples": len(examples)}
