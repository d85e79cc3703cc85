import numpy as np
import pytest

import gptjax


def test_seed_example_input_is_text_and_target_is_text_shifted_by_one():
    text = "如何理解gpt的原理"
    vocab = gptjax.CharVocab.from_text(text)
    x, y = gptjax.input_target_windows(vocab.encode(text), starts=[0], block_size=len(text) - 1)
    assert vocab.decode(x[0]) == "如何理解gpt的原"
    assert vocab.decode(y[0]) == "何理解gpt的原理"


def test_char_vocab_is_sorted_and_round_trips_any_unicode():
    text = "hello, 世界! 🙂\n"
    vocab = gptjax.CharVocab.from_text(text)
    assert vocab.chars == "".join(sorted(set(text)))
    ids = vocab.encode(text)
    assert ids.dtype == np.uint16
    assert vocab.decode(ids) == text


def test_unknown_character_is_named():
    with pytest.raises(ValueError, match="'z'"):
        gptjax.CharVocab.from_text("abc").encode("abz")


def test_windows_pair_each_token_with_its_successor():
    tokens = np.arange(100, dtype=np.uint16)
    x, y = gptjax.input_target_windows(tokens, starts=[0, 10, 89], block_size=10)
    assert x.shape == y.shape == (3, 10) and x.dtype == np.int32
    np.testing.assert_array_equal(x[1], np.arange(10, 20))
    np.testing.assert_array_equal(y, x + 1)
