"""checkpoint.py: named pytrees and metadata in, the same out; other format versions refused; the
newest and the best kept; unreadable checkpoints skipped; failed saves reported in one line."""

import dataclasses
import errno
import shutil
import threading

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import run_program, save_untrained_run, tiny_config
from flax import nnx

import gptjax
from gptjax import checkpoint
from gptjax.errors import UsageError


def items(seed: int = 0) -> dict:
    keys = jax.random.split(jax.random.key(seed), 3)
    return {
        "params": {"w": jax.random.normal(keys[0], (4, 3)), "b": jax.random.normal(keys[1], (3,), jnp.bfloat16)},
        "counters": {"step": jnp.int32(7), "key": jax.random.key_data(keys[2])},
        "step": jnp.int32(seed),  # a single array is an item too
    }


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_saved_items_and_metadata_come_back_bit_identical(tmp_path):
    saved = items()
    meta = {"iter": 7, "best_val_loss": 1.25, "tokenizer": {"kind": "char", "chars": "ab"}}
    checkpoint.save(tmp_path, 7, saved, meta)
    assert checkpoint.latest_step(tmp_path) == 7
    assert checkpoint.read_meta(tmp_path) == {"format_version": checkpoint.FORMAT_VERSION, **meta, "val_loss": None}
    assert_trees_equal(checkpoint.restore(tmp_path, saved), saved)
    # a subset of the items, restored from shapes alone
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), {"params": saved["params"]})
    assert_trees_equal(checkpoint.restore(tmp_path, abstract), {"params": saved["params"]})


def save_run(out_dir, background=False, always_save=False):
    """Checkpoints 0..40 with val losses 4.0, 3.0, none, 3.5, none, as a run saves them."""
    with checkpoint.Writer(out_dir, keep=2, background=background) as writer:
        for step, val_loss in [(0, 4.0), (10, 3.0), (20, None), (30, 3.5), (40, None)]:
            meta = {"iter": step, "config": {"always_save_checkpoint": always_save}}
            writer.save(step, items(step), meta, val_loss)


@pytest.mark.parametrize("background", [False, True])
def test_the_newest_two_and_the_best_are_kept(tmp_path, background):
    save_run(tmp_path, background)
    assert checkpoint.steps(tmp_path) == [10, 30, 40]
    assert_trees_equal(checkpoint.restore(tmp_path, items()), items(40))
    assert [step for step, _ in checkpoint.choose(tmp_path, "best")] == [10, 40, 30]
    assert [step for step, _ in checkpoint.choose(tmp_path, "newest")] == [40, 30, 10]
    assert checkpoint.choose(tmp_path, "auto")[0][0] == 10  # saved only improvements: nanoGPT's ckpt.pt is the best


def test_the_best_survives_restarts_that_change_keep_and_evaluate_no_more(tmp_path):
    save_run(tmp_path)  # kept: 10 (the best, 3.0), 30, 40
    # each Writer is a resumed run: it did not write the best, and saves no evaluation of its own
    for keep, steps in [(1, [50, 60]), (3, [70]), (1, [80, 90, 100])]:
        with checkpoint.Writer(tmp_path, keep=keep, background=True) as writer:
            for step in steps:
                writer.save(step, items(step), {"iter": step})
        assert checkpoint.steps(tmp_path) == [10, *checkpoint.steps(tmp_path)[1:]]
    assert checkpoint.steps(tmp_path) == [10, 100]
    # a lower val loss after a restart takes over as the best, and the old best goes
    with checkpoint.Writer(tmp_path, keep=1, background=False) as writer:
        writer.save(110, items(110), {"iter": 110}, 2.5)
        writer.save(120, items(120), {"iter": 120})
    assert checkpoint.steps(tmp_path) == [110, 120]


@pytest.mark.parametrize("val_loss", [float("nan"), float("inf")])
def test_a_non_finite_evaluation_is_never_the_best(tmp_path, val_loss):
    with checkpoint.Writer(tmp_path, keep=1, background=False) as writer:
        writer.save(10, items(10), {"iter": 10}, 3.0)
        writer.save(20, items(20), {"iter": 20}, val_loss)
        writer.save(30, items(30), {"iter": 30})
    assert checkpoint.steps(tmp_path) == [10, 30]
    assert checkpoint.read_meta(tmp_path, 10)["val_loss"] == 3.0
    assert checkpoint.choose(tmp_path, "best")[0][0] == 10
    assert checkpoint.retained({20: val_loss, 30: None}, keep=1) == {30}


