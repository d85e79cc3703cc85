"""Text -> data_dir/<dataset>/{train,val}.bin and meta.json, for a corpus of any size.

    python -m gptjax.prepare --config gpt2 --config.input_file=owt/ [--config.num_proc=8]
    python prepare.py --config configs/gpt2.py ...                   # the same, from a clone

train.py does the same on first use. The corpus (a text file, .jsonl or .parquet shards, plain or
compressed, a Hugging Face dataset) is read as a stream of documents in pieces of a few MB
(gptjax/sources.py), tokenized by `num_proc` worker processes, and appended to disk, as are the
offsets where documents end: memory stays bounded whatever the corpus size. With the gpt2 and bpe
tokenizers, <|endoftext|> follows each document; the bpe tokenizer is first trained on the text
that will become train.bin (BPE_TRAINING_BYTES of it at most). The last `val_fraction` of the tokens become
val.bin: the last documents when the corpus has MIN_DOCUMENTS or more, else the last tokens
(nanoGPT's 90/10 split of Shakespeare). meta.json is written last, so a preparation that stops half
way is never taken for a complete one. One stopped by Ctrl-C, a signal, a kill or a broken stream
keeps what it tokenized and how far it got (SO_FAR), and the next run of the same corpus
continues it. Whether the prepared data still matches the text a run names: prepare_dataset.

This module imports no JAX: its workers start in a fraction of a second.
"""

import collections
import errno
import hashlib
import itertools
import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from gptjax import sources
from gptjax.errors import Interrupted, UsageError, make_folder, program_name
from gptjax.sources import Piece, write_atomically
from gptjax.tokenizers import BPE_VOCAB_SIZE, BPETokenizer, CharVocab, GPT2Tokenizer, Tokenizer, from_description

SPLITS = ("train", "val")
MIN_DOCUMENTS = 100  # from this many documents on, val.bin takes whole documents
CONTENT_HASH_LIMIT = 1 << 30  # corpora up to 1 GiB are fingerprinted by content, larger by size and mtime
FORMAT = 2  # meta.json's "format": data prepared by another format is prepared again
SO_FAR = "prepared_so_far.json"  # how far a preparation got, which the next run continues from when it stops
# what it wrote so far: every token, and the token offset where each document ends (int64)
ALL_TOKENS, DOCUMENT_ENDS = "all.bin.tmp", "document_ends.tmp"
KEEP_SECONDS = 30  # how often that is written: a kill loses at most this much work
# what SO_FAR records: tasks, tokens, documents and bytes of text done, and where in the corpus
# they end (sources.Reader's position; None: its beginning)
NOTHING_DONE = {"tasks": 0, "tokens": 0, "documents": 0, "bytes": 0, "position": None}
# how much text a bpe tokenizer learns from at most: the trainer's memory grows with the distinct
# words it sees (docs/performance.md#tokenizers)
BPE_TRAINING_BYTES = 1 << 26


def read_meta(dataset_dir: Path) -> dict | None:
    path = dataset_dir / "meta.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def bins_complete(dataset_dir: Path, meta: dict) -> bool:
    itemsize = np.dtype(meta["dtype"]).itemsize
    return all((dataset_dir / f"{split}.bin").exists()
               and (dataset_dir / f"{split}.bin").stat().st_size == meta["tokens"][split] * itemsize
               for split in SPLITS)


def tokenizer_name(kind: str, bpe_vocab_size: int) -> str:
    """How a tokenizer is named to the user and in a dataset's fingerprint: "char", "gpt2", "bpe 4096"."""
    return f"bpe {bpe_vocab_size}" if kind == "bpe" else kind


def _fingerprint(corpus: Path | str, tokenizer: str, val_fraction: float, text_key: str) -> str:
    """What the prepared data depends on: the files' content (or, above CONTENT_HASH_LIMIT bytes
    in all, their names, sizes and modification times; a hub dataset's name), the tokenizer and
    the split."""
    files = sources.files(corpus)
    digest = hashlib.sha256(json.dumps([FORMAT, sources.source_id(corpus), tokenizer, val_fraction, text_key]).encode())
    by_content = sum(p.stat().st_size for p in files) <= CONTENT_HASH_LIMIT
    for path in files:
        digest.update(path.name.encode() + b"\0")
        if by_content:
            with open(path, "rb") as f:
                digest.update(hashlib.file_digest(f, "sha256").digest())
        else:
            digest.update(f"{path.stat().st_size} {path.stat().st_mtime_ns}".encode())
    return digest.hexdigest()


