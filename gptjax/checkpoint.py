"""Checkpoints in out_dir/checkpoints/<step>/ with orbax: named pytrees of arrays and a JSON
metadata dict. What the pytrees hold is the caller's business (the training program saves the
fields of its train state); this module knows names, arrays, metadata and the format version.
"""

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from gptjax.errors import UsageError
from gptjax.model import GPT, GPTConfig

# Raised whenever what a checkpoint holds changes; a checkpoint of another version is refused.
# Version 1 (no "format_version" in its metadata) stored "params" and a "train" item.
FORMAT_VERSION = 2
_META = "meta"  # the item that holds the metadata


def _is_array(tree: Any) -> bool:
    return jax.tree_util.treedef_is_leaf(jax.tree.structure(tree))


def _stored(tree: Any) -> Any:
    """orbax's StandardSave takes no bare array: a single array is stored as {"array": it}."""
    return {"array": tree} if _is_array(tree) else tree


def _manager(out_dir: Path) -> ocp.CheckpointManager:
    # Synchronous saves: the next train_step donates the buffers a background save would still read.
    options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False)
    return ocp.CheckpointManager(Path(out_dir).absolute() / "checkpoints", options=options)


def latest_step(out_dir: Path) -> int | None:
    """The step of the newest checkpoint in out_dir, or None."""
    if not (Path(out_dir) / "checkpoints").is_dir():
        return None
    with _manager(out_dir) as manager:
        return manager.latest_step()


def save(out_dir: Path, step: int, items: dict[str, Any], meta: dict) -> None:
    """Write the pytrees `items` (by name) and the JSON-able `meta` as the checkpoint of `step`,
    replacing the previous one."""
    if _META in items:
        raise ValueError(f"{_META!r} is the metadata's name; give the item another name")
    meta = {"format_version": FORMAT_VERSION, **meta}
    with _manager(out_dir) as manager:
        manager.save(step, args=ocp.args.Composite(
            **{name: ocp.args.StandardSave(_stored(tree)) for name, tree in items.items()},
            **{_META: ocp.args.JsonSave(meta)},
        ))


def _existing_step(out_dir: Path, step: int | None) -> int:
    step = latest_step(out_dir) if step is None else step
    if step is None:
        out_dir = Path(out_dir).absolute()
        run = next((d for d in (out_dir.parent, out_dir.parent.parent) if latest_step(d) is not None), None)
        if run is not None and out_dir.is_relative_to(run / "checkpoints"):
            raise UsageError(f"{out_dir} is inside the run {run}: pass the run directory {run} as out_dir")
        raise UsageError(f"{out_dir} holds no checkpoint: train with init_from='scratch' first, "
                         "or set out_dir to a run that saved one")
    return step


def read_meta(out_dir: Path, step: int | None = None) -> dict:
    """The metadata saved with the checkpoint of `step` (default: the newest) in out_dir,
    refused in one line when the checkpoint's format version is not this gptjax's."""
    step = _existing_step(out_dir, step)
    with _manager(out_dir) as manager:
        meta = manager.restore(step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()}))[_META]
    version = meta.get("format_version", 1)
    if version != FORMAT_VERSION:
        raise UsageError(
            f"the checkpoint {Path(out_dir).absolute()}/checkpoints/{step} has format version {version}, but "
            f"this gptjax reads version {FORMAT_VERSION}: use the gptjax that wrote it, or start a new out_dir"
        )
    return meta


def restore(out_dir: Path, abstract_items: dict[str, Any], step: int | None = None) -> dict[str, Any]:
    """The pytrees named in abstract_items from the checkpoint of `step` (default: the newest),
    each shaped, typed and sharded like its abstract tree (arrays or jax.ShapeDtypeStructs)."""
    step = _existing_step(out_dir, step)
    read_meta(out_dir, step)  # the format version, checked before any array is read
    return _restore_checked(out_dir, abstract_items, step)


def _restore_checked(out_dir: Path, abstract_items: dict[str, Any], step: int) -> dict[str, Any]:
    """restore() of a checkpoint whose format version was already checked."""
    targets = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_items)
    with _manager(out_dir) as manager:
        restored = manager.restore(step, args=ocp.args.Composite(
            **{name: ocp.args.StandardRestore(_stored(tree)) for name, tree in targets.items()}))
    return {name: restored[name]["array"] if _is_array(tree) else restored[name] for name, tree in targets.items()}


def load_model(out_dir: Path, dtype: str | None = None) -> tuple[GPT, dict]:
    """The model of the newest checkpoint in out_dir (in eval mode, from its "params" item and the
    GPTConfig fields in its metadata's "model") and the metadata; dtype, if given, replaces the
    compute dtype it was trained with."""
    step = _existing_step(out_dir, None)
    meta = read_meta(out_dir, step)
    model_cfg = GPTConfig(**{**meta["model"], **({"dtype": dtype} if dtype else {})})
    graphdef, abstract_params = nnx.split(nnx.eval_shape(lambda: GPT(model_cfg, rngs=nnx.Rngs(0))), nnx.Param)
    params = _restore_checked(out_dir, {"params": nnx.to_pure_dict(abstract_params)}, step)["params"]
    model = nnx.merge(graphdef, params)
    model.eval()
    return model, meta
