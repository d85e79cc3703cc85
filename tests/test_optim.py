import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from flax import nnx

import gptjax
from gptjax import optim
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


@pytest.mark.parametrize("it, expected", [(0, LR / 101), (99, LR * 100 / 101), (100, LR), (3999, LR),
                                          (4000, LR), (4500, (LR + MIN_LR) / 2), (5000, MIN_LR), (10**6, MIN_LR)])
def test_wsd_schedule_warms_up_holds_then_cools_down_linearly(it, expected):
    schedule = optim.wsd_schedule(LR, warmup_iters=WARMUP, lr_decay_iters=DECAY_ITERS, min_lr=MIN_LR,
                                  cooldown_frac=0.2)
    assert float(schedule(it)) == pytest.approx(expected, rel=1e-5)


def muon_update(model: gptjax.GPT, seed: int = 0):
    """Muon's first update (lr 0.02; AdamW's 1e-3) of model's parameters for a random gradient,
    and that gradient."""
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    grads = jax.tree.unflatten(treedef, [jax.random.normal(k, p.shape) for k, p in zip(keys, leaves, strict=True)])
    tx = optim.muon(0.02, 1e-3, grad_clip=0.0)
    return jax.jit(tx.update)(grads, tx.init(params), params)[0], grads


def test_muon_orthogonalises_hidden_matrices_q_k_v_apart_and_adams_the_rest(tiny_model):
    updates, grads = muon_update(tiny_model)
    block = updates["h"][0]
    # Newton-Schulz (5 steps of this quintic) brings singular values near one, times the learning
    # rate and optax's width scaling sqrt(max(1, fan_out / fan_in)): 2 for c_fc (32 -> 128)
    for (part, kernel), width_scale in {("attn", "c_proj"): 1.0, ("mlp", "c_fc"): 2.0, ("mlp", "c_proj"): 1.0,
                                        ("attn", "c_attn"): 1.0}.items():
        update = np.asarray(block[part][kernel]["kernel"]) / (0.02 * width_scale)
        for matrix in np.split(update, 3, axis=1) if kernel == "c_attn" else [update]:
            s = np.linalg.svd(matrix.astype(np.float64), compute_uv=False)
            assert s.max() < 1.3 and 0.7 < np.median(s) < 1.2, (part, kernel, s)
    # q, k and v are orthogonalised apart: q's update depends on q's gradient alone
    q_update = lambda updates: np.asarray(updates["h"][0]["attn"]["c_attn"]["kernel"])[:, :32]
    grads["h"][0]["attn"]["c_attn"]["kernel"] = grads["h"][0]["attn"]["c_attn"]["kernel"].at[:, 32:].multiply(5.0)
    tx = optim.muon(0.02, 1e-3, grad_clip=0.0)
    params = nnx.to_pure_dict(nnx.state(tiny_model, nnx.Param))
    np.testing.assert_allclose(q_update(jax.jit(tx.update)(grads, tx.init(params), params)[0]), q_update(updates),
                               atol=1e-6)
    # AdamW's first step is -lr * sign(gradient) for embeddings, norms and biases, times Nesterov's
    # look-ahead (optax's muon uses it in both branches): 1 + b1 (1 - b1) / (1 - b1²) with b1 = 0.9
    for leaf in (updates["wte"]["embedding"], block["ln_1"]["scale"], block["attn"]["c_attn"]["bias"]):
        np.testing.assert_allclose(np.abs(leaf), 1e-3 * (1 + 0.9 * 0.1 / (1 - 0.81)), rtol=1e-4)
    np.testing.assert_array_equal(np.sign(updates["wte"]["embedding"]), -np.sign(grads["wte"]["embedding"]))


def test_default_training_computes_what_it_did_before_the_architecture_keys():
    # losses of three steps recorded with the code before GPTConfig had position_encoding, norm,
    # ..., optimizer and lr_schedule (commit ef657cb), on this setup: bit for bit the same
    state = gptjax.TrainState.create(gptjax.GPT(tiny_config(dropout=0.1), rngs=nnx.Rngs(0)), gptjax.adamw(1e-3), seed=0)
    x = jnp.asarray(np.random.default_rng(0).integers(0, 23, (1, 4, 17)), jnp.int32)
    losses = []
    for _ in range(3):
        state, metrics = gptjax.train_step(state, x[..., :-1], x[..., 1:])
        losses.append(float(metrics["loss"]))
    assert losses == pytest.approx([3.1232550144195557, 3.0660910606384277, 3.0033979415893555], abs=1e-6)
