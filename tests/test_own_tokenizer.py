"""A byte-level BPE trained on the text, end to end on Chinese: train.py prepares it and trains,
sample.py and explain.py use the checkpoint's tokenizer, and export_hf writes a directory that
transformers loads with that tokenizer."""

import json
import re
import xml.etree.ElementTree as ET

import jax
import numpy as np
import pytest
from conftest import chinese_text, cli_error, run_program, tiny_config
from flax import nnx

import gptjax
from gptjax import checkpoint
from gptjax.tokenizers import from_description

SENTENCE = "如何理解gpt的原理"
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory):
    """A 2-layer model trained for 150 iterations on the Chinese corpus's first 200,000 characters,
    with a BPE of 512 tokens trained on them."""
    folder = tmp_path_factory.mktemp("bpe")
    (folder / "zh.txt").write_text(chinese_text(200_000), encoding="utf-8")
    settings = dict(input_file=folder / "zh.txt", data_dir=folder / "data", dataset="zh", out_dir=folder / "out",
                    tokenizer="bpe", bpe_vocab_size=512, n_layer=2, n_head=2, n_embd=64, block_size=32, batch_size=16,
                    dropout=0.0, max_iters=150, eval_interval=75, eval_iters=4, log_interval=50, warmup_iters=10,
                    lr_decay_iters=150, learning_rate=3e-3)
    result = run_program(["train.py", "--config", "configs/char_cpu.py",
                          *(f"--config.{key}={value}" for key, value in settings.items())])
    assert result.returncode == 0, result.stderr
    return folder, result


def test_the_run_prepares_its_tokenizer_and_records_bits_per_byte(bpe_run):
    folder, result = bpe_run
    assert "bpe 512 tokenizer, vocabulary 512, 1 document" in result.stdout.splitlines()[0]
    meta = json.loads((folder / "data/zh/meta.json").read_text(encoding="utf-8"))
    tokenizer = from_description(meta["tokenizer"])
    assert len(tokenizer) == 512 and meta["dtype"] == "uint16"
    val = np.fromfile(folder / "data/zh/val.bin", np.uint16)
    text = tokenizer.decode(val).removesuffix("<|endoftext|>")  # the document's end
    assert len(text) > 10_000 and text == chinese_text(200_000)[-len(text):]  # the text's end, exactly
    rows = [json.loads(line) for line in (folder / "out/metrics.jsonl").read_text().splitlines()]
    evaluations = [row for row in rows if "val_loss" in row]
    assert [row["iter"] for row in evaluations] == [0, 75, 150]
    assert all(row.keys() == {"iter", "train_loss", "val_loss", "train_bpb", "val_bpb"} for row in evaluations)
    assert evaluations[-1]["val_bpb"] < evaluations[0]["val_bpb"]
    assert re.search(r"step 150: train loss [\d.]+, val loss [\d.]+, val bpb [\d.]+", result.stdout)
    _, saved = checkpoint.choose(folder / "out", "newest")[0]
    assert saved["tokenizer"] == meta["tokenizer"]  # the tokenizer travels with the checkpoint


def test_sample_continues_a_chinese_prompt_in_chinese(bpe_run):
    folder, _ = bpe_run
    result = run_program(["sample.py", f"--out_dir={folder / 'out'}", "--start=如何", "--temperature=0",
                          "--num_samples=1", "--max_new_tokens=12"])
    assert result.returncode == 0, result.stderr
    text = result.stdout.split("---------------")[0].strip()
    assert text.startswith("如何") and "\ufffd" not in text
    assert len(CJK.findall(text[2:])) >= 3


