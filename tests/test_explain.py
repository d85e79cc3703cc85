"""gptjax.explain (attention weights, surprise, top predictions), its pictures (gptjax.render)
and explain.py end to end."""

import pathlib
import sys
import xml.etree.ElementTree as ET

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import cli_error, forward, gpt2_tokenizer, run_program, save_untrained_run, tiny_config
from flax import nnx
from matplotlib import font_manager

import gptjax
from gptjax import explain, render
from gptjax.errors import UsageError
from gptjax.step import token_losses

CHINESE = "如何理解gpt的原理"  # the README's example: input 如何理解gpt的原, target 何理解gpt的原理


def ids(shape=(2, 16), vocab_size=23, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab_size, shape)


def forward_mixing(model: gptjax.GPT, idx_BxT: jax.Array, weights_LxBxHxTxT: jax.Array) -> jax.Array:
    """GPT's forward pass written out, each layer's attention mixing the values with the given
    weights: the model's logits when they are the weights it mixes them with."""
    x_BxTxC = model.embed(idx_BxT)
    B, T, C = x_BxTxC.shape
    for block, weights_BxHxTxT in zip(model.h, weights_LxBxHxTxT, strict=True):
        _, _, v_BxHxTxD = block.attn.qkv(block.ln_1(x_BxTxC)).transpose(2, 0, 3, 1, 4)
        y_BxHxTxD = jnp.einsum("bhts,bhsd->bhtd", weights_BxHxTxT, v_BxHxTxD)
        x_BxTxC = x_BxTxC + block.attn.c_proj(y_BxHxTxD.transpose(0, 2, 1, 3).reshape(B, T, C))
        x_BxTxC = x_BxTxC + block.mlp(block.ln_2(x_BxTxC), None)
    return model.logits(x_BxTxC)


@pytest.mark.parametrize("overrides", [dict(attention="masked", dropout=0.2), dict(attention="fast")])
def test_weights_mixing_the_values_reproduce_the_models_logits(overrides):
    model = gptjax.GPT(tiny_config(**overrides), rngs=nnx.Rngs(1))
    idx = jnp.asarray(ids())
    weights = explain.attention_weights(model, idx)  # with dropout off, whatever mode the model is in
    model.eval()
    np.testing.assert_allclose(forward_mixing(model, idx, weights), forward(model, idx), atol=2e-5)


def test_attention_weights_are_distributions_over_the_past_only(tiny_model):
    weights = np.asarray(explain.attention_weights(tiny_model, ids()))
    assert weights.shape == (2, 2, 2, 16, 16)  # (L, B, H, T, T)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    assert (weights[..., np.triu_indices(16, 1)[0], np.triu_indices(16, 1)[1]] == 0).all()  # exactly 0
    assert (np.tril(weights) > 0).sum() == weights.size // 16 * 17 // 2  # every past key has some weight


def test_chosen_layers_and_heads_are_slices_of_all(tiny_model):
    idx = ids()
    every = np.asarray(explain.attention_weights(tiny_model, idx))
    chosen = explain.attention_weights(tiny_model, idx, layers=[1], heads=[1, 0])
    np.testing.assert_array_equal(chosen, every[[1]][:, :, [1, 0]])
    with pytest.raises(UsageError, match=r"layers must be a non-empty list of numbers in \[0, 1\], got \[2\]"):
        explain.attention_weights(tiny_model, idx, layers=[2])


def test_surprise_is_the_per_position_cross_entropy(tiny_model):
    idx = ids()
    nats, probs = explain.token_surprise(tiny_model, idx)
    logits = forward(tiny_model, idx)
    assert nats.shape == probs.shape == (2, 15)
    np.testing.assert_allclose(nats, token_losses(logits[:, :-1], jnp.asarray(idx[:, 1:])), atol=1e-6)
    # training's loss is their mean
    assert float(nats.mean()) == pytest.approx(float(gptjax.cross_entropy(logits[:, :-1], idx[:, 1:])), abs=1e-6)
    softmax = np.exp(logits[:, :-1]) / np.exp(logits[:, :-1]).sum(-1, keepdims=True)
    np.testing.assert_allclose(probs, np.take_along_axis(softmax, idx[:, 1:, None], -1)[..., 0], rtol=1e-5)


