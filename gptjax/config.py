"""Training configuration: nanoGPT's keys and defaults, loaded from a recipe (configs/*.py, shipped
as gptjax.configs) with --config.KEY=VALUE overrides."""

import dataclasses
import difflib
import importlib.resources
import runpy
from pathlib import Path

import jax
import ml_collections
from absl import flags
from ml_collections import config_flags

from gptjax import optim
from gptjax.errors import UsageError, nanogpt_only
from gptjax.model import GPTConfig
from gptjax.tokenizers import BPE_VOCAB_SIZE, TOKENIZERS, check_bpe_vocab_size

INIT_FROM = ("scratch", "resume", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")  # or a HF directory
# GPTConfig fields that no training config sets: the vocabulary comes from the data, the GELU
# form from the pretrained checkpoint. Every other field is a config key of the same name.
NOT_CONFIG_KEYS = ("vocab_size", "gelu_approximate")


# nanoGPT's config/*.py recipes whose gptjax recipe has another name (finetune_shakespeare and
# eval_gpt2 have the same).
NANOGPT_RECIPES = {"train_shakespeare_char": "char", "train_gpt2": "gpt2", "eval_gpt2_medium": "eval_gpt2:gpt2-medium",
                   "eval_gpt2_large": "eval_gpt2:gpt2-large", "eval_gpt2_xl": "eval_gpt2:gpt2-xl"}


def default_config() -> ml_collections.ConfigDict:
    """nanoGPT's train.py defaults (GPT-2 124M on OpenWebText), plus gptjax's own keys."""
    c = ml_collections.ConfigDict()
    # I/O
    c.out_dir = "out"
    c.eval_interval = 2000
    c.log_interval = 1
    c.eval_iters = 200
    c.eval_only = False  # evaluate once and exit
    c.hellaswag_interval = 0  # HellaSwag accuracy at the evaluations at multiples of this iteration (0: never)
    c.hellaswag_file = ""  # hellaswag_val.jsonl; else data_dir/hellaswag/, downloaded on first use
    c.hellaswag_examples = 0  # score the first N examples (0: all 10,042)
    c.always_save_checkpoint = True  # save at every evaluation, else when val loss improves (and see below)
    c.checkpoint_interval = 0  # also save every N iterations, whatever the val loss (0: every eval_interval)
    c.checkpoint_minutes = 0.0  # also save when this many minutes passed since the last save (0: off)
    c.keep_checkpoints = 2  # the newest N are kept, and the one with the best val loss
    c.async_checkpointing = True  # write checkpoints in the background while training goes on
    c.wandb_log = False  # log every record to Weights & Biases too (the wandb extra)
    c.wandb_project = "gptjax"
    c.wandb_run_name = "gpt2"
    c.tensorboard_dir = ""  # write every record as TensorBoard events here too (the tensorboard extra); "": off
    c.log_health = False  # also log each block's parameter norm, gradient norm and update/parameter ratio
    c.init_from = "scratch"  # "resume" from out_dir, a GPT-2 ("gpt2"...) or a local HF GPT-2 directory
    # data
    c.dataset = "shakespeare_char"
    c.data_dir = "data"  # prepared files go to data_dir/dataset/
    c.input_file = ""  # text, .jsonl or a folder of .txt to train on; else data_dir/dataset/input.txt
    c.tokenizer = "char"  # "char", "gpt2" (GPT-2's BPE via tiktoken) or "bpe" (a byte-level BPE trained on the text)
    c.bpe_vocab_size = BPE_VOCAB_SIZE  # the bpe tokenizer's vocabulary: 256 bytes, merges, <|endoftext|>
    c.rebuild_data = False  # prepare data_dir/dataset again from the text, whatever it was prepared from
    c.val_fraction = 0.1  # the last 10% of the tokens (or of the documents, from 100 on) become val.bin
    c.text_key = "text"  # the field of .jsonl records and the column of .parquet files that holds the text
    c.num_proc = 0  # processes that tokenize when preparing data (0: one per usable CPU)
    c.gradient_accumulation_steps = 1  # micro-batches per update (nanoGPT's default is 40)
    c.batch_size = 12
    c.block_size = 1024
    # model
    c.n_layer = 12
    c.n_head = 12
    c.n_embd = 768
    c.dropout = 0.0
    c.bias = False
    c.attention = "auto"  # "masked", "fast" or "auto"
    # architecture after GPT-2 (docs/config.md); these defaults are GPT-2's and nanoGPT's
    c.position_encoding = "learned"  # or "rope"
    c.norm = "layernorm"  # or "rmsnorm"
    c.norm_scale = True  # RMSNorm's learned scale
    c.qk_norm = False
    c.mlp_activation = "gelu"  # or "relu2"
    c.tie_embeddings = True
    c.logit_softcap = 0.0  # 0: off
    c.zero_init_proj = False
    # AdamW and its schedule
    c.learning_rate = 6e-4
    c.max_iters = 600000
    c.weight_decay = 1e-1
    c.beta1 = 0.9
    c.beta2 = 0.95
    c.grad_clip = 1.0  # 0 disables
    c.max_nonfinite_steps = 10  # stop after this many steps in a row with a non-finite loss (their updates skipped)
    c.decay_lr = True
    c.warmup_iters = 2000
    c.lr_decay_iters = 600000  # ~= max_iters per Chinchilla
    c.min_lr = 6e-5  # ~= learning_rate / 10 per Chinchilla
    c.lr_schedule = "cosine"  # or "wsd": warmup, constant, linear decay over the last cooldown_frac
    c.cooldown_frac = 0.2
    c.optimizer = "adamw"  # or "muon": Muon for the blocks' matrices, AdamW (learning_rate) for the rest
    c.muon_lr = 0.02
    c.muon_momentum = 0.95
    # system
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})  # devices per axis; -1: all the rest
    c.remat = False  # recompute each block's activations in the backward pass: less memory, more compute
    c.seed = 1337
    # nanoGPT computes in bfloat16 where the accelerator has it; on a CPU it runs float32.
    c.dtype = "float32" if jax.default_backend() == "cpu" else "bfloat16"
    return c


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> GPTConfig:
    """The GPTConfig a training config describes."""
    keys = [field.name for field in dataclasses.fields(GPTConfig) if field.name not in NOT_CONFIG_KEYS]
    try:
        return GPTConfig(vocab_size=vocab_size, **{key: config[key] for key in keys})
    except ValueError as e:
        raise UsageError(str(e).replace("GPTConfig.", "config.")) from None


