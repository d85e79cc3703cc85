import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import forward, tiny_config
from flax import nnx

import gptjax

CHAR_CONFIG = dict(block_size=256, vocab_size=65, n_layer=6, n_head=6, n_embd=384, dropout=0.2, bias=False)


def random_ids(shape, vocab_size, seed=0):
    return jax.random.randint(jax.random.key(seed), shape, 0, vocab_size)


@pytest.mark.parametrize("T", [1, 5, 16])
def test_masked_and_fast_attention_agree(T):
    cfg = tiny_config()
    masked = gptjax.GPT(tiny_config(attention="masked"), rngs=nnx.Rngs(0))
    fast = gptjax.GPT(tiny_config(attention="fast"), rngs=nnx.Rngs(0))
    idx = random_ids((3, T), cfg.vocab_size)

    def loss(model):
        logits = model(idx)
        return jnp.mean(jax.nn.log_softmax(logits)[..., 0]), logits

    loss_and_grad = nnx.jit(nnx.value_and_grad(loss, has_aux=True))
    (_, logits_m), grads_m = loss_and_grad(masked)
    (_, logits_f), grads_f = loss_and_grad(fast)
    np.testing.assert_allclose(logits_m, logits_f, atol=1e-5)
    for g_m, g_f in zip(jax.tree.leaves(grads_m), jax.tree.leaves(grads_f), strict=True):
        np.testing.assert_allclose(g_m, g_f, atol=1e-5)


@pytest.mark.parametrize("attention", ["masked", "fast"])
def test_loss_at_t_has_zero_gradient_from_positions_after_t(attention):
    # wpe[j] is added to the input at position j alone, so d loss_t / d wpe[j] is the gradient
    # of the loss at t with respect to the input at position j.
    cfg = tiny_config(attention=attention)
    model = gptjax.GPT(cfg, rngs=nnx.Rngs(0))
    T, t = cfg.block_size, 6
    idx = random_ids((2, T), cfg.vocab_size)
    targets = random_ids((2, T), cfg.vocab_size, seed=1)

    def loss_at_t(model):
        return gptjax.cross_entropy(model(idx)[:, t : t + 1], targets[:, t : t + 1])

    grad_wpe = nnx.jit(nnx.grad(loss_at_t))(model).wpe.embedding[...]
    per_position = np.abs(np.asarray(grad_wpe)).sum(axis=1)
    assert np.all(per_position[t + 1 :] == 0.0)
    assert np.all(per_position[: t + 1] > 0.0)


@pytest.mark.parametrize("vocab_size", [65, 2000])  # a one-hot matmul, and a lookup (ONE_HOT_MAX_VOCAB)
def test_token_embedding_gradient_sums_repeats_in_float32(vocab_size):
    # 4096 tokens, nearly all the same two: a bfloat16 sum of their gradients would be off by ~1e-2
    idx = jnp.where(jnp.arange(4096) % 7 == 0, 5, 3).reshape(64, 64).at[0, 0].set(vocab_size - 1)
    table = jax.random.normal(jax.random.key(0), (vocab_size, 32))
    cotangent = jax.random.normal(jax.random.key(1), (64, 64, 32)).astype(jnp.bfloat16)
    rows = gptjax.model.embed_tokens(table, idx)
    grad = jax.grad(lambda t: jnp.sum(gptjax.model.embed_tokens(t, idx).astype(jnp.bfloat16).astype(jnp.float32)
                                      * cotangent.astype(jnp.float32)))(table)
    expected = np.zeros((vocab_size, 32))
    np.add.at(expected, np.asarray(idx).ravel(), np.asarray(cotangent, np.float64).reshape(-1, 32))
    np.testing.assert_array_equal(rows, np.asarray(table)[np.asarray(idx)])  # the lookup is exact
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-5)


def test_char_config_parameter_count_matches_nanogpt():
    model = gptjax.GPT(gptjax.GPTConfig(**CHAR_CONFIG), rngs=nnx.Rngs(0))
    # nanoGPT prints 10.65M: per layer 2 LayerNorm scales (2*384) + c_attn 384*1152 + attn c_proj
    # 384*384 + c_fc 384*1536 + mlp c_proj 1536*384 = 1,770,240; x6, + wte 65*384 + ln_f 384.
    assert model.num_params() == 10_646_784
    assert model.num_params(non_embedding=False) == 10_646_784 + 256 * 384


def test_loss_at_initialisation_is_log_vocab_size():
    cfg = gptjax.GPTConfig(**CHAR_CONFIG)
    model = gptjax.GPT(cfg, rngs=nnx.Rngs(0))
    model.eval()
    idx = random_ids((4, 64), cfg.vocab_size)
    loss = gptjax.cross_entropy(forward(model, idx), random_ids((4, 64), cfg.vocab_size, seed=1))
    assert abs(float(loss) - math.log(cfg.vocab_size)) < 0.1


