"""sources.py: every kind of corpus read as a stream of document pieces, and every way reading
one can fail named in one line (the errors are checked through prepare.prepare, as a user meets
them)."""

import bz2
import gzip
import json
import lzma
import random
import re
import sys

import numpy as np
import pytest
from conftest import DOCUMENTS, gpt2_tokenizer, load_dataset

from gptjax import prepare, sources
from gptjax.errors import Interrupted, UsageError

COMPRESSORS = {".gz": gzip, ".bz2": bz2, ".xz": lzma, ".zst": sources.zstd}  # zstd: the data extra's backport


def test_any_text_is_cut_into_pieces_that_tokenize_as_the_whole(tmp_path, monkeypatch):
    gpt2 = gpt2_tokenizer()
    monkeypatch.setattr(sources, "PIECE_BYTES", 16)
    atoms = ["word", "Mot", "中文", "é", "42", ".", "'s", "'", " ", "  ", "\n", "\n\n", "\r\n", "\t", "\u3000",
             "\xa0", "\u0301", " \n", "\n "]  # every kind of neighbour a line break or a space can have
    rng = random.Random(0)
    for _ in range(300):
        text = "".join(rng.choice(atoms) for _ in range(rng.randint(1, 60)))
        corpus = tmp_path / "in.txt"
        corpus.write_text(text, encoding="utf-8", newline="")
        pieces = [piece for piece, _ in sources._text_file(corpus)]
        assert "".join(pieces) == text
        np.testing.assert_array_equal(np.concatenate([gpt2.encode(piece) for piece in pieces]), gpt2.encode(text))


@pytest.mark.parametrize("text", ["中文的句子\n" * 40, "one long line of words " * 40])
def test_a_text_of_other_scripts_or_of_one_line_is_still_cut(tmp_path, monkeypatch, text):
    monkeypatch.setattr(sources, "PIECE_BYTES", 64)  # memory stays bounded: no piece holds the whole text
    (tmp_path / "in.txt").write_text(text, encoding="utf-8")
    pieces = [piece for piece, _ in sources._text_file(tmp_path / "in.txt")]
    assert "".join(pieces) == text and len(pieces) > 5 and max(map(len, pieces)) < 200


def test_a_text_that_is_not_utf8_is_named_even_far_in(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "PIECE_BYTES", 64)
    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes(b"a line\n" * 100 + "café\n".encode("latin-1"))
    with pytest.raises(UsageError, match=f"corpus {re.escape(str(corpus))} is not UTF-8 text"):
        prepare.prepare(tmp_path / "out", corpus)
    assert not list((tmp_path / "out").glob("*.bin*"))


@pytest.mark.parametrize("compression", COMPRESSORS)
def test_compressed_shards_read_as_the_text_inside_them(tmp_path, monkeypatch, compression):
    monkeypatch.setattr(sources, "PIECE_BYTES", 16)  # a compressed text is cut into pieces as a plain one
    write = COMPRESSORS[compression].open
    records = "".join(json.dumps({"text": d}) + "\n" for d in DOCUMENTS)
    text = "A text long enough to be cut into several pieces of a few words.\n" * 3
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    plain.mkdir(), packed.mkdir()
    for name, content in (("0.jsonl", records), ("1.json", records), ("2.txt", text)):
        (plain / name).write_text(content, encoding="utf-8")
        with write(packed / (name + compression), "wt", encoding="utf-8") as f:
            f.write(content[:40])  # in two members or streams, as `cat a.gz b.gz` makes one
        with write(packed / (name + compression), "at", encoding="utf-8") as f:
            f.write(content[40:])
    (packed / "README.md").write_text("not a shard: left out, as in any folder\n")
    assert list(sources.Reader(packed)) == list(sources.Reader(plain))
    assert len(list(sources.Reader(packed / ("2.txt" + compression)))) > 3
    assert [text for text, _ in sources.Reader(packed / ("1.json" + compression))] == DOCUMENTS


@pytest.mark.parametrize("compression", COMPRESSORS)
@pytest.mark.parametrize("damage", ["cut short", "overwritten"])
def test_a_damaged_compressed_shard_is_named_and_nothing_half_made_is_left(tmp_path, compression, damage):
    compress = COMPRESSORS[compression].compress
    documents = [f"document {i} of a corpus shipped compressed" for i in range(300)]
    payload = compress("".join(json.dumps({"text": d}) + "\n" for d in documents).encode())
    middle = len(payload) // 2
    shard = tmp_path / ("docs.jsonl" + compression)
    shard.write_bytes(payload[:middle] if damage == "cut short" else
                      payload[:middle] + bytes(64) + payload[middle + 64:])
    with pytest.raises(UsageError, match=f"^{re.escape(str(shard))} cannot be read to its end "
                                         r"\(\w+: .*\): the file is damaged or cut short; download or copy it "
                                         "again$") as error:
        prepare.prepare(tmp_path / "out", shard, tokenizer="char")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("name", ["owt.tar", "owt.tar.gz", "owt.tgz", "owt.tar.zst", "docs.zip", "a.parquet.gz"])
