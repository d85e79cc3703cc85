"""Where a corpus's text comes from, read as a stream of documents in pieces of a few MB (Reader),
which can continue where an earlier reading of it stopped.

The corpus: a text file, a .jsonl or .json file ({"text": ...} per line; `text_key` names the
field), each of them also compressed as .gz, .bz2, .xz or .zst (decompressed as it is read; .zst
needs Python 3.14 or backports.zstd), a .parquet file (its `text_key` column; needs pyarrow), a
folder of such files (its shards, in name order; other files, such as a README, are left out), a
folder written by Hugging Face datasets' save_to_disk, or hf:NAME[:SUBSET], a Hub dataset's train
split, streamed (both need datasets). A long text is cut at a line break or space that no GPT-2
token spans. A record, row or file that cannot be read, and an archive or compression not read
here (.tar, .zip, .7z, ...), are one-line errors naming it: left out of a folder, it would silently
be missing from the corpus.
Which text a dataset is prepared from (input_file, data_dir/<dataset>/input.txt, or tinyshakespeare,
downloaded): find_corpus.
"""

import bz2
import codecs
import gzip
import hashlib
import json
import lzma
import os
import sys
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from gptjax.errors import Interrupted, UsageError

try:  # Python 3.14's zstd module, or its backport (the data extra) before it
    if sys.version_info >= (3, 14):
        from compression import zstd
    else:
        from backports import zstd
except ImportError:
    zstd = None


SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
DOWNLOADABLE = ("shakespeare_char", "shakespeare")  # both start from tinyshakespeare
SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")  # a .json shard is JSON Lines, as C4's and Dolma's
RECORD_SUFFIXES = (".jsonl", ".json")
READ_COMPRESSED = (".txt", *RECORD_SUFFIXES)  # what a compressed file may hold: docs.jsonl.gz, not owt.tar.gz
# the compressions read as a corpus streams in; how else corpora are often shipped is refused
COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open} | ({".zst": zstd.open} if zstd else {})
PACKED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip", ".tar", ".tgz", ".7z", ".rar")
# what a damaged compressed file raises
DAMAGED_DATA = (EOFError, OSError, zlib.error, lzma.LZMAError, *([zstd.ZstdError] if zstd else []))
HUB = "hf:"  # input_file=hf:NAME[:SUBSET]: the train split of a Hugging Face Hub dataset, streamed
PIECE_BYTES = 1 << 22  # how much of a long text a piece holds (and prepare a worker's task): about 4 MiB

Piece = tuple[str, bool]  # text, and whether a document ends with it


def write_atomically(path: Path, payload: bytes) -> None:
    """An interrupted run leaves the old file or none, never half a file (a kill can leave
    half_written(path) beside it, which the next write replaces)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = half_written(path)
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def half_written(path: Path) -> Path:
    """Where write_atomically writes path's new content before it takes path's place."""
    return path.with_name(path.name + ".tmp")


def _saved_dataset(path: Path) -> bool:
    """A folder that Hugging Face datasets' save_to_disk wrote."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _kind(path: Path) -> str:
    """What a file holds, whether compressed or not: ".jsonl" for docs.jsonl.gz and docs.jsonl alike."""
    return Path(path.stem).suffix if path.suffix in COMPRESSIONS else path.suffix


def _refuse_packed(path: Path) -> None:
    """An archive (a tar's headers could pass as text) or a compression not read here: refused, not read."""
    holds_text = Path(path.stem).suffix in READ_COMPRESSED
    if path.suffix == ".zst" and zstd is None and holds_text:
        raise UsageError(f"reading {path} needs backports.zstd (Python 3.14 has it built in): pip install "
                         "backports.zstd, or decompress it first (zstd -d)")
    if path.suffix in PACKED_SUFFIXES and not (path.suffix in COMPRESSIONS and holds_text):
        raise UsageError(f"corpus {path} is an archive or a compressed file that gptjax does not read: unpack it and "
                         f"pass the files inside, or their folder (.txt, .jsonl and .json files are read compressed as "
                         f"{', '.join(COMPRESSIONS)} too)")


