"""The GPT model: nanoGPT's architecture and parameter names, in Flax NNX.

Shape letters, used in tensor names across gptjax (`x_BxTxC`): "x" separates axes, and letters
written together share one axis, their product (`q_BHxTxD` is (B·H, T, D)). Digits stand for
themselves (`qkv_BxTx3xHxD`, `h_BxTx4C`).

    B  batch (sequences)                 A  micro-batches of gradient accumulation
    T  query positions (tokens run now)  S  key positions (T, or the whole KV cache)
    C  width (n_embd)                    V  vocabulary
    H  heads                             D  head size (C / H)
    L  layers                            P  a padded prompt's length
    N  a sample's token buffer           K  kept tokens (a context window, or top-k)
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from gptjax import attention

DTYPES = ("float32", "bfloat16")
# The choices each architecture key offers; the first is GPT-2's (and nanoGPT's), the default.
POSITION_ENCODINGS = ("learned", "rope")
NORMS = ("layernorm", "rmsnorm")
MLP_ACTIVATIONS = ("gelu", "relu2")

# Vocabularies up to this size (characters, bytes) look their tokens up by a one-hot matmul, whose
# gradient is a matmul. A lookup's gradient is a scatter-add, and on a GPU its atomic adds queue up
# when most of a batch's tokens are a few characters: real text made the char step 4x slower than
# random tokens on an H100 (docs/performance.md#embedding-lookup). The matmul costs 2·V·C FLOPs a token each way:
# nothing for 65 characters, a tenth of a GPT-2 step, which keeps the lookup.
ONE_HOT_MAX_VOCAB = 1024

KVLayer = tuple[jax.Array, jax.Array]  # one layer's cached keys and values, each (BH, S, D)
KVCache = list[KVLayer]  # one entry per layer


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64, as nanoGPT does
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linears and LayerNorms, as GPT-2; False is a bit better and faster
    attention: str = "auto"  # "masked" (jnp.where), "fast" (jax.nn.dot_product_attention) or "auto"
    dtype: str = "float32"  # compute dtype; parameters stay float32
    gelu_approximate: bool = False  # nanoGPT: exact GELU; OpenAI's GPT-2 weights: tanh approximation
    remat: bool = False  # recompute each block's activations in the backward pass (jax.checkpoint)
    # Later architectures' choices (modded-nanogpt, nanochat); the defaults are GPT-2's.
    position_encoding: str = "learned"  # "learned" (wpe) or "rope" (rotary, on each head's q and k)
    norm: str = "layernorm"  # "layernorm" or "rmsnorm"
    norm_scale: bool = True  # RMSNorm with a learned scale (False: none)
    qk_norm: bool = False  # RMS-normalise each head's q and k before the scores (no parameters)
    mlp_activation: str = "gelu"  # "gelu" (exact or tanh, gelu_approximate) or "relu2" (relu, squared)
    tie_embeddings: bool = True  # the output head is wte (GPT-2); False: a separate lm_head
    logit_softcap: float = 0.0  # > 0: logits = cap·tanh(logits / cap); 0: off
    zero_init_proj: bool = False  # attn.c_proj and mlp.c_proj start at zero

    # The choices after GPT-2 (the fields above, from position_encoding on): a run that resumes or
    # starts from GPT-2 takes them from that model, and GPT-2's format holds only their defaults.
    ARCHITECTURE_FIELDS = ("position_encoding", "norm", "norm_scale", "qk_norm", "mlp_activation",
                           "tie_embeddings", "logit_softcap", "zero_init_proj")

    def __post_init__(self):
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd={self.n_embd} must be divisible by n_head={self.n_head}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.attention not in attention.IMPLEMENTATIONS:
            raise ValueError(
                f"GPTConfig.attention must be one of {attention.IMPLEMENTATIONS}, got {self.attention!r}"
            )
        if self.attention == "fast" and self.dropout > 0:
            raise ValueError(
                "GPTConfig.attention='fast' has no attention dropout: use attention='auto' "
                "(masked path while dropout is on) or dropout=0"
            )
        for name, choices in (("position_encoding", POSITION_ENCODINGS), ("norm", NORMS),
                              ("mlp_activation", MLP_ACTIVATIONS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"GPTConfig.{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.position_encoding == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"GPTConfig.position_encoding='rope' needs an even head size, got "
                             f"n_embd / n_head = {self.n_embd // self.n_head}")
        if not self.logit_softcap >= 0:
            raise ValueError(f"GPTConfig.logit_softcap must be >= 0 (0 is off), got {self.logit_softcap!r}")
        if self.dtype not in DTYPES:
            hint = " (float16 would need loss scaling, which gptjax does not do: use bfloat16)"
            raise ValueError(f"GPTConfig.dtype must be one of {DTYPES}, got {self.dtype!r}"
                             + (hint if self.dtype == "float16" else ""))


class Linear(nnx.Linear):
    """nnx.Linear applied to (..., in) as one 2-D matrix product: XLA's CPU backend ran the
    backward pass of the 3-D form slower (docs/performance.md#linear-layers-as-2-d-products)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return super().__call__(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)


def _linear(n_in: int, n_out: int, cfg: GPTConfig, rngs: nnx.Rngs, std: float = 0.02) -> Linear:
    return Linear(
        n_in, n_out, use_bias=cfg.bias, dtype=jnp.dtype(cfg.dtype),
        kernel_init=nnx.initializers.normal(std) if std else nnx.initializers.zeros_init(), rngs=rngs,
    )


def _norm(cfg: GPTConfig, rngs: nnx.Rngs) -> nnx.LayerNorm | nnx.RMSNorm:
    if cfg.norm == "rmsnorm":
        return nnx.RMSNorm(cfg.n_embd, epsilon=1e-5, use_scale=cfg.norm_scale, dtype=jnp.dtype(cfg.dtype), rngs=rngs)
    return nnx.LayerNorm(
        cfg.n_embd, epsilon=1e-5, use_bias=cfg.bias, dtype=jnp.dtype(cfg.dtype), rngs=rngs
    )


def _projection_std(cfg: GPTConfig) -> float:
    # GPT-2: projections that write into the residual stream are scaled down by depth.
    return 0.0 if cfg.zero_init_proj else 0.02 / math.sqrt(2 * cfg.n_layer)


def rms_normalize(x: jax.Array, epsilon: float = 1e-5) -> jax.Array:
    """x / sqrt(mean(x²) + ε) over the last axis, computed in float32, in x's dtype."""
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + epsilon)).astype(x.dtype)