def test_an_archive_or_a_compression_not_read_is_refused_alone_or_in_a_folder(tmp_path, name):
    import tarfile

    (tmp_path / "doc.txt").write_text("a document that a tar file holds uncompressed\n" * 10)
    with tarfile.open(tmp_path / name, "w:gz" if name.endswith("gz") else "w") as archive:
        archive.add(tmp_path / "doc.txt", arcname="doc.txt")  # a tar's text is valid UTF-8, headers and all
    with pytest.raises(UsageError, match=rf"^corpus .*{re.escape(name)} is an archive or a compressed file that "
                                         r"gptjax does not read: unpack it .*compressed as \.gz, \.bz2, \.xz, "
                                         r"\.zst too\)$"):
        prepare.prepare(tmp_path / "out", tmp_path / name)
    folder = tmp_path / "shards"
    folder.mkdir()
    (tmp_path / "doc.txt").rename(folder / "doc.txt")
    (tmp_path / name).rename(folder / name)  # would be left out of the corpus without a word
    with pytest.raises(UsageError, match=rf"^corpus .*shards/{re.escape(name)} is an archive or a compressed file "
                                         "that gptjax does not read"):
        prepare.prepare(tmp_path / "out", folder)


def test_a_zst_shard_without_a_zstd_module_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "zstd", None)  # Python before 3.14 without backports.zstd
    monkeypatch.delitem(sources.COMPRESSIONS, ".zst")
    (tmp_path / "0.jsonl").write_text('{"text": "read first, were the .zst shard readable"}\n')
    (tmp_path / "1.jsonl.zst").write_bytes(b"")
    with pytest.raises(UsageError, match=r"^reading .*1\.jsonl\.zst needs backports\.zstd \(Python 3\.14 has it built "
                                         r"in\): pip install backports\.zstd, or decompress it first \(zstd -d\)$"):
        sources.files(tmp_path)
    (tmp_path / "1.jsonl.zst").rename(tmp_path / "1.tar.zst")  # no module would make it readable
    with pytest.raises(UsageError, match=r"1\.tar\.zst is an archive or a compressed file that gptjax does not read"):
        sources.files(tmp_path)


@pytest.mark.parametrize("line, message", [
    ('{"text": 1}', r"line 2: 'text' is int, not a string"),
    ('{"body": "x"}', r"line 2: no 'text' field \(config.text_key names it\)"),
    ("not json", r"line 2: not JSON: a .jsonl or .json corpus is JSON Lines"),
    ('[{"text": "x"}]', r"line 2: a JSON list, not an object: a .jsonl or .json corpus is JSON Lines"),
    ('{"text": "caf\udce9"}', r"line 2: not UTF-8 text \(invalid continuation byte\)"),  # a Latin-1 é
])
def test_a_jsonl_record_that_is_not_text_is_named_and_nothing_half_made_is_left(tmp_path, line, message):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_bytes(('{"text": "fine"}\n' + line + "\n").encode("utf-8", "surrogateescape"))
    with pytest.raises(UsageError, match=re.escape(str(corpus)) + ", " + message):
        prepare.prepare(tmp_path / "out", corpus, tokenizer="char")
    assert not (tmp_path / "out").exists()  # not even the dataset's folder, which this preparation made


def test_a_jsonl_file_may_open_with_a_byte_order_mark(tmp_path):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCUMENTS), encoding="utf-8-sig")
    assert [text for text, _ in sources.Reader(corpus)] == DOCUMENTS


def test_parquet_problems_are_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["a"]}), tmp_path / "a.parquet")
    with pytest.raises(UsageError, match=r"a.parquet has no column 'text' \(it has body\): set config.text_key"):
        prepare.prepare(tmp_path / "out", tmp_path / "a.parquet")
    pq.write_table(pa.table({"text": ["a", None]}), tmp_path / "b.parquet")
    with pytest.raises(UsageError, match=r"b.parquet, row 2: 'text' is NoneType, not a string"):
        prepare.prepare(tmp_path / "out", tmp_path / "b.parquet")
    (tmp_path / "c.parquet").write_text("not parquet")
    with pytest.raises(UsageError, match=r"c.parquet is not a readable parquet file"):
        prepare.prepare(tmp_path / "out", tmp_path / "c.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"corpus folder .*empty holds no .txt, .jsonl, .json, .parquet files "
                                         r"\(nor such files compressed as \.gz, \.bz2, \.xz, \.zst\)$"):
        prepare.prepare(tmp_path / "out", tmp_path / "empty")
    for name in ("en", "realnewslike", ".cache"):  # C4's layout: a variant a folder; shards are not looked for inside
        (tmp_path / "empty" / name).mkdir()
    (tmp_path / "empty" / "en" / "c4-train.00000-of-01024.json.gz").write_bytes(b"")
    with pytest.raises(UsageError, match=r"\.zst\); its subfolders \(en, realnewslike\) are not read: pass the one "
                                         "that holds the shards$"):
        prepare.prepare(tmp_path / "out", tmp_path / "empty")


