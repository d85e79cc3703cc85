"""prepare.py: any corpus -> train.bin / val.bin, streamed, in pieces, on worker processes. The
GPT-2 cases use GPT-2's real BPE (the tiktoken cache conftest points at)."""

import itertools
import json
import multiprocessing
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import DOCUMENTS, gpt2_tokenizer, load_dataset, program_env, shakespeare

from gptjax import prepare, sources
from gptjax.errors import Interrupted, UsageError
from gptjax.tokenizers import CharVocab


def write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(text, encoding="utf-8")
    return path


def tokens_of(dataset_dir: pathlib.Path, dtype=np.uint16) -> tuple[np.ndarray, np.ndarray]:
    return tuple(np.fromfile(dataset_dir / f"{split}.bin", dtype) for split in ("train", "val"))


def write_corpus(tmp_path: pathlib.Path, layout: str, documents: list[str]) -> pathlib.Path:
    if layout == "jsonl":
        return write(tmp_path / "docs.jsonl", "".join(json.dumps({"text": d}) + "\n" for d in documents))
    if layout == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"id": list(range(len(documents))), "text": documents}), tmp_path / "docs.parquet")
        return tmp_path / "docs.parquet"
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, d in enumerate(documents):
        write(folder / f"{i:03d}.txt", d)
    return folder


@pytest.mark.parametrize("layout", ["jsonl", "folder", "parquet"])
def test_gpt2_preparation_puts_end_of_text_after_each_document(tmp_path, layout):
    gpt2 = gpt2_tokenizer()
    documents = DOCUMENTS * 10  # under prepare.MIN_DOCUMENTS: split by tokens, 90/10
    prepare.prepare(tmp_path / "out", write_corpus(tmp_path, layout, documents), tokenizer="gpt2")
    expected = np.concatenate([np.append(gpt2.encode(d), gpt2.eot) for d in documents])
    train, val = tokens_of(tmp_path / "out")
    np.testing.assert_array_equal(np.concatenate([train, val]), expected)
    assert len(train) == int(len(expected) * 0.9)


def test_many_documents_are_split_by_document(tmp_path):
    gpt2 = gpt2_tokenizer()
    documents = [f"document number {i}" for i in range(200)]
    corpus = write_corpus(tmp_path, "jsonl", documents)
    prepare.prepare(tmp_path / "out", corpus, tokenizer="gpt2", val_fraction=0.05)
    train, val = tokens_of(tmp_path / "out")
    assert gpt2.decode(val) == "<|endoftext|>".join(documents[-10:]) + "<|endoftext|>"  # the last 5%
    assert gpt2.decode(train).endswith("document number 189<|endoftext|>")
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["documents"] == 200 and meta["tokens"]["val"] == len(val)
    assert not list((tmp_path / "out").glob("*.tmp"))  # the document ends were kept in a file until the split


def test_val_takes_whole_documents_but_leaves_train_at_least_one(tmp_path):
    documents = [f"doc {i:03d};" for i in range(prepare.MIN_DOCUMENTS)]
    chars = prepare.prepare(tmp_path / "out", write_corpus(tmp_path, "jsonl", documents), val_fraction=0.999)
    train, val = tokens_of(tmp_path / "out")
    assert chars.decode(train) == "doc 000;" and chars.decode(val) == "".join(documents[1:])


