"""data.py: a dataset on disk -> (input, target) batches; and how load_dataset finds, downloads and
checks the text it prepares."""

import json
import pathlib

import numpy as np
import pytest
from conftest import load_dataset, shakespeare

import gptjax
from gptjax import data, sources
from gptjax.errors import UsageError


def test_seed_example_input_is_text_and_target_is_text_shifted_by_one():
    text = "如何理解gpt的原理"
    vocab = gptjax.CharVocab.from_text(text)
    x, y = gptjax.input_target_windows(vocab.encode(text), starts=[0], block_size=len(text) - 1)
    assert vocab.decode(x[0]) == "如何理解gpt的原"
    assert vocab.decode(y[0]) == "何理解gpt的原理"


def test_windows_pair_each_token_with_its_successor():
    tokens = np.arange(100, dtype=np.uint16)
    x, y = gptjax.input_target_windows(tokens, starts=[0, 10, 89], block_size=10)
    assert x.shape == y.shape == (3, 10) and x.dtype == np.int32
    np.testing.assert_array_equal(x[1], np.arange(10, 20))
    np.testing.assert_array_equal(y, x + 1)


def write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_prepared_files_round_trip_and_split_90_10(tmp_path):
    text = "To be, or not to be: 生きるべきか 🙂\n" * 40
    vocab, splits = load_dataset(tmp_path, "tiny", str(write(tmp_path / "in.txt", text)), block_size=8)
    assert vocab.decode(np.concatenate([splits["train"], splits["val"]])) == text
    assert len(splits["train"]) == int(len(text) * 0.9)
    meta = json.loads((tmp_path / "tiny" / "meta.json").read_text(encoding="utf-8"))
    assert meta["tokenizer"] == {"kind": "char", "chars": vocab.chars}


def test_real_shakespeare_matches_nanogpts_preparation(tmp_path):
    vocab, splits = load_dataset(tmp_path, "shakespeare_char", str(shakespeare()), block_size=256)
    # nanoGPT's data/shakespeare_char/prepare.py prints these numbers
    assert len(vocab) == 65 and vocab.chars[:3] == "\n !"
    assert (len(splits["train"]), len(splits["val"])) == (1_003_854, 111_540)


def test_random_batches_are_shifted_windows_determined_by_seed_and_stream():
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = data.random_batch(tokens, 8, 32, 1337, 0, 5)
    np.testing.assert_array_equal(y, x + 1)
    assert np.all(np.diff(x, axis=1) == 1) and x.max() < 999
    again = data.random_batch(tokens, 8, 32, 1337, 0, 5)
    np.testing.assert_array_equal(x, again[0])
    assert not np.array_equal(x, data.random_batch(tokens, 8, 32, 1337, 0, 6)[0])
    assert not np.array_equal(x, data.random_batch(tokens, 8, 32, 1338, 0, 5)[0])


def test_prefetch_keeps_order_and_passes_errors_on():
    assert [int(b) for b in data.prefetch(iter(range(5)))] == list(range(5))

    def failing():
        yield np.zeros(2)
        raise RuntimeError("bad batch")

    batches = data.prefetch(failing())
    next(batches)
    with pytest.raises(RuntimeError, match="bad batch"):
        next(batches)


def test_missing_corpus_offline_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "SHAKESPEARE_URL", "http://127.0.0.1:9/input.txt")  # refused at once
    target = tmp_path / "shakespeare_char" / "input.txt"
    with pytest.raises(UsageError, match=f"input.txt \\(karpathy/char-rnn\\) at {target}"):
        load_dataset(tmp_path, "shakespeare_char", "", block_size=8)
    assert not target.exists()
    with pytest.raises(UsageError, match="no text for dataset 'mine'"):
        load_dataset(tmp_path, "mine", "", block_size=8)


def test_downloaded_corpus_with_wrong_checksum_is_refused(tmp_path, monkeypatch):
    fake = write(tmp_path / "fake.txt", "not shakespeare")
    monkeypatch.setattr(sources, "SHAKESPEARE_URL", fake.as_uri())
    with pytest.raises(UsageError, match="wrong sha256"):
        sources.download_shakespeare(tmp_path / "input.txt")
    assert not (tmp_path / "input.txt").exists()


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("short text", "val split of 'tiny' has 1 tokens, but block_size=8 needs at least 9: use a longer text, "
                   "a larger --config.val_fraction or a smaller block_size"),
])
def test_unusable_corpus_is_refused(tmp_path, text, message):
    with pytest.raises(UsageError, match=message):
        load_dataset(tmp_path, "tiny", str(write(tmp_path / "in.txt", text)), block_size=8)


def test_missing_input_file_is_named(tmp_path):
    with pytest.raises(UsageError, match="config.input_file .*nope.txt does not exist"):
        load_dataset(tmp_path, "tiny", str(tmp_path / "nope.txt"), block_size=8)


def test_dataset_prepared_with_another_tokenizer_is_refused(tmp_path):
    corpus = write(tmp_path / "in.txt", "abcdefghij" * 20)
    load_dataset(tmp_path, "tiny", str(corpus), 8, "char")
    with pytest.raises(UsageError, match="holds char tokens but the run asks for gpt2 tokens"):
        load_dataset(tmp_path, "tiny", "", 8, "gpt2")


def test_a_dataset_prepared_from_another_text_is_refused_unless_rebuilt(tmp_path):
    first, second = write(tmp_path / "first.txt", "abcdefghij" * 20), write(tmp_path / "small.txt", "xyz" * 30)
    load_dataset(tmp_path, "tiny", str(first), 8)
    with pytest.raises(UsageError, match=f"{tmp_path}/tiny was prepared from {first}, not from {second}: pass "
                                         "--config.dataset=small to prepare it as a dataset of its own"):
        load_dataset(tmp_path, "tiny", str(second), 8)
    # the dataset's own input.txt is the text a run without input_file names
    write(tmp_path / "tiny/input.txt", "0123456789" * 20)
    with pytest.raises(UsageError, match=f"prepared from {first}, not from its input.txt: pass "
                                         f"--config.input_file={first} to train on that text"):
        load_dataset(tmp_path, "tiny", "", 8)
    assert load_dataset(tmp_path, "tiny", str(first), 8)[0].chars == "abcdefghij"  # untouched
    vocab, _ = load_dataset(tmp_path, "tiny", str(second), 8, rebuild=True)
    assert vocab.chars == "xyz"
    (tmp_path / "tiny/input.txt").unlink()
    assert load_dataset(tmp_path, "tiny", "", 8)[0].chars == "xyz"  # nothing else named: used as it is


def test_messages_name_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = f"no text for dataset 'mine': put a UTF-8 text file at {tmp_path}/data/mine"
    with pytest.raises(UsageError, match=message) as error:
        load_dataset("data", "mine", "", block_size=8)
    assert "--config.input_file=hf:NAME (a Hugging Face Hub dataset" in str(error.value)  # how OpenWebText comes
    with pytest.raises(UsageError, match=f"config.input_file {tmp_path}/nope.txt does not exist"):
        load_dataset("data", "mine", "nope.txt", block_size=8)