def test_a_parquet_file_damaged_in_its_second_row_group_is_named_with_the_rows_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [f"document {i}" for i in range(200)]}), tmp_path / "d.parquet",
                   row_group_size=100)
    chunk = pq.ParquetFile(tmp_path / "d.parquet").metadata.row_group(1).column(0)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    damaged = bytearray((tmp_path / "d.parquet").read_bytes())
    damaged[start:start + chunk.total_compressed_size] = bytes(chunk.total_compressed_size)
    (tmp_path / "d.parquet").write_bytes(damaged)
    with pytest.raises(UsageError, match=r"d.parquet: the rows after row \d+ cannot be read \(.*\): the file is "
                                         r"damaged; download or copy it again$") as error:
        prepare.prepare(tmp_path / "out", tmp_path / "d.parquet")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_saved_dataset_dict_gives_its_train_split_or_its_only_one_and_never_guesses(tmp_path):
    datasets = pytest.importorskip("datasets", reason="Hugging Face datasets: pip install -e '.[data]'")
    split = {name: datasets.Dataset.from_dict({"text": [name, name]}) for name in ("train", "validation", "test")}
    for kept, expected in ((("validation", "train"), ["train", "train"]), (("test",), ["test", "test"])):
        datasets.DatasetDict({name: split[name] for name in kept}).save_to_disk(tmp_path / kept[0])
        assert [text for text, _ in sources.Reader(tmp_path / kept[0])] == expected
    datasets.DatasetDict({name: split[name] for name in ("validation", "test")}).save_to_disk(tmp_path / "two")
    with pytest.raises(UsageError, match=r"two has no train split, and several others \(validation, test\)"):
        list(sources.Reader(tmp_path / "two"))


def test_a_damaged_saved_dataset_and_a_hub_stream_that_breaks_off_are_one_line(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets", reason="Hugging Face datasets: pip install -e '.[data]'")
    datasets.Dataset.from_dict({"text": DOCUMENTS * 100}).save_to_disk(tmp_path / "saved")
    for arrow in (tmp_path / "saved").glob("*.arrow"):
        arrow.write_bytes(arrow.read_bytes()[:arrow.stat().st_size // 2])
    with pytest.raises(UsageError, match=r"could not open the dataset .*saved \(OSError: "):
        prepare.prepare(tmp_path / "out", tmp_path / "saved")

    def records():
        yield from ({"text": d} for d in DOCUMENTS)
        raise ConnectionError("the server\nwent away")

    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: datasets.IterableDataset.from_generator(
        records))
    with pytest.raises(Interrupted, match=r"^reading the dataset hf:some/corpus broke off after record 3 "
                                          r"\(ConnectionError: the server went away\): the preparation of .*out "
                                          "stopped before any text was tokenized: run it again$"):
        prepare.prepare(tmp_path / "out", "hf:some/corpus")  # the char tokenizer's pass over the text broke off
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize(("module", "corpus", "install"), [("datasets", "hf:some/corpus", "pip install datasets"),
                                                        ("pyarrow", "docs.parquet", "pip install pyarrow")])
def test_a_corpus_whose_reader_is_not_installed_is_one_line(tmp_path, monkeypatch, module, corpus, install):
    if not corpus.startswith("hf:"):
        corpus = tmp_path / corpus
        corpus.write_text("not read")
    monkeypatch.setitem(sys.modules, module, None)  # as where it is not installed: importing it fails
    with pytest.raises(UsageError, match=f"^reading {corpus} needs .*: {install}$"):
        list(sources.Reader(corpus))


def test_a_datasets_too_old_to_say_where_it_got_to_is_one_line(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets", reason="Hugging Face datasets: pip install -e '.[data]'")
    datasets.Dataset.from_dict({"text": DOCUMENTS}).save_to_disk(tmp_path / "saved")
    monkeypatch.delattr(datasets.IterableDataset, "state_dict")  # as before datasets 2.18
    with pytest.raises(UsageError, match=r"saved needs datasets 2.18 or later \(this is .*\): pip install -U datasets"):
        list(sources.Reader(tmp_path / "saved"))


def test_a_hub_dataset_that_cannot_be_opened_is_one_line(tmp_path):
    pytest.importorskip("datasets", reason="Hugging Face datasets: pip install -e '.[data]'")
    gpt2_tokenizer()  # load_dataset loads it before it opens the dataset
    with pytest.raises(UsageError, match=r"could not open the dataset hf:nobody/no-such-dataset \("):
        load_dataset(tmp_path, "hub", "hf:nobody/no-such-dataset", block_size=8, tokenizer="gpt2")
    for nameless in ("hf:", "hf::en"):
        with pytest.raises(UsageError, match=f"config.input_file={nameless} names no dataset: give hf:NAME or"):
            load_dataset(tmp_path, "hub", nameless, block_size=8, tokenizer="gpt2")
