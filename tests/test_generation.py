import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import forward, gpt2_tokenizer, tiny_config
from flax import nnx

import gptjax
from gptjax.generation import filter_logits
from gptjax.tokenizers import INVALID, UTF8_BYTES_NEEDED, utf8_transitions


def eval_model(**overrides) -> gptjax.GPT:
    model = gptjax.GPT(tiny_config(**overrides), rngs=nnx.Rngs(0))
    model.eval()
    return model


def test_greedy_reference_equals_step_by_step_argmax_past_block_size():
    model = eval_model()
    prompt = jax.random.randint(jax.random.key(0), (2, 13), 0, 23)
    out = gptjax.generate_uncached(model, prompt, max_new_tokens=8, temperature=0.0)  # 21 > block 16
    expected = np.asarray(prompt)
    for _ in range(8):
        logits = forward(model, jnp.asarray(expected[:, -16:]))  # nanoGPT's crop
        expected = np.concatenate([expected, np.argmax(logits[:, -1], axis=-1)[:, None]], axis=1)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("prompt_length", [1, 5, 16, 21])
def test_cached_greedy_decoding_equals_the_uncached_reference(prompt_length):
    model = eval_model(dropout=0.1)  # generate turns dropout off itself
    model.train()
    prompt = jax.random.randint(jax.random.key(prompt_length), (3, prompt_length), 0, 23)
    cached = gptjax.generate(model, prompt, max_new_tokens=30, temperature=0.0)
    reference = gptjax.generate_uncached(model, prompt, max_new_tokens=30, temperature=0.0)
    np.testing.assert_array_equal(cached, reference)


@pytest.mark.parametrize("overflow_context", [16, 8, 1])
def test_cached_logits_equal_a_full_forward_pass_at_every_position(overflow_context):
    """Decode 40 tokens (block_size 16) step by step with the cache, as generate does, and compare
    each step's logits with a full forward pass over the tokens the cache holds."""
    model = eval_model()
    tokens = np.asarray(jax.random.randint(jax.random.key(1), (2, 41), 0, 23))
    decode = nnx.jit(lambda m, idx, cache, pos: m.decode(idx, cache, pos))
    logits, cache = decode(model, jnp.asarray(tokens[:, :3]), model.init_cache(2), 0)
    start, n_cached = 0, 3  # the cache holds tokens[start : start + n_cached] at positions 0..
    for t in range(3, 41):
        # the full pass over tokens[start:t], as the last position of a causal pass over a
        # block_size window from start (one compiled length instead of one per t)
        expected = forward(model, jnp.asarray(tokens[:, start:start + 16]))[:, t - start - 1]
        np.testing.assert_allclose(logits[:, -1], expected, atol=1e-5, err_msg=f"t={t}")
        if n_cached < 16:
            logits, cache = decode(model, jnp.asarray(tokens[:, t : t + 1]), cache, n_cached)
            n_cached += 1
        else:  # full: rebuild from the last overflow_context tokens
            start = t + 1 - overflow_context
            logits, cache = decode(model, jnp.asarray(tokens[:, start : t + 1]), cache, 0)
            n_cached = overflow_context


def test_overflow_context_only_matters_past_block_size():
    model = eval_model()
    prompt = jnp.zeros((1, 1), jnp.int32)
    exact = gptjax.generate(model, prompt, 14, temperature=0.0, overflow_context=8)
    reference = gptjax.generate_uncached(model, prompt, 14, temperature=0.0)
    np.testing.assert_array_equal(exact, reference)  # within block_size both see everything
    with pytest.raises(ValueError, match="overflow_context must be in"):
        gptjax.generate(model, prompt, 3, overflow_context=17)


def test_top_k_keeps_exactly_the_k_largest_logits():
    logits = jax.random.normal(jax.random.key(0), (3, 50))
    filtered = filter_logits(logits, temperature=0.5, top_k=5)
    kept = np.isfinite(filtered)
    assert np.all(kept.sum(axis=1) == 5)
    top5 = np.argsort(np.asarray(logits), axis=1)[:, -5:]
    assert all(set(np.flatnonzero(kept[b])) == set(top5[b]) for b in range(3))
    np.testing.assert_allclose(filtered[kept], np.asarray(logits)[kept] / 0.5, rtol=1e-6)


@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9, 1.0])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p):
    logits = jax.random.normal(jax.random.key(1), (4, 30)) * 2
    kept = np.isfinite(filter_logits(logits, 1.0, top_p=top_p))
    probs = np.asarray(jax.nn.softmax(logits))
    for b in range(4):
        order = np.argsort(-probs[b])
        cumulative = np.cumsum(probs[b][order])
        n_needed = int(np.searchsorted(cumulative, top_p) + 1) if top_p < 1 else 30
        assert set(np.flatnonzero(kept[b])) == set(order[:min(n_needed, 30)])


def test_sampling_never_leaves_the_kept_set():
    model = eval_model()
    prompt = jnp.zeros((64, 1), jnp.int32)
    logits = forward(model, prompt)[0, -1]
    for kwargs in (dict(top_k=3), dict(top_p=0.3), dict(top_k=5, top_p=0.5)):
        allowed = set(np.flatnonzero(np.isfinite(filter_logits(logits[None], 1.0, **kwargs)[0])))
        first = gptjax.generate(model, prompt, 1, rng=jax.random.key(7), **kwargs)[:, 1]
        assert set(np.asarray(first).tolist()) <= allowed, kwargs
        assert len(set(np.asarray(first).tolist())) > 1 or len(allowed) == 1


