import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gptjax
from gptjax.generate import filter_logits
from conftest import tiny_config


def test_greedy_generate_equals_step_by_step_argmax_past_block_size():
    cfg = tiny_config(dropout=0.1)
    model = gptjax.GPT(cfg, rngs=nnx.Rngs(0))
    prompt = jax.random.randint(jax.random.key(0), (2, 5), 0, cfg.vocab_size)
    out = gptjax.generate(model, prompt, max_new_tokens=20, temperature=0.0)  # 25 > block_size 16
    model.eval()
    forward = nnx.jit(lambda m, idx: m(idx))
    expected = np.asarray(prompt)
    for _ in range(20):
        logits = forward(model, jnp.asarray(expected[:, -cfg.block_size:]))  # nanoGPT's crop
        expected = np.concatenate([expected, np.argmax(logits[:, -1], axis=-1)[:, None]], axis=1)
    np.testing.assert_array_equal(out, expected)


def test_top_k_keeps_exactly_the_k_largest_logits():
    logits = jax.random.normal(jax.random.key(0), (3, 50))
    filtered = filter_logits(logits, temperature=0.5, top_k=5)
    kept = np.isfinite(filtered)
    assert np.all(kept.sum(axis=1) == 5)
    top5 = np.argsort(np.asarray(logits), axis=1)[:, -5:]
    assert all(set(np.flatnonzero(kept[b])) == set(top5[b]) for b in range(3))
    np.testing.assert_allclose(filtered[kept], np.asarray(logits)[kept] / 0.5, rtol=1e-6)


def test_sampling_never_leaves_the_top_k_set_and_follows_the_seed(tiny_model):
    prompt = jnp.zeros((4, 1), jnp.int32)
    out = gptjax.generate(tiny_model, prompt, max_new_tokens=1, top_k=1, rng=jax.random.key(3))
    tiny_model.eval()
    np.testing.assert_array_equal(out[:, 1], jnp.argmax(tiny_model(prompt)[:, -1], axis=-1))
    a = gptjax.generate(tiny_model, prompt, 12, temperature=1.0, rng=jax.random.key(1))
    b = gptjax.generate(tiny_model, prompt, 12, temperature=1.0, rng=jax.random.key(1))
    c = gptjax.generate(tiny_model, prompt, 12, temperature=1.0, rng=jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-1.0), "temperature must be >= 0"),
    (dict(top_k=0), "top_k must be a positive integer"),
])
def test_bad_sampling_arguments_are_refused(tiny_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        gptjax.generate(tiny_model, jnp.zeros((1, 1), jnp.int32), 3, **kwargs)


def test_empty_prompt_is_refused(tiny_model):
    with pytest.raises(ValueError, match="length >= 1"):
        gptjax.generate(tiny_model, jnp.zeros((1, 0), jnp.int32), 3)
