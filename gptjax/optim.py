"""nanoGPT's optimizer: AdamW with decay on matrices only, global-norm clipping, warmup + cosine."""

import jax
import jax.numpy as jnp
import ml_collections
import optax


def lr_schedule(
    learning_rate: float = 6e-4,
    *,
    warmup_iters: int = 2000,
    lr_decay_iters: int = 600000,
    min_lr: float = 6e-5,
    decay_lr: bool = True,
) -> optax.Schedule:
    """nanoGPT's get_lr: linear warmup, cosine decay to min_lr at lr_decay_iters, then min_lr."""
    if not decay_lr:
        return optax.constant_schedule(learning_rate)

    def schedule(it):
        it = jnp.asarray(it, jnp.float32)
        warmup = learning_rate * (it + 1) / (warmup_iters + 1)
        decay_ratio = (it - warmup_iters) / max(lr_decay_iters - warmup_iters, 1)
        coeff = 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.clip(decay_ratio, 0.0, 1.0)))
        cosine = min_lr + coeff * (learning_rate - min_lr)
        return jnp.where(it < warmup_iters, warmup, jnp.where(it > lr_decay_iters, min_lr, cosine))

    return schedule


def decay_mask(params: optax.Params) -> optax.Params:
    """True for tensors with 2+ dimensions (matrices, embeddings): only those get weight decay."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def adamw(
    learning_rate: float | optax.Schedule = 6e-4,
    *,
    weight_decay: float = 1e-1,
    beta1: float = 0.9,
    beta2: float = 0.95,
    grad_clip: float = 1.0,
) -> optax.GradientTransformation:
    """Clip the global gradient norm to grad_clip (0 disables), then AdamW.

    The learning rate is injected into the optimizer state, so the step can report the value it
    used (`optax.tree_utils.tree_get(opt_state, "learning_rate")`).
    """
    if grad_clip < 0:
        raise ValueError(f"grad_clip must be >= 0 (0 disables clipping), got {grad_clip!r}")
    tx = optax.inject_hyperparams(optax.adamw, static_args="mask")(
        learning_rate=learning_rate, b1=beta1, b2=beta2, eps=1e-8,  # torch.optim.AdamW's eps
        weight_decay=weight_decay, mask=decay_mask,
    )
    if grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(grad_clip), tx)
    return tx


def from_config(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW with a training config's learning-rate schedule, weight decay, betas and clipping."""
    schedule = lr_schedule(config.learning_rate, warmup_iters=config.warmup_iters,
                           lr_decay_iters=config.lr_decay_iters, min_lr=config.min_lr, decay_lr=config.decay_lr)
    return adamw(schedule, weight_decay=config.weight_decay, beta1=config.beta1, beta2=config.beta2,
                 grad_clip=config.grad_clip)
