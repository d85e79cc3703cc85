"""Look inside a model: each layer's attention weights, each token's surprise, the model's guesses.

    python -m gptjax.explain --out_dir=out-shakespeare-char --text="ROMEO: But soft"
    python explain.py --init_from=gpt2 --text=FILE:prompt.txt        # the same, from a clone

Writes attention.png (a heat map per layer and head), surprise.html (the text shaded by how
surprised the model was by each token, its guesses on hover) and predictions.txt (each input
token, its target and the model's top guesses) into one folder (--output_dir).
"""

from gptjax import environment, stopping

if __name__ == "__main__":  # before JAX loads: this may re-execute the program once (huge pages)
    environment.start_program(compilation_cache=True)
    stopping.exit_at_once_on_signal()  # nothing to save: Ctrl-C or SIGTERM ends it at once, in one line

import argparse
import functools
import io
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from numpy.typing import ArrayLike

from gptjax import checkpoint, render
from gptjax.errors import OptionParser, UsageError, make_folder, program_name
from gptjax.model import GPT
from gptjax.sources import write_atomically
from gptjax.step import token_losses
from gptjax.trained import add_model_options, encode, load, read_prompt

# The default picture fits one screen: at most this many layers (spread from the first to the
# last) and heads (the first ones).
MAX_DEFAULT_LAYERS, MAX_DEFAULT_HEADS = 6, 6


def attention_weights(model: GPT, idx_BxT: ArrayLike, layers: Sequence[int] | None = None,
                      heads: Sequence[int] | None = None) -> jax.Array:
    """The softmax weights of the chosen layers and heads (default all), float32 (L, B, H, T, T):
    row t holds how much query position t takes from each key position; future keys get exactly
    0. Dropout is off. Only the chosen weights are kept, so a large model fits in memory."""
    cfg = model.cfg
    layers = _checked_indices(layers, cfg.n_layer, "layer")
    heads = _checked_indices(heads, cfg.n_head, "head")
    graphdef, params = nnx.split(model, nnx.Param)
    return _sown_weights(graphdef, params, _checked_ids(model, idx_BxT), layers, heads)