def test_auto_loads_the_newest_of_a_run_that_always_saved(tmp_path):
    save_run(tmp_path, always_save=True)
    assert checkpoint.choose(tmp_path, "auto")[0][0] == 40


def test_a_background_save_is_safe_from_the_next_donating_step(tmp_path):
    state = items(3)
    with checkpoint.Writer(tmp_path, keep=2, background=True) as writer:
        writer.save(3, state, {})
        jax.block_until_ready(jax.jit(lambda tree: jax.tree.map(lambda a: a * 2, tree), donate_argnums=0)(state))
    assert_trees_equal(checkpoint.restore(tmp_path, items()), items(3))


def test_an_unreadable_newest_checkpoint_is_skipped_then_set_aside(tmp_path):
    save_run(tmp_path)
    for f in (tmp_path / "checkpoints/40").rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])  # truncated, as by a full disk or a kill
    warnings = []
    candidates = checkpoint.choose(tmp_path, "newest", warnings.append)
    assert [step for step, _ in candidates] == [30, 10]
    assert warnings == [f"skipping the checkpoint {tmp_path}/checkpoints/40: it cannot be read (" + warnings[0].split(
        "(", 1)[1]] and "\n" not in warnings[0]
    step, meta, restored = checkpoint.restore_first(tmp_path, candidates, items(), warnings.append)
    assert step == 30 and meta["iter"] == 30
    assert_trees_equal(restored, items(30))
    assert checkpoint.set_aside_newer(tmp_path, 30) == [tmp_path / "checkpoints/40.unreadable"]
    assert checkpoint.steps(tmp_path) == [10, 30]  # and the files are still there, for a look
    assert (tmp_path / "checkpoints/40.unreadable").is_dir()


def test_arrays_that_cannot_be_read_fall_back_to_the_next_checkpoint(tmp_path):
    save_run(tmp_path)
    for f in (tmp_path / "checkpoints/40/params").rglob("*"):
        if f.is_file() and "metadata" not in f.name:
            f.unlink()
    warnings = []
    step, _, restored = checkpoint.restore_first(tmp_path, checkpoint.choose(tmp_path, "newest"), items(),
                                                 warnings.append)
    assert step == 30 and len(warnings) == 2 and warnings[1] == f"using the checkpoint {tmp_path}/checkpoints/30"
    assert_trees_equal(restored, items(30))


def test_no_readable_checkpoint_is_one_line(tmp_path):
    checkpoint.save(tmp_path, 1, items(1), {})
    (tmp_path / "checkpoints/1/meta/metadata").write_text("{")
    with pytest.raises(UsageError, match=f"no checkpoint in {tmp_path}/checkpoints can be read") as error:
        checkpoint.load_model(tmp_path, warn=lambda _: None)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("fails_at", ["create", "async_save", "finalize"])  # the directory, the arrays, the commit
def test_a_failed_save_is_one_line_loses_nothing_and_leaves_no_thread_waiting(tmp_path, monkeypatch, background,
                                                                             fails_at):
    checkpoint.save(tmp_path, 1, items(1), {})

    async def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    temporary_path = ocp.path.atomicity.AtomicRenameTemporaryPath  # orbax's step directory while it is written
    monkeypatch.setattr(ocp.StandardCheckpointHandler if fails_at == "async_save" else temporary_path, fails_at,
                        full_disk)
    threads_before = set(threading.enumerate())
    with pytest.raises(UsageError) as error, checkpoint.Writer(tmp_path, keep=2, background=background) as writer:
        writer.save(2, items(2), {})
        writer.wait()
    assert str(error.value).startswith(f"could not write the checkpoint {tmp_path}/checkpoints/2 (OSError: ")
    assert "No space left on device" in str(error.value) and "\n" not in str(error.value)
    assert str(error.value).endswith(f"the newest complete checkpoint: {tmp_path}/checkpoints/1")
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1"]  # no partial directory left
    assert_trees_equal(checkpoint.restore(tmp_path, items()), items(1))
    # orbax's writer threads end with the save: one left waiting for a directory that will never
    # come would keep the program from exiting for orbax's 5-minute barrier timeout
    for thread in set(threading.enumerate()) - threads_before:
        thread.join(timeout=10)
        assert not thread.is_alive(), f"orbax's thread {thread.name} is still waiting"