def _tasks(reader: sources.Reader) -> Iterator[tuple[list[Piece], dict]]:
    """Consecutive pieces grouped into tasks of about sources.PIECE_BYTES, each with the reader's
    position after it."""
    task, size = [], 0
    for piece in reader:
        task.append(piece)
        size += len(piece[0])
        if size >= sources.PIECE_BYTES:
            yield task, reader.position()
            task, size = [], 0
    if task:
        yield task, reader.position()


_worker_tokenizer: Tokenizer | None = None


def _start_worker(description: dict) -> None:
    global _worker_tokenizer
    for signum in (signal.SIGINT, signal.SIGTERM):  # sent to the whole process group: the main process decides
        signal.signal(signum, signal.SIG_IGN)
    _worker_tokenizer = from_description(description)


def _encode(task: list[Piece], tokenizer: Tokenizer | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """A task's tokens (<|endoftext|> after each document with a tokenizer that has it), the offsets
    where its documents end (int64), and its size in bytes."""
    tokenizer = _worker_tokenizer if tokenizer is None else tokenizer
    parts, ends, n, n_bytes = [], [], 0, 0
    for text, closes_document in task:
        try:
            n_bytes += len(text.encode("utf-8"))
        except UnicodeEncodeError:
            text = _without_lone_surrogates(text)
            n_bytes += len(text.encode("utf-8"))
        ids = tokenizer.encode(text)
        if closes_document and tokenizer.eot is not None:
            ids = np.append(ids, tokenizer.eot).astype(tokenizer.dtype)
        parts.append(ids)
        n += len(ids)
        if closes_document:
            ends.append(n)
    tokens = np.concatenate(parts) if parts else np.zeros(0, tokenizer.dtype)
    return tokens, np.array(ends, np.int64), n_bytes


def _encoded(tasks: Iterator[tuple[list[Piece], dict]], tokenizer: Tokenizer, num_proc: int) -> Iterator[tuple]:
    """For each (task, position): _encode(task)'s values and the position, in order; on num_proc
    worker processes when there is more than one task, with at most 2 * num_proc tasks in flight
    (bounded memory)."""
    first = list(itertools.islice(tasks, 2))
    if len(first) < 2 or num_proc == 1:
        for task, position in itertools.chain(first, tasks):  # lazily: never the whole corpus at once
            yield *_encode(task, tokenizer), position
        return
    # spawn, not fork: the parent may run JAX's threads, which a fork would copy half-way
    with ProcessPoolExecutor(num_proc, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker, initargs=(tokenizer.describe(),)) as pool:
        try:
            in_flight = collections.deque()  # (a task's result to come, the position after it)
            for task, position in itertools.chain(first, tasks):
                if len(in_flight) >= 2 * num_proc:
                    future, done_position = in_flight.popleft()
                    yield *future.result(), done_position
                in_flight.append((pool.submit(_encode, task), position))
            while in_flight:
                future, position = in_flight.popleft()
                yield *future.result(), position
        except BrokenProcessPool:
            raise UsageError("a tokenizing worker process died: out of memory, or a script that calls prepare "
                             "with num_proc > 1 lacks `if __name__ == '__main__':` around it (spawned workers "
                             "import the script); else pass num_proc=1") from None


def _progress(enabled: bool):
    """A progress bar with documents, tokens and MB/s on a terminal; None elsewhere."""
    if not (enabled and sys.stdout.isatty()):
        return None
    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("preparing: documents {task.fields[documents]:,}, tokens {task.fields[tokens]:,}, "
                               "{task.fields[mb]:,.0f} MB at {task.fields[rate]:,.1f} MB/s"), TimeElapsedColumn())


