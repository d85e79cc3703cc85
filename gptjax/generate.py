"""Sampling: nanoGPT's generate, recomputing the whole context for every new token."""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from gptjax.model import GPT


def filter_logits(logits_BxV: jax.Array, temperature: float, top_k: int | None) -> jax.Array:
    """Logits scaled by 1/temperature, with everything outside the top_k set to -inf."""
    logits_BxV = logits_BxV / temperature
    if top_k is not None:
        kth_largest_Bx1 = jax.lax.top_k(logits_BxV, min(top_k, logits_BxV.shape[-1]))[0][:, -1:]
        logits_BxV = jnp.where(logits_BxV < kth_largest_Bx1, -jnp.inf, logits_BxV)
    return logits_BxV


def generate(
    model: GPT,
    idx_BxT: jax.Array,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    rng: jax.Array | None = None,
) -> jax.Array:
    """Continue each row of idx (B, T) by max_new_tokens tokens; returns (B, T + max_new_tokens).

    Dropout is off. temperature=0 picks the most likely token (greedy). As in nanoGPT, the model
    sees at most the last block_size tokens. This is the simple reference sampler: every step
    runs the model over the whole context window.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature!r}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    if jnp.ndim(idx_BxT) != 2 or jnp.shape(idx_BxT)[1] < 1:
        raise ValueError(f"idx must have shape (batch, length >= 1), got {jnp.shape(idx_BxT)}")
    if rng is None:
        rng = jax.random.key(0)
    graphdef, params = nnx.split(model, nnx.Param)
    return _generate(graphdef, params, jnp.asarray(idx_BxT, jnp.int32), rng,
                     max_new_tokens, float(temperature), top_k)


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6))
def _generate(graphdef, params, idx_BxT, rng, max_new_tokens, temperature, top_k):
    model = nnx.merge(graphdef, params)
    model.eval()
    block_size = model.cfg.block_size
    B, T = idx_BxT.shape
    # One fixed-size buffer, so the loop compiles once. The model always sees a window of
    # block_size tokens starting at max(0, length - block_size); positions past the current
    # length hold padding that causal attention keeps from influencing earlier positions.
    total = max(T + max_new_tokens, block_size)
    tokens_BxN = jnp.zeros((B, total), jnp.int32).at[:, :T].set(idx_BxT)

    def step(i, tokens_BxN):
        length = T + i
        start = jnp.maximum(length - block_size, 0)
        window_BxW = jax.lax.dynamic_slice_in_dim(tokens_BxN, start, block_size, axis=1)
        logits_BxWxV = model(window_BxW)
        logits_BxV = jax.lax.dynamic_index_in_dim(logits_BxWxV, length - start - 1, 1, False)
        if temperature == 0.0:
            next_B = jnp.argmax(logits_BxV, axis=-1)
        else:
            logits_BxV = filter_logits(logits_BxV, temperature, top_k)
            next_B = jax.random.categorical(jax.random.fold_in(rng, i), logits_BxV)
        return jax.lax.dynamic_update_index_in_dim(tokens_BxN, next_B.astype(jnp.int32), length, 1)

    tokens_BxN = jax.lax.fori_loop(0, max_new_tokens, step, tokens_BxN)
    return tokens_BxN[:, : T + max_new_tokens]
