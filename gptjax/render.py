"""Pictures of what a model reads and predicts, drawn from plain arrays (explain.py computes them):
attention heat maps (PNG, matplotlib), the text shaded by surprise (HTML), and the input/target
pairs with the model's guesses (text)."""

import codecs
import contextlib
import html
import math
from pathlib import Path

import numpy as np

from gptjax.errors import UsageError

# Whitespace drawn as a visible sign in labels; other control characters as Python escapes.
VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥"}
# A panel gets 11 pixels (0.11 inch at 100 dpi) per labelled token, from 2.5 to 7.5 inches wide,
# and the grid at most 28 inches: past that, labels go on every n-th token.
LABEL_INCHES, PANEL_INCHES, GRID_INCHES = 0.11, (2.5, 7.5), 28


def pyplot():
    """matplotlib.pyplot, drawing to files only; a one-line error without the plot extra."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError('pictures need matplotlib: pip install matplotlib') from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def visible(text: str) -> str:
    """text with whitespace and control characters shown as signs."""
    return "".join(VISIBLE.get(c, c if c.isprintable() else repr(c)[1:-1]) for c in text)


def token_groups(pieces: list[bytes]) -> list[tuple[int, int, str]]:
    """The runs of tokens [start, end) whose bytes decode together, with their text: one token
    each for characters and most BPE tokens, several where BPE split a character into byte
    pieces (many Chinese characters in GPT-2). Bytes that never make a character show as \\xNN."""
    decoder = codecs.getincrementaldecoder("utf-8")("backslashreplace")
    groups, start, text = [], 0, ""
    for i, piece in enumerate(pieces):
        text += decoder.decode(piece, final=i == len(pieces) - 1)
        if not decoder.getstate()[0]:  # no bytes waiting for the rest of their character
            groups.append((start, i + 1, text))
            start, text = i + 1, ""
    return groups


def token_labels(pieces: list[bytes]) -> list[str]:
    """A label per token: its text made visible; the tokens of one split character each show
    that character, numbered (理₁ 理₂)."""
    labels = []
    for start, end, text in token_groups(pieces):
        if end - start == 1:
            labels.append(visible(text))
        else:
            labels += [visible(text) + str(n).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))
                       for n in range(1, end - start + 1)]
    return labels


def choose_fonts(text: str, fonts: list | None = None) -> tuple[list, str]:
    """Installed fonts that together have glyphs for text's characters, as matplotlib FontEntries
    in the order matplotlib should try them (its default, DejaVu Sans, first, then each font that
    adds characters still missing), and the characters that none of them has. With fonts None
    (the installed ones), fonts installed since matplotlib last looked (refresh_fonts) are tried
    before a character is said to be missing."""
    chosen, missing = _fonts_for(text, fonts)
    if missing and fonts is None and (added := refresh_fonts()):
        more, missing = _fonts_for(missing, added)
        chosen += more
    return chosen, missing


def _fonts_for(text: str, fonts: list | None) -> tuple[list, str]:
    from matplotlib import font_manager, ft2font

    missing = {ord(c) for c in text if not c.isspace()}
    fonts = font_manager.fontManager.ttflist if fonts is None else fonts
    # Last Resort claims every character, drawing each as a box that names its Unicode block
    regular = [f for f in fonts if f.style == "normal" and f.weight in (400, "normal", "regular")
               and f.stretch == "normal" and not f.name.startswith("Last Resort")]
    chosen = []
    for font in sorted(regular, key=lambda f: (f.name != "DejaVu Sans", f.name)):
        try:
            has = missing & ft2font.FT2Font(font.fname).get_charmap().keys()
        except (OSError, RuntimeError):  # a font file FreeType cannot read
            continue
        if has:
            chosen.append(font)
            missing -= has
        if not missing:
            break
    return chosen, "".join(sorted(map(chr, missing)))


def refresh_fonts() -> list:
    """The FontEntries of fonts installed since matplotlib listed them, now added to its list (and
    to its cache file, so the next program finds them at once): matplotlib reads the installed
    fonts once and keeps the list in a cache that a font installed later is not in."""
    from matplotlib import font_manager, get_cachedir

    manager = font_manager.fontManager
    known = {Path(f.fname).resolve() for f in manager.ttflist}
    new = [path for path in font_manager.findSystemFonts() if Path(path).resolve() not in known]
    before = len(manager.ttflist)
    for path in new:
        with contextlib.suppress(Exception):  # a file FreeType cannot read is no font
            manager.addfont(path)
    added = manager.ttflist[before:]
    if added:
        with contextlib.suppress(OSError):  # a cache that cannot be written is found again next time
            font_manager.json_dump(manager, Path(get_cachedir()) / f"fontlist-v{manager.__version__}.json")
    return added


def attention_figure(weights_LxHxTxT: np.ndarray, labels: list[str], layers: list[int], heads: list[int],
                     title: str):
    """One heat map per layer (rows) and head (columns), queries down, keys across, the future
    (masked) in grey, as a matplotlib figure; and a line saying which font drew the labels."""
    plt = pyplot()
    from matplotlib import colors

    fonts, missing = choose_fonts("".join(labels))
    if missing:
        note = (f"no installed font has {missing[:12]}{'...' if len(missing) > 12 else ''}, so the attention "
                "maps' axes show token positions (predictions.txt lists them); install a font that has them "
                "(e.g. apt install fonts-noto-cjk) for characters")
        labels, fonts = [str(i) for i in range(len(labels))], []
    else:
        note = "the attention maps' labels are drawn in " + ", ".join(f"{f.name} ({f.fname})" for f in fonts)
    L, H, T = len(layers), len(heads), weights_LxHxTxT.shape[-1]
    smallest, largest = PANEL_INCHES
    panel = min(largest, GRID_INCHES / max(L, H), max(smallest, LABEL_INCHES * T + 0.5))
    figure, axes = plt.subplots(L, H, figsize=(H * panel + 2, L * panel + 1.2), dpi=100, squeeze=False,
                                sharex=True, sharey=True, layout="constrained")
    grey_future = plt.get_cmap("viridis").with_extremes(bad="0.88")
    future_TxT = np.triu(np.ones((T, T), bool), 1)
    norm = colors.PowerNorm(0.5, vmin=0.0, vmax=1.0)  # small weights stay visible
    for r, layer in enumerate(layers):
        for c, head in enumerate(heads):
            image = axes[r, c].imshow(np.ma.masked_array(weights_LxHxTxT[r, c], future_TxT), cmap=grey_future,
                                      norm=norm, interpolation="nearest")
            axes[r, 0].set_ylabel(f"layer {layer}: query")
            axes[0, c].set_title(f"head {head}")
    ticks = list(range(0, T, math.ceil(T * LABEL_INCHES / (panel - 0.5))))
    text = {"fontsize": 9 if T <= 24 else 7, "fontfamily": [f.name for f in fonts] or None}
    for ax in axes[:, 0]:
        ax.set_yticks(ticks, [labels[t] for t in ticks], **text)
    for ax in axes[-1]:
        ax.set_xticks(ticks, [labels[t] for t in ticks], rotation=90, **text)
        ax.set_xlabel("key")
    figure.colorbar(image, ax=axes, shrink=min(0.6, 2.5 / L), aspect=30, label="attention weight (square-root scale)")
    figure.suptitle(title)
    return figure, note


def _shade(nats: float, cap: float) -> str:
    """White for no surprise to red for `cap` nats or more (light enough for black text)."""
    level = round(255 - 190 * min(nats / cap, 1.0))
    return f"rgb(255,{level},{level})"


def surprise_html(pieces: list[bytes], nats_T1: np.ndarray, guesses: list[list[tuple[str, float]]],
                  cap: float, title: str) -> str:
    """The text as a web page, each character (or token) shaded by its surprise (nats_T1[t] is
    token t + 1's), with its probability and the model's guesses (guesses[t]: position t's top
    (label, probability) pairs) as a tooltip. One self-contained file: no script, no network."""
    spans = []
    for start, end, text in token_groups(pieces):
        shown = html.escape(text.replace("\n", "↵\n"))  # a line break's own shade stays visible
        if start == 0:
            spans.append(f'<span title="the first token: nothing before it to predict it from">{shown}</span>')
            continue
        nats = float(np.sum(nats_T1[start - 1:end - 1]))
        top = "&#10;".join(f"{html.escape(label, quote=True)}  {p:.3f}" for label, p in guesses[start - 1])
        tip = f"p = {math.exp(-nats):.4f} ({nats:.2f} nats)&#10;the model's guesses here:&#10;{top}"
        spans.append(f'<span style="background:{_shade(nats, cap)}" title="{tip}">{shown}</span>')
    legend = " ".join(f'<span style="background:{_shade(n, cap)}">{n:g}</span>'
                      for n in np.linspace(0, cap, 6).round(1))
    mean = float(np.mean(nats_T1)) if len(nats_T1) else float("nan")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"/><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; }}
.text {{ font-family: monospace; font-size: 1.25em; line-height: 1.9; white-space: pre-wrap; }}
.scale span {{ font-family: monospace; padding: 0 0.6em; border: 1px solid #ddd; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>Each token is shaded by how surprised the model was to see it: its next-token loss, −ln p, in nats
(the cross-entropy training minimises, here {len(nats_T1)} predictions, mean {mean:.3f} nats).
Hover over a token for its probability and the model's guesses at that point.</p>
<p class="scale">nats: {legend} or more (a uniform guess among the vocabulary)</p>
<div class="text">{"".join(spans)}</div>
</body></html>
"""


def predictions_text(pieces: list[bytes], nats_T1: np.ndarray, guesses: list[list[tuple[str, float]]]) -> str:
    """Training's (input, target) pairs made visible: per position the input token, the target (the
    next token), the probability the model gave it, and its guesses."""
    labels = token_labels(pieces)

    def joined(part: list[bytes]) -> str:
        return visible(b"".join(part).decode("utf-8", "backslashreplace"))

    lines = [f"input:  {joined(pieces[:-1])}", f"target: {joined(pieces[1:])}", "",
             f"{'pos':>4}  {'input':<8} {'target':<8} {'p(target)':>9}  {'nats':>5}  the model's guesses"]
    for t, label in enumerate(labels):
        top = "  ".join(f"{g} {p:.3f}" for g, p in guesses[t])
        if t + 1 < len(labels):
            nats = float(nats_T1[t])
            lines.append(f"{t:>4}  {label:<8} {labels[t + 1]:<8} {math.exp(-nats):>9.4f}  {nats:>5.2f}  {top}")
        else:
            lines.append(f"{t:>4}  {label:<8} {'(next)':<8} {'':>9}  {'':>5}  {top}")
    return "\n".join(lines) + "\n"
