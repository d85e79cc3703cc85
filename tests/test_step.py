import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import chinese_text, gpt2_tokenizer, tiny_config
from flax import nnx
from jax.ad_checkpoint import print_saved_residuals

import gptjax
from gptjax.step import eval_totals, token_losses
from gptjax.tokenizers import token_bytes


def batch(cfg, B=4, seed=0):
    tokens = jax.random.randint(jax.random.key(seed), (B, cfg.block_size + 1), 0, cfg.vocab_size)
    return tokens[:, :-1], tokens[:, 1:]


def test_cross_entropy_ignores_targets_of_minus_one():
    logits = jax.random.normal(jax.random.key(0), (2, 3, 5))
    targets = jnp.array([[1, -1, 4], [-1, -1, 0]])
    log_probs = jax.nn.log_softmax(logits)
    expected = -(log_probs[0, 0, 1] + log_probs[0, 2, 4] + log_probs[1, 2, 0]) / 3
    assert float(gptjax.cross_entropy(logits, targets)) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_token_losses_gradient_is_autodiffs_of_the_log_softmax(dtype):
    logits = (4 * jax.random.normal(jax.random.key(0), (3, 5, 97))).astype(dtype)
    targets = jax.random.randint(jax.random.key(1), (3, 5), 0, 97).at[0, 1].set(-1).at[2, 4].set(-1)
    weights = jax.random.normal(jax.random.key(2), (3, 5))  # each position's loss counts differently

    def reference(logits):
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
        picked = jnp.take_along_axis(log_probs, jnp.maximum(targets, 0)[..., None], axis=-1)[..., 0]
        return jnp.sum(-picked * (targets != -1) * weights)

    expected, expected_grad = jax.value_and_grad(reference)(logits)
    loss, grad = jax.value_and_grad(lambda logits: jnp.sum(token_losses(logits, targets) * weights))(logits)
    assert grad.dtype == dtype
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    np.testing.assert_allclose(np.float32(grad), np.float32(expected_grad), atol=1e-6 if dtype == jnp.float32 else 4e-3)
    assert not np.any(np.float32(grad)[0, 1]) and not np.any(np.float32(grad)[2, 4])  # ignored: no gradient


def test_cross_entropys_backward_keeps_no_vocabulary_sized_array_but_the_logits(capsys):
    # autodiff of optax's loss kept exp(logits) in float32 too: twice bfloat16 logits' memory
    logits, targets = jnp.zeros((2, 8, 50), jnp.bfloat16), jnp.zeros((2, 8), jnp.int32)
    print_saved_residuals(gptjax.cross_entropy, logits, targets)
    saved = [line for line in capsys.readouterr().out.splitlines() if "[2,8,50]" in line]
    assert saved == ["bf16[2,8,50] from the argument logits_BxTxV"]


def test_tiny_model_overfits_one_batch():
    cfg = tiny_config()
    state = gptjax.TrainState.create(gptjax.GPT(cfg, rngs=nnx.Rngs(0)), gptjax.adamw(3e-3, weight_decay=0.0))
    x, y = batch(cfg)
    for _ in range(150):
        state, metrics = gptjax.train_step(state, x, y)
    assert float(metrics["loss"]) < 0.1
    assert float(gptjax.eval_step(state, x, y)) < 0.1


def test_train_step_reports_loss_grad_norm_and_scheduled_lr():
    cfg = tiny_config()
    model = gptjax.GPT(cfg, rngs=nnx.Rngs(0))
    x, y = batch(cfg)
    params = nnx.state(model, nnx.Param)

    def loss_fn(params):
        m = nnx.merge(nnx.graphdef(model), params)
        m.eval()
        return gptjax.cross_entropy(m(x), y)

    expected_loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
    schedule = gptjax.lr_schedule(1e-3, warmup_iters=10, lr_decay_iters=100, min_lr=1e-4)
    state = gptjax.TrainState.create(model, gptjax.adamw(schedule))
    for step in range(3):
        before = state.params if step == 0 else None
        state, metrics = gptjax.train_step(state, x, y)
        assert float(metrics["lr"]) == pytest.approx(float(schedule(step)))
        if before is not None:
            assert float(metrics["loss"]) == pytest.approx(float(expected_loss), rel=1e-5)
            assert float(metrics["grad_norm"]) == pytest.approx(float(optax.tree.norm(grads)), rel=1e-5)
    assert int(state.step) == 3


