"""attention.py: both paths equal a plain numpy softmax attention; the "auto" rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax import attention


def reference(q_BxHxTxD, k_BxHxSxD, v_BxHxSxD, mask_TxS):
    """softmax(q·kᵀ/√D) · v in float64 numpy, the masked scores dropped before the softmax."""
    q, k, v = (np.asarray(a, np.float64) for a in (q_BxHxTxD, k_BxHxSxD, v_BxHxSxD))
    scores = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
    scores = np.where(mask_TxS, scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (weights / weights.sum(axis=-1, keepdims=True)) @ v


def qkv(B=2, H=3, T=7, D=8, seed=0):
    return [jax.random.normal(k, (B, H, T, D)) for k in jax.random.split(jax.random.key(seed), 3)]


@pytest.mark.parametrize("T", [1, 7, 32])
def test_both_paths_equal_the_numpy_reference(T):
    q, k, v = qkv(T=T)
    expected = reference(q, k, v, np.tril(np.ones((T, T), bool)))
    masked = attention.masked_attention(q, k, v, attention.causal_mask(T))
    fast = attention.fast_attention(*(a.transpose(0, 2, 1, 3) for a in (q, k, v))).transpose(0, 2, 1, 3)
    np.testing.assert_allclose(masked, expected, atol=1e-5)
    np.testing.assert_allclose(fast, expected, atol=1e-5)


def test_causal_mask_lets_each_query_see_itself_and_the_past_only():
    np.testing.assert_array_equal(attention.causal_mask(4), np.tril(np.ones((4, 4), bool)))


def test_a_query_ignores_every_masked_key():
    q, k, v = qkv(T=6)
    mask_TxS = np.tril(np.ones((6, 6), bool))
    mask_TxS[4, 1] = False  # a hole, not only the future: any mask is honoured
    out = attention.masked_attention(q, k, v, mask_TxS)
    np.testing.assert_allclose(out, reference(q, k, v, mask_TxS), atol=1e-5)
    changed = np.asarray(attention.masked_attention(q, k, v.at[:, :, 1].set(100.0), mask_TxS))
    sees_key_1 = mask_TxS[:, 1]  # queries 1, 2, 3 and 5
    assert np.all(changed[:, :, ~sees_key_1] == np.asarray(out)[:, :, ~sees_key_1])
    assert np.all(np.abs(changed[:, :, sees_key_1] - np.asarray(out)[:, :, sees_key_1]).max(axis=-1) > 0)


def test_bfloat16_inputs_keep_float32_softmax_accuracy():
    q, k, v = qkv(T=16)
    expected = reference(q, k, v, np.tril(np.ones((16, 16), bool)))
    out = attention.masked_attention(*(a.astype(jnp.bfloat16) for a in (q, k, v)), attention.causal_mask(16))
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), expected, atol=0.05)


@pytest.mark.parametrize("requested, dropout_active, expected", [
    ("masked", False, "masked"),
    ("fast", False, "fast"),
    ("auto", True, "masked"),   # the fast path has no attention dropout
    ("auto", False, "masked"),  # on a CPU the masked path measured faster
])
def test_auto_takes_the_masked_path_without_cudnn(requested, dropout_active, expected):
    assert attention.resolve(requested, dropout_active=dropout_active, dtype=jnp.bfloat16, head_dim=64) == expected


def test_auto_takes_cudnn_where_it_applies(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    resolve = attention.resolve
    assert resolve("auto", dropout_active=False, dtype=jnp.bfloat16, head_dim=64) == "fast"
    assert resolve("auto", dropout_active=True, dtype=jnp.bfloat16, head_dim=64) == "masked"
    assert resolve("auto", dropout_active=False, dtype=jnp.float32, head_dim=64) == "masked"  # cuDNN: half only
    assert resolve("auto", dropout_active=False, dtype=jnp.bfloat16, head_dim=160) == "masked"  # D <= 128
    assert resolve("auto", dropout_active=False, dtype=jnp.bfloat16, head_dim=36) == "masked"  # D % 8 == 0