def _without_lone_surrogates(text: str) -> str:
    """text with U+FFFD for each lone surrogate, as tiktoken encodes it: half a UTF-16 pair, no
    character and not writable as UTF-8, which a .jsonl record can hold as an escape ("\\ud83d")."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def usable_cpus() -> int:
    """The CPUs this process may run on: fewer than the machine's under a job scheduler (SLURM) or
    taskset, where one worker per machine CPU would crowd them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _tokenizer(kind: str, corpus: Path | str, text_key: str, vocab_size: int, val_fraction: float) -> Tokenizer:
    """GPT-2's BPE, a vocabulary of the corpus's characters (one pass over the text), or a BPE of
    vocab_size tokens trained on the corpus (two passes)."""
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "bpe":
        return BPETokenizer.train(_training_text(corpus, text_key, val_fraction), vocab_size)
    chars = set()
    for text, _ in sources.Reader(corpus, text_key):
        chars.update(text)
    return CharVocab.from_text("".join(_without_lone_surrogates(c) for c in chars))


def _training_text(corpus: Path | str, text_key: str, val_fraction: float) -> Iterator[str]:
    """The text a BPE learns from: the corpus's first 1 - val_fraction of its bytes, at most
    BPE_TRAINING_BYTES. val.bin's text lies past it: its last val_fraction of tokens cover less than
    that fraction of bytes, as text a tokenizer never saw takes more tokens a byte."""
    wanted = BPE_TRAINING_BYTES / (1 - val_fraction)
    total = 0
    for text, _ in sources.Reader(corpus, text_key):
        total += len(text.encode("utf-8", "surrogatepass"))
        if total >= wanted:
            break
    left = min(int(total * (1 - val_fraction)), BPE_TRAINING_BYTES)
    for text, _ in sources.Reader(corpus, text_key):
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            text = _without_lone_surrogates(text)
            data = text.encode("utf-8")
        if len(data) >= left:
            yield data[:left].decode("utf-8", "ignore")
            return
        left -= len(data)
        yield text


def _work_kept(dataset_dir: Path, fingerprint: str, itemsize: int) -> dict:
    """How far an interrupted preparation of the same corpus got (NOTHING_DONE's keys), its files
    cut back to that point; NOTHING_DONE when there is none to continue."""
    try:
        kept = json.loads((dataset_dir / SO_FAR).read_text())
        sizes = {ALL_TOKENS: kept["tokens"] * itemsize, DOCUMENT_ENDS: kept["documents"] * 8}
        same = (kept.pop("fingerprint"), kept.pop("piece_bytes")) == (fingerprint, sources.PIECE_BYTES)
        if same and kept.keys() == NOTHING_DONE.keys() and all(
                (dataset_dir / name).stat().st_size >= size for name, size in sizes.items()):
            for name, size in sizes.items():
                os.truncate(dataset_dir / name, size)  # past that point: written after the record, or half
            return kept
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # none, or not one this code wrote
        pass
    _forget_work(dataset_dir)  # of another corpus, or of files since rewritten: never trusted
    return dict(NOTHING_DONE)


def _forget_work(dataset_dir: Path) -> None:
    """Remove the record of how far a preparation got, and the half-written one a kill during its
    write leaves."""
    for path in (dataset_dir / SO_FAR, sources.half_written(dataset_dir / SO_FAR)):
        path.unlink(missing_ok=True)


def _keep_work(dataset_dir: Path, fingerprint: str, done: dict, *files) -> None:
    """Record how far the preparation got, once what it wrote (the open `files`) is on disk."""
    for f in files:
        f.flush()
        os.fsync(f.fileno())
    record = {"fingerprint": fingerprint, "piece_bytes": sources.PIECE_BYTES, **done}
    write_atomically(dataset_dir / SO_FAR, json.dumps(record).encode())


def _train_tokens(document_ends: Path, n_documents: int, n_tokens: int, val_fraction: float) -> int:
    """How many tokens train.bin takes: all but the last val_fraction of the documents when there
    are MIN_DOCUMENTS or more (train keeps one at least), else all but the last val_fraction of
    the tokens. document_ends: where each document ends, int64 token offsets."""
    if n_documents < MIN_DOCUMENTS:
        return int(n_tokens * (1 - val_fraction))
    n_val_documents = min(max(1, round(val_fraction * n_documents)), n_documents - 1)
    return int(np.fromfile(document_ends, np.int64, count=1, offset=8 * (n_documents - n_val_documents - 1))[0])


