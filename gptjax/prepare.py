"""Text -> data_dir/<dataset>/{train,val}.bin and meta.json, for a corpus of any size.

    python -m gptjax.prepare --config gpt2 --config.input_file=owt/ [--config.num_proc=8]
    python prepare.py --config configs/gpt2.py ...                   # the same, from a clone

train.py does the same on first use. The corpus: a text file, a .jsonl file ({"text": ...} per
line; `text_key` names the field), a .parquet file (its `text_key` column; needs pyarrow), a
folder of such files (its shards, in name order), a folder written by Hugging Face datasets'
save_to_disk, or hf:NAME[:SUBSET], a Hub dataset's train split, streamed (both need datasets).

Documents are read as a stream, cut into pieces of a few MB (a long text at a line break or space
that no GPT-2 token spans), tokenized by `num_proc` worker processes, and appended to disk, as are
the offsets where documents end: memory stays bounded whatever the corpus size. With the gpt2
tokenizer, <|endoftext|> follows each document. The last `val_fraction` of the tokens become
val.bin: the last documents when the corpus has MIN_DOCUMENTS or more, else the last tokens
(nanoGPT's 90/10 split of Shakespeare). meta.json is written last, so a preparation that stops half
way is never taken for a complete one; the next run starts it over. Where the text comes from
(input_file, data_dir/<dataset>/input.txt, or tinyshakespeare's download) and whether the prepared
data still matches it: prepare_dataset.

This module imports no JAX: its workers start in a fraction of a second.
"""

import codecs
import collections
import errno
import hashlib
import itertools
import json
import multiprocessing
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from gptjax.errors import UsageError
from gptjax.tokenizers import CharVocab, GPT2Tokenizer, Tokenizer, from_description

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
DOWNLOADABLE = ("shakespeare_char", "shakespeare")  # both start from tinyshakespeare


SPLITS = ("train", "val")
SUFFIXES = (".txt", ".jsonl", ".parquet")
HUB = "hf:"  # input_file=hf:NAME[:SUBSET]: the train split of a Hugging Face Hub dataset, streamed
PIECE_BYTES = 1 << 22  # a task for a worker: about 4 MiB of text
MIN_DOCUMENTS = 100  # from this many documents on, val.bin takes whole documents
CONTENT_HASH_LIMIT = 1 << 30  # corpora up to 1 GiB are fingerprinted by content, larger by size and mtime
FORMAT = 2  # meta.json's "format": data prepared by another format is prepared again

Piece = tuple[str, bool]  # text, and whether a document ends with it


def write_atomically(path: Path, payload: bytes) -> None:
    """An interrupted run leaves the old file or none, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def read_meta(dataset_dir: Path) -> dict | None:
    path = dataset_dir / "meta.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def bins_complete(dataset_dir: Path, meta: dict) -> bool:
    itemsize = np.dtype(meta["dtype"]).itemsize
    return all((dataset_dir / f"{split}.bin").exists()
               and (dataset_dir / f"{split}.bin").stat().st_size == meta["tokens"][split] * itemsize
               for split in SPLITS)


def _saved_dataset(path: Path) -> bool:
    """A folder that Hugging Face datasets' save_to_disk wrote."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _files(corpus: Path | str) -> list[Path]:
    """The files a corpus is read from: none for a hub dataset, all of a saved dataset's."""
    if isinstance(corpus, str):
        return []
    if not corpus.is_dir():
        return [corpus]
    if _saved_dataset(corpus):
        return sorted(p for p in corpus.rglob("*") if p.is_file())
    files = sorted(p for p in corpus.iterdir() if p.suffix in SUFFIXES and p.is_file())
    if not files:
        raise UsageError(f"corpus folder {corpus} holds no {', '.join(SUFFIXES)} files")
    return files