def test_the_same_seed_gives_the_same_text_and_different_seeds_differ():
    model = eval_model()
    prompt = jnp.zeros((4, 1), jnp.int32)
    a = gptjax.generate(model, prompt, 12, rng=jax.random.key(1))
    np.testing.assert_array_equal(a, gptjax.generate(model, prompt, 12, rng=jax.random.key(1)))
    assert not np.array_equal(a, gptjax.generate(model, prompt, 12, rng=jax.random.key(2)))
    np.testing.assert_array_equal(a, gptjax.generate_uncached(model, prompt, 12, rng=jax.random.key(1)))


def test_on_token_streams_each_step_in_order():
    model = eval_model()
    seen = []
    out = gptjax.generate(model, jnp.zeros((1, 2), jnp.int32), 9, temperature=0.0,
                          on_token=lambda tokens: seen.append(int(tokens[0])))
    jax.effects_barrier()
    assert seen == np.asarray(out)[0, 2:].tolist()


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-1.0), "temperature must be >= 0"),
    (dict(top_k=0), "top_k must be a positive integer"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
])
@pytest.mark.parametrize("sampler", [gptjax.generate, gptjax.generate_uncached])
def test_bad_sampling_arguments_are_refused(sampler, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sampler(eval_model(), jnp.zeros((1, 1), jnp.int32), 3, **kwargs)


def test_empty_prompt_is_refused():
    with pytest.raises(ValueError, match="length >= 1"):
        gptjax.generate(eval_model(), jnp.zeros((1, 0), jnp.int32), 3)


def test_cached_decoding_equals_the_uncached_reference_with_rope_and_every_option():
    model = eval_model(position_encoding="rope", norm="rmsnorm", qk_norm=True, mlp_activation="relu2",
                       tie_embeddings=False, logit_softcap=3.0)
    prompt = jax.random.randint(jax.random.key(3), (2, 5), 0, 23)
    cached = gptjax.generate(model, prompt, max_new_tokens=30, temperature=0.0)  # past block_size 16
    np.testing.assert_array_equal(cached, gptjax.generate_uncached(model, prompt, max_new_tokens=30, temperature=0.0))


def test_utf8_transitions_agree_with_pythons_strict_utf8_decoder():
    tokenizer = gpt2_tokenizer()
    table = utf8_transitions(tokenizer, 50304)
    assert (table[:, 50257:] == INVALID).all()  # the padding ids are never text
    pieces = tokenizer.pieces(range(len(tokenizer)))
    singles = [i for i, piece in enumerate(pieces) if len(piece) == 1]
    multi = [i for i, piece in enumerate(pieces) if len(piece) > 1][::97]
    rng = np.random.default_rng(0)
    for _ in range(3000):
        ids = rng.choice(singles if rng.random() < 0.7 else multi, size=rng.integers(1, 6))
        text = b"".join(tokenizer.pieces(ids))
        state = 0
        for i in ids:
            state = INVALID if state == INVALID else int(table[state, i])
        if state == 0:
            text.decode("utf-8")  # whole characters: Python decodes them
            continue
        with pytest.raises(UnicodeDecodeError):
            text.decode("utf-8")
        if state == INVALID:  # no bytes that may follow make it text
            for ending in (b"", b"\x80", b"\x80\x80", b"\xa0\x80\x80", b"\x90\x80\x80"):
                with pytest.raises(UnicodeDecodeError):
                    (text + ending).decode("utf-8")
        else:  # a character left open: the bytes it still needs close it
            first = {4: 0xA0, 6: 0x90}.get(state, 0x80)
            needed = int(UTF8_BYTES_NEEDED[state])
            (text + bytes([first] + [0x80] * (needed - 1))).decode("utf-8")


def test_byte_level_sampling_keeps_utf8_valid_streamed_and_whole_and_equals_the_reference():
    tokenizer = gpt2_tokenizer()
    model = eval_model(vocab_size=50257)  # untrained: it spreads its probability over every byte token
    utf8 = utf8_transitions(tokenizer, 50257)
    prompt = tokenizer.encode("如何理解")[None]
    streamed, parts = gptjax.IncrementalDecoder(tokenizer), []
    on_token = lambda ids: parts.append(streamed(ids))  # one function: generate compiles once
    for seed in range(3):
        parts.clear()
        out = gptjax.generate(model, prompt, 61, temperature=2.0, top_k=None, rng=jax.random.key(seed),
                              on_token=on_token, utf8=utf8)
        jax.effects_barrier()
        whole = tokenizer.decode(np.asarray(out[0]))
        assert "\ufffd" not in whole and whole.startswith("如何理解")
        assert "如何理解" + "".join(parts) + streamed.flush() == whole  # ends on a whole character
        reference = gptjax.generate_uncached(model, prompt, 61, temperature=2.0, top_k=None, rng=jax.random.key(seed),
                                             utf8=utf8)
        np.testing.assert_array_equal(out, reference)
