"""checkpoint.py: what restore does with a checkpoint that does not fit."""

import jax
import ml_collections
import pytest
from flax import nnx

import gptjax
from conftest import tiny_config
from gptjax import checkpoint


def test_a_checkpoint_of_another_state_layout_is_refused_in_one_line(tmp_path):
    cfg = tiny_config()
    state = gptjax.TrainState.create(gptjax.GPT(cfg, rngs=nnx.Rngs(0)), gptjax.adamw(1e-3))
    # gptjax before the rbg dropout PRNG saved threefry's 2-word key data
    old = state.replace(dropout_key=jax.random.key_data(jax.random.key(0, impl="threefry2x32")))
    checkpoint.save(tmp_path, old, best_val_loss=1.0, config=ml_collections.ConfigDict({"seed": 0}),
                    model=cfg, tokenizer={})
    with pytest.raises(gptjax.UsageError, match=r"dropout key had shape \(2,\), not \(4,\).*start a new out_dir") as e:
        checkpoint.restore(tmp_path, state)
    assert "\n" not in str(e.value)
    assert checkpoint.latest_iter(tmp_path) == 0  # still there