def _fingerprint(corpus: Path | str, tokenizer: str, val_fraction: float, text_key: str) -> str:
    """What the prepared data depends on: the files' content (or, above CONTENT_HASH_LIMIT bytes
    in all, their names, sizes and modification times; a hub dataset's name), the tokenizer and
    the split."""
    files = _files(corpus)
    digest = hashlib.sha256(json.dumps([FORMAT, _source_id(corpus), tokenizer, val_fraction, text_key]).encode())
    by_content = sum(p.stat().st_size for p in files) <= CONTENT_HASH_LIMIT
    for path in files:
        digest.update(path.name.encode() + b"\0")
        if by_content:
            with open(path, "rb") as f:
                digest.update(hashlib.file_digest(f, "sha256").digest())
        else:
            digest.update(f"{path.stat().st_size} {path.stat().st_mtime_ns}".encode())
    return digest.hexdigest()


def _cut_point(text: str) -> int:
    """Where to end a piece of a long text: just before its last line break, else its last space,
    that stands alone between two characters that are not whitespace (GPT-2's BPE starts a token
    there whether the text is cut or not, so the cut changes no token); 0 if there is none."""
    for separator in "\n ":
        i = len(text) - 1
        while (i := text.rfind(separator, 0, i)) > 0:
            if not (text[i - 1].isspace() or text[i + 1].isspace()):
                return i
    return 0


def _text_file(path: Path) -> Iterator[Piece]:
    """A text file as one document, in pieces of about PIECE_BYTES."""
    decoder = codecs.getincrementaldecoder("utf-8")()  # a block may end inside a character
    with open(path, "rb") as f:
        pending = ""
        try:
            while block := f.read(PIECE_BYTES):
                pending += decoder.decode(block)
                if cut := _cut_point(pending):
                    yield pending[:cut], False
                    pending = pending[cut:]
            yield pending + decoder.decode(b"", final=True), True
        except UnicodeDecodeError as e:
            raise UsageError(f"corpus {path} is not UTF-8 text ({e.reason})") from None


def _one_line(error: Exception) -> str:
    """An error's message on one line (pyarrow's and datasets' span several)."""
    return " ".join(str(error).split())


def _text_of(record, source: Path | str, where: str, text_key: str) -> str:
    """record[text_key], the one check of every record-based corpus: a one-line error naming the
    source and where in it when the record has no such field or it is not a string."""
    if not isinstance(record, dict) or text_key not in record:
        raise UsageError(f"{source}, {where}: no {text_key!r} field (config.text_key names it)")
    if not isinstance(text := record[text_key], str):
        raise UsageError(f"{source}, {where}: {text_key!r} is {type(text).__name__}, not a string: every record of "
                         f"a corpus needs its text as a string under {text_key!r} (config.text_key)")
    return text


def _jsonl(path: Path, text_key: str) -> Iterator[Piece]:
    with open(path, "rb") as f:  # bytes, decoded line by line: an error names its line
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:  # utf-8-sig: a byte-order mark (Windows tools write one) opens the first line only
                record = json.loads(line.decode("utf-8-sig" if number == 1 else "utf-8"))
            except UnicodeDecodeError as e:
                raise UsageError(f"{path}, line {number}: not UTF-8 text ({e.reason})") from None
            except json.JSONDecodeError:
                raise UsageError(f"{path}, line {number}: not JSON: every line of a .jsonl corpus must be an "
                                 f"object with a {text_key!r} string") from None
            yield _text_of(record, path, f"line {number}", text_key), True


