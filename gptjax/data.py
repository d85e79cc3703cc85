"""Text -> token files on disk -> (input, target) batches.

A dataset lives in data_dir/<dataset>/ as nanoGPT lays it out: train.bin and val.bin (token ids)
and meta.json (the tokenizer and how the files were made; nanoGPT's meta.pkl, but JSON), made
from the text by gptjax/prepare.py, which the caller asks first.
"""

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import jax
import numpy as np
from numpy.typing import ArrayLike

from gptjax.errors import UsageError


def input_target_windows(tokens: np.ndarray, starts: ArrayLike, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """x = tokens[i : i+T] and y = tokens[i+1 : i+T+1] for each start i: the target is the input
    shifted by one, so position t learns to predict token t+1. Returns int32 arrays (len(starts), T)."""
    offsets = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(block_size + 1)
    windows = np.asarray(tokens[offsets], dtype=np.int32)
    return windows[:, :-1], windows[:, 1:]


def random_batch(tokens: np.ndarray, batch_shape: int | tuple[int, ...], block_size: int, seed: int, *stream: int,
                 rows: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
    """Random windows for a batch of batch_shape ((B,) or (A, B)), the same for the same
    (seed, *stream): resuming at iteration n draws exactly the batches an uninterrupted run draws
    there. `rows` picks this process's part of the last dimension; only those windows are read."""
    rng = np.random.default_rng([seed, *stream])
    starts = rng.integers(0, len(tokens) - block_size, size=batch_shape)[..., rows]
    x, y = input_target_windows(tokens, starts.reshape(-1), block_size)
    return x.reshape(*starts.shape, block_size), y.reshape(*starts.shape, block_size)


def prefetch(batches: Iterable, put: Callable = jax.device_put, depth: int = 2) -> Iterator:
    """Iterate `batches` on a background thread, up to `depth` items ahead, each already moved
    to the devices by `put`, so the training step never waits for the host. A consumer that stops
    early (an abandoned evaluation) stops the thread by closing the iterator (or letting it go)."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    done, closed = object(), threading.Event()

    def produce():
        try:
            for batch in batches:
                if closed.is_set():
                    return
                items.put(put(batch))
        except Exception as error:  # handed to the consumer, raised there
            items.put(error)
        items.put(done)

    threading.Thread(target=produce, daemon=True).start()
    try:
        while (item := items.get()) is not done:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        # The thread stops before its next batch; one already waiting to be put stays waiting,
        # as a daemon: woken, it would move one more batch to the devices, and a JAX call cut
        # off by the interpreter's exit aborts the process.
        closed.set()


def read_splits(dataset_dir: Path, meta: dict, block_size: int) -> dict[str, np.ndarray]:
    """{"train": tokens, "val": tokens} of a prepared dataset (prepare.prepare_dataset's folder
    and meta.json), as memory maps: nothing is read until a batch needs it. Each split must hold
    one window and its target at least."""
    splits = {}
    for split in ("train", "val"):
        path = Path(dataset_dir) / f"{split}.bin"
        n_tokens = path.stat().st_size // np.dtype(meta["dtype"]).itemsize
        if n_tokens <= block_size:
            larger_share = ", a larger --config.val_fraction" if split == "val" else ""
            raise UsageError(
                f"the {split} split of {Path(dataset_dir).name!r} has {n_tokens} tokens, but block_size={block_size} "
                f"needs at least {block_size + 1}: use a longer text{larger_share} or a smaller block_size"
            )
        splits[split] = np.memmap(path, dtype=meta["dtype"], mode="r")
    return splits