def files(corpus: Path | str) -> list[Path]:
    """The files a corpus is read from: none for a hub dataset, all of a saved dataset's."""
    if isinstance(corpus, str):
        return []
    if not corpus.is_dir():
        _refuse_packed(corpus)
        return [corpus]
    if _saved_dataset(corpus):
        return sorted(p for p in corpus.rglob("*") if p.is_file())
    shards = sorted(p for p in corpus.iterdir() if p.suffix in (*SUFFIXES, *PACKED_SUFFIXES) and p.is_file())
    for shard in shards:
        _refuse_packed(shard)
    if not shards:
        subfolders = sorted(p.name for p in corpus.iterdir() if p.is_dir() and not p.name.startswith("."))
        named = ", ".join(subfolders[:3]) + ", ..." * (len(subfolders) > 3)
        inside = f"; its subfolders ({named}) are not read: pass the one that holds the shards" if subfolders else ""
        raise UsageError(f"corpus folder {corpus} holds no {', '.join(SUFFIXES)} files (nor such files compressed as "
                         f"{', '.join(COMPRESSIONS)}){inside}")
    return shards


def _open(path: Path) -> BinaryIO:
    """path's bytes, decompressed as they are read when it is compressed."""
    return COMPRESSIONS.get(path.suffix, open)(path, "rb")


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
    with _open(path) as f:
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
    if not isinstance(record, dict):  # a .json file that is one array, say
        raise UsageError(f"{source}, {where}: a JSON {type(record).__name__}, not an object: a .jsonl or .json corpus "
                         f"is JSON Lines, an object with a {text_key!r} string on each line")
    if text_key not in record:
        raise UsageError(f"{source}, {where}: no {text_key!r} field (config.text_key names it)")
    if not isinstance(text := record[text_key], str):
        raise UsageError(f"{source}, {where}: {text_key!r} is {type(text).__name__}, not a string: every record of "
                         f"a corpus needs its text as a string under {text_key!r} (config.text_key)")
    return text


def _jsonl(path: Path, text_key: str) -> Iterator[Piece]:
    with _open(path) as f:  # bytes, decoded line by line: an error names its line
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:  # utf-8-sig: a byte-order mark (Windows tools write one) opens the first line only
                record = json.loads(line.decode("utf-8-sig" if number == 1 else "utf-8"))
            except UnicodeDecodeError as e:
                raise UsageError(f"{path}, line {number}: not UTF-8 text ({e.reason})") from None
            except json.JSONDecodeError:
                raise UsageError(f"{path}, line {number}: not JSON: a .jsonl or .json corpus is JSON Lines, an "
                                 f"object with a {text_key!r} string on each line") from None
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


def _hf_rows(source: Path | str):
    """A saved dataset's or a Hub dataset's train split, as a datasets.IterableDataset: its state_dict
    says where a reading of it got to, for a later one to continue from."""
    try:
        import datasets
    except ImportError:
        raise UsageError(f"reading {source} needs Hugging Face datasets: pip install datasets") from None
    try:  # no network, no such dataset, a damaged file: datasets raises many kinds
        if isinstance(source, Path):
            rows = datasets.load_from_disk(str(source))
        else:
            name, _, subset = source.removeprefix(HUB).partition(":")
            rows = datasets.load_dataset(name, subset or None, split="train", streaming=True)
    except Exception as e:
        raise UsageError(f"could not open the dataset {source} ({type(e).__name__}: {_one_line(e)})") from None
    if isinstance(rows, datasets.DatasetDict):  # save_to_disk of several splits: train, or the only one
        if "train" not in rows and len(rows) != 1:
            raise UsageError(f"the dataset {source} has no train split, and several others ({', '.join(rows)}): save "
                             "the one to train on by itself (its save_to_disk)")
        rows = rows["train"] if "train" in rows else next(iter(rows.values()))
    rows = rows.to_iterable_dataset() if isinstance(rows, datasets.Dataset) else rows
    if not hasattr(rows, "state_dict"):  # before 2.18: no way to say where a reading got to
        raise UsageError(f"reading {source} needs datasets 2.18 or later (this is {datasets.__version__}): "
                         "pip install -U datasets")
    return rows