@pytest.mark.parametrize("tokenizer", ["gpt2", "char"])
def test_a_long_text_cut_into_pieces_on_two_workers_tokenizes_as_a_whole(tmp_path, monkeypatch, tokenizer):
    gpt2 = gpt2_tokenizer() if tokenizer == "gpt2" else None
    monkeypatch.setattr(sources, "PIECE_BYTES", 20_000)  # Shakespeare's first 300 kB: 15 tasks
    corpus = write(tmp_path / "in.txt", shakespeare().read_text(encoding="utf-8")[:300_000])
    prepare.prepare(tmp_path / "two", corpus, tokenizer, num_proc=2)
    prepare.prepare(tmp_path / "one", corpus, tokenizer, num_proc=1)
    two, one = tokens_of(tmp_path / "two"), tokens_of(tmp_path / "one")
    text = corpus.read_text(encoding="utf-8")
    expected = (np.append(gpt2.encode(text), gpt2.eot) if gpt2 else
                np.frombuffer(text.encode("utf-32-le"), np.uint32))
    got = np.concatenate(two)
    if tokenizer == "char":
        chars = sorted(set(text))
        got = np.asarray([ord(chars[i]) for i in got], np.uint32)
    np.testing.assert_array_equal(got, expected)
    for a, b in zip(two, one, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_lone_surrogate_in_a_jsonl_record_is_written_as_the_replacement_character_as_tiktoken_does(tmp_path):
    gpt2 = gpt2_tokenizer()
    corpus = tmp_path / "docs.jsonl"  # half a pair, two halves the wrong way round, a pair JSON joins into one
    corpus.write_text('{"text": "half \\ud83d a pair"}\n{"text": "\\ude00\\ud83d, a whole \\ud83d\\ude00"}\n')
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    assert texts[1][-1] == "\U0001F600"
    tokens = {}
    for tokenizer in ("char", "gpt2"):
        encoder = prepare.prepare(tmp_path / tokenizer, corpus, tokenizer)
        tokens[tokenizer] = np.concatenate(tokens_of(tmp_path / tokenizer, encoder.dtype))
        if tokenizer == "char":
            assert encoder.decode(tokens["char"]) == "half \ufffd a pair\ufffd\ufffd, a whole \U0001F600"
    assert tokens["gpt2"].tolist() == [t for text in texts for t in [*gpt2.encode(text), gpt2.eot]]  # tiktoken's


def test_a_preparation_that_fails_half_way_leaves_nothing_that_passes_as_complete(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "PIECE_BYTES", 64)
    corpus = write_corpus(tmp_path, "jsonl", DOCUMENTS * 20)
    prepare.prepare(tmp_path / "out", corpus)
    with open(corpus, "a") as f:  # the corpus grows, with a bad record many tasks in
        f.write('{"text": "more"}\n' * 20 + '{"text": ["no"]}\n')
    with pytest.raises(UsageError, match="line 81: 'text' is list"):
        prepare.prepare(tmp_path / "out", corpus)
    assert not (tmp_path / "out" / "meta.json").exists() and not list((tmp_path / "out").glob("*.tmp"))
    with pytest.raises(UsageError, match="has meta.json|no text|prepare"):  # the old data is not used either
        load_dataset(tmp_path, "out", "", block_size=8)


def files_of(dataset_dir: pathlib.Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(dataset_dir.iterdir())}


@pytest.mark.parametrize("how", ["a signal", "Ctrl-C"])
def test_an_interrupted_preparation_continues_where_it_stopped_and_makes_the_same_files(tmp_path, monkeypatch, how):
    monkeypatch.setattr(sources, "PIECE_BYTES", 64)
    documents = [f"document {i}: {DOCUMENTS[i % 3]}" for i in range(400)]
    corpus = write_corpus(tmp_path, "jsonl", documents)
    prepare.prepare(tmp_path / "whole", corpus, "gpt2", val_fraction=0.05, num_proc=1)
    encoded, encode, interrupted = [], prepare._encode, []

    def counting_encode(task, tokenizer=None):
        encoded.append(task)
        if how == "Ctrl-C" and len(encoded) == 30 and not interrupted:
            interrupted.append(task)
            raise KeyboardInterrupt  # while the 30th task is encoded: 29 are done
        return encode(task, tokenizer)

    monkeypatch.setattr(prepare, "_encode", counting_encode)
    stopped = (lambda: "SIGTERM received" if len(encoded) >= 30 else None) if how == "a signal" else None
    with pytest.raises(Interrupted, match=rf"^{'SIGTERM received' if how == 'a signal' else 'Ctrl-C'}: the "
                                          rf"preparation of {tmp_path}/out stopped after 0 MB of text, which are "
                                          "kept: run it again to continue from there$"):
        prepare.prepare(tmp_path / "out", corpus, "gpt2", val_fraction=0.05, num_proc=1, stopped=stopped)
    assert not (tmp_path / "out" / "meta.json").exists()
    with open(tmp_path / "out" / "all.bin.tmp", "ab") as f:
        f.write(b"\x01")  # half a token, as a kill during a write leaves it: cut off, not trusted
    # and half a record of how far it got, as a kill while it was written leaves it: not left behind
    (tmp_path / "out" / (prepare.SO_FAR + ".tmp")).write_text('{"fingerprint": "d49e')
    n_done, lines = 29 if how == "Ctrl-C" else 30, []
    encoded.clear()
    prepare.prepare(tmp_path / "out", corpus, "gpt2", lines.append, val_fraction=0.05, num_proc=1)
    assert lines[0].startswith(f"continuing the preparation of {tmp_path}/out where it stopped, after 0 MB of text")
    assert encoded and len(encoded) == len(list(prepare._tasks(sources.Reader(corpus)))) - n_done
    assert files_of(tmp_path / "out") == files_of(tmp_path / "whole")  # and no .tmp or record left


def test_a_continued_preparation_opens_no_shard_it_had_finished(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "PIECE_BYTES", 64)
    corpus = tmp_path / "shards"
    corpus.mkdir()
    for shard in range(4):
        write(corpus / f"{shard}.jsonl", "".join(json.dumps({"text": f"shard {shard} document {i}: {DOCUMENTS[i % 3]}"})
                                               + "\n" for i in range(30)))
    prepare.prepare(tmp_path / "whole", corpus, "gpt2", num_proc=1)
    results = itertools.count(1)
    with pytest.raises(Interrupted, match="SIGTERM received"):  # in the third shard
        prepare.prepare(tmp_path / "out", corpus, "gpt2", num_proc=1,
                        stopped=lambda: "SIGTERM received" if next(results) == 38 else None)
    assert json.loads((tmp_path / "out" / prepare.SO_FAR).read_text())["position"] == {"file": 2, "pieces": 16}
    opened, open_shard = [], sources._open
    monkeypatch.setattr(sources, "_open", lambda path: opened.append(path.name) or open_shard(path))
    prepare.prepare(tmp_path / "out", corpus, "gpt2", num_proc=1)
    assert opened == ["2.jsonl", "3.jsonl"]
    assert files_of(tmp_path / "out") == files_of(tmp_path / "whole")


def test_a_preparation_stopped_twice_anywhere_in_a_mixed_folder_makes_the_same_files(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "PIECE_BYTES", 16)  # tasks of a piece or two: a stop at every boundary
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus = tmp_path / "mixed"
    corpus.mkdir()
    write(corpus / "0.txt", "many words on many lines\n" * 12)  # one document in many pieces
    write(corpus / "1.jsonl", "".join(json.dumps({"text": f"{i} {DOCUMENTS[i % 3]}"}) + "\n" for i in range(9)))
    write(corpus / "2.jsonl", "")  # no document at all
    pq.write_table(pa.table({"text": [f"row {i} {DOCUMENTS[i % 3]}" for i in range(7)]}), corpus / "3.parquet")
    write(corpus / "4.txt", "short")
    prepare.prepare(tmp_path / "whole", corpus, "gpt2", num_proc=1)
    n_tasks = sum(1 for _ in prepare._tasks(sources.Reader(corpus)))
    for first_stop in range(1, n_tasks + 1):
        out = tmp_path / f"stopped_after_{first_stop}"
        # then again two tasks into the continued run, where two are left
        for stop in (first_stop, 2) if n_tasks - first_stop >= 2 else (first_stop,):
            results = itertools.count(1)
            with pytest.raises(Interrupted, match="^stop: "):
                prepare.prepare(out, corpus, "gpt2", num_proc=1,
                                stopped=lambda stop=stop, results=results: "stop" if next(results) == stop else None)
        prepare.prepare(out, corpus, "gpt2", num_proc=1)
        assert files_of(out) == files_of(tmp_path / "whole"), f"stopped after task {first_stop}"
    assert n_tasks > 25


@pytest.mark.parametrize("source", ["a Hub stream", "a saved dataset"])
def test_a_continued_preparation_of_a_dataset_reads_no_record_again(tmp_path, monkeypatch, source):
    datasets = pytest.importorskip("datasets", reason="Hugging Face datasets: pip install -e '.[data]'")
    monkeypatch.setattr(sources, "PIECE_BYTES", 64)
    documents = [f"record {i}: {DOCUMENTS[i % 3]}" for i in range(300)]
    if source == "a Hub stream":  # three parquet shards streamed as load_dataset streams a Hub dataset's
        for shard in range(3):
            write_corpus(tmp_path, "parquet", documents[100 * shard:100 * (shard + 1)]).rename(tmp_path / f"{shard}.pq")
        shards, load = [str(tmp_path / f"{shard}.pq") for shard in range(3)], datasets.load_dataset
        monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: load(
            "parquet", data_files=shards, split="train", streaming=True))
        corpus = "hf:some/corpus"
    else:
        datasets.Dataset.from_dict({"text": documents}).save_to_disk(tmp_path / "saved")
        corpus = tmp_path / "saved"
    prepare.prepare(tmp_path / "whole", corpus, "gpt2", num_proc=1)
    read, rows = [], sources._hf_rows
    monkeypatch.setattr(sources, "_hf_rows", lambda source: rows(source).map(lambda r: read.append(r) or r))
    results = itertools.count(1)
    with pytest.raises(Interrupted, match="SIGTERM received"):
        prepare.prepare(tmp_path / "out", corpus, "gpt2", num_proc=1,
                        stopped=lambda: "SIGTERM received" if next(results) == 40 else None)
    kept = json.loads((tmp_path / "out" / prepare.SO_FAR).read_text())
    assert 100 < kept["position"]["records"] == kept["documents"] < 200
    read.clear()
    prepare.prepare(tmp_path / "out", corpus, "gpt2", num_proc=1)
    assert [r["text"] for r in read] == documents[kept["documents"]:]  # datasets' state_dict: none read again
    assert files_of(tmp_path / "out") == files_of(tmp_path / "whole")
    # a state written by another version of datasets is not trusted: the stream is read up to there again
    with pytest.raises(Interrupted, match="SIGTERM received"):
        prepare.prepare(tmp_path / "again", corpus, "gpt2", num_proc=1, stopped=lambda: "SIGTERM received")
    record = json.loads((tmp_path / "again" / prepare.SO_FAR).read_text())
    (tmp_path / "again" / prepare.SO_FAR).write_text(json.dumps(record | {"position": record["position"] | {
        "datasets": "0.1"}}))
    read.clear()
    prepare.prepare(tmp_path / "again", corpus, "gpt2", num_proc=1)
    assert [r["text"] for r in read] == documents
    assert files_of(tmp_path / "again") == files_of(tmp_path / "whole")


