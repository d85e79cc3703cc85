import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gptjax
from gptjax.optim import decay_mask

LR, MIN_LR, WARMUP, DECAY_ITERS = 1e-3, 1e-4, 100, 5000


def nanogpt_get_lr(it):
    """nanoGPT train.py's get_lr, verbatim in logic."""
    if it < WARMUP:
        return LR * (it + 1) / (WARMUP + 1)
    if it > DECAY_ITERS:
        return MIN_LR
    decay_ratio = (it - WARMUP) / (DECAY_ITERS - WARMUP)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return MIN_LR + coeff * (LR - MIN_LR)


@pytest.mark.parametrize("it", [0, 1, 50, WARMUP - 1, WARMUP, 2550, DECAY_ITERS - 1, DECAY_ITERS, DECAY_ITERS + 1,
                                10**6])
def test_lr_schedule_matches_nanogpt(it):
    schedule = gptjax.lr_schedule(LR, warmup_iters=WARMUP, lr_decay_iters=DECAY_ITERS, min_lr=MIN_LR)
    assert float(schedule(it)) == pytest.approx(nanogpt_get_lr(it), rel=1e-5)


def test_lr_schedule_is_constant_without_decay():
    schedule = gptjax.lr_schedule(LR, warmup_iters=WARMUP, lr_decay_iters=DECAY_ITERS, min_lr=MIN_LR, decay_lr=False)
    assert [float(schedule(it)) for it in (0, WARMUP, 10**6)] == [pytest.approx(LR)] * 3


def test_weight_decay_mask_takes_matrices_and_embeddings_only(tiny_model):
    mask = nnx.to_flat_state(decay_mask(nnx.state(tiny_model, nnx.Param)))
    decayed = {".".join(map(str, path)) for path, flag in mask if flag.get_value()}
    kept = {".".join(map(str, path)) for path, flag in mask if not flag.get_value()}
    assert {"wte.embedding", "wpe.embedding", "h.0.attn.c_attn.kernel", "h.1.mlp.c_proj.kernel"} <= decayed
    assert {"h.0.attn.c_attn.bias", "h.0.ln_1.scale", "h.0.ln_1.bias", "ln_f.scale"} <= kept
    assert all(name.endswith(("kernel", "embedding")) for name in decayed)
    assert all(name.endswith(("bias", "scale")) for name in kept)


def test_zero_gradient_update_decays_only_matrices(tiny_model):
    params = nnx.state(tiny_model, nnx.Param)
    tx = gptjax.adamw(0.1, weight_decay=0.5, grad_clip=0.0)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    for (path, p), (_, u) in zip(nnx.to_flat_state(params), nnx.to_flat_state(updates), strict=True):
        expected = -0.1 * 0.5 * p[...] if p.ndim >= 2 else np.zeros(p.shape)
        np.testing.assert_allclose(u[...], expected, rtol=1e-6, atol=1e-9, err_msg=str(path))


def reference_adamw(params, grad_steps, *, lr, weight_decay, beta1, beta2, grad_clip, eps=1e-8):
    """torch.optim.AdamW after clip_grad_norm_, in numpy; weight decay on 2-D tensors only."""
    params = {k: np.array(v, np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    for t, grads in enumerate(grad_steps, start=1):
        norm = math.sqrt(sum(float(np.sum(np.square(g))) for g in grads.values()))
        scale = min(1.0, grad_clip / (norm + 1e-6)) if grad_clip else 1.0
        for k, p in params.items():
            g = np.asarray(grads[k], np.float64) * scale
            if p.ndim >= 2:
                p *= 1 - lr * weight_decay
            m[k] = beta1 * m[k] + (1 - beta1) * g
            v[k] = beta2 * v[k] + (1 - beta2) * g * g
            p -= lr * (m[k] / (1 - beta1**t)) / (np.sqrt(v[k] / (1 - beta2**t)) + eps)
    return params


@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
def test_adamw_matches_torch_semantics_with_clipping(grad_clip):
    params = {"w": jnp.ones((3, 3)), "b": jnp.ones((3,))}
    # A large gradient (norm ~34.6, clipped to 1) then a small one: Adam's second update depends
    # on their ratio, so it differs with and without clipping.
    grad_steps = [{k: jnp.full(p.shape, 10.0) for k, p in params.items()},
                  {k: jnp.full(p.shape, 0.01) for k, p in params.items()}]
    hyper = dict(weight_decay=0.5, beta1=0.9, beta2=0.95, grad_clip=grad_clip)
    tx = gptjax.adamw(0.1, **hyper)
    state, new = tx.init(params), params
    for grads in grad_steps:
        updates, state = tx.update(grads, state, new)
        new = jax.tree.map(lambda p, u: p + u, new, updates)
    expected = reference_adamw(params, grad_steps, lr=0.1, **hyper)
    for k in params:
        np.testing.assert_allclose(new[k], expected[k], rtol=1e-5, err_msg=k)


def test_negative_grad_clip_is_refused():
    with pytest.raises(ValueError, match="grad_clip must be >= 0"):
        gptjax.adamw(1e-3, grad_clip=-1.0)