def token_surprise(model: GPT, idx_BxT: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """How surprised the model is by each next token: position t's cross-entropy in nats of
    predicting idx[:, t + 1] from idx[:, :t + 1] (training's loss is their mean), and the
    probability it gave that token; each (B, T - 1), float32."""
    idx_BxT = _checked_ids(model, idx_BxT)
    return _surprise(_logits(model, idx_BxT), idx_BxT)


def top_predictions(model: GPT, idx_BxT: ArrayLike, k: int = 5) -> tuple[jax.Array, jax.Array]:
    """At each position, the k most likely next tokens: their probabilities (B, T, k), float32,
    most likely first, and their ids (B, T, k)."""
    return _top(_logits(model, _checked_ids(model, idx_BxT)), k)


def _surprise(logits_BxTxV: jax.Array, idx_BxT: jax.Array) -> tuple[jax.Array, jax.Array]:
    """token_surprise, from the logits of idx."""
    if idx_BxT.shape[1] < 2:
        raise UsageError("surprise needs at least 2 tokens: one to predict from, one to predict")
    nats_BxT = token_losses(logits_BxTxV[:, :-1], idx_BxT[:, 1:])
    return nats_BxT, jnp.exp(-nats_BxT)


def _top(logits_BxTxV: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """top_predictions, from the logits."""
    V = logits_BxTxV.shape[-1]
    if not 1 <= k <= V:
        raise UsageError(f"k must be in [1, vocab_size={V}], got {k!r}")
    return jax.lax.top_k(jax.nn.softmax(logits_BxTxV, axis=-1), k)


def _logits(model: GPT, idx_BxT: jax.Array) -> jax.Array:
    """The model's logits of idx, dropout off."""
    graphdef, params = nnx.split(model, nnx.Param)
    return _compiled_logits(graphdef, params, idx_BxT)


def _checked_ids(model: GPT, idx_BxT: ArrayLike) -> jax.Array:
    idx_BxT = np.asarray(idx_BxT)
    if idx_BxT.ndim != 2 or idx_BxT.shape[0] < 1 or not 1 <= idx_BxT.shape[1] <= model.cfg.block_size:
        raise UsageError(f"idx must have shape (batch, 1 to block_size={model.cfg.block_size}), got {idx_BxT.shape}")
    if not np.issubdtype(idx_BxT.dtype, np.integer) or idx_BxT.min() < 0 or idx_BxT.max() >= model.cfg.vocab_size:
        raise UsageError(f"idx must hold token ids in [0, vocab_size={model.cfg.vocab_size})")
    return jnp.asarray(idx_BxT, jnp.int32)


def _checked_indices(chosen: Sequence[int] | None, count: int, what: str) -> tuple[int, ...]:
    if chosen is None:
        return tuple(range(count))
    chosen = tuple(int(i) for i in chosen)
    if not chosen or not all(0 <= i < count for i in chosen):
        raise UsageError(f"{what}s must be a non-empty list of numbers in [0, {count - 1}], got {list(chosen)}")
    return chosen


@functools.partial(jax.jit, static_argnums=0)
def _compiled_logits(graphdef, params, idx_BxT) -> jax.Array:
    model = nnx.merge(graphdef, params)
    model.eval()
    return model(idx_BxT)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _sown_weights(graphdef, params, idx_BxT, layers, heads) -> jax.Array:
    """The model's own forward pass, dropout off, with the chosen layers asked to record the
    chosen heads' attention weights (CausalSelfAttention.sow_weights): (L, B, H, T, T)."""
    model = nnx.merge(graphdef, params)
    model.eval()
    for i in layers:
        model.h[i].attn.sow_weights = heads
    _, sown = nnx.capture(model, nnx.Intermediate)(idx_BxT)
    return jnp.stack([sown["h"][i]["attn"]["attention_weights"][0] for i in layers])


def spread(count: int, most: int) -> list[int]:
    """At most `most` of range(count), evenly spread, the first and the last included."""
    if count <= most:
        return list(range(count))
    return sorted({round(i * (count - 1) / (most - 1)) for i in range(most)})


def parse_choice(value: str | None, count: int, default: list[int], what: str) -> list[int]:
    """--layers / --heads: "all", or numbers separated by commas (negative counts from the end)."""
    if value is None:
        return default
    if value == "all":
        return list(range(count))
    try:
        chosen = [int(part) for part in value.split(",")]
    except ValueError:
        raise UsageError(f"--{what}s={value}: give numbers separated by commas, or all") from None
    if not all(-count <= i < count for i in chosen):
        raise UsageError(f"--{what}s={value}: the model has {count} {what}s, numbered 0 to {count - 1}")
    return [i % count for i in chosen]


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options of argv (argv[0] is the program's name)."""
    parser = OptionParser(prog=program_name(argv[0]), description=__doc__.split("\n\n")[0])
    add_model_options(parser, "look inside")
    parser.add_argument("--text", required=True, help="the text to run through the model, or FILE:path")
    parser.add_argument("--length", type=int, default=None,
                        help="look at the text's last LENGTH tokens (default and at most: block_size)")
    parser.add_argument("--layers", help="layers to draw: all, or e.g. 0,5,-1 (default: up to "
                                         f"{MAX_DEFAULT_LAYERS}, the first to the last)")
    parser.add_argument("--heads", help=f"heads to draw: all, or e.g. 0,3 (default: the first {MAX_DEFAULT_HEADS})")
    parser.add_argument("--top_k", type=int, default=5, help="how many of the model's guesses to list")
    parser.add_argument("--output_dir", help="where to write the files (default: OUT_DIR/explain, "
                                             "or explain-NAME for --init_from=NAME)")
    return parser.parse_args(argv[1:])


def explain(args: argparse.Namespace) -> Path:
    """Write the three files for args; returns their folder."""
    plt = render.pyplot()  # before the slow work: a missing matplotlib is a one-line error at once
    model, vocab, name = load(args.init_from, Path(args.out_dir), args.dtype, args.checkpoint)
    cfg = model.cfg
    text = read_prompt(args.text, "--text")
    if not text:
        raise UsageError("the text is empty: pass --text with at least two characters")
    ids = encode(vocab, text, "text")
    length = cfg.block_size if args.length is None else args.length
    if not 2 <= length <= cfg.block_size:
        raise UsageError(f"--length must be in [2, block_size={cfg.block_size}], got {length}")
    if len(ids) > length:
        print(f"the text is {len(ids)} tokens long: looking at its last {length} (--length; at most block_size)")
        ids = ids[-length:]
    if len(ids) < 2:
        raise UsageError("the text is one token long: pass at least two, one to predict from and one to predict")
    layers = parse_choice(args.layers, cfg.n_layer, spread(cfg.n_layer, MAX_DEFAULT_LAYERS), "layer")
    heads = parse_choice(args.heads, cfg.n_head, list(range(min(cfg.n_head, MAX_DEFAULT_HEADS))), "head")
    idx_1xT = _checked_ids(model, ids[None])
    weights_LxHxTxT = np.asarray(attention_weights(model, idx_1xT, layers, heads))[:, 0]
    logits_1xTxV = _logits(model, idx_1xT)  # once, for the surprise and the guesses alike
    nats_T1 = np.asarray(_surprise(logits_1xTxV, idx_1xT)[0][0])
    probs_1xTxK, top_1xTxK = _top(logits_1xTxV, min(args.top_k, cfg.vocab_size))

    def label(i: int) -> str:  # a padded vocabulary's extra ids have no text
        return render.visible(vocab.pieces([i])[0].decode("utf-8", "backslashreplace")) if i < len(vocab) else f"<{i}>"

    guesses = [[(label(int(i)), float(p)) for i, p in zip(top_K, p_K, strict=True)]
               for top_K, p_K in zip(np.asarray(top_1xTxK[0]), np.asarray(probs_1xTxK[0]), strict=True)]
    pieces = vocab.pieces(ids)
    output = Path(args.output_dir or (Path(args.out_dir) / "explain" if args.init_from == "resume"
                                      else f"explain-{Path(args.init_from).name}"))
    make_folder(output, "--output_dir")
    figure, note = render.attention_figure(weights_LxHxTxT, render.token_labels(pieces), layers, heads,
                                           f"{name}: attention weights, {len(ids)} tokens")
    picture = io.BytesIO()
    figure.savefig(picture, format="png")
    plt.close(figure)
    print(note)
    # each file whole or not at all: a stop ends the program at once, whatever it is writing
    write_atomically(output / "attention.png", picture.getvalue())
    write_atomically(output / "surprise.html", render.surprise_html(
        pieces, nats_T1, guesses, math.log(cfg.vocab_size), f"{name}: surprise").encode("utf-8"))
    write_atomically(output / "predictions.txt", render.predictions_text(pieces, nats_T1, guesses).encode("utf-8"))
    return output


def main(argv: list[str]) -> None:
    environment.use_measured_xla_flags()
    checkpoint.quiet_from_now_on()  # orbax's noise about a damaged checkpoint: one line says it
    try:
        output = explain(parse_args(argv))
    except UsageError as e:
        sys.exit(f"{program_name(argv[0])}: error: {e}")
    print(f"wrote attention.png, surprise.html and predictions.txt to {output.absolute()}")


if __name__ == "__main__":
    main(sys.argv)
