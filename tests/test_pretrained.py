"""GPT-2 interop against transformers' own GPT-2, built locally (no download)."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, gpt2_tokenizer, run_program, tiny_config
from flax import nnx

import gptjax
from gptjax.errors import UsageError

torch = pytest.importorskip("torch", reason="the GPT-2 parity tests need torch (pip install torch==2.13.0)")
transformers = pytest.importorskip("transformers", reason="the GPT-2 parity tests need transformers")
from safetensors.numpy import load_file, save_file  # noqa: E402


def hf_model(activation="gelu_new", **overrides):
    torch.manual_seed(0)
    shape = dict(vocab_size=61, n_positions=32, n_embd=48, n_layer=2, n_head=3)
    cfg = transformers.GPT2Config(activation_function=activation, **{**shape, **overrides})
    return transformers.GPT2LMHeadModel(cfg).eval()


def save_as_bin(model, directory) -> None:
    """config.json and pytorch_model.bin, the format transformers 4 wrote by default (transformers
    5 writes only model.safetensors, whatever save_pretrained is asked)."""
    model.config.save_pretrained(directory)
    torch.save(model.state_dict(), directory / "pytorch_model.bin")


def hf_logits_and_loss(model, idx):
    with torch.no_grad():
        out = model(torch.tensor(np.asarray(idx)), labels=torch.tensor(np.asarray(idx)))
    return out.logits.numpy(), float(out.loss)


@pytest.mark.parametrize("activation", ["gelu_new", "gelu"])
@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_hf_checkpoint_loads_with_equal_logits_and_loss(tmp_path, activation, weights):
    reference = hf_model(activation)
    if weights == "model.safetensors":
        reference.save_pretrained(tmp_path)
    else:
        save_as_bin(reference, tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.suffix in (".bin", ".safetensors")] == [weights]
    model = gptjax.from_pretrained(str(tmp_path))
    assert model.cfg.gelu_approximate == (activation == "gelu_new") and model.cfg.bias
    for seed, T in ((0, 32), (1, 7), (2, 1)):
        idx = np.random.default_rng(seed).integers(0, 61, (2, T))
        expected_logits, expected_loss = hf_logits_and_loss(reference, idx)
        logits = model(jnp.asarray(idx))
        np.testing.assert_allclose(logits, expected_logits, atol=1e-4)
        if T > 1:  # HF shifts the labels inside; ours takes the shifted targets
            loss = gptjax.cross_entropy(logits[:, :-1], jnp.asarray(idx[:, 1:]))
            assert float(loss) == pytest.approx(expected_loss, abs=1e-5)


@pytest.mark.parametrize("overrides", [dict(bias=False), dict(bias=True, gelu_approximate=True)])
def test_export_loads_in_transformers_with_equal_logits(tmp_path, overrides):
    model = gptjax.GPT(tiny_config(**overrides), rngs=nnx.Rngs(3))
    model.eval()
    gptjax.export_hf(model, tmp_path)
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    idx = np.random.default_rng(0).integers(0, 23, (3, 16))
    np.testing.assert_allclose(model(jnp.asarray(idx)), hf_logits_and_loss(reloaded, idx)[0], atol=1e-4)
    again = gptjax.from_pretrained(str(tmp_path))  # and back into gptjax
    np.testing.assert_allclose(again(jnp.asarray(idx)), model(jnp.asarray(idx)), atol=1e-6)


def test_missing_or_misshaped_tensors_are_named(tmp_path):
    hf_model().save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    name = next(k for k in tensors if k.endswith("h.1.mlp.c_fc.weight"))
    save_file({k: v for k, v in tensors.items() if k != name}, tmp_path / "model.safetensors")
    with pytest.raises(UsageError, match="lacks the tensor h.1.mlp.c_fc.weight"):
        gptjax.from_pretrained(str(tmp_path))
    save_file({**tensors, name: tensors[name][:, :10]}, tmp_path / "model.safetensors")
    misshaped = r"tensor h.1.mlp.c_fc.weight has shape \(48, 10\), but the config needs \(48, 192\)"
    with pytest.raises(UsageError, match=misshaped):
        gptjax.from_pretrained(str(tmp_path))


def test_unknown_names_and_directories_are_refused(tmp_path):
    with pytest.raises(UsageError, match="neither a directory nor one of"):
        gptjax.from_pretrained("gpt3")
    with pytest.raises(UsageError, match="has no config.json"):
        gptjax.from_pretrained(str(tmp_path))


def test_a_model_directory_whose_config_or_weights_are_not_gpt2s_is_one_line(tmp_path):
    gptjax.export_hf(gptjax.GPT(tiny_config(bias=True), rngs=nnx.Rngs(0)), tmp_path)
    config, weights = (tmp_path / "config.json").read_text(), (tmp_path / "model.safetensors").read_bytes()
    without_positions = {k: v for k, v in json.loads(config).items() if k != "n_positions"}
    for config_text, weight_bytes, message in (
        ("{not json", weights, "config.json is not JSON"),
        (json.dumps({"model_type": "llama", "hidden_size": 32}), weights, "model_type 'llama' is not GPT-2"),
        (json.dumps(without_positions), weights, "config.json: no n_positions: not a GPT-2 config"),
        (json.dumps({**json.loads(config), "n_head": 5}), weights, r"config.json: GPTConfig.n_embd=\d+ must be "
                                                                    "divisible by n_head=5"),
        (config, weights[:1000], r"model.safetensors cannot be read \(.*\): it is cut short or damaged"),
    ):
        (tmp_path / "config.json").write_text(config_text)
        (tmp_path / "model.safetensors").write_bytes(weight_bytes)
        with pytest.raises(UsageError, match=message):
            gptjax.from_pretrained(str(tmp_path))
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "config.json").write_text(config)
    save_as_bin(hf_model(), tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes((tmp_path / "pytorch_model.bin").read_bytes()[:1000])
    with pytest.raises(UsageError, match=r"pytorch_model.bin cannot be read \(\w+\): it is cut short or damaged"):
        gptjax.from_pretrained(str(tmp_path))


def test_crop_block_size_keeps_the_function_on_short_inputs(tmp_path):
    hf_model().save_pretrained(tmp_path)
    model = gptjax.from_pretrained(str(tmp_path))
    cropped = gptjax.crop_block_size(model, 8)
    assert cropped.cfg.block_size == 8 and cropped.wpe.embedding.shape == (8, 48)
    idx = jnp.asarray(np.random.default_rng(0).integers(0, 61, (2, 8)))
    np.testing.assert_allclose(cropped(idx), model(idx), atol=1e-6)
    with pytest.raises(UsageError, match="block_size must be in"):
        gptjax.crop_block_size(model, 33)
    # on_host: numpy arrays in host memory (to be placed shard by shard), cropped in place
    on_host = gptjax.crop_block_size(gptjax.from_pretrained(str(tmp_path), on_host=True), 8)
    for path, p in nnx.to_flat_state(nnx.state(on_host, nnx.Param)):
        assert type(p[...]) is np.ndarray, path
    np.testing.assert_array_equal(on_host.wpe.embedding[...], cropped.wpe.embedding[...])


def test_finetuning_a_local_hf_model_and_resuming_it(tmp_path):
    """train.py init_from=<HF directory> on a character corpus, then init_from=resume."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question\n" * 40)
    hf_model().save_pretrained(tmp_path / "hf")
    # no model keys given: the shape (2 layers, 3 heads, 48 wide, biases) is the checkpoint's, as in
    # nanoGPT, although char_cpu.py says 4 x 4 x 128 without biases
    args = ["--config", str(REPO / "configs/char_cpu.py"), f"--config.input_file={corpus}",
            f"--config.data_dir={tmp_path / 'data'}", f"--config.out_dir={tmp_path / 'out'}",
            "--config.block_size=16", "--config.batch_size=2", "--config.eval_iters=1",
            "--config.eval_interval=2", "--config.always_save_checkpoint=True"]
    run = lambda *extra: run_program(["train.py", *args, *extra])
    first = run(f"--config.init_from={tmp_path / 'hf'}", "--config.max_iters=2")
    assert first.returncode == 0, first.stderr
    assert f"starting from {tmp_path / 'hf'}: " in first.stdout and "block_size 16, " in first.stdout
    assert "(cropped from 32)" in first.stdout
    recorded = json.loads((tmp_path / "out/config.json").read_text())
    assert [recorded[k] for k in ("n_layer", "n_head", "n_embd", "bias", "block_size", "vocab_size")] == [
        2, 3, 48, True, 16, 61]
    meta = gptjax.checkpoint.read_meta(tmp_path / "out")
    assert meta["model"]["block_size"] == 16 and meta["model"]["gelu_approximate"] is True  # cropped
    resumed = run("--config.init_from=resume", "--config.max_iters=4")
    assert resumed.returncode == 0, resumed.stderr
    assert "step 4: train loss" in resumed.stdout
    wrong = run(f"--config.init_from={tmp_path / 'hf'}", "--config.n_layer=3", f"--config.out_dir={tmp_path / 'o2'}")
    assert "has n_layer=2 but the command line sets --config.n_layer=3: leave those options out" in wrong.stderr
    assert "out_dir" not in wrong.stderr.splitlines()[-1]  # a new out_dir would not help


