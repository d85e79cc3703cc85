"""Checkpoints in out_dir/checkpoints/<step>/ with orbax: named pytrees of arrays and a JSON
metadata dict. What the pytrees hold is the caller's business (the training program saves the
fields of its train state); this module knows names, arrays, metadata, the format version, which
checkpoints to keep, and what to do with one that cannot be read.
"""

import contextlib
import gc
import logging
import math
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from gptjax import sharding
from gptjax.errors import UsageError
from gptjax.model import GPT, GPTConfig

# Raised whenever what a checkpoint holds changes; a checkpoint of another version is refused.
# Version 1 (no "format_version" in its metadata) stored "params" and a "train" item.
FORMAT_VERSION = 2
_META = "meta"  # the item that holds the metadata
WHICH = ("auto", "newest", "best")  # which checkpoint of a run to load (load_model)
UNREADABLE = ".unreadable"  # the suffix a checkpoint that cannot be read is renamed with on resume


class _OrbaxNoise(logging.Filter):
    """orbax logs a failed write with a traceback from every thread and task it ran in (400 lines
    for one full disk), then raises it; a failed read leaves asyncio tasks whose exceptions asyncio
    logs as never retrieved (gptjax runs no asyncio of its own); and it warns of a checkpoint
    without its _CHECKPOINT_METADATA file (its own record of when the step was saved, which gptjax
    does not need) each time it lists the checkpoints. This module says what orbax raises in one
    line (Writer, choose, restore_first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Metadata file does not exist") and message.endswith("_CHECKPOINT_METADATA"):
            return False
        from_orbax = f"{os.sep}orbax{os.sep}" in record.pathname or "orbax" in message
        never_retrieved = record.name == "asyncio" and "exception was never retrieved" in message
        return not (record.levelno >= logging.ERROR and (from_orbax or never_retrieved))


def _hide_noise() -> Callable[[], None]:
    """Hide orbax's noise about a failed read or write (_OrbaxNoise, _from_a_failed_read) from
    the user; returns what shows it again."""
    noise = _OrbaxNoise()
    loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
    for logger in loggers:
        logger.addFilter(noise)
    previous = sys.unraisablehook
    sys.unraisablehook = _without_failed_reads(previous)

    def show() -> None:
        sys.unraisablehook = previous
        for logger in loggers:
            logger.removeFilter(noise)

    return show


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Within, orbax's noise about a failed read or write is not shown: the one line this module
    raises or warns says it; afterwards the process's logging and sys.unraisablehook are as they
    were. This module's reads and writes run within it. A failed read's other reads may still
    end, and report, a while after it: a program hides them for good (quiet_from_now_on)."""
    show = _hide_noise()
    try:
        yield
    finally:
        gc.collect()  # what a failed read left for the garbage collector reports now, within
        show()


def quiet_from_now_on() -> None:
    """For a program that reads checkpoints (train.py, sample.py, explain.py): quiet() for the rest
    of the process, so that what a failed read leaves behind never reaches the user."""
    _hide_noise()


def _from_a_failed_read(unraisable: Any) -> bool:
    """Whether an exception that reached sys.unraisablehook was left by orbax reading a damaged
    checkpoint: its other array reads, still running when the first failure ended the read, fail
    in orbax's coroutines or find its event loop closed (a traceback each, up to 1,200 lines)."""
    error, tb = unraisable.exc_value, unraisable.exc_traceback
    files = [frame.f_code.co_filename for frame, _ in traceback.walk_tb(tb)]
    code = getattr(unraisable.object, "cr_code", None)
    if code is not None:
        files.append(code.co_filename)
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return all(f"{os.sep}asyncio{os.sep}" in file for file in files)
    return any(f"{os.sep}orbax{os.sep}" in file or f"{os.sep}tensorstore{os.sep}" in file for file in files)


def _without_failed_reads(previous: Callable[[Any], None]) -> Callable[[Any], None]:
    def hook(unraisable: Any) -> None:
        if not _from_a_failed_read(unraisable):  # the warning that skips the checkpoint says it in one line
            previous(unraisable)

    return hook



