"""The model against an independent reference: a GPT written out in plain numpy (float64) below,
from the definitions of each architecture option, given the model's own parameters. Both
attention paths and the KV-cache decoder, at every position, must give its logits."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from flax import nnx

import gptjax

_erf = np.vectorize(math.erf)


def _linear(x, layer):
    return x @ layer["kernel"] + layer.get("bias", 0.0)


def _norm(x, layer, cfg):  # layer: None for an RMSNorm without scale, which has no parameters
    if cfg.norm == "rmsnorm":
        x = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-5)
        return x * layer["scale"] if cfg.norm_scale else x
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    return x * layer["scale"] + layer.get("bias", 0.0)


def _rope(x_BxTxHxD):
    """Each pair (x_i, x_{i+D/2}) as the complex number x_i + j·x_{i+D/2}, turned by the angle
    t·10000^(-2i/D) at position t."""
    T, D = x_BxTxHxD.shape[1], x_BxTxHxD.shape[-1]
    angles_TxD2 = np.arange(T)[:, None] * 10000.0 ** (-2 * np.arange(D // 2) / D)
    z = (x_BxTxHxD[..., : D // 2] + 1j * x_BxTxHxD[..., D // 2:]) * np.exp(1j * angles_TxD2)[None, :, None, :]
    return np.concatenate([z.real, z.imag], axis=-1)


def _attention(x_BxTxC, layer, cfg):
    B, T, C = x_BxTxC.shape
    H, D = cfg.n_head, C // cfg.n_head
    q, k, v = (a.reshape(B, T, H, D) for a in np.split(_linear(x_BxTxC, layer["c_attn"]), 3, axis=-1))
    if cfg.qk_norm:
        q, k = (a / np.sqrt(np.mean(a * a, axis=-1, keepdims=True) + 1e-5) for a in (q, k))
    if cfg.position_encoding == "rope":
        q, k = _rope(q), _rope(k)
    scores_BxHxTxT = np.einsum("bthd,bshd->bhts", q, k) / math.sqrt(D)
    scores_BxHxTxT = np.where(np.tril(np.ones((T, T), bool)), scores_BxHxTxT, -np.inf)  # no looking ahead
    weights = np.exp(scores_BxHxTxT - scores_BxHxTxT.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    y_BxTxC = np.einsum("bhts,bshd->bthd", weights, v).reshape(B, T, C)
    return _linear(y_BxTxC, layer["c_proj"])


def _mlp(x, layer, cfg):
    h = _linear(x, layer["c_fc"])
    if cfg.mlp_activation == "relu2":
        h = np.maximum(h, 0) ** 2
    elif cfg.gelu_approximate:
        h = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    else:
        h = 0.5 * h * (1 + _erf(h / math.sqrt(2)))
    return _linear(h, layer["c_proj"])


def reference_logits(params, cfg, idx_BxT):
    """A GPT's next-token logits (B, T, V) in float64 numpy, from its parameters (nnx.to_pure_dict)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = p["wte"]["embedding"][idx_BxT]
    if cfg.position_encoding == "learned":
        x = x + p["wpe"]["embedding"][: idx_BxT.shape[1]]
    for i in range(cfg.n_layer):
        block = p["h"][i]
        x = x + _attention(_norm(x, block.get("ln_1"), cfg), block["attn"], cfg)
        x = x + _mlp(_norm(x, block.get("ln_2"), cfg), block["mlp"], cfg)
    x = _norm(x, p.get("ln_f"), cfg)
    logits = x @ (p["wte"]["embedding"].T if cfg.tie_embeddings else p["lm_head"]["kernel"])
    return cfg.logit_softcap * np.tanh(logits / cfg.logit_softcap) if cfg.logit_softcap else logits


def perturbed_model(cfg):
    """A model of cfg whose every parameter is moved off its initial value (scales off 1, biases
    off 0), so that a path that ignores a parameter shows."""
    model = gptjax.GPT(cfg, rngs=nnx.Rngs(0))
    model.eval()
    state = nnx.state(model, nnx.Param)
    rng = np.random.default_rng(1)
    pure = jax.tree.map(lambda a: a + 0.3 * rng.standard_normal(a.shape).astype(a.dtype), nnx.to_pure_dict(state))
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(model, state)
    return model, pure


OPTIONS = {
    "gpt2": dict(),
    "tanh gelu, no biases": dict(gelu_approximate=True, bias=False),
    "rope": dict(position_encoding="rope"),
    "rmsnorm": dict(norm="rmsnorm"),
    "rmsnorm without scale": dict(norm="rmsnorm", norm_scale=False),
    "qk_norm": dict(qk_norm=True),
    "relu2": dict(mlp_activation="relu2"),
    "untied head": dict(tie_embeddings=False),
    "soft-cap": dict(logit_softcap=2.0),
    "all at once": dict(position_encoding="rope", norm="rmsnorm", qk_norm=True, mlp_activation="relu2",
                        tie_embeddings=False, logit_softcap=2.0, bias=False),
}

decode = nnx.jit(lambda model, idx, cache, pos: model.decode(idx, cache, pos))


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_both_attention_paths_and_the_cache_at_every_position_match_a_numpy_gpt(options):
    idx_BxT = jax.random.randint(jax.random.key(0), (2, 8), 0, 23)
    expected = None
    for path in ("masked", "fast"):
        cfg = tiny_config(block_size=8, attention=path, **options)
        model, params = perturbed_model(cfg)
        expected = reference_logits(params, cfg, np.asarray(idx_BxT)) if expected is None else expected
        np.testing.assert_allclose(np.asarray(nnx.jit(lambda m, i: m(i))(model, idx_BxT)), expected,
                                   rtol=2e-4, atol=2e-4, err_msg=path)
    cache = model.init_cache(2)
    for t in range(idx_BxT.shape[1]):  # one token at a time: position t's keys join the cache
        logits_Bx1xV, cache = decode(model, idx_BxT[:, t:t + 1], cache, jnp.int32(t))
        np.testing.assert_allclose(np.asarray(logits_Bx1xV[:, 0]), expected[:, t], rtol=2e-4, atol=2e-4,
                                   err_msg=f"cached, position {t}")


def test_zero_initialised_projections_make_each_block_start_as_the_identity():
    cfg = tiny_config(zero_init_proj=True, block_size=8)
    model = gptjax.GPT(cfg, rngs=nnx.Rngs(0))
    model.eval()
    params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    for block in params["h"].values():
        for part in ("attn", "mlp"):
            assert not block[part]["c_proj"]["kernel"].any() and not block[part]["c_proj"]["bias"].any()
        assert block["attn"]["c_attn"]["kernel"].std() == pytest.approx(0.02, rel=0.2)  # the rest as GPT-2
    idx_BxT = np.arange(16).reshape(2, 8) % cfg.vocab_size
    # the residual stream passes every block unchanged: ln_f of the embeddings, then the head
    x = params["wte"]["embedding"][idx_BxT] + params["wpe"]["embedding"][:8]
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    expected = (x * params["ln_f"]["scale"] + params["ln_f"]["bias"]) @ params["wte"]["embedding"].T
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(idx_BxT))), expected, rtol=1e-5, atol=1e-5)
