"""The two causal-attention paths and the rule that picks between them."""

from collections.abc import Callable

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("masked", "fast", "auto")


def causal_mask(T: int) -> jax.Array:
    """(T, T) booleans: query i may attend to key j iff j <= i."""
    return jnp.tril(jnp.ones((T, T), dtype=bool))


def causal_scores(q_BxHxTxD: jax.Array, k_BxHxSxD: jax.Array, mask: jax.Array) -> jax.Array:
    """q·kᵀ/√d in float32, (B, H, T, S), -inf where `mask` hides a key from a query."""
    q_BxHxTxD = q_BxHxTxD * jnp.asarray(q_BxHxTxD.shape[-1] ** -0.5, q_BxHxTxD.dtype)
    # Scores and softmax in float32 whatever the compute dtype: bf16 exp/sum loses too much.
    scores_BxHxTxS = jnp.einsum("...td,...sd->...ts", q_BxHxTxD, k_BxHxSxD, preferred_element_type=jnp.float32)
    return jnp.where(mask, scores_BxHxTxS, -jnp.inf)  # nanoGPT: masked_fill(-inf)


def attention_weights(q_BxHxTxD: jax.Array, k_BxHxSxD: jax.Array, mask: jax.Array) -> jax.Array:
    """The softmax weights masked_attention mixes the values with, float32 (B, H, T, S): each
    row sums to 1, and a hidden key's weight is exactly 0. For looking at, not for training:
    masked_attention never forms them (see there)."""
    return jax.nn.softmax(causal_scores(q_BxHxTxD, k_BxHxSxD, mask), axis=-1)


def masked_attention(
    q_BxHxTxD: jax.Array,
    k_BxHxSxD: jax.Array,
    v_BxHxSxD: jax.Array,
    mask: jax.Array,
    weights_dropout: Callable[[jax.Array], jax.Array] = lambda w: w,
) -> jax.Array:
    """softmax(q·kᵀ/√d, future keys removed with jnp.where) · v, as nanoGPT's manual path.

    Heads first, (B, H, T, D): XLA's CPU dot products ran faster in this layout than contracting
    (B, T, H, D) directly. `mask` broadcasts to (B, H, T, S), True where a query may see a key.
    Returns (B, H, T, D). Any leading axes work: decoding passes (BH, T, D).

    Every pass over a (B, H, T, S) array costs about as much as a dot product on a CPU (memory
    bound), so this makes as few as it can: 1/√d scales q rather than the scores, and the
    softmax's row sums divide the product with v, on (B, H, T, D), rather than the weights (a
    per-row divisor commutes with the product and with dropout): docs/performance.md#attention-paths.
    """
    scores_BxHxTxS = causal_scores(q_BxHxTxD, k_BxHxSxD, mask)
    # The row maximum only keeps exp in range; it cancels, so no gradient needs to flow through it.
    row_max_BxHxTx1 = jax.lax.stop_gradient(jnp.max(scores_BxHxTxS, axis=-1, keepdims=True))
    unnormalized_BxHxTxS = jnp.exp(scores_BxHxTxS - row_max_BxHxTx1)
    row_sum_BxHxTx1 = jnp.sum(unnormalized_BxHxTxS, axis=-1, keepdims=True)
    unnormalized_BxHxTxS = weights_dropout(unnormalized_BxHxTxS.astype(v_BxHxSxD.dtype))
    y_BxHxTxD = jnp.einsum("...ts,...sd->...td", unnormalized_BxHxTxS, v_BxHxSxD, preferred_element_type=jnp.float32)
    return (y_BxHxTxD / row_sum_BxHxTx1).astype(v_BxHxSxD.dtype)


def fast_attention(q_BxTxHxD: jax.Array, k_BxTxHxD: jax.Array, v_BxTxHxD: jax.Array) -> jax.Array:
    """jax.nn.dot_product_attention with a causal mask, in its (B, T, H, D) layout; cuDNN flash
    attention where it applies."""
    implementation = "cudnn" if _cudnn_applies(q_BxTxHxD.dtype, q_BxTxHxD.shape[-1]) else None
    return jax.nn.dot_product_attention(
        q_BxTxHxD, k_BxTxHxD, v_BxTxHxD, is_causal=True, implementation=implementation
    )


def _cudnn_applies(dtype, head_dim: int) -> bool:
    # cuDNN's fused kernel takes only half-precision inputs and head sizes up to 128, multiple of 8.
    return (
        jax.default_backend() == "gpu"
        and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
        and head_dim <= 128
        and head_dim % 8 == 0
    )


def resolve(requested: str, *, dropout_active: bool, dtype: jnp.dtype, head_dim: int) -> str:
    """The path that runs: "masked" or "fast".

    "auto" takes the masked path whenever attention dropout is on (the fast path has none), and
    otherwise the fast path only where cuDNN flash attention runs: everywhere else the masked
    einsum path measured faster (docs/performance.md#attention-paths).
    """
    if requested == "fast":  # GPTConfig refuses "fast" together with dropout
        return "fast"
    if requested == "masked" or dropout_active:
        return "masked"
    return "fast" if _cudnn_applies(dtype, head_dim) else "masked"