# prepare.py with its record of how far it got written after every task, and small tasks: many of them
PREPARE_KEEPING_ALL = ("import sys; from gptjax import prepare, sources; prepare.KEEP_SECONDS = 0; "
                       "sources.PIECE_BYTES = 1 << 15; prepare.main(['prepare.py', *sys.argv[1:]])")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_prepare_py_stopped_by_a_signal_to_its_process_group_is_continued_by_the_next_run(tmp_path, monkeypatch,
                                                                                          signum):
    text = shakespeare().read_text(encoding="utf-8")
    corpus = write_corpus(tmp_path, "jsonl", [text[i:i + 4000] for i in range(0, len(text), 4000)] * 2)
    monkeypatch.setattr(sources, "PIECE_BYTES", 1 << 15)
    prepare.prepare(tmp_path / "whole", corpus, "gpt2", val_fraction=0.01, num_proc=2)
    out = tmp_path / "data" / "owt"
    command = [sys.executable, "-c", PREPARE_KEEPING_ALL, "--config", "gpt2", f"--config.input_file={corpus}",
               f"--config.data_dir={tmp_path / 'data'}", "--config.dataset=owt", "--config.val_fraction=0.01",
               "--config.num_proc=2"]
    run = subprocess.Popen(command, env=program_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)  # its own process group, as a terminal's or a job's
    deadline = time.monotonic() + 60
    while json.loads(read_or(out / prepare.SO_FAR, "{}")).get("tasks", 0) < 2:
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.005)
    os.killpg(run.pid, signum)  # the workers get it too
    _, stderr = run.communicate(timeout=60)
    assert not (out / "meta.json").exists()  # stopped part way
    if signum == signal.SIGKILL:
        assert run.returncode == -signal.SIGKILL
    else:
        why = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM received"
        assert run.returncode == 1 and stderr.splitlines()[-1:] == [
            f"prepare.py: error: {why}: the preparation of {out} stopped after "
            f"{json.loads((out / prepare.SO_FAR).read_text())['bytes'] / 1e6:,.0f} MB of text, which are kept: run it "
            "again to continue from there"]
    lines = []
    prepare.prepare(out, corpus, "gpt2", lines.append, val_fraction=0.01, num_proc=2)
    assert lines[0].startswith(f"continuing the preparation of {out} where it stopped")
    assert files_of(out) == files_of(tmp_path / "whole")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads which signals a process ignores in /proc")