def _file_pieces(path: Path, text_key: str) -> Iterator[Piece]:
    """One file of a corpus as pieces; a compressed file's damage is a one-line error naming it."""
    if _kind(path) in RECORD_SUFFIXES:
        read = _jsonl(path, text_key)
    elif path.suffix == ".parquet":
        read = _parquet(path, text_key)
    else:
        read = _text_file(path)
    if path.suffix not in COMPRESSIONS:
        yield from read
        return
    try:
        yield from read
    except DAMAGED_DATA as e:
        raise _damaged(path, e) from None
    except UsageError:  # gzip finds damage at a member's end: garbled records may show it first
        try:
            with _open(path) as f:
                while f.read(PIECE_BYTES):
                    pass
        except DAMAGED_DATA as e:
            raise _damaged(path, e) from None
        raise


class Reader:
    """A corpus's documents as pieces of text, in order, from `start` on: the position() of an
    earlier Reader of the same corpus (None: from its beginning).

    A position is where the pieces read so far end, as JSON: a file of the corpus and how many of
    its pieces, or a dataset's record count and its stream's state_dict (datasets'). Continuing
    from it opens no file before that one, and a Hub stream downloads no shard it had finished.
    """

    def __init__(self, corpus: Path | str, text_key: str = "text", start: dict | None = None):
        self.corpus, self.text_key = corpus, text_key
        self._start = start or {}
        self._file, self._pieces = self._start.get("file", 0), self._start.get("pieces", 0)
        self._records = self._start.get("records", 0)
        self._stream = self._version = None  # the dataset being read, once it is open, and datasets' version

    def position(self) -> dict:
        """Where the pieces read so far end (for a Reader's start)."""
        if self._stream is not None:
            return {"records": self._records, "stream": self._stream.state_dict(), "datasets": self._version}
        return {"file": self._file, "pieces": self._pieces}

    def __iter__(self) -> Iterator[Piece]:
        if isinstance(self.corpus, str) or _saved_dataset(self.corpus):
            yield from self._dataset()
            return
        first, skip = self._file, self._pieces  # the files before the one it stopped in are not opened
        for number, path in enumerate(files(self.corpus)[first:], start=first):
            for count, piece in enumerate(_file_pieces(path, self.text_key), start=1):
                if count > skip:
                    self._file, self._pieces = number, count
                    yield piece
            skip = 0

    def _dataset(self) -> Iterator[Piece]:
        rows, skip, number = _hf_rows(self.corpus), 0, self._records  # one line where datasets is missing
        from datasets import __version__

        self._version = __version__
        if "stream" in self._start and self._start.get("datasets") == self._version:
            rows.load_state_dict(self._start["stream"])
        else:  # a state another version of datasets wrote may not mean the same: read up to there again
            skip, number = number, 0
        self._stream = rows
        try:  # a stream from the hub can break off: the preparation continues from there when run again
            for record in rows:
                number += 1
                if number > skip:
                    self._records = number
                    yield _text_of(record, self.corpus, f"record {number}", self.text_key), True
        except UsageError:
            raise
        except Exception as e:
            raise Interrupted(f"reading the dataset {self.corpus} broke off after record {number:,} "
                              f"({type(e).__name__}: {_one_line(e)})") from None


def _damaged(path: Path, error: Exception) -> Exception:
    if isinstance(error, OSError) and error.errno is not None:  # the disk or a permission, not the data
        return error
    return UsageError(f"{path} cannot be read to its end ({type(error).__name__}: {_one_line(error)}): the file is "
                      "damaged or cut short; download or copy it again")


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


def source_id(source: str | Path) -> str:
    """How meta.json names a corpus: a hub dataset by hf:NAME, a file or folder by its absolute path."""
    return str(source) if str(source).startswith(HUB) else str(Path(source).resolve())


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