def _parquet(path: Path, text_key: str) -> Iterator[Piece]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(f"reading {path} needs pyarrow: pip install pyarrow") from None
    try:
        table = pq.ParquetFile(path)
    except Exception as e:  # pyarrow's errors have no common base class
        raise UsageError(f"{path} is not a readable parquet file ({_one_line(e)})") from None
    if text_key not in table.schema_arrow.names:
        raise UsageError(f"{path} has no column {text_key!r} (it has {', '.join(table.schema_arrow.names)}): "
                         "set config.text_key")
    row = 0
    try:  # a damaged page only shows when its rows are read
        for batch in table.iter_batches(columns=[text_key], batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                yield _text_of(record, path, f"row {row}", text_key), True
    except UsageError:
        raise
    except Exception as e:
        raise UsageError(f"{path}: the rows after row {row:,} cannot be read ({_one_line(e)}): the file is "
                         "damaged; download or copy it again") from None


def _hf_dataset(source: Path | str, text_key: str) -> Iterator[Piece]:
    try:
        import datasets
    except ImportError:
        raise UsageError(f"reading {source} needs Hugging Face datasets: pip install datasets") from None
    try:  # no network, no such dataset, a damaged file: datasets raises many kinds
        if isinstance(source, Path):
            rows = datasets.load_from_disk(str(source))
            if isinstance(rows, datasets.DatasetDict):
                rows = rows["train"] if "train" in rows else next(iter(rows.values()))
        else:
            name, _, subset = source.removeprefix(HUB).partition(":")
            rows = datasets.load_dataset(name, subset or None, split="train", streaming=True)
    except Exception as e:
        raise UsageError(f"could not open the dataset {source} ({type(e).__name__}: {_one_line(e)})") from None
    number = 0
    try:  # a stream from the hub can break off: the preparation then starts over when run again
        for number, record in enumerate(rows, start=1):
            yield _text_of(record, source, f"record {number}", text_key), True
    except UsageError:
        raise
    except Exception as e:
        raise UsageError(f"reading the dataset {source} broke off after record {number:,} ({type(e).__name__}: "
                         f"{_one_line(e)}): run the preparation again") from None


def pieces(corpus: Path | str, text_key: str = "text") -> Iterator[Piece]:
    """Every document of the corpus, as pieces of text in order."""
    if isinstance(corpus, str) or _saved_dataset(corpus):
        yield from _hf_dataset(corpus, text_key)
        return
    for path in _files(corpus):
        if path.suffix == ".jsonl":
            yield from _jsonl(path, text_key)
        elif path.suffix == ".parquet":
            yield from _parquet(path, text_key)
        else:
            yield from _text_file(path)


def _tasks(stream: Iterator[Piece]) -> Iterator[list[Piece]]:
    """Consecutive pieces grouped into tasks of about PIECE_BYTES."""
    task, size = [], 0
    for piece in stream:
        task.append(piece)
        size += len(piece[0])
        if size >= PIECE_BYTES:
            yield task
            task, size = [], 0
    if task:
        yield task


_worker_tokenizer: Tokenizer | None = None


def _start_worker(description: dict) -> None:
    global _worker_tokenizer
    _worker_tokenizer = from_description(description)


def _encode(task: list[Piece], tokenizer: Tokenizer | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """A task's tokens (<|endoftext|> after each document with the gpt2 tokenizer), the offsets
    where its documents end (int64), and its size in bytes."""
    tokenizer = _worker_tokenizer if tokenizer is None else tokenizer
    parts, ends, n = [], [], 0
    for text, closes_document in task:
        ids = tokenizer.encode(text)
        if closes_document and isinstance(tokenizer, GPT2Tokenizer):
            ids = np.append(ids, tokenizer.eot).astype(tokenizer.dtype)
        parts.append(ids)
        n += len(ids)
        if closes_document:
            ends.append(n)
    tokens = np.concatenate(parts) if parts else np.zeros(0, tokenizer.dtype)
    return tokens, np.array(ends, np.int64), sum(len(text.encode("utf-8")) for text, _ in task)


def _encoded(tasks: Iterator[list[Piece]], tokenizer: Tokenizer, num_proc: int) -> Iterator[tuple]:
    """_encode of each task, in order: on num_proc worker processes when there is more than one
    task, with at most 2 * num_proc tasks in flight (bounded memory)."""
    first = [task for _, task in zip(range(2), tasks, strict=False)]
    if len(first) < 2 or num_proc == 1:
        for task in itertools.chain(first, tasks):  # lazily: never the whole corpus at once
            yield _encode(task, tokenizer)
        return
    # spawn, not fork: the parent may run JAX's threads, which a fork would copy half-way
    with ProcessPoolExecutor(num_proc, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker, initargs=(tokenizer.describe(),)) as pool:
        try:
            in_flight = collections.deque(pool.submit(_encode, task) for task in first)
            for task in tasks:
                if len(in_flight) >= 2 * num_proc:
                    yield in_flight.popleft().result()
                in_flight.append(pool.submit(_encode, task))
            while in_flight:
                yield in_flight.popleft().result()
        except BrokenProcessPool:
            raise UsageError("a tokenizing worker process died: out of memory, or a script that calls prepare "
                             "with num_proc > 1 lacks `if __name__ == '__main__':` around it (spawned workers "
                             "import the script); else pass num_proc=1") from None


def _progress(enabled: bool):
    """A progress bar with documents, tokens and MB/s on a terminal; None elsewhere."""
    if not (enabled and sys.stdout.isatty()):
        return None
    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("preparing: {task.fields[documents]:,} documents, {task.fields[tokens]:,} tokens, "
                               "{task.fields[mb]:,.0f} MB at {task.fields[rate]:,.1f} MB/s"), TimeElapsedColumn())


def prepare(dataset_dir: Path, corpus: Path | str, tokenizer: str = "char",
            announce: Callable[[str], None] | None = None, *, val_fraction: float = 0.1, text_key: str = "text",
            num_proc: int = 0) -> Tokenizer:
    """Tokenize corpus into dataset_dir/{train,val}.bin and meta.json unless they are up to date;
    returns the tokenizer. `announce` gets one line saying what was prepared, if anything.
    num_proc: worker processes (0: one per CPU)."""
    if not 0 < val_fraction < 1:
        raise UsageError(f"config.val_fraction must be between 0 and 1, got {val_fraction}")
    if num_proc < 0:
        raise UsageError(f"config.num_proc must be 0 (one worker per CPU) or more, got {num_proc}")
    fingerprint = _fingerprint(corpus, tokenizer, val_fraction, text_key)
    meta = read_meta(dataset_dir)
    if meta is not None and meta.get("source_fingerprint") == fingerprint and bins_complete(dataset_dir, meta):
        return from_description(meta["tokenizer"])
    dataset_dir.mkdir(parents=True, exist_ok=True)
    (dataset_dir / "meta.json").unlink(missing_ok=True)  # no meta.json: nothing here is complete any more
    if tokenizer == "char":  # the vocabulary first: one pass over the text
        chars = set()
        for text, _ in pieces(corpus, text_key):
            chars.update(text)
        encoder: Tokenizer = CharVocab("".join(sorted(chars)))
    else:
        encoder = GPT2Tokenizer()

    started, n_bytes, n_tokens, n_documents = time.perf_counter(), 0, 0, 0
    # Where each document ends goes to a file, not a list: a list's memory grows with the documents,
    # 8 million in OpenWebText, more in FineWeb-Edu's larger samples (docs/performance.md).
    everything, document_ends = dataset_dir / "all.bin.tmp", dataset_dir / "document_ends.tmp"
    progress = _progress(announce is not None)
    if progress is not None:
        progress.start()
        bar = progress.add_task("prepare", documents=0, tokens=0, mb=0.0, rate=0.0)
    try:
        with open(everything, "wb") as out, open(document_ends, "wb") as ends_out:
            for tokens, ends, size in _encoded(_tasks(pieces(corpus, text_key)), encoder, num_proc or os.cpu_count()):
                out.write(tokens.tobytes())
                ends_out.write((n_tokens + ends).tobytes())
                n_tokens, n_bytes, n_documents = n_tokens + len(tokens), n_bytes + size, n_documents + len(ends)
                if progress is not None:
                    progress.update(bar, documents=n_documents, tokens=n_tokens, mb=n_bytes / 1e6,
                                    rate=n_bytes / 1e6 / (time.perf_counter() - started))
        if n_tokens == 0:
            raise UsageError(f"corpus {corpus} is empty: give a text with some content")
        if n_documents >= MIN_DOCUMENTS:  # the last documents, val_fraction of them (and one for train)
            n_val_documents = min(max(1, round(val_fraction * n_documents)), n_documents - 1)
            n_train = int(np.fromfile(document_ends, np.int64, count=1,
                                      offset=8 * (n_documents - n_val_documents - 1))[0])
        else:
            n_train = int(n_tokens * (1 - val_fraction))
        _split(everything, n_train * np.dtype(encoder.dtype).itemsize, dataset_dir)
    except BaseException as e:
        # a bad record, Ctrl-C or a full disk: no half-written file is left behind to take space
        everything.unlink(missing_ok=True)
        (dataset_dir / "val.bin.tmp").unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UsageError(f"the disk of {dataset_dir} is full ({n_tokens:,} tokens were written): free some "
                             "space, or pass --config.data_dir=DIR on a larger disk") from None
        raise
    finally:
        document_ends.unlink(missing_ok=True)
        if progress is not None:
            progress.stop()
    seconds = max(time.perf_counter() - started, 1e-9)
    meta = {"format": FORMAT, "tokenizer": encoder.describe(), "dtype": np.dtype(encoder.dtype).name,
            "source": _source_id(corpus), "source_fingerprint": fingerprint,
            "documents": n_documents, "tokens": {"train": n_train, "val": n_tokens - n_train}}
    write_atomically(dataset_dir / "meta.json", json.dumps(meta, ensure_ascii=False, indent=1).encode("utf-8"))
    if announce is not None:
        speed = f", {n_bytes / 1e6:,.0f} MB in {seconds:.0f} s ({n_bytes / 1e6 / seconds:,.1f} MB/s)"
        announce(f"prepared {dataset_dir.absolute()} from {_source_id(corpus)}: {tokenizer} tokenizer, vocabulary "
                 f"{len(encoder):,}, {n_documents:,} document{'s' * (n_documents != 1)}, "
                 f"{n_train:,} train and {n_tokens - n_train:,} val tokens" + (speed if seconds >= 1 else ""))
    return encoder


def _split(everything: Path, cut: int, dataset_dir: Path) -> None:
    """everything's bytes from `cut` on become val.bin, the rest train.bin (copied in blocks)."""
    val = dataset_dir / "val.bin.tmp"
    with open(everything, "rb") as source, open(val, "wb") as out:
        source.seek(cut)
        while block := source.read(1 << 24):
            out.write(block)
    os.truncate(everything, cut)
    os.replace(everything, dataset_dir / "train.bin")
    os.replace(val, dataset_dir / "val.bin")


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
    write_atomically(dest, payload)


def download_shakespeare(dest: Path) -> None:
    """Fetch tinyshakespeare to dest, refusing anything whose sha256 is not the known one."""
    where = f"put tinyshakespeare's input.txt (karpathy/char-rnn) at {dest} or pass --config.input_file=PATH"
    download(SHAKESPEARE_URL, dest, "the Shakespeare corpus", where, SHAKESPEARE_SHA256)


def _source_id(source: str | Path) -> str:
    """How meta.json names a corpus: a hub dataset by hf:NAME, a file or folder by its absolute path."""
    return str(source) if str(source).startswith(HUB) else str(Path(source).resolve())


def _check_source(dataset_dir: Path, meta: dict, input_file: str) -> None:
    """Refuse a dataset prepared from another text than the one this run names (input_file, or
    else the dataset's own input.txt where there is one), rather than replace it unasked. With no
    text named, the prepared data is used, whatever it was prepared from."""
    wanted = _source_id(input_file or dataset_dir / "input.txt")
    prepared_from = _source_id(meta.get("source", wanted))
    if prepared_from == wanted or not (input_file or Path(wanted).is_file()):
        return
    if input_file:
        raise UsageError(
            f"{dataset_dir} was prepared from {prepared_from}, not from {wanted}: pass --config.dataset="
            f"{Path(wanted).stem.removeprefix(HUB)} to prepare it as a dataset of its own, or "
            f"--config.rebuild_data=True to replace {dataset_dir.name}'s data")
    raise UsageError(
        f"{dataset_dir} was prepared from {prepared_from}, not from its input.txt: pass --config.input_file="
        f"{prepared_from} to train on that text, or --config.rebuild_data=True to prepare it again from {wanted}")


def find_corpus(dataset_dir: Path, dataset: str, input_file: str = "", prepared: bool = False) -> Path | str | None:
    """The text to prepare: input_file; else dataset_dir/input.txt; else, for the Shakespeare
    datasets, a download. None when the dataset is `prepared` and no text is at hand."""
    if input_file.startswith(HUB):
        if not input_file.removeprefix(HUB).partition(":")[0]:
            raise UsageError(f"config.input_file={input_file} names no dataset: give {HUB}NAME or {HUB}NAME:SUBSET "
                             f"(e.g. {HUB}Skylion007/openwebtext)")
        return input_file
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
        f"no text for dataset {dataset!r}: put a UTF-8 text file at {local}, or pass --config.input_file=PATH "
        f"(a text or .jsonl file, a folder of shards) or --config.input_file={HUB}NAME (a Hugging Face Hub dataset, "
        "with the data extra)"
    )