def _is_array(tree: Any) -> bool:
    return jax.tree_util.treedef_is_leaf(jax.tree.structure(tree))


def _stored(tree: Any) -> Any:
    """orbax's StandardSave takes no bare array: a single array is stored as {"array": it}."""
    return {"array": tree} if _is_array(tree) else tree


def _stored_val_loss(out_dir: Path, step: int) -> float | None:
    """The val loss stored with a checkpoint; None when it was not an evaluation, or its metadata
    cannot be read."""
    try:
        return read_meta(out_dir, step).get("val_loss")
    except Exception:
        return None


def _folder(out_dir: Path) -> Path:
    return Path(out_dir).absolute() / "checkpoints"


@contextlib.contextmanager
def _reader(out_dir: Path) -> Iterator[ocp.CheckpointManager]:
    """A manager that only reads (orbax's read_only option logs three warnings each time), quiet."""
    options = ocp.CheckpointManagerOptions(create=False, enable_async_checkpointing=False)
    with quiet(), ocp.CheckpointManager(_folder(out_dir), options=options) as manager:
        yield manager


def _first_line(error: BaseException) -> str:
    """What went wrong, in one line: the error at the root of the chain that raised it (orbax's
    own wraps TensorStore's, which names the file and what is wrong with it, in a message that
    goes on with an object's repr), its type where that says more than "an error"."""
    while (cause := error.__cause__ or error.__context__) is not None and str(cause).strip():
        error = cause
    lines = str(error).strip().splitlines()
    said = lines[0].split(" [tensorstore_spec=")[0] if lines else ""  # the spec is a page of JSON
    return said if type(error) in (Exception, ValueError, RuntimeError) else f"{type(error).__name__}: {said}"


def steps(out_dir: Path) -> list[int]:
    """The steps of out_dir's checkpoints, oldest first (whether readable or not)."""
    if not _folder(out_dir).is_dir():
        return []
    with _reader(out_dir) as manager:
        return sorted(manager.all_steps())


def latest_step(out_dir: Path) -> int | None:
    """The step of the newest checkpoint in out_dir, or None."""
    return max(steps(out_dir), default=None)


def _best(candidates: list[tuple[int, dict]]) -> set[int]:
    """The step of the (step, metadata) candidates with the lowest finite val loss; empty if none has one."""
    return retained({step: meta.get("val_loss") for step, meta in candidates}, keep=0)


def retained(val_losses: dict[int, float | None], keep: int) -> set[int]:
    """The checkpoints to keep, given each one's own val loss (None: not an evaluation): the newest
    `keep`, and the one with the lowest finite val loss (the earliest of equals)."""
    newest = sorted(val_losses)[-keep:] if keep > 0 else []
    evaluated = [(loss, step) for step, loss in val_losses.items() if loss is not None and math.isfinite(loss)]
    return set(newest) | ({min(evaluated)[1]} if evaluated else set())


