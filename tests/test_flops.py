"""flops.py: the FLOP estimate MFU is computed from agrees with what XLA counts; peaks by device."""

import jax
import pytest
from flax import nnx

import gptjax
from gptjax import flops


def test_flops_per_token_matches_xlas_count_of_a_training_step():
    # long context and few, narrow layers, so that attention is a quarter of the FLOPs: an estimate
    # that dropped or doubled it would be far off
    cfg = gptjax.GPTConfig(block_size=128, vocab_size=65, n_layer=2, n_head=4, n_embd=64, bias=False,
                           attention="masked")
    model = gptjax.GPT(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    x = jax.numpy.zeros((4, cfg.block_size), jax.numpy.int32)

    def loss(params):
        return gptjax.cross_entropy(nnx.merge(graphdef, params)(x), x)

    cost = jax.jit(jax.grad(loss)).lower(params).compile().cost_analysis()
    counted = (cost[0] if isinstance(cost, list) else cost)["flops"]
    estimated = flops.flops_per_token(cfg, model.num_params()) * x.size
    # XLA also counts the elementwise work (softmax, GELU, LayerNorm) the estimate leaves out
    assert 1.0 <= counted / estimated <= 1.1


@pytest.mark.parametrize("kind, count, expected", [
    ("NVIDIA H100 80GB HBM3", 8, 8 * 989e12), ("NVIDIA H100 PCIe", 1, 756e12), ("NVIDIA H200", 1, 989e12),
    ("TPU v5 lite", 4, 4 * 197e12), ("cpu", 1, None),
])
def test_peak_flops_sums_the_known_peak_of_every_device(monkeypatch, kind, count, expected):
    class Device:
        device_kind = kind

    monkeypatch.setattr(jax, "devices", lambda: [Device()] * count)
    monkeypatch.setattr(jax, "device_count", lambda: count)
    assert flops.peak_flops() == expected
    cfg = gptjax.GPTConfig()
    utilisation = flops.mfu(cfg, 124_000_000, 1e5)
    assert utilisation == (None if expected is None else pytest.approx(flops.flops_per_token(cfg, 124_000_000) * 1e5
                                                                       / expected))