def test_tokenizing_workers_outlive_the_signals_that_reach_their_process_group(tmp_path, monkeypatch):
    # A terminal's Ctrl-C and a scheduler's SIGTERM reach every process of the group. The main
    # process decides: train.py saves at its next step, prepare.py keeps the work done; a worker
    # that died of it would end the preparation as a crash.
    monkeypatch.setattr(sources, "PIECE_BYTES", 1 << 12)
    tokenizer = gpt2_tokenizer()
    tasks = list(prepare._tasks(sources.Reader(write(tmp_path / "in.txt", shakespeare().read_text()[:200_000]))))
    results = prepare._encoded(iter(tasks), tokenizer, 2)
    first = next(results)
    workers = multiprocessing.active_children()
    deadline = time.monotonic() + 30
    while not all({signal.SIGINT, signal.SIGTERM} <= ignored_signals(w.pid) for w in workers):
        assert time.monotonic() < deadline  # a worker is spawned and set up after it is listed
        time.sleep(0.01)
    for worker in workers:
        os.kill(worker.pid, signal.SIGINT)
        os.kill(worker.pid, signal.SIGTERM)
    got = [first, *results]
    assert len(workers) == 2 and len(got) == len(tasks)
    for (tokens, ends, size, position), (task, task_position) in zip(got, tasks, strict=True):
        want = prepare._encode(task, tokenizer)
        assert np.array_equal(tokens, want[0]) and np.array_equal(ends, want[1]) and size == want[2]
        assert position == task_position  # each result with where its task ends in the corpus


