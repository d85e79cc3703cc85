import dataclasses
import re

import pytest
from conftest import REPO

from gptjax.config import NOT_CONFIG_KEYS, default_config, from_command_line, load_config_file, model_config, recipes
from gptjax.errors import UsageError
from gptjax.model import GPTConfig


def test_char_config_is_nanogpts_train_shakespeare_char():
    c = load_config_file("configs/char.py")
    assert (c.batch_size, c.block_size, c.n_layer, c.n_head, c.n_embd, c.dropout) == (64, 256, 6, 6, 384, 0.2)
    assert (c.learning_rate, c.max_iters, c.lr_decay_iters, c.min_lr, c.beta2, c.warmup_iters) == (
        1e-3, 5000, 5000, 1e-4, 0.99, 100)
    assert (c.eval_interval, c.eval_iters, c.log_interval, c.always_save_checkpoint) == (250, 200, 10, False)
    assert c.out_dir == "out-shakespeare-char" and c.dataset == "shakespeare_char"
    # nanoGPT train.py's defaults for everything the recipe leaves alone
    assert (c.bias, c.weight_decay, c.grad_clip, c.beta1, c.gradient_accumulation_steps) == (False, 0.1, 1.0, 0.9, 1)


def test_char_cpu_config_is_nanogpts_laptop_command():
    c = load_config_file("configs/char_cpu.py")
    assert (c.block_size, c.batch_size, c.n_layer, c.n_head, c.n_embd) == (64, 12, 4, 4, 128)
    assert (c.max_iters, c.lr_decay_iters, c.dropout, c.eval_iters, c.log_interval, c.dtype) == (
        2000, 2000, 0.0, 20, 1, "float32")
    assert c.learning_rate == 1e-3 and c.eval_interval == 250  # the rest is configs/char.py


def test_overrides_apply_with_their_types():
    c = from_command_line(["train.py", "--config", "configs/char.py", "--config.batch_size=32",
                           "--config.dropout=0", "--config.out_dir=elsewhere"])
    assert (c.batch_size, c.dropout, c.out_dir) == (32, 0.0, "elsewhere")
    assert isinstance(c.dropout, float)


@pytest.mark.parametrize("argv, message", [
    (["--config.batch_sise=3"], r"unknown config key 'batch_sise'; closest valid keys: batch_size"),
    (["--config.lerning_rate=1"], r"closest valid keys: learning_rate"),
    (["--config.batch_size=abc"], r"--config.batch_size=abc: invalid literal for int"),
    (["--config.init_from=gpt9"], r"config.init_from must be one of"),
    (["--config.n_head=5"], r"config.n_embd=384 must be divisible by n_head=5"),
    (["--config.eval_interval=0"], r"config.eval_interval must be >= 1"),
    (["--config.gradient_accumulation_steps=0"], r"config.gradient_accumulation_steps must be >= 1"),
    (["--config.hellaswag_examples=-1"], r"config.hellaswag_examples must be >= 0, got -1"),
    (["--verbose"], r"unknown option --verbose"),
    (["--config.optimizer=sgd"], r"config.optimizer must be one of \('adamw', 'muon'\), got 'sgd'"),
    (["--config.lr_schedule=linear"], r"config.lr_schedule must be one of \('cosine', 'wsd'\)"),
    (["--config.cooldown_frac=2.0"], r"config.cooldown_frac must be in \[0, 1\], got 2.0"),
    (["--config.beta2=1.5"], r"config.beta2 must be in \[0, 1\), got 1.5"),  # AdamW diverged silently
    (["--config.beta1=-0.1"], r"config.beta1 must be in \[0, 1\), got -0.1"),
    (["--config.seed=-1"], r"config.seed must be >= 0, got -1"),  # was numpy's traceback
    (["--config.position_encoding=alibi"], r"config.position_encoding must be one of"),
    (["--config.out_dir=README.md/run"], r"config.out_dir=README.md/run cannot be a folder: README.md is a file; "
                                         "choose another out_dir"),
    (["--config.data_dir=pyproject.toml"], r"config.data_dir=pyproject.toml cannot be a folder: pyproject.toml is a"),
])
def test_bad_overrides_are_refused_naming_the_key(argv, message):
    with pytest.raises(UsageError, match=message) as error:
        from_command_line(["train.py", "--config", "configs/char.py", *argv])
    assert "\n" not in str(error.value)


def test_missing_config_file_and_missing_flag_are_refused():
    with pytest.raises(UsageError, match="configs/nope.py does not exist"):
        from_command_line(["train.py", "--config=configs/nope.py"])
    with pytest.raises(UsageError, match="no config file"):
        from_command_line(["train.py"])


def leaf_keys(config, prefix=""):
    """Every key that holds a value, nested ones dotted (mesh.fsdp)."""
    keys = []
    for key, value in config.items():
        keys += leaf_keys(value, f"{prefix}{key}.") if hasattr(value, "items") else [prefix + key]
    return keys