class Writer:
    """Writes a run's checkpoints and keeps those `retained` says: the newest `keep`, and the one
    with the lowest val loss, decided from every checkpoint's own stored val loss, so that no
    restart, other eval_interval or keep, or crash deletes the best. With background=True,
    save() returns once the arrays are copied off the devices (so the next step may reuse their
    buffers) and the files are written while training goes on; a failed write is reported by the
    next save() or by wait(). A failed save raises UsageError in one line, with its partial files
    removed and every earlier checkpoint left as it was."""

    def __init__(self, out_dir: Path, keep: int, background: bool):
        self._folder = _folder(out_dir)
        self._keep, self._background = keep, background
        self._quiet = contextlib.ExitStack()  # orbax's noise about a failed write, while the writer is open
        self._quiet.enter_context(quiet())
        # The step's directories are made before save() returns: made in the background, a failure to
        # make them (disk full) left orbax's threads waiting for its 5-minute barrier timeout, and the
        # program could not exit until then (docs/performance.md#background-checkpoints).
        options = ocp.CheckpointManagerOptions(enable_async_checkpointing=background, cleanup_tmp_directories=True,
                                               async_options=ocp.AsyncOptions(create_directories_asynchronously=False))
        self._manager = ocp.CheckpointManager(self._folder, options=options)
        self._pending: tuple[int, float | None] | None = None  # (step, val loss) being written in the background
        self._failed = False  # a save failed (and was reported)
        self.newest = self._manager.latest_step()  # the newest checkpoint known to be complete
        self._val_losses = {step: _stored_val_loss(out_dir, step) for step in self._manager.all_steps()}

    def save(self, step: int, items: dict[str, Any], meta: dict, val_loss: float | None = None) -> None:
        """Write the pytrees `items` (by name) and the JSON-able `meta` as the checkpoint of
        `step`; val_loss (the evaluation at this step, if any) decides which one is the best."""
        if _META in items:
            raise ValueError(f"{_META!r} is the metadata's name; give the item another name")
        self.wait()
        if val_loss is not None and not math.isfinite(val_loss):
            val_loss = None  # a diverged evaluation is never the best (and JSON has no NaN)
        meta = {"format_version": FORMAT_VERSION, **meta, "val_loss": val_loss}
        args = ocp.args.Composite(**{name: ocp.args.StandardSave(_stored(tree)) for name, tree in items.items()},
                                  **{_META: ocp.args.JsonSave(meta)})
        self._pending = step, val_loss
        self._attempt(lambda: self._manager.save(step, args=args, force=True))
        if not self._background:
            self.wait()

    def wait(self) -> None:
        """Until the checkpoint being written is complete (then those no longer retained are
        deleted); raises if it failed."""
        self._attempt(self._manager.wait_until_finished)
        if self._pending is not None:
            (self.newest, self._val_losses[self.newest]), self._pending = self._pending, None
            for step in set(self._val_losses) - retained(self._val_losses, self._keep):
                self._manager.delete(step)
                del self._val_losses[step]

    def close(self) -> None:
        """Finish the pending write (if any) and let go of orbax's threads. After a failed save
        (already reported), what orbax's threads still raise about it is not raised again."""
        try:
            if not self._failed:
                self.wait()
        finally:
            with contextlib.suppress(*((Exception,) if self._failed else ())):
                self._manager.close()
            if self._failed:  # orbax's threads may write into the partial directory for a moment longer
                for _ in range(20):
                    self._remove_partial()
                    time.sleep(0.05)
                self._remove_partial()
            self._quiet.close()

    def _remove_partial(self) -> None:
        """Remove what a failed save left (orbax writes into <step>.orbax-checkpoint-tmp*)."""
        if self._failed and jax.process_index() == 0:
            for partial in self._folder.glob("*.orbax-checkpoint-tmp*"):
                shutil.rmtree(partial, ignore_errors=True)

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _attempt(self, write: Callable[[], Any]) -> None:
        try:
            write()
        except Exception as error:  # disk full, quota, permissions, I/O: one line, nothing earlier lost
            step = self._pending[0] if self._pending is not None else None
            self._pending, self._failed = None, True
            self._remove_partial()  # and again at close(): orbax's threads may still be writing into it
            newest = f"{self._folder}/{self.newest}" if self.newest is not None else "none"
            raise UsageError(f"could not write the checkpoint {self._folder}/{step} ({_first_line(error)}); "
                             f"the newest complete checkpoint: {newest}") from error


def save(out_dir: Path, step: int, items: dict[str, Any], meta: dict, val_loss: float | None = None,
         keep: int = 2) -> None:
    """Write one checkpoint now (Writer.save, in the foreground), keeping the newest `keep` and the best."""
    with Writer(out_dir, keep, background=False) as writer:
        writer.save(step, items, meta, val_loss)


def read_meta(out_dir: Path, step: int | None = None) -> dict:
    """The metadata saved with the checkpoint of `step` (default: the newest) in out_dir, refused
    in one line when the checkpoint's format version is not this gptjax's."""
    step = _existing_step(out_dir, step)
    with _reader(out_dir) as manager:
        meta = manager.restore(step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()}))[_META]
    version = meta.get("format_version", 1)
    if version != FORMAT_VERSION:
        raise UsageError(
            f"the checkpoint {_folder(out_dir)}/{step} has format version {version}, but "
            f"this gptjax reads version {FORMAT_VERSION}: use the gptjax that wrote it, or start a new out_dir"
        )
    return meta