def ignored_signals(pid: int) -> set[int]:
    """The signals process pid ignores, from the SigIgn mask (hexadecimal; bit n-1: signal n) in /proc."""
    status = read_or(pathlib.Path(f"/proc/{pid}/status"), "SigIgn: 0")
    mask = int(status.split("SigIgn:")[1].split()[0], 16)
    return {signum for signum in range(1, 65) if mask >> (signum - 1) & 1}


def read_or(path: pathlib.Path, default: str) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return default


def test_work_kept_from_another_corpus_is_not_continued(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "PIECE_BYTES", 64)
    corpus = write(tmp_path / "in.txt", "many words, many lines\n" * 200)
    results = itertools.count(1)
    with pytest.raises(Interrupted, match="SIGTERM received"):
        prepare.prepare(tmp_path / "out", corpus, stopped=lambda: "SIGTERM received" if next(results) > 3 else None)
    assert (tmp_path / "out" / prepare.SO_FAR).is_file()
    write(corpus, "other words, other lines\n" * 200)  # edited between the runs: prepared from its start
    lines, record_seen = [], []
    prepare.prepare(tmp_path / "out", corpus, announce=lines.append,
                    stopped=lambda: record_seen.append((tmp_path / "out" / prepare.SO_FAR).exists()))
    prepare.prepare(tmp_path / "fresh", corpus)
    assert not any(line.startswith("continuing") for line in lines)
    assert record_seen[0] is False  # the old record is dropped as the run starts: a kill then cannot revive it
    assert files_of(tmp_path / "out")["train.bin"] == files_of(tmp_path / "fresh")["train.bin"]
    assert prepare.SO_FAR not in files_of(tmp_path / "out")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full, a device that is always full")
def test_a_full_disk_is_one_line_and_leaves_no_half_written_file(tmp_path):
    corpus = write_corpus(tmp_path, "jsonl", DOCUMENTS * 40)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "all.bin.tmp").symlink_to("/dev/full")  # every write there fails with ENOSPC
    with pytest.raises(UsageError, match=rf"the disk of {tmp_path}/out is full \(.* tokens were written\): free"):
        prepare.prepare(tmp_path / "out", corpus)
    assert list((tmp_path / "out").iterdir()) == []