def test_finetuning_a_local_gpt2_with_the_shakespeare_recipe_then_sampling(tmp_path):
    """The README's offline path: configs/finetune_shakespeare.py from a local Hugging Face GPT-2
    directory (GPT-2's vocabulary, BPE from the tiktoken cache), then sample.py from the run."""
    gpt2_tokenizer()
    hf_model(vocab_size=50257, n_positions=64, n_embd=16, n_layer=1, n_head=2).save_pretrained(tmp_path / "hf")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("To be, or not to be, that is the question:\n" * 60)
    train = run_program(["train.py", "--config", "configs/finetune_shakespeare.py",
                         f"--config.init_from={tmp_path / 'hf'}", f"--config.input_file={corpus}",
                         "--config.dataset=tiny_bpe", f"--config.data_dir={tmp_path / 'data'}",
                         f"--config.out_dir={tmp_path / 'out'}", "--config.gradient_accumulation_steps=2",
                         "--config.max_iters=2", "--config.eval_interval=2", "--config.eval_iters=1",
                         "--config.always_save_checkpoint=True"])
    assert train.returncode == 0, train.stderr[-3000:]
    assert "(cropped from 64)" not in train.stdout and "block_size 64, vocabulary 50,257" in train.stdout
    sample = run_program(["sample.py", f"--out_dir={tmp_path / 'out'}", "--start=To be", "--num_samples=1",
                          "--max_new_tokens=4"])
    assert sample.returncode == 0, sample.stderr[-3000:]
    assert sample.stdout.startswith("To be") and sample.stdout.endswith("---------------\n")


@pytest.mark.parametrize("overrides, key", [(dict(position_encoding="rope"), "position_encoding='rope'"),
                                            (dict(norm="rmsnorm"), "norm='rmsnorm'"),
                                            (dict(tie_embeddings=False), "tie_embeddings=False"),
                                            (dict(logit_softcap=30.0), "logit_softcap=30.0")])
def test_export_refuses_what_gpt2s_format_cannot_hold(tmp_path, overrides, key):
    model = gptjax.GPT(tiny_config(**overrides), rngs=nnx.Rngs(0))
    with pytest.raises(UsageError, match=f"cannot export to Hugging Face's GPT-2 format: GPT-2's format has no {key}"):
        gptjax.export_hf(model, tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written
