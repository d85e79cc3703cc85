"""Sampling: a key/value-cache generator compiled once, and nanoGPT's generate as the reference."""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from numpy.typing import ArrayLike

from gptjax.errors import UsageError
from gptjax.model import GPT
from gptjax.tokenizers import INVALID, UTF8_BYTES_NEEDED, utf8_state


def filter_logits(logits_BxV: jax.Array, temperature: float, top_k: int | None = None,
                  top_p: float | None = None) -> jax.Array:
    """Logits scaled by 1/temperature, with every token outside the top_k most likely, and
    outside the smallest set whose probability reaches top_p (nucleus), set to -inf."""
    logits_BxV = logits_BxV / temperature
    if top_k is not None:
        kth_largest_Bx1 = jax.lax.top_k(logits_BxV, min(top_k, logits_BxV.shape[-1]))[0][:, -1:]
        logits_BxV = jnp.where(logits_BxV < kth_largest_Bx1, -jnp.inf, logits_BxV)
    if top_p is not None:
        sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
        probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
        # keep a token while the tokens more likely than it hold less than top_p (so >= 1 token)
        kept_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV < top_p
        cutoff_Bx1 = jnp.min(jnp.where(kept_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
        logits_BxV = jnp.where(logits_BxV < cutoff_Bx1, -jnp.inf, logits_BxV)
    return logits_BxV


def _sample(logits_BxV, key, temperature, top_k, top_p) -> jax.Array:
    if temperature == 0.0:
        return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, filter_logits(logits_BxV, temperature, top_k, top_p)).astype(jnp.int32)


def _sample_utf8(logits_BxV, key, temperature, top_k, top_p, utf8, state_B, left) -> tuple[jax.Array, jax.Array]:
    """_sample among the tokens whose bytes continue valid UTF-8 from each row's state (utf8: the
    table of tokenizers.utf8_transitions, or None for no constraint), and that leave a character
    open only as far as the `left` tokens after this one can close it: the others' probabilities
    are set to 0 before top_k and top_p choose among the rest. Returns the tokens and the new states."""
    if utf8 is None:
        return _sample(logits_BxV, key, temperature, top_k, top_p), state_B
    after_BxV = utf8[state_B]
    valid_BxV = after_BxV != INVALID
    closable_BxV = valid_BxV & (jnp.asarray(UTF8_BYTES_NEEDED)[jnp.maximum(after_BxV, 0)] <= left)
    allowed_BxV = jnp.where(closable_BxV.any(-1, keepdims=True), closable_BxV, valid_BxV)
    next_B = _sample(jnp.where(allowed_BxV, logits_BxV, -jnp.inf), key, temperature, top_k, top_p)
    return next_B, jnp.maximum(jnp.take_along_axis(after_BxV, next_B[:, None], axis=1)[:, 0], 0)


def _checked_prompt(idx_BxT, temperature, top_k, top_p) -> np.ndarray:
    if temperature < 0:
        raise UsageError(f"temperature must be >= 0 (0 is greedy), got {temperature!r}")
    if top_k is not None and top_k < 1:
        raise UsageError(f"top_k must be a positive integer or None, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise UsageError(f"top_p must be in (0, 1] or None, got {top_p!r}")
    idx_BxT = np.asarray(idx_BxT)
    if idx_BxT.ndim != 2 or idx_BxT.shape[1] < 1:
        raise UsageError(f"idx must have shape (batch, length >= 1), got {idx_BxT.shape}")
    return idx_BxT.astype(np.int32)


def generate(
    model: GPT,
    idx_BxT: ArrayLike,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    rng: jax.Array | None = None,
    overflow_context: int | None = None,
    on_token: Callable[[np.ndarray], None] | None = None,
    utf8: np.ndarray | None = None,
) -> jax.Array:
    """Continue each row of idx (B, T) by max_new_tokens tokens; returns (B, T + max_new_tokens).

    The prompt is run through the model in one pass (prefill), then each new token in one step
    against a key/value cache; the whole loop is one compiled program, compiled once per prompt
    length bucket (powers of two) and setting. Dropout is off; temperature 0 is greedy.

    The model sees at most block_size tokens. When the cache is full, it is rebuilt in one pass
    from the last `overflow_context` tokens. The default, block_size, is nanoGPT's rule (the
    model always sees the last block_size tokens), exact but one full pass per token past
    block_size; block_size // 2 rebuilds once every block_size/2 tokens, so the model sees
    between block_size/2 and block_size tokens.

    on_token, if given, is called on the host with each step's new tokens (B,), as they come.

    utf8, the table of tokenizers.utf8_transitions for a tokenizer whose tokens are bytes, keeps
    the text valid UTF-8: only tokens that continue it are sampled (the others' probabilities set
    to 0, the rest renormalised), and the last tokens close a character left open, so that no
    sample ends in the middle of one. None samples from the model's distribution as it is.
    """
    idx_BxT = _checked_prompt(idx_BxT, temperature, top_k, top_p)
    block_size = model.cfg.block_size
    keep = block_size if overflow_context is None else overflow_context
    if not 1 <= keep <= block_size:
        raise UsageError(f"overflow_context must be in [1, block_size={block_size}], got {overflow_context!r}")
    context_BxT = idx_BxT[:, -block_size:]  # only the last block_size tokens can matter
    B, T = context_BxT.shape
    bucket = min(block_size, 1 << (T - 1).bit_length())
    prompt_BxP = np.zeros((B, bucket), np.int32)
    prompt_BxP[:, :T] = context_BxT
    graphdef, params = nnx.split(model, nnx.Param)
    tokens_BxN = _generate_cached(
        graphdef, params, prompt_BxP, jnp.int32(T), jax.random.key(0) if rng is None else rng,
        *_utf8_start(utf8, idx_BxT), max_new_tokens=max_new_tokens, temperature=float(temperature),
        top_k=top_k, top_p=top_p, keep=keep, on_token=on_token,
    )
    return jnp.concatenate([idx_BxT, tokens_BxN[:, T : T + max_new_tokens]], axis=1)


@functools.partial(jax.jit, static_argnums=0, static_argnames=(
    "max_new_tokens", "temperature", "top_k", "top_p", "keep", "on_token"))
def _generate_cached(graphdef, params, prompt_BxP, length, rng, utf8, state_B, *, max_new_tokens, temperature,
                     top_k, top_p, keep, on_token):
    model = nnx.merge(graphdef, params)
    model.eval()
    block_size = model.cfg.block_size
    B, P = prompt_BxP.shape  # the prompt's first `length` tokens are real, the rest padding
    # At least block_size long, so that the rebuild window always fits (as traced, if not run).
    tokens_BxN = jnp.zeros((B, max(P + max_new_tokens, block_size)), jnp.int32).at[:, :P].set(prompt_BxP)
    # Padding sits after the real tokens: causal attention keeps it out of their logits, and the
    # decode steps overwrite its cache entries before any query may see them.
    logits_BxPxV, cache = model.decode(prompt_BxP, model.init_cache(B), 0)
    logits_BxV = jax.lax.dynamic_index_in_dim(logits_BxPxV, length - 1, axis=1, keepdims=False)

    def step(i, carry):
        tokens_BxN, cache, n_cached, logits_BxV, state_B = carry
        next_B, state_B = _sample_utf8(logits_BxV, jax.random.fold_in(rng, i), temperature, top_k, top_p, utf8,
                                       state_B, max_new_tokens - 1 - i)
        if on_token is not None:
            jax.debug.callback(on_token, next_B, ordered=True)
        at = length + i
        tokens_BxN = jax.lax.dynamic_update_index_in_dim(tokens_BxN, next_B, at, axis=1)

        def extend(state):  # the cache has room: run the new token alone
            cache, n_cached, _ = state
            logits_Bx1xV, cache = model.decode(next_B[:, None], cache, n_cached)
            return cache, n_cached + 1, logits_Bx1xV[:, 0]

        def rebuild(state):  # full: re-run the last `keep` tokens from position 0
            window_BxK = jax.lax.dynamic_slice_in_dim(tokens_BxN, at + 1 - keep, keep, axis=1)
            logits_BxKxV, cache = model.decode(window_BxK, state[0], 0)
            return cache, jnp.int32(keep), logits_BxKxV[:, -1]

        full = n_cached >= block_size
        state = _run_if(~full, extend, (cache, n_cached, logits_BxV))
        cache, n_cached, logits_BxV = _run_if(full, rebuild, state)
        return tokens_BxN, cache, n_cached, logits_BxV, state_B

    carry = (tokens_BxN, cache, length, logits_BxV, state_B)
    return jax.lax.fori_loop(0, max_new_tokens, step, carry)[0]


def _run_if(pred: jax.Array, fn, state):
    """fn(state) if pred else state, as a loop of zero or one trips: unlike lax.cond, whose branches
    XLA gave copies of the whole KV cache on every token, a while loop updates its state in place."""
    return jax.lax.while_loop(lambda c: c[1], lambda c: (fn(c[0]), False), (state, pred))[0]


def generate_uncached(
    model: GPT,
    idx_BxT: ArrayLike,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    rng: jax.Array | None = None,
    utf8: np.ndarray | None = None,
) -> jax.Array:
    """nanoGPT's generate, the reference for `generate`: every step runs the model over the last
    block_size tokens (a fixed-size window, so the loop compiles once). Same arguments and, given
    the same rng, the same samples as `generate` with its default overflow_context."""
    idx_BxT = _checked_prompt(idx_BxT, temperature, top_k, top_p)
    graphdef, params = nnx.split(model, nnx.Param)
    return _generate_uncached(graphdef, params, jnp.asarray(idx_BxT), jax.random.key(0) if rng is None else rng,
                              *_utf8_start(utf8, idx_BxT), max_new_tokens, float(temperature), top_k, top_p)


def _utf8_start(utf8: np.ndarray | None, idx_BxT: np.ndarray) -> tuple[jax.Array | None, jax.Array]:
    """The UTF-8 table on the device and each prompt's UTF-8 state at its end (B,)."""
    if utf8 is None:
        return None, jnp.zeros(len(idx_BxT), jnp.int8)
    return jnp.asarray(utf8), jnp.array([utf8_state(utf8, row) for row in idx_BxT], jnp.int8)


@functools.partial(jax.jit, static_argnums=(0, 6, 7, 8, 9))
def _generate_uncached(graphdef, params, idx_BxT, rng, utf8, state_B, max_new_tokens, temperature, top_k, top_p):
    model = nnx.merge(graphdef, params)
    model.eval()
    block_size = model.cfg.block_size
    B, T = idx_BxT.shape
    # The model always sees a window of block_size tokens starting at max(0, length - block_size);
    # positions past the current length hold padding that causal attention keeps from
    # influencing earlier positions.
    total = max(T + max_new_tokens, block_size)
    tokens_BxN = jnp.zeros((B, total), jnp.int32).at[:, :T].set(idx_BxT)

    def step(i, carry):
        tokens_BxN, state_B = carry
        length = T + i
        start = jnp.maximum(length - block_size, 0)
        window_BxK = jax.lax.dynamic_slice_in_dim(tokens_BxN, start, block_size, axis=1)
        logits_BxV = jax.lax.dynamic_index_in_dim(model(window_BxK), length - start - 1, 1, False)
        next_B, state_B = _sample_utf8(logits_BxV, jax.random.fold_in(rng, i), temperature, top_k, top_p, utf8,
                                       state_B, max_new_tokens - 1 - i)
        return jax.lax.dynamic_update_index_in_dim(tokens_BxN, next_B, length, 1), state_B

    tokens_BxN = jax.lax.fori_loop(0, max_new_tokens, step, (tokens_BxN, state_B))[0]
    return tokens_BxN[:, : T + max_new_tokens]