def test_preparation_is_skipped_when_up_to_date_and_redone_when_the_text_changes(tmp_path, monkeypatch):
    corpus = write(tmp_path / "in.txt", "abcdefgh" * 10)
    prepare.prepare(tmp_path, corpus)
    before = (tmp_path / "train.bin").stat().st_mtime_ns
    os.utime(tmp_path / "train.bin", ns=(before - 10**9, before - 10**9))  # so a rewrite would show
    prepare.prepare(tmp_path, corpus)
    assert (tmp_path / "train.bin").stat().st_mtime_ns == before - 10**9
    vocab = prepare.prepare(tmp_path, write(corpus, "xyz" * 30))  # same size, new content
    assert vocab.chars == "xyz" and (tmp_path / "train.bin").stat().st_size == int(90 * 0.9) * 2
    # a corpus too large to hash (here: any) is known by its files' sizes and modification times
    monkeypatch.setattr(prepare, "CONTENT_HASH_LIMIT", 0)
    prepare.prepare(tmp_path, corpus)
    os.utime(tmp_path / "train.bin", ns=(before - 10**9, before - 10**9))
    prepare.prepare(tmp_path, corpus)
    assert (tmp_path / "train.bin").stat().st_mtime_ns == before - 10**9
    os.utime(corpus, ns=(before + 10**9, before + 10**9))
    prepare.prepare(tmp_path, corpus)
    assert (tmp_path / "train.bin").stat().st_mtime_ns != before - 10**9


def test_large_vocabularies_use_uint32_ids(tmp_path):
    text = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 70000) if not 0xD800 <= c <= 0xDFFF)
    vocab = prepare.prepare(tmp_path, write(tmp_path / "in.txt", text))
    assert len(vocab) > 2**16 and vocab.dtype == np.uint32
    assert vocab.decode(np.fromfile(tmp_path / "val.bin", np.uint32)) == text[int(len(text) * 0.9):]


def test_preparing_says_what_it_made_once(tmp_path):
    lines = []
    corpus = write(tmp_path / "in.txt", "abcdefghij" * 20)
    load_dataset(tmp_path / "d", "tiny", str(corpus), 8, announce=lines.append)
    load_dataset(tmp_path / "d", "tiny", str(corpus), 8, announce=lines.append)  # up to date: silent
    assert lines == [f"prepared {tmp_path}/d/tiny from {corpus}: char tokenizer, vocabulary 10, 1 document, 180 "
                     "train and 20 val tokens"]  # and its size and speed when it took a second or more


def test_the_prepare_program_prepares_a_recipes_dataset(tmp_path, capsys):
    corpus = write(tmp_path / "in.txt", "abcdefghij" * 20)
    prepare.main(["prepare.py", "--config", "char_cpu", f"--config.input_file={corpus}",
                  f"--config.data_dir={tmp_path}", "--config.dataset=tiny", "--config.block_size=8"])
    assert "prepared " in capsys.readouterr().out and (tmp_path / "tiny" / "meta.json").is_file()
    for option, message in (("val_fraction=1.5", "val_fraction must be between 0 and 1"),
                            ("num_proc=-2", r"num_proc must be 0 \(one worker per CPU\) or more, got -2")):
        with pytest.raises(SystemExit, match=message):
            prepare.main(["prepare.py", "--config", "char_cpu", f"--config.input_file={corpus}",
                          f"--config.data_dir={tmp_path}", "--config.dataset=tiny2", f"--config.{option}"])


def test_hugging_face_datasets_saved_to_disk_are_read_record_by_record(tmp_path):
    datasets = pytest.importorskip("datasets", reason="Hugging Face datasets: pip install -e '.[data]'")
    gpt2 = gpt2_tokenizer()
    documents = DOCUMENTS * 5
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"body": documents, "n": list(range(15))})}
                         ).save_to_disk(tmp_path / "saved")
    prepare.prepare(tmp_path / "out", tmp_path / "saved", tokenizer="gpt2", text_key="body")
    train, val = tokens_of(tmp_path / "out")
    assert gpt2.decode(np.concatenate([train, val])) == "<|endoftext|>".join(documents) + "<|endoftext|>"
    with pytest.raises(UsageError, match=r"saved, record 1: 'n' is int, not a string"):
        prepare.prepare(tmp_path / "out", tmp_path / "saved", tokenizer="gpt2", text_key="n")
    with pytest.raises(UsageError, match=r"saved, record 1: no 'text' field"):
        prepare.prepare(tmp_path / "out", tmp_path / "saved", tokenizer="gpt2")