def test_a_non_finite_step_leaves_parameters_and_optimizer_state_bit_identical():
    cfg = tiny_config()
    state = gptjax.TrainState.create(gptjax.GPT(cfg, rngs=nnx.Rngs(0)), gptjax.adamw(1e-3))
    x, y = batch(cfg)
    state, metrics = gptjax.train_step(state, x, y)
    assert not bool(metrics["nonfinite"])
    poisoned = state.replace(params=jax.tree.map(jnp.copy, state.params))
    poisoned.params["ln_f"]["scale"] = poisoned.params["ln_f"]["scale"].at[0].set(jnp.inf)
    before, step = jax.tree.map(np.asarray, (poisoned.params, poisoned.opt_state)), int(state.step)
    after, metrics = gptjax.train_step(poisoned, x, y)  # donates poisoned (and state's shared arrays)
    assert bool(metrics["nonfinite"]) and int(after.step) == step + 1  # the counter moves on
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves((after.params, after.opt_state)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_training_is_reproducible_from_the_seed_and_dropout_varies_by_step():
    cfg = tiny_config(dropout=0.2)
    x, y = batch(cfg)
    tx = gptjax.adamw(1e-3)  # one optimizer object, so train_step compiles once for all runs

    def run(seed):
        state = gptjax.TrainState.create(gptjax.GPT(cfg, rngs=nnx.Rngs(0)), tx, seed=seed)
        losses = []
        for _ in range(3):
            state, metrics = gptjax.train_step(state, x, y)
            losses.append(float(metrics["loss"]))
        return losses

    assert run(seed=1) == run(seed=1)
    assert run(seed=1) != run(seed=2)


def test_dropout_masks_differ_between_micro_batches_and_between_steps():
    cfg = tiny_config(dropout=0.5)
    x, y = batch(cfg)
    tx = optax.sgd(0.0)  # the parameters never move: a loss changes only with the dropout masks

    def losses(micro_batches: int, steps: int = 1) -> list[float]:
        state, out = gptjax.TrainState.create(gptjax.GPT(cfg, rngs=nnx.Rngs(0)), tx), []
        for _ in range(steps):
            xs, ys = (x, y) if micro_batches == 0 else (jnp.stack([x] * micro_batches), jnp.stack([y] * micro_batches))
            state, metrics = gptjax.train_step(state, xs, ys)
            out.append(float(metrics["loss"]))
        return out

    # the same batch A times: the mean of A masks' losses, which equals one mask's only if the masks do
    one, two, three = (losses(micro_batches)[0] for micro_batches in (1, 2, 3))
    assert abs(two - one) > 1e-3 and abs(three - two) > 1e-3
    by_step = losses(0, steps=3)
    assert min(abs(a - b) for a, b in itertools.pairwise(by_step)) > 1e-3


BPB_TEXTS = ("如何理解gpt的原理? ", "Input and target, shifted by one.")


def bpb_tokenizer(kind: str):
    if kind == "char":
        return gptjax.CharVocab.from_text("".join(BPB_TEXTS))
    if kind == "gpt2":
        return gpt2_tokenizer()
    return gptjax.BPETokenizer.train([chinese_text(20_000)], 400)


@pytest.mark.parametrize("kind", ["char", "gpt2", "bpe"])
def test_bits_per_byte_are_the_summed_loss_over_the_targets_utf8_bytes(kind):
    tokenizer = bpb_tokenizer(kind)
    eot = [] if tokenizer.eot is None else [tokenizer.eot]
    ids = np.concatenate([tokenizer.encode(BPB_TEXTS[0]), eot, tokenizer.encode(BPB_TEXTS[1])]).astype(np.int32)
    T = min(len(ids) - 1, 24)
    x, y = ids[None, :T], ids[None, 1:T + 1]
    model = gptjax.GPT(tiny_config(vocab_size=len(tokenizer), block_size=32), rngs=nnx.Rngs(0))
    state = gptjax.TrainState.create(model, gptjax.adamw(1e-3))
    mean, nats, n_bytes = eval_totals(state, x, y, token_bytes(tokenizer))
    # by hand: each target's -ln p in float64 and its own UTF-8 bytes; <|endoftext|> is neither
    model.eval()
    logits = np.asarray(model(x), np.float64)[0]
    log_p = logits - logits.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    nll = -log_p[np.arange(T), y[0]]
    sizes = np.array([0 if t in eot else len(tokenizer.pieces([t])[0]) for t in y[0]])
    assert eot == [] or sizes.min() == 0
    np.testing.assert_allclose(float(mean), nll.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(nats), nll[sizes > 0].sum(), rtol=1e-5)
    assert int(n_bytes) == sizes.sum() == len(b"".join(tokenizer.pieces(y[0]))) - 13 * len(eot)
    if kind == "char":  # the second text is ASCII: one byte a character, so bits per byte are loss / ln 2
        ascii_x, ascii_y = x[:, -12:], y[:, -12:]
        loss, nats, n_bytes = eval_totals(state, ascii_x, ascii_y, token_bytes(tokenizer))
        assert int(n_bytes) == 12
        np.testing.assert_allclose(float(nats) / int(n_bytes), float(loss), rtol=1e-6)


def test_eval_step_is_the_dropout_free_loss():
    cfg = tiny_config(dropout=0.5)
    model = gptjax.GPT(cfg, rngs=nnx.Rngs(0))
    x, y = batch(cfg)
    state = gptjax.TrainState.create(model, gptjax.adamw(1e-3))
    model.eval()
    expected = gptjax.cross_entropy(model(x), y)
    np.testing.assert_allclose(gptjax.eval_step(state, x, y), expected, rtol=1e-6)
    np.testing.assert_allclose(gptjax.eval_step(state, x, y), gptjax.eval_step(state, x, y))


def test_accumulating_micro_batches_equals_one_large_batch():
    cfg = tiny_config()
    # plain SGD so that the update is the gradient itself (Adam would amplify round-off in
    # near-zero gradients to a full learning-rate step)
    tx = optax.sgd(1.0)
    x, y = batch(cfg, B=8)
    big = gptjax.TrainState.create(gptjax.GPT(cfg, rngs=nnx.Rngs(0)), tx)
    accumulated = gptjax.TrainState.create(gptjax.GPT(cfg, rngs=nnx.Rngs(0)), tx)
    big, big_metrics = gptjax.train_step(big, x, y)
    accumulated, acc_metrics = gptjax.train_step(accumulated, x.reshape(4, 2, -1), y.reshape(4, 2, -1))
    np.testing.assert_allclose(acc_metrics["loss"], big_metrics["loss"], rtol=1e-6)
    np.testing.assert_allclose(acc_metrics["grad_norm"], big_metrics["grad_norm"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(accumulated.params), jax.tree.leaves(big.params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_bfloat16_training_tracks_float32():
    """bfloat16 keeps 8 bits of mantissa (relative error ~0.4% per rounding) but parameters,
    optimizer state, softmax and loss stay float32, so the loss curve should stay within a few
    percent of float32's; 3% over 40 steps of a tiny model is the bound checked here."""
    x, y = batch(tiny_config(), B=8)
    tx = gptjax.adamw(3e-3)
    curves = {}
    for dtype in ("float32", "bfloat16"):
        state = gptjax.TrainState.create(gptjax.GPT(tiny_config(dtype=dtype), rngs=nnx.Rngs(0)), tx)
        curves[dtype] = []
        for _ in range(40):
            state, metrics = gptjax.train_step(state, x, y)
            curves[dtype].append(float(metrics["loss"]))
        assert jax.tree.leaves(state.params)[0].dtype == jnp.float32
    np.testing.assert_allclose(curves["bfloat16"], curves["float32"], rtol=0.03)
    assert curves["bfloat16"][-1] < 0.5 * curves["bfloat16"][0]  # and it does learn