def test_top_predictions_are_top_k_of_the_logits(tiny_model):
    logits = np.asarray(forward(tiny_model, ids()))
    probs, top = explain.top_predictions(tiny_model, ids(), k=4)
    expected_logits, expected_top = jax.lax.top_k(logits, 4)
    np.testing.assert_array_equal(top, expected_top)
    log_normaliser = np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(probs, np.exp(expected_logits - log_normaliser), rtol=1e-5)
    assert (np.diff(np.asarray(probs), axis=-1) <= 0).all()  # most likely first


def test_bad_token_ids_are_refused(tiny_model):
    with pytest.raises(UsageError, match=r"token ids in \[0, vocab_size=23\)"):
        explain.top_predictions(tiny_model, [[1, 23]])  # a lookup would clamp it silently
    with pytest.raises(UsageError, match=r"shape \(batch, 1 to block_size=16\), got \(1, 17\)"):
        explain.attention_weights(tiny_model, ids((1, 17)))
    with pytest.raises(UsageError, match="at least 2 tokens"):
        explain.token_surprise(tiny_model, [[3]])
    with pytest.raises(UsageError, match=r"k must be in \[1, vocab_size=23\]"):
        explain.top_predictions(tiny_model, [[3]], k=0)


def test_split_characters_are_merged_back_into_labels():
    vocab = gpt2_tokenizer()
    tokens = vocab.encode(CHINESE)
    pieces = vocab.pieces(tokens)
    assert len(pieces) > len(CHINESE) - 3  # GPT-2 needs byte pieces for these characters
    groups = render.token_groups(pieces)
    assert "".join(text for _, _, text in groups) == CHINESE
    assert [end for _, end, _ in groups][-1] == len(tokens)
    labels = render.token_labels(pieces)
    assert len(labels) == len(tokens)
    split = [text for start, end, text in groups if end - start > 1]
    assert split and all(f"{c}₁" in labels and f"{c}₂" in labels for c in split)
    assert render.token_labels([b"a", b" ", b"\n"]) == ["a", "␣", "↵"]
    assert render.token_groups([b"\xe7\x90"]) == [(0, 1, "\\xe7\\x90")]  # never a character: shown as bytes


def test_fonts_are_chosen_for_their_glyphs_and_never_last_resort():
    installed = font_manager.fontManager.ttflist
    dejavu = [f for f in installed if f.name == "DejaVu Sans"]
    last_resort = [f for f in installed if f.name.startswith("Last Resort")]
    fonts, missing = render.choose_fonts("ROMEO: ␣↵理₁", dejavu + last_resort)
    assert [f.name for f in fonts] == ["DejaVu Sans"] and missing == "理"  # a box per character is no glyph
    regular_last = sorted(installed, key=lambda f: (f.name, f.weight, f.stretch) == ("DejaVu Sans", 400, "normal"))
    fonts, missing = render.choose_fonts("abc", regular_last)  # matplotlib's default, its regular face
    assert [(f.name, f.style, f.weight, f.stretch) for f in fonts] == [("DejaVu Sans", "normal", 400, "normal")]
    assert missing == ""