def test_initialisation_follows_gpt2():
    cfg = gptjax.GPTConfig(**{**CHAR_CONFIG, "bias": True})
    model = gptjax.GPT(cfg, rngs=nnx.Rngs(0))
    block = model.h[0]
    assert np.std(block.attn.c_attn.kernel[...]) == pytest.approx(0.02, rel=0.02)
    assert np.std(model.wte.embedding[...]) == pytest.approx(0.02, rel=0.05)
    residual_std = 0.02 / math.sqrt(2 * cfg.n_layer)
    assert np.std(block.attn.c_proj.kernel[...]) == pytest.approx(residual_std, rel=0.02)
    assert np.std(block.mlp.c_proj.kernel[...]) == pytest.approx(residual_std, rel=0.02)
    assert np.all(block.mlp.c_fc.bias[...] == 0) and np.all(block.ln_1.scale[...] == 1)


def test_parameter_names_follow_nanogpt():
    model = gptjax.GPT(tiny_config(bias=False), rngs=nnx.Rngs(0))
    names = {".".join(map(str, path)) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert {"wte.embedding", "wpe.embedding", "ln_f.scale", "h.1.ln_1.scale", "h.1.attn.c_attn.kernel",
            "h.1.attn.c_proj.kernel", "h.1.ln_2.scale", "h.1.mlp.c_fc.kernel", "h.1.mlp.c_proj.kernel"} <= names
    assert not any(name.endswith("bias") for name in names)  # bias=False removes every bias


def test_dropout_is_random_in_training_and_off_in_eval():
    cfg = tiny_config(dropout=0.3)
    model = gptjax.GPT(cfg, rngs=nnx.Rngs(0))
    idx = random_ids((2, 8), cfg.vocab_size)
    a = forward(model, idx, jax.random.key(1))
    assert not np.allclose(a, forward(model, idx, jax.random.key(2)))
    np.testing.assert_array_equal(a, forward(model, idx, jax.random.key(1)))
    with pytest.raises(ValueError, match="pass rngs"):
        forward(model, idx)
    model.eval()
    np.testing.assert_array_equal(forward(model, idx), forward(model, idx))
    no_dropout = gptjax.GPT(tiny_config(dropout=0.0), rngs=nnx.Rngs(0))
    np.testing.assert_allclose(forward(model, idx), forward(no_dropout, idx), atol=1e-6)
    model.train()
    assert not np.allclose(forward(model, idx, jax.random.key(1)), forward(model, idx, jax.random.key(2)))


def test_bfloat16_compute_tracks_float32():
    idx = random_ids((2, 16), 23)
    logits32 = forward(gptjax.GPT(tiny_config(), rngs=nnx.Rngs(0)), idx)
    logits16 = forward(gptjax.GPT(tiny_config(dtype="bfloat16"), rngs=nnx.Rngs(0)), idx)
    assert logits16.dtype == jnp.float32  # the head's output is cast back for the loss
    np.testing.assert_allclose(logits16, logits32, atol=0.05)


def test_sequence_longer_than_block_size_is_refused(tiny_model):
    with pytest.raises(ValueError, match="block_size is 16"):
        tiny_model(jnp.zeros((1, 17), jnp.int32))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(n_embd=30, n_head=4), "divisible by n_head"),
        (dict(attention="flash"), "attention must be one of"),
        (dict(attention="fast", dropout=0.1), "no attention dropout"),
        (dict(dropout=1.0), "dropout must be in"),
        (dict(n_layer=0), "n_layer must be a positive integer"),
        (dict(dtype="float16"), "float16 would need loss scaling"),
        (dict(position_encoding="alibi"), r"position_encoding must be one of \('learned', 'rope'\)"),
        (dict(norm="batchnorm"), "norm must be one of"),
        (dict(mlp_activation="swiglu"), "mlp_activation must be one of"),
        (dict(position_encoding="rope", n_embd=6, n_head=2), "needs an even head size"),
        (dict(logit_softcap=-1.0), "logit_softcap must be >= 0"),
    ],
)
def test_bad_config_is_refused_with_the_field_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_remat_gives_the_same_gradients(dropout):
    idx = random_ids((2, 16), 23)

    def grads(remat):
        model = gptjax.GPT(tiny_config(remat=remat, dropout=dropout), rngs=nnx.Rngs(0))
        loss = lambda m: gptjax.cross_entropy(m(idx, rngs=jax.random.key(1)), idx)
        return jax.tree.leaves(nnx.jit(nnx.grad(loss))(model))

    # recomputation repeats the same ops on the same inputs (the same dropout masks too); XLA may
    # fuse the recomputed forward differently, so allow float32 round-off
    for plain, recomputed in zip(grads(False), grads(True), strict=True):
        np.testing.assert_allclose(recomputed, plain, atol=1e-7)


