"""Where a run starts: a new model, the checkpoint to resume, or GPT-2's weights, as a train state
built on the mesh; and the model keys (shape, architecture) that each of them fixes."""

import dataclasses
from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections
import optax
from flax import nnx
from jax.sharding import Mesh

from gptjax import checkpoint, optim, pretrained, sharding
from gptjax.config import model_config
from gptjax.errors import UsageError, check_writable
from gptjax.model import GPT, GPTConfig
from gptjax.step import TrainState
from gptjax.tokenizers import Tokenizer

# The model keys a run takes from the model it starts from (a checkpoint or GPT-2), as nanoGPT does.
_SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "bias", "block_size", *GPTConfig.ARCHITECTURE_FIELDS)


def _source_model(config: ml_collections.ConfigDict) -> tuple[str, GPTConfig | None]:
    """What a run starts from, in words, and the config of its model where that is not the
    config's own: the checkpoint to resume, or pretrained weights. A resume on another tokenizer
    than the run's is refused: the model's vocabulary is its tokenizer's."""
    out_dir = Path(config.out_dir).absolute()
    if config.init_from == "scratch":
        return "scratch", None
    if config.init_from == "resume":  # every checkpoint of a run has the same model: any readable one says it
        step, meta = checkpoint.choose(out_dir, warn=lambda _: None)[0]
        run = meta.get("config", {})
        for key in _tokenizer_keys(run):
            if key in run and run[key] != config[key]:
                raise _keeps_tokenizer(out_dir, key, run[key])
        return f"the checkpoint {out_dir}/checkpoints/{step}", GPTConfig(**meta["model"])
    return config.init_from, pretrained.pretrained_config(config.init_from)


# Keys that say how this process runs rather than what the run is: a resumed run takes them from
# the command line and its recipe, and every other key from the run's own settings.
PROCESS_KEYS = ("init_from", "out_dir", "mesh", "attention", "remat", "num_proc", "async_checkpointing",
                "rebuild_data")


def _tokenizer_keys(run: dict) -> tuple[str, ...]:
    """The keys of a run's settings that name its tokenizer, which is its model's vocabulary."""
    return ("tokenizer", "bpe_vocab_size") if run.get("tokenizer") == "bpe" else ("tokenizer",)


def _keeps_tokenizer(out_dir: Path, key: str, old) -> UsageError:
    return UsageError(f"{out_dir} was trained with {key}={old!r}, which a resumed run keeps: leave "
                      f"--config.{key} out, or start a new run in another out_dir")


def resumed_settings(config: ml_collections.ConfigDict, given: frozenset[str],
                     say: Callable[[str], None]) -> ml_collections.ConfigDict:
    """For a program's command line with init_from=resume: config with the run's own settings
    (those its newest checkpoint was saved with) for every key but PROCESS_KEYS, except the keys
    the command line sets (`given`); says in one line each what the command line changes (old ->
    new) and where the run's setting is kept over the recipe's. Other runs: config as it is."""
    if config.init_from != "resume":
        return config
    out_dir = Path(config.out_dir).absolute()
    run = checkpoint.choose(out_dir, warn=lambda _: None)[0][1].get("config", {})
    resolved = config.copy_and_resolve_references()
    for key, old in run.items():
        if key in PROCESS_KEYS or key not in resolved or old == resolved[key]:
            continue
        if key in given and key in _tokenizer_keys(run):
            raise _keeps_tokenizer(out_dir, key, old)
        if key in given:
            say(f"resuming {out_dir} with {key} {old!r} -> {resolved[key]!r} (--config.{key})")
        else:
            say(f"resuming {out_dir} with its own {key}={old!r} (the recipe says {resolved[key]!r}; "
                f"--config.{key}={resolved[key]} changes it)")
            resolved[key] = old
    return resolved


def resolve_model_keys(config: ml_collections.ConfigDict, given: frozenset[str] = frozenset(),
                       ) -> tuple[ml_collections.ConfigDict, GPTConfig | None]:
    """A copy of config whose model shape keys are those of the model the run starts from (as
    nanoGPT reads them off a checkpoint or GPT-2), and that model's config (None from scratch). A
    key that the command line (`given`) sets to another value is refused. A pretrained model is
    cropped to a smaller block_size."""
    resolved = config.copy_and_resolve_references()
    source, source_cfg = _source_model(config)
    if source_cfg is None:
        return resolved, None
    shape = {key: getattr(source_cfg, key) for key in _SHAPE_KEYS}
    if config.init_from != "resume":
        shape["block_size"] = min(config.block_size, source_cfg.block_size)  # nanoGPT's crop
    differ = [key for key in _SHAPE_KEYS if key in given and config[key] != shape[key]]
    if differ:
        raise UsageError(
            f"{source} has " + ", ".join(f"{key}={shape[key]}" for key in differ) + " but the command line sets "
            + ", ".join(f"--config.{key}={config[key]}" for key in differ)
            + ": leave those options out, the model's shape and architecture come from what the run starts from")
    resolved.update(shape)
    return resolved, source_cfg


