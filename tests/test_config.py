import pytest

from gptjax.config import UsageError, default_config, from_command_line, load_config_file


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
    (["--verbose"], r"unknown option --verbose"),
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


def test_every_default_key_is_documented_in_the_readme():
    readme = open("README.md", encoding="utf-8").read()
    missing = [key for key in default_config() if f"| `{key}` |" not in readme]
    assert not missing
