"""Checkpoints in out_dir/checkpoints/<iter>/ with orbax: parameters, optimizer state and the
metadata a run needs to resume (iteration, best val loss, config, model shape, tokenizer)."""

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from gptjax.config import UsageError
from gptjax.model import GPT, GPTConfig

if TYPE_CHECKING:  # the training loop imports this module
    from gptjax.train import TrainState

# The fields that fix the parameters' shapes; dropout, attention path and dtype may change on resume.
SHAPE_FIELDS = ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "bias")


def _manager(out_dir: Path, item_handlers: dict | None = None) -> ocp.CheckpointManager:
    # Synchronous saves: the next train_step donates the buffers a background save would still read.
    options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False)
    return ocp.CheckpointManager(Path(out_dir).absolute() / "checkpoints", options=options,
                                 item_handlers=item_handlers)


def latest_iter(out_dir: Path) -> int | None:
    """The iteration of the newest checkpoint in out_dir, or None."""
    if not (Path(out_dir) / "checkpoints").is_dir():
        return None
    with _manager(out_dir) as manager:
        return manager.latest_step()


def save(out_dir: Path, state: "TrainState", *, best_val_loss: float,
         config: ml_collections.ConfigDict, model: GPTConfig, tokenizer: dict) -> None:
    """Write the state at its current iteration (replacing the previous checkpoint)."""
    meta = {
        "iter": int(state.step), "best_val_loss": float(best_val_loss), "config": config.to_dict(),
        "model": dataclasses.asdict(model), "tokenizer": tokenizer,
    }
    train = {"opt_state": state.opt_state, "step": state.step, "dropout_key": state.dropout_key}
    with _manager(out_dir) as manager:
        manager.save(int(state.step), args=ocp.args.Composite(
            params=ocp.args.StandardSave(state.params), train=ocp.args.StandardSave(train),
            meta=ocp.args.JsonSave(meta),
        ))


def read_meta(out_dir: Path) -> dict:
    """The metadata of the newest checkpoint in out_dir: iter, best_val_loss, config, model
    (the GPTConfig fields) and tokenizer."""
    iteration = latest_iter(out_dir)
    if iteration is None:
        raise UsageError(
            f"{out_dir} holds no checkpoint: train with init_from='scratch' first, "
            "or set out_dir to a run that saved one"
        )
    with _manager(out_dir) as manager:
        return manager.restore(iteration, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta


def restore(out_dir: Path, template: "TrainState") -> "TrainState":
    """The newest checkpoint in out_dir, loaded into a state shaped like template."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, {
        "params": template.params,
        "train": {"opt_state": template.opt_state, "step": template.step, "dropout_key": template.dropout_key},
    })
    step = latest_iter(out_dir)
    stored_key_shape = _stored_train_metadata(out_dir, step)["dropout_key"].shape
    if stored_key_shape != template.dropout_key.shape:  # checked before orbax starts reading
        raise UsageError(
            f"the checkpoint in {out_dir} was written by a gptjax whose dropout key had shape "
            f"{stored_key_shape}, not {template.dropout_key.shape} (threefry before the rbg PRNG): "
            "resume it with the gptjax version that wrote it, or start a new out_dir"
        )
    with _manager(out_dir) as manager:
        restored = manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract["params"]),
            train=ocp.args.StandardRestore(abstract["train"]),
        ))
    return template.replace(params=restored.params, **restored.train)


def _stored_train_metadata(out_dir: Path, step: int) -> dict:
    """Shapes and dtypes of the "train" item of a checkpoint, read without restoring anything."""
    handlers = {"params": ocp.StandardCheckpointHandler(), "train": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler()}
    with _manager(out_dir, handlers) as manager:
        return dict(manager.item_metadata(step)["train"])


def load_model(out_dir: Path, dtype: str | None = None) -> tuple[GPT, dict]:
    """The model of the newest checkpoint in out_dir (in eval mode) and the checkpoint's metadata;
    dtype, if given, replaces the compute dtype it was trained with."""
    meta = read_meta(out_dir)
    model_cfg = GPTConfig(**{**meta["model"], **({"dtype": dtype} if dtype else {})})
    abstract = nnx.eval_shape(lambda: GPT(model_cfg, rngs=nnx.Rngs(0)))
    graphdef, abstract_params = nnx.split(abstract, nnx.Param)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.to_pure_dict(abstract_params))
    with _manager(out_dir) as manager:
        restored = manager.restore(manager.latest_step(),
                                   args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
    model = nnx.merge(graphdef, restored.params)
    model.eval()
    return model, meta