def prepare(dataset_dir: Path, corpus: Path | str, tokenizer: str = "char",
            announce: Callable[[str], None] | None = None, *, val_fraction: float = 0.1, text_key: str = "text",
            num_proc: int = 0, bpe_vocab_size: int = BPE_VOCAB_SIZE,
            stopped: Callable[[], str | None] | None = None) -> Tokenizer:
    """Tokenize corpus into dataset_dir/{train,val}.bin and meta.json unless they are up to date;
    returns the tokenizer. `announce` gets one line saying what was prepared, if anything.
    bpe_vocab_size: the vocabulary of the bpe tokenizer, trained on the corpus.
    num_proc: worker processes (0: one per usable CPU). stopped: why to stop now (a signal the
    program received), or None. A preparation stopped by it, Ctrl-C or a broken stream raises
    Interrupted and keeps its work: the next call with the same corpus continues it."""
    if not 0 < val_fraction < 1:
        raise UsageError(f"config.val_fraction must be between 0 and 1, got {val_fraction}")
    if num_proc < 0:
        raise UsageError(f"config.num_proc must be 0 (one worker per CPU) or more, got {num_proc}")
    fingerprint = _fingerprint(corpus, tokenizer_name(tokenizer, bpe_vocab_size), val_fraction, text_key)
    meta = read_meta(dataset_dir)
    if meta is not None and meta.get("source_fingerprint") == fingerprint and bins_complete(dataset_dir, meta):
        return from_description(meta["tokenizer"])
    new_folder = not dataset_dir.exists()
    make_folder(dataset_dir, "config.data_dir")
    (dataset_dir / "meta.json").unlink(missing_ok=True)  # no meta.json: nothing here is complete any more
    # Where each document ends goes to a file, not a list: a list's memory grows with the documents,
    # 8 million in OpenWebText, more in FineWeb-Edu's larger samples (docs/performance.md#data-preparation).
    everything, document_ends = dataset_dir / ALL_TOKENS, dataset_dir / DOCUMENT_ENDS
    done, progress = dict(NOTHING_DONE), _progress(announce is not None)
    if progress is not None:
        progress.start()
        bar = progress.add_task("prepare", documents=0, tokens=0, mb=0.0, rate=0.0)
    try:
        encoder = _tokenizer(tokenizer, corpus, text_key, bpe_vocab_size, val_fraction)
        itemsize = np.dtype(encoder.dtype).itemsize
        done = _work_kept(dataset_dir, fingerprint, itemsize)
        if done["tasks"] and announce is not None:
            announce(f"continuing the preparation of {dataset_dir} where it stopped, after {done['bytes'] / 1e6:,.0f} "
                     f"MB of text ({done['tokens']:,} tokens)")
        started, bytes_before = time.perf_counter(), done["bytes"]
        mode = "ab" if done["tasks"] else "wb"
        with open(everything, mode) as out, open(document_ends, mode) as ends_out:
            tasks = _tasks(sources.Reader(corpus, text_key, start=done["position"]))
            kept = time.monotonic()
            for tokens, ends, size, position in _encoded(tasks, encoder, num_proc or usable_cpus()):
                out.write(tokens.tobytes())
                ends_out.write((done["tokens"] + ends).tobytes())
                # one assignment: a Ctrl-C or a signal's exception finds the old counts or the new, never half
                done = {"tasks": done["tasks"] + 1, "tokens": done["tokens"] + len(tokens), "documents":
                        done["documents"] + len(ends), "bytes": done["bytes"] + size, "position": position}
                if progress is not None:
                    progress.update(bar, documents=done["documents"], tokens=done["tokens"], mb=done["bytes"] / 1e6,
                                    rate=(done["bytes"] - bytes_before) / 1e6 / (time.perf_counter() - started))
                if stopped is not None and (why := stopped()):
                    raise Interrupted(why)
                if time.monotonic() - kept >= KEEP_SECONDS:
                    _keep_work(dataset_dir, fingerprint, done, out, ends_out)
                    kept = time.monotonic()
        n_tokens, n_documents = done["tokens"], done["documents"]
        if n_tokens == 0:
            raise UsageError(f"corpus {corpus} is empty: give a text with some content")
        n_train = _train_tokens(document_ends, n_documents, n_tokens, val_fraction)
        _split(everything, n_train * itemsize, dataset_dir)
    except BaseException as e:
        error = _after_stopping(e, dataset_dir, fingerprint, done)
        if new_folder and not any(dataset_dir.iterdir()):  # a text refused before any work: nothing left behind
            dataset_dir.rmdir()
        if error is e:
            raise  # with its traceback: no one-line error says it better
        raise error from None
    finally:
        if progress is not None:
            progress.stop()
    document_ends.unlink()
    _forget_work(dataset_dir)
    n_bytes = done["bytes"] - bytes_before
    seconds = max(time.perf_counter() - started, 1e-9)
    meta = {"format": FORMAT, "tokenizer": encoder.describe(), "dtype": np.dtype(encoder.dtype).name,
            "source": sources.source_id(corpus), "source_fingerprint": fingerprint,
            "documents": n_documents, "tokens": {"train": n_train, "val": n_tokens - n_train}}
    write_atomically(dataset_dir / "meta.json", json.dumps(meta, ensure_ascii=False, indent=1).encode("utf-8"))
    if announce is not None:
        speed = f", {n_bytes / 1e6:,.0f} MB in {seconds:.0f} s ({n_bytes / 1e6 / seconds:,.1f} MB/s)"
        name = tokenizer_name(tokenizer, bpe_vocab_size)
        announce(f"prepared {dataset_dir.absolute()} from {sources.source_id(corpus)}: {name} tokenizer, "
                 f"vocabulary {len(encoder):,}, {n_documents:,} document{'s' * (n_documents != 1)}, "
                 f"{n_train:,} train and {n_tokens - n_train:,} val tokens" + (speed if seconds >= 1 else ""))
    return encoder