def test_a_checkpoint_of_another_format_version_is_refused_naming_both(tmp_path):
    # what gptjax wrote before checkpoints held named items: "params", "train" and metadata without a version
    with ocp.CheckpointManager(tmp_path.absolute() / "checkpoints") as manager:
        manager.save(3, args=ocp.args.Composite(params=ocp.args.StandardSave(items()["params"]),
                                                meta=ocp.args.JsonSave({"iter": 3})))
    message = f"has format version 1, but this gptjax reads version {checkpoint.FORMAT_VERSION}"
    for read in (lambda: checkpoint.read_meta(tmp_path), lambda: checkpoint.restore(tmp_path, items()),
                 lambda: checkpoint.load_model(tmp_path)):
        with pytest.raises(UsageError, match=message) as error:
            read()
        assert "\n" not in str(error.value) and f"{tmp_path}/checkpoints/3" in str(error.value)
    assert checkpoint.latest_step(tmp_path) == 3  # left as it was


def test_a_run_without_checkpoints_is_named(tmp_path):
    assert checkpoint.latest_step(tmp_path) is None
    with pytest.raises(UsageError, match=f"{tmp_path} holds no checkpoint"):
        checkpoint.read_meta(tmp_path)
    with pytest.raises(UsageError, match=f"{tmp_path} holds no checkpoint"):
        checkpoint.load_model(tmp_path)


def test_load_model_rebuilds_the_saved_model(tmp_path):
    cfg = tiny_config(dropout=0.1)
    model = gptjax.GPT(cfg, rngs=nnx.Rngs(3))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    checkpoint.save(tmp_path, 5, {"params": params}, {"model": dataclasses.asdict(cfg)})
    loaded, meta = checkpoint.load_model(tmp_path, dtype="bfloat16")
    assert loaded.cfg == dataclasses.replace(cfg, dtype="bfloat16") and meta["model"]["dtype"] == "float32"
    assert_trees_equal(nnx.to_pure_dict(nnx.state(loaded, nnx.Param)), params)
    idx = jnp.zeros((1, 4), jnp.int32)
    model.eval()
    np.testing.assert_allclose(loaded(idx), model(idx), atol=0.05)  # eval mode: no dropout key needed


def damage(out_dir, how: str) -> None:
    """Damage each checkpoint of out_dir as a kill, a full disk or a bad copy might."""
    for f in list((out_dir / "checkpoints").rglob("*")):
        if how == "step metadata" and f.name == "_CHECKPOINT_METADATA":
            f.unlink()  # orbax's own record of the save, which gptjax does not need
        elif (how == "array data" and f.parent.name == "d" and "ocdbt.process_0" in f.parts
              or how == "array index" and f.name == "manifest.ocdbt"):
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])


@pytest.mark.parametrize("how", ["array data", "array index", "step metadata"])
def test_damaged_checkpoints_are_said_in_one_line_each_and_nothing_else(tmp_path, how):
    out = save_untrained_run(tmp_path / "run", "an untrained model of a few characters")
    for step in (1, 2):
        shutil.copytree(out / "checkpoints/0", out / f"checkpoints/{step}")
    damage(out, how)
    sample = run_program(["sample.py", f"--out_dir={out}", "--max_new_tokens=2", "--num_samples=1", "--start=a"])
    if how == "step metadata":
        assert sample.returncode == 0
        assert sample.stderr == f"loading {out}/checkpoints/2 (iteration 2, not evaluated): the newest\n"
        return
    lines = sample.stderr.splitlines()
    assert [line.partition(": its arrays cannot be read (")[0] for line in lines[:3]] == [
        f"skipping the checkpoint {out}/checkpoints/{step}" for step in (2, 1, 0)]
    assert lines[3].startswith(f"sample.py: error: no checkpoint in {out}/checkpoints can be read (3 tried; 2, the "
                               "newest: its arrays cannot be read (")
    assert len(lines) == 4 and sample.returncode == 1
    # the failing file and what is wrong with it, in words, not an object's repr
    assert all(f'in OCDBT database at local file "{out}/checkpoints/' in line and "bound method" not in line
               and line.endswith(")") for line in lines[:3])


def test_when_no_checkpoint_can_be_read_the_error_says_why_without_warnings_above(tmp_path):
    checkpoint.save(tmp_path, 1, items(1), {})
    (tmp_path / "checkpoints/1/meta/metadata").write_text("{")
    with pytest.raises(UsageError, match=rf"^no checkpoint in {tmp_path}/checkpoints can be read \(1: it cannot be "
                                         r"read \(JSONDecodeError: .+\)\): train again"):
        checkpoint.choose(tmp_path, warn=lambda _: None)
