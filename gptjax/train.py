"""The loss and the jitted train / eval steps."""

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from gptjax.model import GPT


def cross_entropy(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy over every position whose target is not -1 (ignored)."""
    valid_BxT = targets_BxT != -1
    losses_BxT = optax.softmax_cross_entropy_with_integer_labels(
        logits_BxTxV.astype(jnp.float32), jnp.where(valid_BxT, targets_BxT, 0)
    )
    return jnp.sum(losses_BxT * valid_BxT) / jnp.maximum(jnp.sum(valid_BxT), 1)


class TrainState(struct.PyTreeNode):
    """Everything a training step reads and writes, as one pytree of arrays.

    The model lives here split in two (nnx.split): `graphdef` is its static structure, `params`
    its arrays. `TrainState.model()` merges them back into a `GPT` for sampling or inspection.
    """

    step: jax.Array  # number of updates applied so far
    params: nnx.State
    opt_state: optax.OptState
    dropout_key: jax.Array  # the masks of step n are drawn from fold_in(dropout_key, n)
    graphdef: nnx.GraphDef = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    @classmethod
    def create(cls, model: GPT, tx: optax.GradientTransformation, seed: int = 0) -> "TrainState":
        graphdef, params = nnx.split(model, nnx.Param)
        return cls(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
            dropout_key=jax.random.key(seed), graphdef=graphdef, tx=tx,
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


@functools.partial(jax.jit, donate_argnums=0)
def train_step(state: TrainState, x_BxT: jax.Array, y_BxT: jax.Array):
    """One AdamW update on the batch (x, y); returns the new state and {loss, grad_norm, lr}.

    `state` is donated: its buffers are reused for the new state, so do not use it afterwards.
    """
    key = jax.random.fold_in(state.dropout_key, state.step)
    loss, grads = jax.value_and_grad(_loss, argnums=1)(state.graphdef, state.params, x_BxT, y_BxT, key)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}  # norm before clipping
    lr = optax.tree_utils.tree_get(  # the value inject_hyperparams used for this update
        opt_state, "learning_rate", filtering=lambda _, value: isinstance(value, jax.Array)
    )
    if lr is not None:
        metrics["lr"] = lr
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics


@jax.jit
def eval_step(state: TrainState, x_BxT: jax.Array, y_BxT: jax.Array) -> jax.Array:
    """Mean loss on (x, y) with dropout off."""
    return _loss(state.graphdef, state.params, x_BxT, y_BxT)