def _after_stopping(error: BaseException, dataset_dir: Path, fingerprint: str, done: dict) -> BaseException:
    """What a preparation that stopped on `error` leaves behind, and the error to raise: stopped by
    Ctrl-C, a signal or a broken stream after some work, that work, kept for the next run
    (Interrupted); else no half-written file, and a one-line error where one says it better."""
    (dataset_dir / "val.bin.tmp").unlink(missing_ok=True)
    interrupted = isinstance(error, KeyboardInterrupt | Interrupted)
    why = (str(error) or "Ctrl-C") + f": the preparation of {dataset_dir} stopped"
    if interrupted and done["tasks"]:
        _keep_work(dataset_dir, fingerprint, done)
        return Interrupted(f"{why} after {done['bytes'] / 1e6:,.0f} MB of text, which are kept: run it again to "
                           "continue from there")
    # a bad record or a full disk: no half-written file is left behind to take space
    for name in (ALL_TOKENS, DOCUMENT_ENDS):
        (dataset_dir / name).unlink(missing_ok=True)
    _forget_work(dataset_dir)
    if interrupted:
        return Interrupted(f"{why} before any text was tokenized: run it again")
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return UsageError(f"the disk of {dataset_dir} is full ({done['tokens']:,} tokens were written): free some "
                          "space, or pass --config.data_dir=DIR on a larger disk")
    return error


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


def _check_source(dataset_dir: Path, meta: dict, input_file: str, own_text: Path) -> None:
    """Refuse a dataset prepared from another text than the one this run names (input_file, or
    else the dataset's own input.txt, own_text, where there is one), rather than replace it unasked.
    With no text named, the prepared data is used, whatever it was prepared from."""
    wanted = sources.source_id(input_file or own_text)
    prepared_from = sources.source_id(meta.get("source", wanted))
    if prepared_from == wanted or not (input_file or Path(wanted).is_file()):
        return
    if input_file:
        raise UsageError(
            f"{dataset_dir} was prepared from {prepared_from}, not from {wanted}: pass --config.dataset="
            f"{Path(wanted).stem.removeprefix(sources.HUB)} to prepare it as a dataset of its own, or "
            f"--config.rebuild_data=True to replace {dataset_dir.name}'s data")
    raise UsageError(
        f"{dataset_dir} was prepared from {prepared_from}, not from its input.txt: pass --config.input_file="
        f"{prepared_from} to train on that text, or --config.rebuild_data=True to prepare it again from {wanted}")


