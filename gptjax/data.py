"""Text -> token files on disk -> (input, target) batches.

A character dataset lives in data_dir/<dataset>/ as nanoGPT lays it out: train.bin and val.bin
(the first 90% and the last 10% of the token ids) and a vocabulary, here vocab.json, not a pickle.
"""

import hashlib
import json
import os
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

import jax
import numpy as np

from gptjax.config import UsageError

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SPLITS = ("train", "val")


class CharVocab:
    """The sorted set of characters of a text; a token id is a character's index in it."""

    def __init__(self, chars: str):
        self.chars = chars
        self._ids = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def dtype(self) -> type:
        return np.uint16 if len(self.chars) <= 2**16 else np.uint32

    def encode(self, text: str) -> np.ndarray:
        unknown = sorted(set(text) - self._ids.keys())
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {''.join(unknown)!r}")
        return np.fromiter((self._ids[c] for c in text), dtype=self.dtype, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def input_target_windows(tokens: np.ndarray, starts, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """x = tokens[i : i+T] and y = tokens[i+1 : i+T+1] for each start i: the target is the input
    shifted by one, so position t learns to predict token t+1. Returns int32 arrays (len(starts), T)."""
    offsets = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(block_size + 1)
    windows = np.asarray(tokens[offsets], dtype=np.int32)
    return windows[:, :-1], windows[:, 1:]


def random_batch(tokens: np.ndarray, batch_size: int, block_size: int, seed: int, *stream: int):
    """A batch of random windows, the same for the same (seed, *stream): resuming at iteration n
    draws exactly the batches an uninterrupted run draws there."""
    rng = np.random.default_rng([seed, *stream])
    starts = rng.integers(0, len(tokens) - block_size, size=batch_size)
    return input_target_windows(tokens, starts, block_size)


def prefetch(batches: Iterable, depth: int = 2) -> Iterator:
    """Iterate `batches` on a background thread, up to `depth` items ahead, each already on the
    device, so the training step never waits for the host."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def produce():
        try:
            for batch in batches:
                items.put(jax.device_put(batch))
        except Exception as error:  # handed to the consumer, raised there
            items.put(error)
        items.put(done)

    threading.Thread(target=produce, daemon=True).start()
    while (item := items.get()) is not done:
        if isinstance(item, Exception):
            raise item
        yield item


def download_shakespeare(dest: Path) -> None:
    """Fetch tinyshakespeare to dest, refusing anything whose sha256 is not the known one."""
    where = f"put tinyshakespeare's input.txt (karpathy/char-rnn) at {dest} or pass --config.input_file=PATH"
    try:
        with urllib.request.urlopen(SHAKESPEARE_URL, timeout=30) as response:
            payload = response.read()
    except (urllib.error.URLError, OSError) as e:
        raise UsageError(f"could not download the Shakespeare corpus ({e}): {where}") from None
    if hashlib.sha256(payload).hexdigest() != SHAKESPEARE_SHA256:
        raise UsageError(f"the downloaded Shakespeare corpus has the wrong sha256: {where}")
    _write_atomically(dest, payload)


def _write_atomically(path: Path, payload: bytes) -> None:
    # An interrupted run leaves the old file or none, never half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def prepare(dataset_dir: Path, corpus: Path) -> CharVocab:
    """Encode corpus into dataset_dir/{train,val}.bin and vocab.json, unless they are up to date."""
    raw = corpus.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    meta_path = dataset_dir / "vocab.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("source_sha256") == digest and _bins_complete(dataset_dir, meta):
            return CharVocab(meta["chars"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"corpus {corpus} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not text:
        raise UsageError(f"corpus {corpus} is empty: give a text file with some content")
    vocab = CharVocab.from_text(text)
    ids = vocab.encode(text)
    n_train = int(len(ids) * 0.9)
    for split, part in zip(SPLITS, (ids[:n_train], ids[n_train:])):
        _write_atomically(dataset_dir / f"{split}.bin", part.tobytes())
    meta = {
        "chars": vocab.chars, "dtype": np.dtype(vocab.dtype).name, "source": str(corpus),
        "source_sha256": digest, "tokens": {"train": n_train, "val": len(ids) - n_train},
    }
    _write_atomically(meta_path, json.dumps(meta, ensure_ascii=False, indent=1).encode("utf-8"))
    return vocab


def _bins_complete(dataset_dir: Path, meta: dict) -> bool:
    itemsize = np.dtype(meta["dtype"]).itemsize
    return all(
        (dataset_dir / f"{split}.bin").exists()
        and (dataset_dir / f"{split}.bin").stat().st_size == meta["tokens"][split] * itemsize
        for split in SPLITS
    )


def find_corpus(dataset_dir: Path, dataset: str, input_file: str = "") -> Path | None:
    """The text to prepare: input_file; else dataset_dir/input.txt; else, for shakespeare_char,
    a download. None when the dataset is already prepared and no text is at hand."""
    if input_file:
        path = Path(input_file)
        if not path.is_file():
            raise UsageError(f"config.input_file {input_file} does not exist or is not a file")
        return path
    local = dataset_dir / "input.txt"
    if local.is_file():
        return local
    if (dataset_dir / "vocab.json").exists():
        return None
    if dataset == "shakespeare_char":
        download_shakespeare(local)
        return local
    raise UsageError(
        f"no text for dataset {dataset!r}: put a UTF-8 text file at {local} "
        "or pass --config.input_file=PATH"
    )


def load_dataset(data_dir: str, dataset: str, input_file: str, block_size: int):
    """(vocab, {"train": tokens, "val": tokens}) of a character dataset, prepared if needed.
    The token arrays are memory maps: nothing is read until a batch needs it."""
    dataset_dir = Path(data_dir) / dataset
    corpus = find_corpus(dataset_dir, dataset, input_file)
    if corpus is not None:
        vocab = prepare(dataset_dir, corpus)
    else:
        meta = json.loads((dataset_dir / "vocab.json").read_text(encoding="utf-8"))
        if not _bins_complete(dataset_dir, meta):
            raise UsageError(f"{dataset_dir} has vocab.json but incomplete .bin files: put the text "
                             f"at {dataset_dir / 'input.txt'} to prepare it again")
        vocab = CharVocab(meta["chars"])
    splits = {}
    for split in SPLITS:
        path = dataset_dir / f"{split}.bin"
        n_tokens = path.stat().st_size // np.dtype(vocab.dtype).itemsize
        if n_tokens <= block_size:
            raise UsageError(
                f"the {split} split of {dataset!r} has {n_tokens} tokens, but block_size={block_size} "
                f"needs at least {block_size + 1}: use a longer text or a smaller block_size"
            )
        splits[split] = np.memmap(path, dtype=vocab.dtype, mode="r")
    return vocab, splits
