"""tokenizers.py: characters, GPT-2's BPE and a BPE trained on a text, and the description that
restores each."""

import numpy as np
import pytest
from conftest import chinese_text, gpt2_tokenizer, load_dataset

import gptjax
from gptjax.tokenizers import from_description, token_bytes


def test_char_vocab_is_sorted_and_round_trips_any_unicode():
    text = "hello, 世界! 🙂\n"
    vocab = gptjax.CharVocab.from_text(text)
    assert vocab.chars == "".join(sorted(set(text))) and len(vocab) == len(set(text))
    ids = vocab.encode(text)
    assert ids.dtype == np.uint16 and ids.tolist() == [vocab.chars.index(c) for c in text]
    assert vocab.decode(ids) == text


def test_unknown_characters_are_named():
    with pytest.raises(ValueError, match=r"characters not in the vocabulary: 'yz'"):
        gptjax.CharVocab.from_text("abc").encode("abzcy")


def test_a_description_restores_the_same_tokenizer():
    vocab = gptjax.CharVocab.from_text("to be or not to be")
    restored = from_description(vocab.describe())
    assert restored.chars == vocab.chars
    assert restored.encode("be or not").tolist() == vocab.encode("be or not").tolist()
    gpt2 = gpt2_tokenizer()
    assert from_description(gpt2.describe()).encode("Hello").tolist() == gpt2.encode("Hello").tolist()


def test_gpt2_tokenizer_is_openais_bpe():
    tokenizer = gpt2_tokenizer()
    assert len(tokenizer) == 50257 and tokenizer.eot == 50256
    # the ids OpenAI's encoder gives (the tiktoken cache's README lists them)
    assert tokenizer.encode("Hello, I'm a language model,").tolist() == [15496, 11, 314, 1101, 257, 3303, 2746, 11]
    text = "Hello, I'm a language model, ünïcode 🙂 如何理解"
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_gpt2_dataset_preparation_uses_the_bpe(tmp_path):
    tokenizer = gpt2_tokenizer()
    corpus = tmp_path / "in.txt"
    corpus.write_text("Hello, I'm a language model. " * 50, encoding="utf-8")
    restored, splits = load_dataset(tmp_path, "bpe", str(corpus), 8, "gpt2")
    assert restored.describe() == {"kind": "gpt2"}
    tokens = np.concatenate([splits["train"], splits["val"]])
    np.testing.assert_array_equal(tokens, np.append(tokenizer.encode(corpus.read_text()), tokenizer.eot))


def test_text_streamed_a_token_at_a_time_keeps_characters_split_across_tokens_whole():
    gpt2 = gpt2_tokenizer()
    text = "如何理解gpt的原理 🙂 naïve\n"
    ids = gpt2.encode(text)
    assert "\ufffd" in "".join(gpt2.decode([i]) for i in ids)  # each token alone: broken characters
    stream = gptjax.IncrementalDecoder(gpt2)
    parts = [stream([i]) for i in ids]
    assert "".join(parts) == text and stream.flush() == ""
    assert "" in parts  # a token that ends within a character gives nothing yet
    stream(gpt2.encode("🙂")[:1])  # a text that stops within a character
    assert stream.flush() == "\ufffd" and stream(gpt2.encode("ok")) == "ok"  # then it starts over
    chars = gptjax.CharVocab.from_text(text)
    assert "".join(gptjax.IncrementalDecoder(chars)([i]) for i in chars.encode(text)) == text


# Texts a tokenizer must give back exactly, whether it saw them or not: Chinese, emoji (one with a
# joiner), combining marks, line breaks and tabs, scripts absent from the training text, and the
# end-of-text token's own spelling, which in a text is text.
ANY_TEXT = ["如何理解gpt的原理", "👩‍💻 🙂🇨🇳", "e\u0301 n\u0303 ǹ", "\n\n\t a\r\nb  ", "مرحبا नमस्ते Ωμέγα",
            "<|endoftext|>", "x"]


@pytest.fixture(scope="module")
def chinese_bpe() -> gptjax.BPETokenizer:
    return gptjax.BPETokenizer.train([chinese_text(100_000)], 600)


def test_bpe_round_trips_any_utf8_text(chinese_bpe):
    assert len(chinese_bpe) == 600 and chinese_bpe.eot == 599
    for text in ANY_TEXT:
        ids = chinese_bpe.encode(text)
        assert chinese_bpe.decode(ids) == text
        assert b"".join(chinese_bpe.pieces(ids)) == text.encode("utf-8")
        assert chinese_bpe.eot not in ids.tolist()


def test_bpe_merges_frequent_chinese_pieces(chinese_bpe):
    text = chinese_text(100_000)[50_000:52_000]
    ids = chinese_bpe.encode(text)
    assert len(text.encode("utf-8")) / len(ids) > 2.0  # bytes alone would be 1 a token
    assert any(len(piece) >= 6 for piece in chinese_bpe.pieces(ids))  # two characters or more in one token


def test_bpe_from_the_same_text_is_byte_identical(chinese_bpe):
    again = gptjax.BPETokenizer.train([chinese_text(100_000)], 600)
    assert again.serialized == chinese_bpe.serialized
    restored = from_description(chinese_bpe.describe())
    assert restored.encode(ANY_TEXT[0]).tolist() == chinese_bpe.encode(ANY_TEXT[0]).tolist()


def test_bpe_vocabulary_size_is_checked():
    with pytest.raises(gptjax.UsageError, match=r"at least 258 .* got 257"):
        gptjax.BPETokenizer.train(["hello hello"], 257)
    with pytest.raises(gptjax.UsageError, match=r"fills a vocabulary of only 2\d\d tokens.*vocab_size=2\d\d or less"):
        gptjax.BPETokenizer.train(["hello world, hello world"], 1000)


def test_token_bytes_count_each_tokens_utf8_bytes(chinese_bpe):
    vocab = gptjax.CharVocab.from_text("ab理")
    assert token_bytes(vocab).tolist() == [1, 1, 3]
    table = token_bytes(chinese_bpe)
    assert table[chinese_bpe.eot] == 0
    ids = chinese_bpe.encode("理解")
    assert [table[i] for i in ids] == [len(piece) for piece in chinese_bpe.pieces(ids)]
    gpt2 = gpt2_tokenizer()
    table = token_bytes(gpt2)
    assert table[gpt2.eot] == 0 and table[15496] == len("Hello") and table[11] == 1