def test_the_attention_figure_has_a_panel_per_layer_and_head_and_ids_without_a_font():
    weights = np.tril(np.random.default_rng(0).random((2, 3, 5, 5)))
    figure, note = render.attention_figure(weights, list("ROMEO"), [0, 3], [0, 1, 2], "t")
    assert len(figure.axes) == 2 * 3 + 1  # and the colour bar
    assert [label.get_text() for label in figure.axes[0].get_yticklabels()] == list("ROMEO")
    assert "DejaVu Sans" in note
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())
    assert len(np.unique(pixels.reshape(-1, 4), axis=0)) > 50  # drawn, not blank
    render.pyplot().close(figure)
    if render.choose_fonts(CHINESE)[1]:  # no Chinese font installed: positions, and a note saying so
        figure, note = render.attention_figure(weights, list("如何理解g"), [0, 3], [0, 1, 2], "t")
        assert "no installed font has 何如理解, so the attention maps' axes show token positions" in note
        assert [label.get_text() for label in figure.axes[0].get_yticklabels()] == list("01234")
        render.pyplot().close(figure)


def test_the_surprise_page_is_well_formed_and_holds_every_character():
    vocab = gpt2_tokenizer()
    text = "<b>Tom & \"Jerry\"</b>\n" + CHINESE
    pieces = vocab.pieces(vocab.encode(text))
    nats = np.linspace(0.1, 12, len(pieces) - 1)
    guesses = [[("a&<", 0.5), ("b", 0.25)]] * len(pieces)
    page = render.surprise_html(pieces, nats, guesses, cap=np.log(50257), title="t")
    root = ET.fromstring(page)  # well-formed: it parses as XML
    body_text = "".join(root.find(".//div[@class='text']").itertext())
    assert body_text.replace("↵", "") == text
    spans = root.findall(".//div[@class='text']/span")
    assert "first token" in spans[0].get("title")
    assert "a&<  0.500" in spans[1].get("title") and "p = " in spans[1].get("title")
    assert "http" not in page and "<script" not in page  # opens offline, no scripts


@pytest.fixture(scope="module")
def chinese_run(tmp_path_factory) -> pathlib.Path:
    """A run whose checkpoint is a char model of Chinese text's characters."""
    return save_untrained_run(tmp_path_factory.mktemp("run"), CHINESE + "。")