def test_docs_document_every_config_key_and_nothing_else():
    table = (REPO / "docs/config.md").read_text(encoding="utf-8")
    documented = re.findall(r"^\| `([\w.]+)` \|", table, flags=re.M)
    assert sorted(documented) == sorted(leaf_keys(default_config()))


def test_model_keys_are_declared_once_as_gptconfig_fields():
    config = load_config_file("configs/char.py")
    config.remat = True
    cfg = model_config(config, vocab_size=65)
    for field in dataclasses.fields(GPTConfig):
        if field.name in NOT_CONFIG_KEYS:
            assert field.name not in config
        else:
            assert getattr(cfg, field.name) == config[field.name], field.name
    assert cfg.vocab_size == 65 and cfg.gelu_approximate is False


def test_a_recipe_takes_an_argument_after_a_colon():
    for spec in ("configs/eval_gpt2.py:gpt2-xl", "eval_gpt2:gpt2-xl"):
        c = from_command_line(["train.py", "--config", spec, "--config.eval_iters=3"])
        assert (c.init_from, c.out_dir, c.eval_only, c.eval_iters) == ("gpt2-xl", "out-eval-gpt2-xl", True, 3)
    assert load_config_file("configs/eval_gpt2.py").init_from == "gpt2"
    finetune = load_config_file("configs/finetune_shakespeare.py")  # builds on eval_gpt2.py:gpt2-xl
    assert (finetune.init_from, finetune.eval_only, finetune.learning_rate) == ("gpt2-xl", False, 3e-5)
    with pytest.raises(UsageError, match="the model must be one of gpt2, gpt2-medium"):
        load_config_file("configs/eval_gpt2.py:gpt5")


def test_shipped_recipes_are_found_by_name_from_any_directory(tmp_path, monkeypatch):
    assert {"char", "char_cpu", "eval_gpt2", "finetune_shakespeare", "gpt2"} <= set(recipes())
    monkeypatch.chdir(tmp_path)  # no configs/ here
    assert from_command_line(["train.py", "--config=char_cpu"]).n_embd == 128
    with pytest.raises(UsageError, match=rf"config file {tmp_path}/chair does not exist: give a file, or a recipe "
                                         r"name \(char, "):
        from_command_line(["train.py", "--config", "chair"])
    with pytest.raises(UsageError, match=rf"config file {tmp_path}/configs/eval_gpt2.py does not exist: for the "
                                         "recipe that ships with gptjax, pass --config eval_gpt2:gpt2-xl"):
        from_command_line(["train.py", "--config", "configs/eval_gpt2.py:gpt2-xl"])


def test_recipes_are_found_by_name_from_a_clone_that_is_not_installed(tmp_path, monkeypatch):
    # PYTHONPATH=clone without pip install: there is no gptjax.configs package, only configs/
    def no_package(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr("importlib.resources.files", no_package)
    monkeypatch.chdir(tmp_path)
    assert {"char", "char_cpu", "gpt2"} <= set(recipes())
    assert from_command_line(["train.py", "--config", "char_cpu"]).n_embd == 128


def test_nanogpt_habits_are_understood_or_answered_with_the_right_spelling():
    # nanoGPT names its config file alone: python train.py config/train_shakespeare_char.py
    c = from_command_line(["train.py", "configs/char_cpu.py", "--config.max_iters=10"])
    assert (c.n_embd, c.max_iters) == (128, 10)
    with pytest.raises(UsageError, match=r"unknown option --max_iters=10: did you mean --config.max_iters=10\?"):
        from_command_line(["train.py", "configs/char_cpu.py", "--max_iters=10"])


@pytest.mark.parametrize("argv, message", [
    (["configs/char.py", "--config.device=cpu"], "--config.device is nanoGPT's: JAX chooses the device; "
                                                 "JAX_PLATFORMS=cpu runs on the CPU; leave it out"),
    (["configs/char.py", "--device=mps"], "--device is nanoGPT's: JAX chooses the device"),
    (["configs/char.py", "--config.compile=False"], "--config.compile is nanoGPT's: gptjax always compiles its steps"),
    (["configs/char.py", "--backend=nccl"], "--backend is nanoGPT's: a multi-host run joins with JAX_COORDINATOR"),
    (["config/train_shakespeare_char.py"], "config/train_shakespeare_char.py is nanoGPT's recipe; gptjax's is "
                                           r"--config char \(configs/char.py\)$"),
    (["--config", "config/train_gpt2.py"], r"gptjax's is --config gpt2 \(configs/gpt2.py\)$"),
    (["config/eval_gpt2_large.py"], r"gptjax's is --config eval_gpt2:gpt2-large \(configs/eval_gpt2.py:gpt2-large\)$"),
])
def test_nanogpts_options_and_recipes_that_gptjax_spells_otherwise_are_answered(argv, message):
    with pytest.raises(UsageError, match=message) as error:
        from_command_line(["train.py", *argv])
    assert "\n" not in str(error.value) and "closest valid keys" not in str(error.value)