def test_num_proc_0_starts_a_worker_per_cpu_this_process_may_use(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)  # as under taskset -c 3
    monkeypatch.setattr(prepare, "_encoded", lambda tasks, tokenizer, num_proc: asked.append(num_proc) or iter(()))
    with pytest.raises(UsageError, match="is empty"):  # no tokens came back: nothing else to check
        prepare.prepare(tmp_path / "out", write(tmp_path / "in.txt", "some text"), num_proc=0)
    assert asked == [1]


@pytest.mark.parametrize("num_proc", [1, 2])
def test_tasks_are_read_as_they_are_encoded_never_all_at_once(num_proc):
    pulled = []

    def tasks():
        for i in range(50):
            pulled.append(i)
            yield [("word " * 10, True)], {"file": 0, "pieces": i + 1}

    encoded = prepare._encoded(tasks(), CharVocab("dorw "), num_proc)
    next(encoded)
    assert len(pulled) <= 2 * num_proc + 1  # the tasks in flight, not the corpus
    assert sum(1 for _ in encoded) == 49


@pytest.mark.parametrize("program", [["prepare.py"], ["-m", "gptjax.prepare"]], ids=["clone's script", "module"])
def test_the_readmes_preparation_runs_its_worker_processes_from_the_clones_script_and_as_a_module(tmp_path, program):
    gpt2_tokenizer()  # GPT-2's BPE files, or a skip
    owt = tmp_path / "owt"
    owt.mkdir()
    for name in ("a", "b"):  # 5 MB: more than one task of sources.PIECE_BYTES, so the workers take them
        (owt / f"{name}.txt").write_text(f"document {name}: the quick brown fox jumps over the lazy dog.\n" * 40_000)
    result = subprocess.run(
        [sys.executable, *program, "--config", "configs/gpt2.py", f"--config.input_file={owt}", "--config.num_proc=2",
         f"--config.data_dir={tmp_path / 'data'}"], cwd=pathlib.Path(__file__).parent.parent, env=program_env(),
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"prepared {tmp_path / 'data' / 'openwebtext'} from {owt}: gpt2 tokenizer")


def test_a_bpe_learns_from_the_text_before_val_and_ends_each_document(tmp_path, monkeypatch):
    documents = [f"文档{i}：如何理解gpt的原理，输入和目标错开一个字。" * 3 for i in range(120)]
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in documents), encoding="utf-8")
    learned = "".join(prepare._training_text(corpus, "text", 0.1))
    everything = "".join(documents)
    assert everything.startswith(learned)
    assert len(learned.encode()) == int(0.9 * len(everything.encode()))
    monkeypatch.setattr(prepare, "BPE_TRAINING_BYTES", 1000)  # a corpus larger than what a BPE learns from
    assert len("".join(prepare._training_text(corpus, "text", 0.1)).encode()) in (998, 999, 1000)  # whole characters

    tokenizer = prepare.prepare(tmp_path / "bpe", corpus, "bpe", num_proc=2, bpe_vocab_size=300)
    meta = json.loads((tmp_path / "bpe/meta.json").read_text())
    assert meta["tokenizer"]["kind"] == "bpe" and len(tokenizer) == 300
    tokens = np.concatenate([np.fromfile(tmp_path / f"bpe/{split}.bin", np.uint16) for split in ("train", "val")])
    assert tokenizer.decode(tokens) == "".join(d + "<|endoftext|>" for d in documents)
    # the same text and settings again: up to date, not prepared again
    again = prepare.prepare(tmp_path / "bpe", corpus, "bpe", num_proc=1, bpe_vocab_size=300)
    assert again.serialized == tokenizer.serialized


def test_a_prepared_bpe_never_learns_from_the_validation_text(tmp_path):
    # "zq" occurs only in the last tenth, val.bin's text: a BPE that saw it would merge it first
    train_text = "如何理解gpt的原理，输入和目标错开一个字。" * 400
    corpus = tmp_path / "text.txt"
    corpus.write_text(train_text + "zqzqzqzq " * (len(train_text.encode()) // 9 // 9), encoding="utf-8")
    tokenizer = prepare.prepare(tmp_path / "bpe", corpus, "bpe", num_proc=1, bpe_vocab_size=300)
    pieces = tokenizer.pieces(range(len(tokenizer)))
    assert not [piece for piece in pieces if b"z" in piece and len(piece) > 1]
    assert [piece for piece in pieces if "理解".encode() in piece]  # what the training text repeats is merged