# Every architecture key at its non-default value at once (each alone would compile a model per
# key: the suite's time), and RoPE, the one that touches positions, alone. Not zero_init_proj:
# attention that adds nothing at initialisation would keep causality trivially.
OPTIONS = [dict(position_encoding="rope"),
           dict(position_encoding="rope", norm="rmsnorm", norm_scale=False, qk_norm=True, mlp_activation="relu2",
                tie_embeddings=False, logit_softcap=3.0)]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_every_option_keeps_causality_and_both_attention_paths_equal(options):
    masked = gptjax.GPT(tiny_config(attention="masked", **options), rngs=nnx.Rngs(0))
    fast = gptjax.GPT(tiny_config(attention="fast", **options), rngs=nnx.Rngs(0))
    idx = np.asarray(random_ids((2, 16), 23))
    changed = idx.copy()
    changed[:, 9:] = (changed[:, 9:] + 1) % 23  # every token after position 8
    logits = forward(masked, idx)
    np.testing.assert_allclose(forward(fast, idx), logits, atol=1e-5)
    np.testing.assert_array_equal(forward(masked, changed)[:, :9], logits[:, :9])
    assert not np.allclose(forward(masked, changed)[:, 9:], logits[:, 9:])


def test_rope_scores_depend_on_positions_only_through_their_difference():
    q, k = jax.random.normal(jax.random.key(0), (2, 1, 5, 3, 8))  # (B, T, H, D) each
    scores = lambda shift: jnp.einsum("bthd,bshd->bhts", gptjax.model.rotate(q, 2 + shift),
                                      gptjax.model.rotate(k, 7 + shift))
    np.testing.assert_allclose(scores(11), scores(0), atol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(gptjax.model.rotate(q, 4), axis=-1), jnp.linalg.norm(q, axis=-1),
                               rtol=1e-6)  # a rotation
    assert not np.allclose(gptjax.model.rotate(q, 1), q)


def test_rmsnorm_relu2_softcap_and_zero_init_do_what_they_say():
    x = jax.random.normal(jax.random.key(0), (2, 5, 32))
    model = gptjax.GPT(tiny_config(norm="rmsnorm", mlp_activation="relu2", zero_init_proj=True), rngs=nnx.Rngs(0))
    block = model.h[0]
    block.ln_1.scale[...] = jnp.linspace(0.5, 2.0, 32)
    expected = x / jnp.sqrt(jnp.mean(x**2, -1, keepdims=True) + 1e-5) * jnp.linspace(0.5, 2.0, 32)
    np.testing.assert_allclose(block.ln_1(x), expected, atol=1e-5)
    block.mlp.c_proj.kernel[...] = jax.random.normal(jax.random.key(1), (128, 32))
    mlp = block.mlp
    np.testing.assert_allclose(mlp(x, None), mlp.c_proj(jax.nn.relu(mlp.c_fc(x)) ** 2), rtol=1e-5, atol=1e-6)
    fresh = gptjax.GPT(tiny_config(zero_init_proj=True), rngs=nnx.Rngs(0))
    for layer in fresh.h:
        assert not np.any(layer.attn.c_proj.kernel[...]) and not np.any(layer.mlp.c_proj.kernel[...])
    assert np.any(fresh.h[0].attn.c_attn.kernel[...])
    # the soft-cap bounds the logits by the cap and is cap * tanh of the uncapped ones
    loud = gptjax.GPT(tiny_config(), rngs=nnx.Rngs(0))
    loud.wte.embedding[...] = loud.wte.embedding[...] * 400
    capped = gptjax.GPT(tiny_config(logit_softcap=3.0), rngs=nnx.Rngs(0))
    capped.wte.embedding[...] = loud.wte.embedding[...]
    idx = random_ids((2, 16), 23)
    raw = forward(loud, idx)
    assert float(jnp.max(jnp.abs(raw))) > 3.0 and float(jnp.max(jnp.abs(forward(capped, idx)))) <= 3.0
    np.testing.assert_allclose(forward(capped, idx), 3.0 * jnp.tanh(raw / 3.0), rtol=1e-5, atol=1e-5)


def test_untied_head_and_rope_change_the_parameters_and_their_count():
    model = gptjax.GPT(tiny_config(tie_embeddings=False, position_encoding="rope"), rngs=nnx.Rngs(0))
    names = set(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    assert names == {"wte", "h", "ln_f", "lm_head"}  # no wpe; an output head of its own
    tied = gptjax.GPT(tiny_config(), rngs=nnx.Rngs(0))
    assert model.num_params() == tied.num_params() + 32 * 23  # lm_head in, wpe was never counted


def test_every_option_runs_in_bfloat16_with_remat_close_to_float32():
    idx = random_ids((2, 16), 23)

    def loss_and_grads(**overrides):
        model = gptjax.GPT(tiny_config(**OPTIONS[-1], **overrides), rngs=nnx.Rngs(0))
        loss, grads = nnx.jit(nnx.value_and_grad(lambda m: gptjax.cross_entropy(m(idx), idx)))(model)
        return float(loss), np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads)])

    loss32, grads32 = loss_and_grads()
    loss16, grads16 = loss_and_grads(dtype="bfloat16", remat=True)
    assert loss16 == pytest.approx(loss32, abs=0.02)
    assert np.dot(grads16, grads32) / np.linalg.norm(grads16) / np.linalg.norm(grads32) > 0.99