def validate(config: ml_collections.ConfigDict) -> None:
    """Refuse values no run could use, with the key named."""
    positive = ("eval_interval", "log_interval", "eval_iters", "batch_size", "block_size",
                "gradient_accumulation_steps", "keep_checkpoints")
    for key in positive:
        if config[key] < 1:
            raise UsageError(f"config.{key} must be >= 1, got {config[key]}")
    for key in ("max_iters", "warmup_iters", "lr_decay_iters", "learning_rate", "min_lr", "weight_decay", "grad_clip",
                "checkpoint_interval", "checkpoint_minutes", "muon_lr", "hellaswag_interval", "hellaswag_examples",
                "seed"):
        if config[key] < 0:
            raise UsageError(f"config.{key} must be >= 0, got {config[key]}")
    for key, choices in (("optimizer", optim.OPTIMIZERS), ("lr_schedule", optim.SCHEDULES)):
        if config[key] not in choices:
            raise UsageError(f"config.{key} must be one of {choices}, got {config[key]!r}")
    for key in ("cooldown_frac", "muon_momentum"):
        if not 0 <= config[key] <= 1:
            raise UsageError(f"config.{key} must be in [0, 1], got {config[key]}")
    for key in ("beta1", "beta2"):  # at 1 AdamW's moment would never move from 0
        if not 0 <= config[key] < 1:
            raise UsageError(f"config.{key} must be in [0, 1), got {config[key]}")
    if config.init_from not in INIT_FROM and not Path(config.init_from).is_dir():
        raise UsageError(
            f"config.init_from must be one of {INIT_FROM} or a Hugging Face GPT-2 directory, got {config.init_from!r}"
        )
    if config.tokenizer not in TOKENIZERS:
        raise UsageError(f"config.tokenizer must be one of {TOKENIZERS}, got {config.tokenizer!r}")
    if config.tokenizer == "bpe":
        check_bpe_vocab_size(config.bpe_vocab_size)
    for key in ("out_dir", "data_dir", "tensorboard_dir"):
        if config[key] and (file := _file_in_the_way(Path(config[key]))):
            raise UsageError(f"config.{key}={config[key]} cannot be a folder: {file} is a file; choose another {key}")
    model_config(config, vocab_size=1)  # the model keys, checked by GPTConfig