def test_samples_at_temperature_2_are_valid_utf8_streamed_and_whole(bpe_run):
    folder, _ = bpe_run
    hot = [f"--out_dir={folder / 'out'}", "--start=如何", "--temperature=2", "--num_samples=4", "--max_new_tokens=150"]
    raw = run_program(["sample.py", *hot, "--raw_distribution"])
    assert raw.returncode == 0, raw.stderr
    assert "\ufffd" in raw.stdout  # the model's own distribution picks bytes that break characters
    result = run_program(["sample.py", *hot])
    assert result.returncode == 0, result.stderr
    samples = result.stdout.split("---------------\n")[:-1]
    assert len(samples) == 4 and all(s.startswith("如何") and "\ufffd" not in s for s in samples)
    model, meta = checkpoint.load_model(folder / "out", warn=lambda _: None)
    tokenizer = from_description(meta["tokenizer"])
    streamed, parts = gptjax.IncrementalDecoder(tokenizer), []
    out = gptjax.generate(model, tokenizer.encode("如何")[None], 150, temperature=2.0, rng=jax.random.key(3),
                          on_token=lambda ids: parts.append(streamed(ids)),
                          utf8=gptjax.tokenizers.utf8_transitions(tokenizer, model.cfg.vocab_size))
    jax.effects_barrier()
    whole = tokenizer.decode(np.asarray(out[0]))
    assert "\ufffd" not in whole and whole == "如何" + "".join(parts) + streamed.flush()


def test_explain_labels_the_pieces_as_characters(bpe_run, tmp_path):
    folder, _ = bpe_run
    result = run_program(["explain.py", f"--out_dir={folder / 'out'}", f"--text={SENTENCE}",
                          f"--output_dir={tmp_path}"])
    assert result.returncode == 0, result.stderr
    page = ET.fromstring((tmp_path / "surprise.html").read_text(encoding="utf-8"))
    assert "".join(page.find(".//div[@class='text']").itertext()) == SENTENCE  # no byte shown as \xNN
    rows = (tmp_path / "predictions.txt").read_text(encoding="utf-8").splitlines()[4:]
    tokenizer = from_description(checkpoint.choose(folder / "out")[0][1]["tokenizer"])
    assert len(rows) == len(tokenizer.encode(SENTENCE))
    # each token's label: its characters, or a character split over tokens marked ₁, ₂, ... on each part
    labels = [row.split()[1] for row in rows]
    assert "".join(label.rstrip("₁") for label in labels if not re.search("[₂-₉]$", label)) == SENTENCE


def test_export_loads_in_transformers_with_its_tokenizer_and_the_same_logits(bpe_run, tmp_path):
    torch = pytest.importorskip("torch", reason="the export test needs torch (pip install torch==2.13.0)")
    transformers = pytest.importorskip("transformers", reason="the export test needs transformers")
    folder, _ = bpe_run
    model, meta = checkpoint.load_model(folder / "out", warn=lambda _: None)
    tokenizer = from_description(meta["tokenizer"])
    gptjax.export_hf(model, tmp_path, tokenizer)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in (SENTENCE, "👩‍💻 e\u0301 مرحبا\n\n"):
        assert hf_tokenizer.encode(text) == tokenizer.encode(text).tolist()
        assert hf_tokenizer.decode(tokenizer.encode(text).tolist()) == text
    # as with GPT-2's tokenizer in transformers, the special token's spelling is the special token there
    assert hf_tokenizer.encode("<|endoftext|>") == [tokenizer.eot] == [hf_tokenizer.eos_token_id]
    ids = tokenizer.encode(SENTENCE)[None].astype(np.int32)
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        expected = hf_model(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(np.asarray(model(ids)), expected, atol=2e-4, rtol=2e-4)


def test_a_run_keeps_its_tokenizer_and_a_dataset_is_never_reused_for_another(bpe_run, tmp_path):
    folder, _ = bpe_run
    out, data = folder / "out", folder / "data"
    message = cli_error("train.py", "--config", "configs/char_cpu.py", f"--config.out_dir={out}",
                        "--config.init_from=resume", "--config.bpe_vocab_size=600")
    assert f"{out} was trained with bpe_vocab_size=512, which a resumed run keeps" in message
    message = cli_error("train.py", "--config", "configs/char_cpu.py", f"--config.data_dir={data}",
                        "--config.dataset=zh", "--config.tokenizer=bpe", "--config.bpe_vocab_size=600",
                        f"--config.out_dir={tmp_path / 'other'}")
    assert f"{data / 'zh'} holds bpe 512 tokens but the run asks for bpe 600 tokens" in message
    with pytest.raises(gptjax.UsageError, match="export_hf writes a tokenizer only for the bpe tokenizer"):
        gptjax.export_hf(gptjax.GPT(tiny_config(), rngs=nnx.Rngs(0)), tmp_path / "hf", gptjax.CharVocab("abc"))