def prepare_dataset(data_dir: str, dataset: str, input_file: str, tokenizer: str = "char", rebuild: bool = False,
                    announce: Callable[[str], None] | None = None, **options) -> tuple[Tokenizer, dict]:
    """data_dir/dataset prepared from its text if it is not up to date (always, with rebuild): its
    tokenizer and meta.json. options: val_fraction, text_key, num_proc (prepare's)."""
    dataset_dir = Path(data_dir).absolute() / dataset
    meta = read_meta(dataset_dir)
    if meta is not None and not rebuild:
        _check_source(dataset_dir, meta, input_file)
    corpus = find_corpus(dataset_dir, dataset, input_file, prepared=meta is not None and not rebuild)
    if corpus is not None:
        encoder = prepare(dataset_dir, corpus, tokenizer, announce, **options)
        meta = read_meta(dataset_dir)
    else:
        if not bins_complete(dataset_dir, meta):
            raise UsageError(f"{dataset_dir} has meta.json but incomplete .bin files: put the text "
                             f"at {dataset_dir / 'input.txt'} to prepare it again")
        encoder = from_description(meta["tokenizer"])
    if meta["tokenizer"]["kind"] != tokenizer:
        raise UsageError(f"{dataset_dir} holds {meta['tokenizer']['kind']} tokens but config.tokenizer is "
                         f"{tokenizer!r}: use another dataset name, or put the text at {dataset_dir / 'input.txt'}")
    return encoder, meta


def main(argv: list[str]) -> None:
    from gptjax.config import from_command_line

    if "-h" in argv or "--help" in argv:
        print(__doc__.strip())
        return
    try:
        config = from_command_line(argv)
        prepare_dataset(config.data_dir, config.dataset, config.input_file, config.tokenizer, config.rebuild_data,
                        announce=lambda line: print(line, flush=True), val_fraction=config.val_fraction,
                        text_key=config.text_key, num_proc=config.num_proc)
    except UsageError as e:
        sys.exit(f"{Path(argv[0]).name}: error: {e}")


if __name__ == "__main__":
    main(sys.argv)