def _file_in_the_way(folder: Path) -> Path | None:
    """The file at folder, or at the nearest of its parents that exists, if that is not a folder."""
    existing = next((path for path in (folder, *folder.parents) if path.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None


def _all_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every key, nested ones dotted (mesh.fsdp)."""
    keys = []
    for key, value in config.items():
        keys.append(prefix + key)
        if isinstance(value, ml_collections.ConfigDict):
            keys += _all_keys(value, prefix + key + ".")
    return keys


def _closest_keys(key: str, valid: list[str]) -> str:
    matches = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    return ", ".join(matches) if matches else "see the config key table in docs/config.md"


def _recipe_folder():
    """The shipped recipes: the installed package gptjax.configs, or the configs/ folder of a clone
    that is on the import path without being installed."""
    try:
        return importlib.resources.files("gptjax.configs")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "configs"


def recipes() -> list[str]:
    """The names of the shipped recipes (configs/NAME.py)."""
    return sorted(p.name.removesuffix(".py") for p in _recipe_folder().iterdir()
                  if p.name.endswith(".py") and not p.name.startswith("_"))


def resolve_config_file(spec: str) -> str:
    """FILE or FILE:ARG, or a shipped recipe's NAME or NAME:ARG, as an existing FILE[:ARG] (ARG is
    passed to the file's get_config)."""
    path, colon, arg = spec.partition(":")
    if not Path(path).is_file() and path in recipes():
        path = str(_recipe_folder() / f"{path}.py")
    if not Path(path).is_file():
        recipe = Path(path).name.removesuffix(".py")
        if recipe in NANOGPT_RECIPES:
            name, ours_colon, ours_arg = NANOGPT_RECIPES[recipe].partition(":")
            raise UsageError(f"{path} is nanoGPT's recipe; gptjax's is --config {NANOGPT_RECIPES[recipe]} "
                             f"(configs/{name}.py{ours_colon}{ours_arg})")
        if recipe in recipes():  # configs/char.py from outside the clone: the recipe ships with gptjax
            raise UsageError(f"config file {Path(path).absolute()} does not exist: for the recipe that ships with "
                             f"gptjax, pass --config {recipe}{colon}{arg}")
        raise UsageError(f"config file {Path(path).absolute()} does not exist: give a file, or a recipe name "
                         f"({', '.join(recipes())})")
    return path + colon + arg


def _with_config_flag(argv: list[str]) -> list[str]:
    """argv with its config file first, as --config=FILE[:ARG] resolved; nanoGPT's habit of naming
    the file alone (train.py configs/char.py) is taken as --config configs/char.py."""
    for i, arg in enumerate(argv[1:], start=1):
        if arg.startswith("--config="):
            return [argv[0], "--config=" + resolve_config_file(arg.split("=", 1)[1]), *argv[1:i], *argv[i + 1:]]
        if arg == "--config" and i + 1 < len(argv):
            return [argv[0], "--config=" + resolve_config_file(argv[i + 1]), *argv[1:i], *argv[i + 2:]]
    if len(argv) > 1 and not argv[1].startswith("-"):
        return [argv[0], "--config=" + resolve_config_file(argv[1]), *argv[2:]]
    raise UsageError("no config file: pass --config configs/char.py (or another recipe in configs/)")


def command_line_keys(argv: list[str]) -> set[str]:
    """The config keys that argv sets with --config.KEY=VALUE."""
    return {arg[len("--config."):].split("=", 1)[0] for arg in argv[1:] if arg.startswith("--config.")}


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """The config that a recipe's get_config() returns: FILE, FILE:ARG or a recipe NAME[:ARG]."""
    path, _, arg = resolve_config_file(spec).partition(":")
    try:
        get_config = runpy.run_path(path)["get_config"]
    except KeyError:
        raise UsageError(f"config file {path} defines no get_config()") from None
    try:
        return get_config(arg) if arg else get_config()
    except TypeError as e:  # ConfigDict refuses a value of another type than the default's; or ARG
        raise UsageError(f"config file {spec}: {e}") from None


def from_command_line(argv: list[str]) -> ml_collections.ConfigDict:
    """The config that `--config FILE --config.key=value ...` describes, validated."""
    argv = _with_config_flag(argv)
    valid = _all_keys(load_config_file(argv[1].split("=", 1)[1]))
    for arg in argv[2:]:
        if arg.startswith("-") and (nanogpt := nanogpt_only(arg)):
            raise nanogpt
    for key in command_line_keys(argv):
        if key not in valid:
            raise UsageError(f"unknown config key {key!r}; closest valid keys: {_closest_keys(key, valid)}")
    for arg in argv[2:]:
        if arg.startswith("-") and not arg.startswith("--config."):
            key = arg.lstrip("-").split("=", 1)[0]
            hint = f"did you mean --config.{arg.lstrip('-')}? " if key in valid else ""
            raise UsageError(f"unknown option {arg}: {hint}options are --config FILE and --config.KEY=VALUE")
    flag_values = flags.FlagValues()
    # config_flags reads the override names from the argv it is given when the flag is defined
    holder = config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
    try:
        flag_values(argv)
    except flags.Error as e:  # a value that does not parse as the key's type
        raise UsageError(str(e).splitlines()[0]) from None
    config = holder.value
    validate(config)
    return config
