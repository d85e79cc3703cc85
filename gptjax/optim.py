"""nanoGPT's optimizer: AdamW with decay on matrices only, global-norm clipping, warmup + cosine;
and the speedrun's: Muon for the blocks' matrices, a warmup-stable-decay schedule."""

import jax
import jax.numpy as jnp
import ml_collections
import optax
from optax.contrib import MuonDimensionNumbers

OPTIMIZERS = ("adamw", "muon")
SCHEDULES = ("cosine", "wsd")


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


def wsd_schedule(learning_rate: float, *, warmup_iters: int, lr_decay_iters: int, min_lr: float,
                 cooldown_frac: float) -> optax.Schedule:
    """Warmup-stable-decay: nanoGPT's linear warmup, then learning_rate until the last
    cooldown_frac of lr_decay_iters, then a straight line down to min_lr at lr_decay_iters."""
    cooldown_start = lr_decay_iters * (1.0 - cooldown_frac)

    def schedule(it):
        it = jnp.asarray(it, jnp.float32)
        warmup = learning_rate * (it + 1) / (warmup_iters + 1)
        cooled = jnp.clip((it - cooldown_start) / max(lr_decay_iters - cooldown_start, 1), 0.0, 1.0)
        return jnp.where(it < warmup_iters, warmup, learning_rate + cooled * (min_lr - learning_rate))

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


def muon_dimensions(params: optax.Params) -> optax.Params:
    """Which parameters Muon updates, and how: the blocks' matrices, c_attn's (C, 3, C) as three
    C x C matrices (q, k and v, as modded-nanogpt does); None (AdamW) for embeddings, the output
    head, norms and biases."""
    def dimensions(path, p):
        names = [getattr(key, "key", None) for key in path]
        if names[0] != "h" or p.ndim < 2:
            return None
        return MuonDimensionNumbers(0, 2) if p.ndim == 3 else MuonDimensionNumbers(0, 1)
    return jax.tree_util.tree_map_with_path(dimensions, params)


def _qkv_as_three(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """tx seeing each c_attn kernel (C, 3C) as (C, 3, C): q, k and v side by side."""
    def reshape(tree, split: bool):
        def one(path, x):
            if not any(getattr(key, "key", None) == "c_attn" for key in path) or x.ndim < 2:
                return x
            return x.reshape(x.shape[0], 3, -1) if split else x.reshape(x.shape[0], -1)
        return jax.tree_util.tree_map_with_path(one, tree)

    def update(updates, state, params=None):
        updates, state = tx.update(reshape(updates, True), state, None if params is None else reshape(params, True))
        return reshape(updates, False), state

    return optax.GradientTransformation(lambda params: tx.init(reshape(params, True)), update)


def muon(
    muon_lr: float | optax.Schedule = 0.02,
    adam_lr: float | optax.Schedule = 6e-4,
    *,
    momentum: float = 0.95,
    weight_decay: float = 0.0,
    beta1: float = 0.9,
    beta2: float = 0.95,
    grad_clip: float = 1.0,
) -> optax.GradientTransformation:
    """Clip the global gradient norm, then Muon (optax.contrib.muon: momentum, orthogonalised by
    Newton-Schulz iterations) for the blocks' matrices (muon_dimensions), with decoupled weight
    decay; AdamW without weight decay for the rest. Its learning_rate hyperparameter is Muon's."""
    if grad_clip < 0:
        raise ValueError(f"grad_clip must be >= 0 (0 disables clipping), got {grad_clip!r}")
    tx = optax.inject_hyperparams(optax.contrib.muon, static_args=("muon_weight_dimension_numbers",))(
        learning_rate=muon_lr, adam_learning_rate=adam_lr, beta=momentum, weight_decay=weight_decay,
        adam_b1=beta1, adam_b2=beta2, muon_weight_dimension_numbers=muon_dimensions,
    )
    tx = _qkv_as_three(tx)
    if grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(grad_clip), tx)
    return tx


def from_config(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The optimizer a training config names, with its learning-rate schedule (the same shape for
    each group's rate), weight decay, betas and clipping."""
    def schedule(peak: float, min_lr: float) -> optax.Schedule:
        if config.lr_schedule == "wsd" and config.decay_lr:
            return wsd_schedule(peak, warmup_iters=config.warmup_iters, lr_decay_iters=config.lr_decay_iters,
                                min_lr=min_lr, cooldown_frac=config.cooldown_frac)
        return lr_schedule(peak, warmup_iters=config.warmup_iters, lr_decay_iters=config.lr_decay_iters,
                           min_lr=min_lr, decay_lr=config.decay_lr)

    adam_schedule = schedule(config.learning_rate, config.min_lr)
    if config.optimizer == "muon":  # Muon's rate decays to the same fraction of its peak
        muon_min_lr = config.muon_lr * config.min_lr / config.learning_rate if config.learning_rate else 0.0
        return muon(schedule(config.muon_lr, muon_min_lr), adam_schedule, momentum=config.muon_momentum,
                    weight_decay=config.weight_decay, beta1=config.beta1, beta2=config.beta2,
                    grad_clip=config.grad_clip)
    return adamw(adam_schedule, weight_decay=config.weight_decay, beta1=config.beta1, beta2=config.beta2,
                 grad_clip=config.grad_clip)