def test_explain_writes_its_three_files_for_a_chinese_char_model(chinese_run, capsys):
    explain.main(["explain.py", f"--out_dir={chinese_run}", "--text=" + CHINESE, "--layers=-1", "--top_k=3"])
    output = chinese_run / "explain"
    printed = capsys.readouterr().out
    assert f"to {output.absolute()}" in printed
    fonts, missing = render.choose_fonts(CHINESE)
    assert ("no installed font has" if missing else f"labels are drawn in {fonts[0].name}") in printed
    assert (output / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = ET.fromstring((output / "surprise.html").read_text(encoding="utf-8"))
    assert "".join(page.find(".//div[@class='text']").itertext()) == CHINESE
    assert page.find(".//title").text == f"{chinese_run.name}, iteration 0: surprise"  # which run, which checkpoint
    lines = (output / "predictions.txt").read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["input:  如何理解gpt的原", "target: 何理解gpt的原理"]
    rows = lines[4:]
    assert len(rows) == len(CHINESE) and rows[0].split()[:3] == ["0", "如", "何"]
    assert rows[-1].split()[:3] == [str(len(CHINESE) - 1), "理", "(next)"]


def test_explain_reads_gpt2_weights_from_a_local_hugging_face_directory(tmp_path, capsys):
    gpt2 = gpt2_tokenizer()
    model = gptjax.GPT(tiny_config(vocab_size=50257, n_layer=1), rngs=nnx.Rngs(0))
    gptjax.export_hf(model, tmp_path / "hf")
    explain.main(["explain.py", f"--init_from={tmp_path / 'hf'}", "--text=" + CHINESE * 2, "--length=12",
                  f"--output_dir={tmp_path / 'pictures'}"])
    tokens = gpt2.encode(CHINESE * 2)
    assert f"the text is {len(tokens)} tokens long: looking at its last 12 (--length" in capsys.readouterr().out
    page = ET.fromstring((tmp_path / "pictures/surprise.html").read_text(encoding="utf-8"))
    shown = "".join(page.find(".//div[@class='text']").itertext())
    assert shown.endswith(gpt2.decode(tokens[-12:]).lstrip("\ufffd"))
    rows = (tmp_path / "pictures/predictions.txt").read_text(encoding="utf-8").splitlines()[4:]
    assert len(rows) == 12


def test_bad_explain_input_gets_one_line(chinese_run, tmp_path, monkeypatch):
    def error(*args: str) -> str:
        return cli_error("explain.py", f"--out_dir={chinese_run}", *args)

    assert "characters not in the vocabulary: 'xyz'" in error("--text=如何xyz")
    assert "the text is empty" in error("--text=")
    assert "one token long" in error("--text=如")
    assert f"--text=FILE:{tmp_path / 'nope.txt'}: " in error(f"--text=FILE:{tmp_path / 'nope.txt'}")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    assert "latin1.txt is not UTF-8 text (unexpected end of data)" in error(f"--text=FILE:{tmp_path / 'latin1.txt'}")
    assert "--layers=5: the model has 2 layers, numbered 0 to 1" in error("--text=如何", "--layers=5")
    assert "--heads=x: give numbers separated by commas, or all" in error("--text=如何", "--heads=x")
    assert "--length must be in [2, block_size=16]" in error("--text=如何", "--length=99")
    assert f"{tmp_path} holds no checkpoint" in cli_error("explain.py", f"--out_dir={tmp_path}", "--text=ab")
    (tmp_path / "a_file").touch()
    assert f"--output_dir: cannot write in the folder {tmp_path / 'a_file' / 'x'}" in error(
        "--text=如何", f"--output_dir={tmp_path / 'a_file' / 'x'}")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the plot extra were not installed
    assert "pictures need matplotlib: pip install matplotlib" in error("--text=如何")


def write_font(path: pathlib.Path, codepoint: int) -> None:
    """A TrueType font with one glyph, a box, for codepoint."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    pen = TTGlyphPen(None)
    for x, y in ((100, 0), (100, 700), (600, 700), (600, 0)):
        (pen.lineTo if pen.points else pen.moveTo)((x, y))
    pen.closePath()
    builder = FontBuilder(1000, isTTF=True)
    builder.setupGlyphOrder([".notdef", "box"])
    builder.setupCharacterMap({codepoint: "box"})
    builder.setupGlyf({".notdef": TTGlyphPen(None).glyph(), "box": pen.glyph()})
    builder.setupHorizontalMetrics({".notdef": (500, 0), "box": (700, 100)})
    builder.setupHorizontalHeader(ascent=800, descent=-200)
    builder.setupNameTable({"familyName": "Gptjax Box", "styleName": "Regular"})
    builder.setupOS2()
    builder.setupPost()
    path.parent.mkdir(parents=True, exist_ok=True)
    builder.save(str(path))


def test_a_font_installed_after_a_run_is_found_by_the_next(tmp_path):
    text = "ab\U00020000c"  # a rare CJK character: no font here has it but the one installed below
    if not render.choose_fonts(text)[1]:
        pytest.skip("a font installed here has U+20000 already")
    out = save_untrained_run(tmp_path / "run", text)
    env = {"XDG_DATA_HOME": str(tmp_path / "share"), "MPLCONFIGDIR": str(tmp_path / "matplotlib")}
    command = ["explain.py", f"--out_dir={out}", f"--text={text}", f"--output_dir={tmp_path / 'explained'}"]
    before = run_program(command, env)
    assert before.returncode == 0, before.stderr
    assert "no installed font has \U00020000" in before.stdout  # and matplotlib's font list is now cached
    write_font(tmp_path / "share/fonts/box.ttf", 0x20000)
    after = run_program(command, env)
    assert after.returncode == 0, after.stderr
    assert f"Gptjax Box ({tmp_path}/share/fonts/box.ttf)" in after.stdout