def dataset_folder(data_dir: str | Path, dataset: str, tokenizer: str) -> Path:
    """Where a dataset's tokens of a tokenizer (tokenizer_name's) live: data_dir/<dataset>/, as
    nanoGPT lays it out, unless that holds another tokenizer's tokens; then beside them, in a
    folder named for the tokenizer (data_dir/<dataset>/bpe-4096/), so that no preparation
    replaces another tokenizer's data."""
    top = Path(data_dir).absolute() / dataset
    meta = read_meta(top)
    if meta is None or _held_tokenizer(meta) == tokenizer:
        return top
    return top / tokenizer.replace(" ", "-")


def prepare_dataset(data_dir: str, dataset: str, input_file: str, tokenizer: str = "char", rebuild: bool = False,
                    announce: Callable[[str], None] | None = None, **options) -> tuple[Tokenizer, dict, Path]:
    """data_dir/dataset prepared from its text if it is not up to date (always, with rebuild), in
    the folder of its tokenizer (dataset_folder): its tokenizer, meta.json and that folder.
    options: val_fraction, text_key, num_proc, bpe_vocab_size (prepare's)."""
    top = Path(data_dir).absolute() / dataset  # where the dataset's own input.txt is
    wanted = tokenizer_name(tokenizer, options.get("bpe_vocab_size", BPE_VOCAB_SIZE))
    dataset_dir = dataset_folder(data_dir, dataset, wanted)
    meta = read_meta(dataset_dir)
    if meta is not None and not rebuild:
        _check_source(dataset_dir, meta, input_file, top / "input.txt")
    try:
        corpus = sources.find_corpus(top, dataset, input_file, prepared=meta is not None and not rebuild)
    except UsageError:
        if dataset_dir == top:
            raise
        raise UsageError(f"{top} holds {_held_tokenizer(read_meta(top))} tokens but the run asks for {wanted} "
                         f"tokens, and no text is at hand to prepare them beside: put the text at "
                         f"{top / 'input.txt'}, or pass --config.input_file=PATH") from None
    if corpus is not None:
        encoder = prepare(dataset_dir, corpus, tokenizer, announce, **options)
        meta = read_meta(dataset_dir)
    else:
        if not bins_complete(dataset_dir, meta):
            raise UsageError(f"{dataset_dir} has meta.json but incomplete .bin files: put the text "
                             f"at {top / 'input.txt'} to prepare it again")
        encoder = from_description(meta["tokenizer"])
    if (held := _held_tokenizer(meta)) != wanted:
        raise UsageError(f"{dataset_dir} holds {held} tokens but the run asks for {wanted} tokens "
                         f"(config.tokenizer, config.bpe_vocab_size): use another dataset name, or put the text "
                         f"at {top / 'input.txt'} to prepare it again")
    return encoder, meta, dataset_dir


def _held_tokenizer(meta: dict) -> str:
    """The name of the tokenizer a dataset's meta.json describes (tokenizer_name's)."""
    return tokenizer_name(meta["tokenizer"]["kind"], meta["tokenizer"].get("vocab_size", 0))


def _interrupt(signum: int, frame) -> None:
    raise Interrupted(f"{signal.Signals(signum).name} received")


def main(argv: list[str]) -> None:
    from gptjax.config import from_command_line

    if "-h" in argv or "--help" in argv:
        print(__doc__.strip())
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a preemption or a scheduler: stop as on Ctrl-C
    try:
        config = from_command_line(argv)
        prepare_dataset(config.data_dir, config.dataset, config.input_file, config.tokenizer, config.rebuild_data,
                        announce=lambda line: print(line, flush=True), val_fraction=config.val_fraction,
                        text_key=config.text_key, num_proc=config.num_proc, bpe_vocab_size=config.bpe_vocab_size)
    except UsageError as e:
        sys.exit(f"{program_name(argv[0])}: error: {e}")
    except KeyboardInterrupt:  # before the preparation began: nothing to keep
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main(sys.argv)