def _resumed_config(config: ml_collections.ConfigDict, tokenizer: Tokenizer, meta: dict) -> GPTConfig:
    """The model config of the checkpoint to resume, given its metadata: its architecture, GELU
    form included, with the config's dropout, attention, dtype and remat."""
    out_dir = Path(config.out_dir).absolute()
    if meta["tokenizer"] != tokenizer.describe():
        raise UsageError(f"the checkpoint in {out_dir} was trained with another tokenizer or vocabulary "
                         "than the dataset's: resume on the same data, or start a new out_dir")
    return dataclasses.replace(GPTConfig(**meta["model"]), dropout=config.dropout,
                               attention=config.attention, dtype=config.dtype, remat=config.remat)


def sharded_state(cfg: GPTConfig, tx: optax.GradientTransformation, mesh: Mesh, seed: int = 0) -> TrainState:
    """A randomly initialised GPT of cfg (nnx.Rngs(seed)) and tx's fresh state, built straight
    into their shards on the mesh (sharding.jit_sharded)."""
    return sharding.jit_sharded(lambda: TrainState.create(GPT(cfg, rngs=nnx.Rngs(seed)), tx, seed=seed), mesh)()


def _new_state(config: ml_collections.ConfigDict, tokenizer: Tokenizer, tx: optax.GradientTransformation,
               mesh: Mesh) -> TrainState:
    """A new train state built straight into its shards on the mesh (sharding.jit_sharded): a
    randomly initialised model, or GPT-2's weights read into host memory and placed shard by
    shard, each with a fresh optimizer state."""
    if config.init_from == "scratch":
        # nanoGPT pads GPT-2's 50257 tokens to 50304 (GPTConfig's default) when training from scratch
        vocab_size = GPTConfig.vocab_size if config.tokenizer == "gpt2" else len(tokenizer)
        return sharded_state(model_config(config, vocab_size=vocab_size), tx, mesh, seed=config.seed)
    model = pretrained.from_pretrained(config.init_from, on_host=True, dropout=config.dropout,
                                       attention=config.attention, dtype=config.dtype, remat=config.remat)
    if model.cfg.vocab_size < len(tokenizer):
        raise UsageError(f"the dataset's tokenizer has {len(tokenizer)} tokens, more than the {model.cfg.vocab_size} "
                         f"of {config.init_from}: use its tokenizer (--config.tokenizer=gpt2)")
    if config.block_size < model.cfg.block_size:
        model = pretrained.crop_block_size(model, config.block_size)
    model.train()
    graphdef, params = nnx.split(model, nnx.Param)
    params = nnx.to_pure_dict(params)
    params = sharding.place(params, sharding.state_shardings(params, mesh))
    make = lambda params: TrainState.create(nnx.merge(graphdef, params), tx, seed=config.seed)
    return sharding.jit_sharded(make, mesh, params)(params)


def checkpoint_items(state: TrainState) -> dict:
    """The train state as the named pytrees of its checkpoint: each of its array fields."""
    return {field.name: getattr(state, field.name) for field in dataclasses.fields(state)
            if field.metadata.get("pytree_node", True)}


def initial_state(config: ml_collections.ConfigDict, tokenizer: Tokenizer, mesh: Mesh,
                   warn: Callable[[str], None]) -> tuple[TrainState, float]:
    """The state a run starts from, placed on the mesh, and the best val loss so far. A resumed
    run starts from the newest checkpoint that can be read; newer ones that cannot are renamed
    aside (checkpoint.set_aside_newer), so that the run can write those steps again."""
    tx = optim.from_config(config)
    out_dir = Path(config.out_dir).absolute()
    if config.init_from == "resume":
        candidates = checkpoint.choose(out_dir, "newest", warn)
        model_cfg = _resumed_config(config, tokenizer, candidates[0][1])
        shapes = jax.eval_shape(lambda: TrainState.create(GPT(model_cfg, rngs=nnx.Rngs(0)), tx, config.seed))
        abstract = sharding.abstract_on_mesh(shapes, mesh)
        step, meta, items = checkpoint.restore_first(out_dir, candidates, checkpoint_items(abstract), warn)
        for moved in checkpoint.set_aside_newer(out_dir, step):
            warn(f"renamed the unreadable checkpoint to {moved}")
        return abstract.replace(**items), meta["best_val_loss"]
    return _new_state(config, tokenizer, tx, mesh), float("inf")


def refuse_before_work(config: ml_collections.ConfigDict) -> None:
    """The refusals that need only out_dir, made before any data is prepared, anything compiled or
    any file written: a new run into an out_dir that holds a checkpoint, and a checkpoints folder
    that cannot be written (resolve_model_keys, next, refuses a resume on another tokenizer)."""
    out_dir = Path(config.out_dir).absolute()
    if config.init_from != "resume" and (existing := checkpoint.latest_step(out_dir)) is not None:
        raise UsageError(
            f"{out_dir} already holds a checkpoint (iter {existing}) that this run would replace: pass "
            "--config.init_from=resume to continue it, or choose another out_dir"
        )
    if (out_dir / "checkpoints").is_dir():
        check_writable(out_dir / "checkpoints", "config.out_dir")