def _existing_step(out_dir: Path, step: int | None) -> int:
    step = latest_step(out_dir) if step is None else step
    if step is None:
        raise _no_checkpoint(out_dir)
    return step


def _no_checkpoint(out_dir: Path) -> UsageError:
    out_dir = Path(out_dir).absolute()
    run = next((d for d in (out_dir.parent, out_dir.parent.parent) if latest_step(d) is not None), None)
    if run is not None and out_dir.is_relative_to(run / "checkpoints"):
        return UsageError(f"{out_dir} is inside the run {run}: pass the run directory {run} as out_dir")
    return UsageError(f"{out_dir} holds no checkpoint: train with init_from='scratch' first, "
                      "or set out_dir to a run that saved one")


def readable(out_dir: Path, warn: Callable[[str], None],
             skipped: list[tuple[int, str]] | None = None) -> Iterator[tuple[int, dict]]:
    """(step, metadata) of out_dir's checkpoints, newest first, skipping (with a warning, and
    noted in `skipped` as (step, why)) those whose metadata cannot be read: a kill during a save,
    a truncated or missing file."""
    all_steps = steps(out_dir)
    if not all_steps:
        raise _no_checkpoint(out_dir)
    for step in reversed(all_steps):
        try:
            yield step, read_meta(out_dir, step)
        except UsageError:
            raise
        except Exception as error:
            why = f"it cannot be read ({_first_line(error)})"
            if skipped is not None:
                skipped.append((step, why))
            warn(_skipping(out_dir, step, why))


def choose(out_dir: Path, which: str = "newest", warn: Callable[[str], None] = print) -> list[tuple[int, dict]]:
    """The readable checkpoints of out_dir, (step, metadata), in the order to try them: `which`
    first ("newest"; "best": the lowest val loss; "auto": as nanoGPT's one ckpt.pt, the best
    when the run saved only improvements, the newest when it had always_save_checkpoint), then
    the others newest first. A one-line error when none can be read."""
    if which not in WHICH:
        raise UsageError(f"which checkpoint to load must be one of {WHICH}, got {which!r}")
    skipped = []
    candidates = list(readable(out_dir, warn, skipped))
    if not candidates:
        raise _none_readable(out_dir, skipped)
    if which == "auto":
        which = "newest" if candidates[0][1].get("config", {}).get("always_save_checkpoint", True) else "best"
    if which == "best" and (best := _best(candidates)):
        candidates.sort(key=lambda c: c[0] not in best)  # stable: the others stay newest first
    return candidates


def _skipping(out_dir: Path, step: int, why: str) -> str:
    return f"skipping the checkpoint {_folder(out_dir)}/{step}: {why}"


def _none_readable(out_dir: Path, skipped: list[tuple[int, str]]) -> UsageError:
    """The error for a run none of whose checkpoints can be read; skipped: (step, why) of each."""
    step, why = skipped[0]
    tried = f"{len(skipped)} tried; {step}, the newest: {why}" if len(skipped) > 1 else f"{step}: {why}"
    return UsageError(f"no checkpoint in {_folder(out_dir)} can be read ({tried}): train again with "
                      "init_from='scratch' in a new out_dir")


def restore(out_dir: Path, abstract_items: dict[str, Any], step: int | None = None) -> dict[str, Any]:
    """The pytrees named in abstract_items from the checkpoint of `step` (default: the newest),
    each shaped, typed and sharded like its abstract tree (arrays or jax.ShapeDtypeStructs)."""
    step = _existing_step(out_dir, step)
    read_meta(out_dir, step)  # the format version, checked before any array is read
    return _restore_arrays(out_dir, abstract_items, step)


