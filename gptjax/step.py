"""The maths of one update: the loss, the train state, and the jitted train and eval steps."""

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from gptjax.model import GPT

# Dropout masks come from XLA's RngBitGenerator ("rbg"): cheaper bits than JAX's default threefry
# (docs/performance.md#dropout-masks-from-rbg).
DROPOUT_RNG = "rbg"


@jax.custom_vjp
def token_losses(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    """Each position's next-token cross-entropy in nats, (B, T), float32; 0 where the target is
    -1 (ignored). Computed in float32 whatever the logits' dtype.

    Its gradient is written out (custom_vjp): softmax minus the target's one-hot, recomputed from
    the logits and their log-sum-exp. Autodiff kept a float32 (B, T, V) array of exp(logits) for
    the backward pass besides the logits, the largest arrays of a GPT-2 step (docs/performance.md#the-loss-gradient).
    """
    return _token_losses_forward(logits_BxTxV, targets_BxT)[0]


def _token_losses_forward(logits_BxTxV, targets_BxT):
    valid_BxT = targets_BxT != -1
    target_BxT = jnp.where(valid_BxT, targets_BxT, 0)
    logits_BxTxV32 = logits_BxTxV.astype(jnp.float32)
    log_normalizer_BxT = jax.nn.logsumexp(logits_BxTxV32, axis=-1)
    target_logit_BxT = jnp.take_along_axis(logits_BxTxV32, target_BxT[..., None], axis=-1)[..., 0]
    losses_BxT = (log_normalizer_BxT - target_logit_BxT) * valid_BxT
    return losses_BxT, (logits_BxTxV, log_normalizer_BxT, target_BxT, valid_BxT)


def _token_losses_backward(residuals, dlosses_BxT):
    logits_BxTxV, log_normalizer_BxT, target_BxT, valid_BxT = residuals
    probs_BxTxV = jnp.exp(logits_BxTxV.astype(jnp.float32) - log_normalizer_BxT[..., None])
    is_target_BxTxV = target_BxT[..., None] == jnp.arange(logits_BxTxV.shape[-1])
    dlogits_BxTxV = (probs_BxTxV - is_target_BxTxV) * (dlosses_BxT * valid_BxT)[..., None]
    return dlogits_BxTxV.astype(logits_BxTxV.dtype), None  # the targets are integers: no gradient


token_losses.defvjp(_token_losses_forward, _token_losses_backward)


def cross_entropy(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy over every position whose target is not -1 (ignored)."""
    return _mean_over_targets(token_losses(logits_BxTxV, targets_BxT), targets_BxT)


def _mean_over_targets(losses_BxT: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    """token_losses' mean over the positions whose target is not -1 (those are 0 in it)."""
    return jnp.sum(losses_BxT) / jnp.maximum(jnp.sum(targets_BxT != -1), 1)


class TrainState(struct.PyTreeNode):
    """Everything a training step reads and writes, as one pytree of arrays.

    The model lives here split in two (nnx.split): `graphdef` is its static structure, `params`
    its arrays as a plain nested dict (nnx.to_pure_dict, so that jit flattens no nnx Variables in
    Python on every call). `TrainState.model()` merges them back into a `GPT`.
    """

    step: jax.Array  # number of updates applied so far
    params: dict
    opt_state: optax.OptState
    dropout_key: jax.Array  # raw key data; the masks of step n are drawn from fold_in(key, n)
    graphdef: nnx.GraphDef = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    @classmethod
    def create(cls, model: GPT, tx: optax.GradientTransformation, seed: int = 0) -> "TrainState":
        graphdef, params = nnx.split(model, nnx.Param)
        params = nnx.to_pure_dict(params)
        return cls(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
            dropout_key=jax.random.key_data(jax.random.key(seed, impl=DROPOUT_RNG)), graphdef=graphdef, tx=tx,
        )

    def model(self) -> GPT:
        return nnx.merge(self.graphdef, self.params)


def _loss(graphdef, params, x_BxT, y_BxT, dropout_key=None) -> jax.Array:
    model = nnx.merge(graphdef, params)
    if dropout_key is None:
        model.eval()
    else:
        model.train()  # runs at trace time only: jit sees the resulting graph, not this call
    return cross_entropy(model(x_BxT, rngs=dropout_key), y_BxT)


def _parameter_groups(tree: dict) -> dict:
    """A parameter-shaped tree by the model's parts: each block (h.0, h.1, ...), wte, wpe, ln_f."""
    groups = {}
    for name, part in tree.items():
        groups.update({f"h.{i}": block for i, block in part.items()} if name == "h" else {name: part})
    return groups


def health(params: dict, grads: dict, new_params: dict) -> dict[str, jax.Array]:
    """Per part of the model (_parameter_groups): its parameters' norm, its gradient's norm and
    its update's norm relative to its parameters' (nanoGPT's to-do; ~1e-3 is a healthy ratio)."""
    metrics = {}
    old, new = _parameter_groups(params), _parameter_groups(new_params)
    for name, grad in _parameter_groups(grads).items():
        norm = optax.tree.norm(old[name])
        metrics[f"{name}/param_norm"] = norm
        metrics[f"{name}/grad_norm"] = optax.tree.norm(grad)
        metrics[f"{name}/update_ratio"] = optax.tree.norm(jax.tree.map(jnp.subtract, new[name], old[name])) / norm
    return metrics


@functools.partial(jax.jit, donate_argnums=0, static_argnames="with_health")
def train_step(state: TrainState, x: jax.Array, y: jax.Array,
               with_health: bool = False) -> tuple[TrainState, dict[str, jax.Array]]:
    """One AdamW update on the batch (x, y); returns the new state and {loss, grad_norm, lr,
    nonfinite}: nonfinite is True when the loss or gradient was not finite and the update skipped.
    with_health adds health()'s values, "PART/param_norm", ... for each part of the model.

    x and y are (B, T), or (A, B, T) for gradient accumulation: the A micro-batches run one after
    another (lax.scan) and their mean gradient makes the update, the same as one batch of A*B.
    `state` is donated: its buffers are reused for the new state, so do not use it afterwards.
    """
    key = jax.random.fold_in(jax.random.wrap_key_data(state.dropout_key, impl=DROPOUT_RNG), state.step)
    grad_fn = jax.value_and_grad(_loss, argnums=1)
    if x.ndim == 2:
        loss, grads = grad_fn(state.graphdef, state.params, x, y, key)
    else:
        def micro_step(sums, micro):
            i, x_BxT, y_BxT = micro
            loss, grads = grad_fn(state.graphdef, state.params, x_BxT, y_BxT, jax.random.fold_in(key, i))
            return jax.tree.map(jnp.add, sums, (loss, grads)), None

        zeros = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, state.params))
        sums, _ = jax.lax.scan(micro_step, zeros, (jnp.arange(x.shape[0]), x, y))
        loss, grads = jax.tree.map(lambda total: total / x.shape[0], sums)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)  # before clipping
    # A non-finite loss or gradient would ruin the parameters: that update is not applied (the
    # optimizer's count, and so its schedule, stays too); the step counter moves on.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    params, opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                                     (params, opt_state), (state.params, state.opt_state))
    metrics = {"loss": loss, "grad_norm": grad_norm, "nonfinite": ~finite}
    lr = optax.tree_utils.tree_get(  # the value inject_hyperparams used for this update
        opt_state, "learning_rate", filtering=lambda _, value: isinstance(value, jax.Array)
    )
    if lr is not None:
        metrics["lr"] = lr
    if with_health:
        metrics.update(health(state.params, grads, params))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics


@jax.jit
def eval_step(state: TrainState, x_BxT: jax.Array, y_BxT: jax.Array) -> jax.Array:
    """Mean loss on (x, y) with dropout off."""
    return _loss(state.graphdef, state.params, x_BxT, y_BxT)


@jax.jit
def eval_totals(state: TrainState, x_BxT: jax.Array, y_BxT: jax.Array,
                token_bytes_V: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """With dropout off: the mean loss on (x, y), and what bits per byte are made of: the loss in
    nats summed over the targets that are text, and their UTF-8 bytes (token_bytes_V: each token's;
    0 for <|endoftext|>, which is left out of both sums)."""
    model = state.model()
    model.eval()
    losses_BxT = token_losses(model(x_BxT), y_BxT)
    bytes_BxT = jnp.where(y_BxT != -1, token_bytes_V[jnp.maximum(y_BxT, 0)], 0)
    return (_mean_over_targets(losses_BxT, y_BxT), jnp.sum(jnp.where(bytes_BxT > 0, losses_BxT, 0.0)),
            jnp.sum(bytes_BxT))
