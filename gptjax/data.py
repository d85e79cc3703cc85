"""Text -> token files on disk -> (input, target) batches.

A dataset lives in data_dir/<dataset>/ as nanoGPT lays it out: train.bin and val.bin (the first
90% and the last 10% of the token ids) and meta.json (the tokenizer and how the files were made;
nanoGPT's meta.pkl, but JSON). The text is a file, a .jsonl file of {"text": ...} documents, or
a directory of .txt documents; with the gpt2 tokenizer, <|endoftext|> follows each document.
"""

import hashlib
import json
import os
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import jax
import numpy as np
from numpy.typing import ArrayLike

from gptjax.errors import UsageError
from gptjax.tokenizers import CharVocab, GPT2Tokenizer, Tokenizer, from_description

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SPLITS = ("train", "val")
DOWNLOADABLE = ("shakespeare_char", "shakespeare")  # both start from tinyshakespeare


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
    to the devices by `put`, so the training step never waits for the host."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def produce():
        try:
            for batch in batches:
                items.put(put(batch))
        except Exception as error:  # handed to the consumer, raised there
            items.put(error)
        items.put(done)

    threading.Thread(target=produce, daemon=True).start()
    while (item := items.get()) is not done:
        if isinstance(item, Exception):
            raise item
        yield item