def _restore_arrays(out_dir: Path, abstract_items: dict[str, Any], step: int) -> dict[str, Any]:
    """restore() of a checkpoint whose metadata (format version) was already read."""
    targets = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_items)
    with _reader(out_dir) as manager:
        restored = manager.restore(step, args=ocp.args.Composite(
            **{name: ocp.args.StandardRestore(_stored(tree)) for name, tree in targets.items()}))
    return {name: restored[name]["array"] if _is_array(tree) else restored[name] for name, tree in targets.items()}


def restore_first(out_dir: Path, candidates: list[tuple[int, dict]], abstract_items: dict[str, Any],
                  warn: Callable[[str], None] = print) -> tuple[int, dict, dict[str, Any]]:
    """(step, metadata, items) of the first of candidates (from choose) whose arrays can be read;
    says which one is used when it is not the first."""
    skipped = []
    for step, meta in candidates:
        try:
            items = _restore_arrays(out_dir, abstract_items, step)  # choose() read its metadata
        except Exception as error:
            skipped.append((step, f"its arrays cannot be read ({_first_line(error)})"))
            warn(_skipping(out_dir, step, skipped[-1][1]))
            continue
        if step != candidates[0][0]:
            warn(f"using the checkpoint {_folder(out_dir)}/{step}")
        return step, meta, items
    raise _none_readable(out_dir, skipped)


def set_aside_newer(out_dir: Path, step: int) -> list[Path]:
    """Rename every checkpoint newer than `step` (ones that could not be read) to <step>.unreadable
    (kept for a look, never deleted; orbax no longer sees it), so that a run resumed from `step`
    can write those steps again. Every process calls it; the first renames. Returns the new paths."""
    moved = [_folder(out_dir) / f"{newer}{UNREADABLE}" for newer in steps(out_dir) if newer > step]

    def rename() -> None:
        for target in moved:
            shutil.rmtree(target, ignore_errors=True)  # an older copy set aside for the same step
            (_folder(out_dir) / target.name.removesuffix(UNREADABLE)).rename(target)

    sharding.main_process_first("setting aside the unreadable checkpoints", rename, lambda: None)
    return moved


def _loading(out_dir: Path, step: int, meta: dict, candidates: list[tuple[int, dict]]) -> list[str]:
    """Which checkpoint of out_dir is loaded, and why, in a line; a second when that is the
    untrained model of iteration 0 while the run has later checkpoints."""
    newest, best = max(s for s, _ in candidates), _best(candidates)
    why = " and ".join(reason for reason, holds in (("the newest", step == newest),
                                                    ("the lowest val loss", step in best)) if holds) or "readable"
    val_loss = meta.get("val_loss")
    evaluated = f"val loss {val_loss:.4f}" if val_loss is not None else "not evaluated"
    lines = [f"loading {_folder(out_dir)}/{step} (iteration {step}, {evaluated}): {why}"]
    if step == 0 and newest > 0:
        lines.append(f"iteration 0 is the untrained model, but the run went on to iteration {newest}: pass "
                     "--checkpoint=newest to load that one")
    return lines


def load_model(out_dir: Path, dtype: str | None = None, which: str = "auto",
               warn: Callable[[str], None] = print) -> tuple[GPT, dict]:
    """The model of a checkpoint in out_dir (choose's `which`; in eval mode, from its "params"
    item and the GPTConfig fields in its metadata's "model") and its metadata; dtype, if given,
    replaces the compute dtype it was trained with. Says (warn) which checkpoint it loads and why,
    and when that is the untrained model of iteration 0 while the run has later ones."""
    candidates = choose(out_dir, which, warn)
    model_cfg = GPTConfig(**{**candidates[0][1]["model"], **({"dtype": dtype} if dtype else {})})
    graphdef, abstract_params = nnx.split(nnx.eval_shape(lambda: GPT(model_cfg, rngs=nnx.Rngs(0))), nnx.Param)
    step, meta, items = restore_first(out_dir, candidates, {"params": nnx.to_pure_dict(abstract_params)}, warn)
    for line in _loading(out_dir, step, meta, candidates):
        warn(line)
    model = nnx.merge(graphdef, items["params"])
    model.eval()
    return model, {**meta, "iter": meta.get("iter", step)}