def rotate(x_BxTxHxD: jax.Array, pos: jax.Array | int, theta: float = 10000.0) -> jax.Array:
    """Rotary position embedding (RoPE) of tokens at positions pos..pos+T-1: each pair of
    features (i, i + D/2) turned by the angle position·theta^(-2i/D), so that q·k depends on
    positions only through their difference."""
    T, D = x_BxTxHxD.shape[1], x_BxTxHxD.shape[-1]
    frequencies_D2 = theta ** (-jnp.arange(0, D, 2, dtype=jnp.float32) / D)
    angles_TxD2 = (pos + jnp.arange(T, dtype=jnp.float32))[:, None] * frequencies_D2[None, :]
    cos_Tx1xD2, sin_Tx1xD2 = jnp.cos(angles_TxD2)[:, None], jnp.sin(angles_TxD2)[:, None]
    x1, x2 = jnp.split(x_BxTxHxD.astype(jnp.float32), 2, axis=-1)
    turned = jnp.concatenate([x1 * cos_Tx1xD2 - x2 * sin_Tx1xD2, x1 * sin_Tx1xD2 + x2 * cos_Tx1xD2], axis=-1)
    return turned.astype(x_BxTxHxD.dtype)


class CausalSelfAttention(nnx.Module):
    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        self.c_attn = _linear(cfg.n_embd, 3 * cfg.n_embd, cfg, rngs)  # q, k, v fused
        self.c_proj = _linear(cfg.n_embd, cfg.n_embd, cfg, rngs, std=_projection_std(cfg))
        self.attn_dropout = nnx.Dropout(cfg.dropout)
        self.resid_dropout = nnx.Dropout(cfg.dropout)
        self.sow_weights: tuple[int, ...] | None = None  # heads whose softmax weights to record

    def __call__(self, x_BxTxC: jax.Array, rngs: nnx.Rngs | None,
                 kv_cache: KVLayer | None = None, pos: jax.Array | int = 0):
        """Returns (output, kv_cache). With kv_cache, the T tokens sit at positions pos..pos+T-1:
        their keys and values are written into the cache, and each query attends to every cached
        position up to its own (an explicit mask, so one query at the end works too). With
        sow_weights set to heads, the layer also records those heads' softmax weights, float32
        (B, H', T, T), as nnx.Intermediate "attention_weights" (nnx.capture reads them)."""
        B, T, C = x_BxTxC.shape
        H, D = self.cfg.n_head, C // self.cfg.n_head
        qkv_BxTx3xHxD = self.qkv(x_BxTxC, pos)
        if self.sow_weights is not None and kv_cache is None:
            heads = list(self.sow_weights)
            q_BxHxTxD, k_BxHxTxD = (qkv_BxTx3xHxD[:, :, i, heads].transpose(0, 2, 1, 3) for i in range(2))
            self.sow(nnx.Intermediate, "attention_weights",
                     attention.attention_weights(q_BxHxTxD, k_BxHxTxD, attention.causal_mask(T)))
        dropout_active = not self.attn_dropout.deterministic and self.attn_dropout.rate > 0
        path = attention.resolve(self.cfg.attention, dropout_active=dropout_active, dtype=qkv_BxTx3xHxD.dtype,
                                 head_dim=D)

        def weights_dropout(w):
            return self.attn_dropout(w, rngs=rngs)

        if path == "fast" and kv_cache is None:
            q_BxTxHxD, k_BxTxHxD, v_BxTxHxD = (qkv_BxTx3xHxD[:, :, i] for i in range(3))
            y_BxTxHxD = attention.fast_attention(q_BxTxHxD, k_BxTxHxD, v_BxTxHxD)
        else:
            # one transpose of the fused array: three (one per q, k, v) changed XLA's layout of the
            # backward pass, and with it the last bits of the gradients
            q_BxHxTxD, k_BxHxTxD, v_BxHxTxD = qkv_BxTx3xHxD.transpose(2, 0, 3, 1, 4)
            if kv_cache is None:
                y_BxHxTxD = attention.masked_attention(q_BxHxTxD, k_BxHxTxD, v_BxHxTxD,
                                                       attention.causal_mask(T), weights_dropout)
            else:
                # The cache keeps batch and heads as one axis, (BH, S, D): with a (B, H, S, D)
                # cache and B=1, XLA copied the whole cache twice per layer and token.
                q_BHxTxD, k_BHxTxD, v_BHxTxD = (a.reshape(B * H, T, D) for a in (q_BxHxTxD, k_BxHxTxD, v_BxHxTxD))
                k_BHxSxD, v_BHxSxD = kv_cache = tuple(
                    jax.lax.dynamic_update_slice_in_dim(cached_BHxSxD, new_BHxTxD, pos, axis=1)
                    for cached_BHxSxD, new_BHxTxD in zip(kv_cache, (k_BHxTxD, v_BHxTxD), strict=True))
                S = k_BHxSxD.shape[1]
                mask_TxS = jnp.arange(S)[None, :] <= pos + jnp.arange(T)[:, None]
                y_BHxTxD = attention.masked_attention(q_BHxTxD, k_BHxSxD, v_BHxSxD, mask_TxS, weights_dropout)
                y_BxHxTxD = y_BHxTxD.reshape(B, H, T, D)
            y_BxTxHxD = y_BxHxTxD.transpose(0, 2, 1, 3)
        y_BxTxC = y_BxTxHxD.reshape(B, T, C)  # re-assemble the heads
        return self.resid_dropout(self.c_proj(y_BxTxC), rngs=rngs), kv_cache

    def qkv(self, x_BxTxC: jax.Array, pos: jax.Array | int = 0) -> jax.Array:
        """Each head's query, key and value of tokens at positions pos..pos+T-1, (B, T, 3, H, D),
        with qk_norm and RoPE applied where the config asks for them."""
        B, T, C = x_BxTxC.shape
        qkv_BxTx3xHxD = self.c_attn(x_BxTxC).reshape(B, T, 3, self.cfg.n_head, C // self.cfg.n_head)
        if not (self.cfg.qk_norm or self.cfg.position_encoding == "rope"):
            return qkv_BxTx3xHxD
        q_BxTxHxD, k_BxTxHxD, v_BxTxHxD = (qkv_BxTx3xHxD[:, :, i] for i in range(3))
        if self.cfg.qk_norm:
            q_BxTxHxD, k_BxTxHxD = rms_normalize(q_BxTxHxD), rms_normalize(k_BxTxHxD)
        if self.cfg.position_encoding == "rope":
            q_BxTxHxD, k_BxTxHxD = rotate(q_BxTxHxD, pos), rotate(k_BxTxHxD, pos)
        return jnp.stack([q_BxTxHxD, k_BxTxHxD, v_BxTxHxD], axis=2)


class MLP(nnx.Module):
    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        self.c_fc = _linear(cfg.n_embd, 4 * cfg.n_embd, cfg, rngs)
        self.c_proj = _linear(4 * cfg.n_embd, cfg.n_embd, cfg, rngs, std=_projection_std(cfg))
        self.dropout = nnx.Dropout(cfg.dropout)
        self.cfg = cfg

    def __call__(self, x_BxTxC: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
        h_BxTx4C = self.c_fc(x_BxTxC)
        if self.cfg.mlp_activation == "relu2":
            h_BxTx4C = jnp.square(jax.nn.relu(h_BxTx4C))
        else:
            h_BxTx4C = jax.nn.gelu(h_BxTx4C, approximate=self.cfg.gelu_approximate)
        return self.dropout(self.c_proj(h_BxTx4C), rngs=rngs)


class Block(nnx.Module):
    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        self.ln_1 = _norm(cfg, rngs)
        self.attn = CausalSelfAttention(cfg, rngs)
        self.ln_2 = _norm(cfg, rngs)
        self.mlp = MLP(cfg, rngs)

    def __call__(self, x_BxTxC: jax.Array, rngs: nnx.Rngs | None,
                 kv_cache: KVLayer | None = None, pos: jax.Array | int = 0):
        attn_BxTxC, kv_cache = self.attn(self.ln_1(x_BxTxC), rngs, kv_cache, pos)
        x_BxTxC = x_BxTxC + attn_BxTxC
        return x_BxTxC + self.mlp(self.ln_2(x_BxTxC), rngs), kv_cache


def embed_tokens(table_VxC: jax.Array, idx_BxT: jax.Array) -> jax.Array:
    """The rows idx of the float32 embedding table, (B, T, C), float32: the gradient sums each
    token's repeats in float32 (as PyTorch's embedding does), not in the compute dtype."""
    V = table_VxC.shape[0]
    if V > ONE_HOT_MAX_VOCAB:
        return jnp.take(table_VxC, idx_BxT, axis=0)
    # HIGHEST: a float32 matmul on a GPU may otherwise round the table to TensorFloat-32
    return jnp.matmul(jax.nn.one_hot(idx_BxT, V, dtype=table_VxC.dtype), table_VxC,
                      precision=jax.lax.Precision.HIGHEST)


class GPT(nnx.Module):
    """Token ids (B, T) -> next-token logits (B, T, vocab_size), float32.

    Dropout layers are in training mode after construction; `model.eval()` turns them off and
    `model.train()` back on. In training mode with dropout > 0, pass `rngs` (an `nnx.Rngs` or a
    `jax.random.key`) to draw the dropout masks.
    """

    def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.wte = nnx.Embed(
            cfg.vocab_size, cfg.n_embd, dtype=jnp.dtype(cfg.dtype),
            embedding_init=nnx.initializers.normal(0.02), rngs=rngs,
        )
        if cfg.position_encoding == "learned":  # RoPE has no position parameters
            self.wpe = nnx.Embed(
                cfg.block_size, cfg.n_embd, dtype=jnp.dtype(cfg.dtype),
                embedding_init=nnx.initializers.normal(0.02), rngs=rngs,
            )
        self.drop = nnx.Dropout(cfg.dropout)
        self.h = nnx.List([Block(cfg, rngs) for _ in range(cfg.n_layer)])
        self.ln_f = _norm(cfg, rngs)
        # GPT-2 and nanoGPT tie the output head to wte (weight tying); untied, it is lm_head.
        if not cfg.tie_embeddings:
            self.lm_head = Linear(cfg.n_embd, cfg.vocab_size, use_bias=False, dtype=jnp.dtype(cfg.dtype),
                                  kernel_init=nnx.initializers.normal(0.02), rngs=rngs)

    def __call__(self, idx_BxT: jax.Array, *, rngs: nnx.Rngs | jax.Array | None = None) -> jax.Array:
        T = idx_BxT.shape[1]
        if self.cfg.block_size < T:
            raise ValueError(
                f"cannot forward a sequence of length {T}: block_size is {self.cfg.block_size}; "
                "crop the input to its last block_size tokens"
            )
        if rngs is None and self.cfg.dropout > 0 and not self.drop.deterministic:
            raise ValueError(
                "dropout is on in training mode: pass rngs=jax.random.key(...) to draw its masks, "
                "or call model.eval() to turn dropout off"
            )
        if isinstance(rngs, jax.Array):  # one stream, so every dropout layer gets a fresh key
            rngs = nnx.Rngs(dropout=rngs)
        return self._forward(idx_BxT, 0, rngs, None)[0]

    def init_cache(self, batch_size: int) -> KVCache:
        """An empty key/value cache: per layer (k, v), each (BH, S, D) with S = block_size."""
        cfg = self.cfg
        shape = (batch_size * cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
        return [(jnp.zeros(shape, cfg.dtype), jnp.zeros(shape, cfg.dtype)) for _ in range(cfg.n_layer)]

    def decode(self, idx_BxT: jax.Array, cache: KVCache, pos: jax.Array | int) -> tuple[jax.Array, KVCache]:
        """Logits (B, T, vocab) for tokens at positions pos..pos+T-1, given the keys and values of
        positions before pos in `cache`; returns them with the cache extended by these tokens.
        pos + T must not exceed block_size. For sampling: call it in eval mode (model.eval())."""
        return self._forward(idx_BxT, pos, None, cache)

    def embed(self, idx_BxT: jax.Array, pos: jax.Array | int = 0) -> jax.Array:
        """The residual stream's start, (B, T, C) in the compute dtype: token plus position
        embeddings of tokens at positions pos..pos+T-1 (before dropout)."""
        T, dtype = idx_BxT.shape[1], jnp.dtype(self.cfg.dtype)
        x_BxTxC = embed_tokens(self.wte.embedding[...], idx_BxT).astype(dtype)
        if self.cfg.position_encoding == "rope":  # positions enter each layer's q and k instead
            return x_BxTxC
        # Positions pos..pos+T-1 are a slice of wpe: its gradient needs no scatter either.
        return x_BxTxC + jax.lax.dynamic_slice_in_dim(self.wpe.embedding[...], pos, T).astype(dtype)

    def logits(self, x_BxTxC: jax.Array) -> jax.Array:
        """The last layer's output (B, T, C) -> next-token logits (B, T, V), float32: ln_f, then
        the tied output head."""
        B, T, C = x_BxTxC.shape
        x_BTxC = self.ln_f(x_BxTxC).reshape(B * T, C)  # 2-D for the same reason as Linear
        head = self.wte.attend if self.cfg.tie_embeddings else self.lm_head
        logits_BxTxV = head(x_BTxC).reshape(B, T, -1).astype(jnp.float32)
        if self.cfg.logit_softcap:
            cap = self.cfg.logit_softcap
            logits_BxTxV = cap * jnp.tanh(logits_BxTxV / cap)
        return logits_BxTxV

    def _forward(self, idx_BxT, pos, rngs, cache):
        x_BxTxC = self.drop(self.embed(idx_BxT, pos), rngs=rngs)
        new_cache = []
        run_block = nnx.remat(Block.__call__) if self.cfg.remat else Block.__call__
        for i, block in enumerate(self.h):
            x_BxTxC, kv_layer = run_block(block, x_BxTxC, rngs, None if cache is None else cache[i], pos)
            new_cache.append(kv_layer)
        return self.logits(x_BxTxC), None if cache is None else new_cache

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; as nanoGPT, non_embedding leaves out the position embeddings
        (the token embeddings stay in: they are also the output head's weights)."""
        n = sum(p.size for p in jax.tree.leaves(nnx.state(self, nnx.Param)))
        if non_embedding and self.cfg.position_encoding == "learned":
            n -= self.wpe.embedding[...].size
        return n