def download(url: str, dest: Path, what: str, where: str, sha256: str | None = None) -> None:
    """Fetch url to dest (written atomically), refusing a payload whose sha256 is not `sha256`
    when one is given; `where` says how to do without a network."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            payload = response.read()
    except (urllib.error.URLError, OSError) as e:
        raise UsageError(f"could not download {what} ({e}): {where}") from None
    if sha256 is not None and hashlib.sha256(payload).hexdigest() != sha256:
        raise UsageError(f"the downloaded {what} has the wrong sha256: {where}")
    _write_atomically(dest, payload)


def download_shakespeare(dest: Path) -> None:
    """Fetch tinyshakespeare to dest, refusing anything whose sha256 is not the known one."""
    where = f"put tinyshakespeare's input.txt (karpathy/char-rnn) at {dest} or pass --config.input_file=PATH"
    download(SHAKESPEARE_URL, dest, "the Shakespeare corpus", where, SHAKESPEARE_SHA256)


def _write_atomically(path: Path, payload: bytes) -> None:
    # An interrupted run leaves the old file or none, never half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def _documents(corpus: Path) -> list[bytes]:
    if corpus.is_dir():
        return [path.read_bytes() for path in sorted(corpus.glob("*.txt"))]
    if corpus.suffix == ".jsonl":
        lines = corpus.read_bytes().splitlines()
        try:
            return [json.loads(line)["text"].encode("utf-8") for line in lines if line.strip()]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UsageError(
                f"{corpus}: every line of a .jsonl corpus must be an object with a \"text\" string") from None
    return [corpus.read_bytes()]


def _decode(raw: bytes, corpus: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"corpus {corpus} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def _read_meta(dataset_dir: Path) -> dict | None:
    meta_path = dataset_dir / "meta.json"
    return json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else None


def prepare(dataset_dir: Path, corpus: Path, tokenizer: str = "char",
            announce: Callable[[str], None] | None = None) -> Tokenizer:
    """Encode corpus into dataset_dir/{train,val}.bin and meta.json, unless they are up to date;
    returns the tokenizer. `announce` is given one line saying what was prepared, if anything."""
    documents = _documents(corpus)
    digest = hashlib.sha256(tokenizer.encode() + b"".join(
        hashlib.sha256(doc).digest() for doc in documents)).hexdigest()
    meta = _read_meta(dataset_dir)
    if meta is not None and meta.get("source_sha256") == digest and _bins_complete(dataset_dir, meta):
        return from_description(meta["tokenizer"])
    texts = [_decode(doc, corpus) for doc in documents]
    if not any(texts):
        raise UsageError(f"corpus {corpus} is empty: give a text file with some content")
    if tokenizer == "char":
        encoder = CharVocab.from_text("".join(texts))
        ids = encoder.encode("".join(texts))
    else:
        encoder = GPT2Tokenizer()
        ids = np.concatenate([np.append(encoder.encode(text), encoder.eot).astype(encoder.dtype) for text in texts])
    n_train = int(len(ids) * 0.9)
    for split, part in zip(SPLITS, (ids[:n_train], ids[n_train:]), strict=True):
        _write_atomically(dataset_dir / f"{split}.bin", part.tobytes())
    meta = {
        "tokenizer": encoder.describe(), "dtype": np.dtype(encoder.dtype).name, "source": str(corpus.absolute()),
        "source_sha256": digest, "tokens": {"train": n_train, "val": len(ids) - n_train},
    }
    _write_atomically(dataset_dir / "meta.json", json.dumps(meta, ensure_ascii=False, indent=1).encode("utf-8"))
    if announce is not None:
        announce(f"prepared {dataset_dir.absolute()} from {corpus.absolute()}: {tokenizer} tokenizer, vocabulary "
                 f"{len(encoder):,}, {n_train:,} train and {len(ids) - n_train:,} val tokens")
    return encoder


def _bins_complete(dataset_dir: Path, meta: dict) -> bool:
    itemsize = np.dtype(meta["dtype"]).itemsize
    return all(
        (dataset_dir / f"{split}.bin").exists()
        and (dataset_dir / f"{split}.bin").stat().st_size == meta["tokens"][split] * itemsize
        for split in SPLITS
    )


def _check_source(dataset_dir: Path, meta: dict, input_file: str) -> None:
    """Refuse a dataset prepared from another text than the one this run names (input_file, or
    else the dataset's own input.txt where there is one), rather than replace it unasked. With no
    text named, the prepared data is used, whatever it was prepared from."""
    wanted = Path(input_file).resolve() if input_file else dataset_dir.resolve() / "input.txt"
    prepared_from = Path(meta.get("source", wanted)).resolve()
    if prepared_from == wanted or not (input_file or wanted.is_file()):
        return
    if input_file:
        raise UsageError(
            f"{dataset_dir} was prepared from {prepared_from}, not from {wanted}: pass --config.dataset="
            f"{wanted.stem} to prepare {wanted.name} as a dataset of its own, or --config.rebuild_data=True "
            f"to replace {dataset_dir.name}'s data")
    raise UsageError(
        f"{dataset_dir} was prepared from {prepared_from}, not from its input.txt: pass --config.input_file="
        f"{prepared_from} to train on that text, or --config.rebuild_data=True to prepare it again from {wanted}")


def find_corpus(dataset_dir: Path, dataset: str, input_file: str = "", prepared: bool = False) -> Path | None:
    """The text to prepare: input_file; else dataset_dir/input.txt; else, for the Shakespeare
    datasets, a download. None when the dataset is `prepared` and no text is at hand."""
    if input_file:
        path = Path(input_file)
        if not path.exists():
            raise UsageError(f"config.input_file {path.absolute()} does not exist")
        return path
    local = dataset_dir / "input.txt"
    if local.is_file():
        return local
    if prepared:
        return None
    if dataset in DOWNLOADABLE:
        download_shakespeare(local)
        return local
    raise UsageError(
        f"no text for dataset {dataset!r}: put a UTF-8 text file at {local} "
        "or pass --config.input_file=PATH"
    )


def load_dataset(data_dir: str, dataset: str, input_file: str, block_size: int, tokenizer: str = "char",
                 rebuild: bool = False, announce: Callable[[str], None] | None = None,
                 ) -> tuple[Tokenizer, dict[str, np.ndarray]]:
    """(tokenizer, {"train": tokens, "val": tokens}) of a dataset, prepared if needed (always, with
    rebuild). The token arrays are memory maps: nothing is read until a batch needs it."""
    dataset_dir = Path(data_dir).absolute() / dataset
    meta = _read_meta(dataset_dir)
    if meta is not None and not rebuild:
        _check_source(dataset_dir, meta, input_file)
    corpus = find_corpus(dataset_dir, dataset, input_file, prepared=meta is not None and not rebuild)
    if corpus is not None:
        encoder = prepare(dataset_dir, corpus, tokenizer, announce)
        meta = _read_meta(dataset_dir)
    else:
        if not _bins_complete(dataset_dir, meta):
            raise UsageError(f"{dataset_dir} has meta.json but incomplete .bin files: put the text "
                             f"at {dataset_dir / 'input.txt'} to prepare it again")
        encoder = from_description(meta["tokenizer"])
    if meta["tokenizer"]["kind"] != tokenizer:
        raise UsageError(f"{dataset_dir} holds {meta['tokenizer']['kind']} tokens but config.tokenizer is "
                         f"{tokenizer!r}: use another dataset name, or put the text at {dataset_dir / 'input.txt'}")
    splits = {}
    for split in SPLITS:
        path = dataset_dir / f"{split}.bin"
        n_tokens = path.stat().st_size // np.dtype(meta["dtype"]).itemsize
        if n_tokens <= block_size:
            raise UsageError(
                f"the {split} split of {dataset!r} has {n_tokens} tokens, but block_size={block_size} "
                f"needs at least {block_size + 1}: use a longer text or a smaller block_size"
            )
        splits[split] = np.memmap(path, dtype=meta["dtype"], mode="r")
    return encoder, splits
