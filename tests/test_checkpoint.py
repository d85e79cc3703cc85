"""checkpoint.py: named pytrees and metadata in, the same out; other format versions refused."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import tiny_config
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
    assert checkpoint.read_meta(tmp_path) == {"format_version": checkpoint.FORMAT_VERSION, **meta}
    assert_trees_equal(checkpoint.restore(tmp_path, saved), saved)
    # a subset of the items, restored from shapes alone
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), {"params": saved["params"]})
    assert_trees_equal(checkpoint.restore(tmp_path, abstract), {"params": saved["params"]})


def test_a_new_save_replaces_the_previous_checkpoint(tmp_path):
    checkpoint.save(tmp_path, 1, items(1), {"iter": 1})
    checkpoint.save(tmp_path, 2, items(2), {"iter": 2})
    assert checkpoint.latest_step(tmp_path) == 2 and checkpoint.read_meta(tmp_path)["iter"] == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2"]
    assert_trees_equal(checkpoint.restore(tmp_path, items()), items(2))


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
