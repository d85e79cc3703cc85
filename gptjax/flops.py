"""Model FLOPs per token and the devices' peak FLOP/s: what MFU is computed from."""

import jax

from gptjax.model import GPTConfig

# Dense bfloat16 peak FLOP/s by device kind, the first name the kind contains (the PCIe and NVL
# H100s before the SXM one, "NVIDIA H100 80GB HBM3"); a device not listed gets no MFU at all.
PEAK_FLOPS = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "H200": 989e12, "A100": 312e12,
              "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5p": 459e12, "TPU v6 lite": 918e12}


def peak_flops() -> float | None:
    """The summed bf16 peak FLOP/s of every device in the run, or None where it is not known."""
    kind = jax.devices()[0].device_kind
    peak = next((flops for name, flops in PEAK_FLOPS.items() if name in kind), None)
    return peak * jax.device_count() if peak else None


def flops_per_token(cfg: GPTConfig, n_params: int) -> int:
    """Training FLOPs per token, nanoGPT's estimate (PaLM appendix B): 6N for the matrices
    (forward and backward) plus 12·L·H·D·T for attention's scores and mixing."""
    return 6 * n_params + 12 * cfg.n_layer * cfg.n_head * (cfg.n_embd // cfg.n_head) * cfg.block_size


def mfu(cfg: GPTConfig, n_params: int, tokens_per_second: float) -> float | None:
    """Model FLOPs utilisation: the fraction of the devices' peak that training at this speed
    uses; None where the peak is not known (CPUs)."""
    peak = peak_flops()
    return flops_per_token(cfg, n_params) * tokens_per_second / peak if peak else None
