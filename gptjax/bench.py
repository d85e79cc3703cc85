"""How fast a config trains, evaluates and samples on this machine: the numbers bench.py prints.

Random weights and random tokens (speed does not depend on either); the model, optimizer,
batch shape, dtype, attention path and mesh are the config's, so a number here is what
`train.py` with the same config would run at.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gptjax import sharding
from gptjax.config import model_config
from gptjax.generate import generate, generate_uncached
from gptjax.model import GPT, GPTConfig
from gptjax.train import TrainState, eval_step, flops_per_token, make_optimizer, peak_flops, train_step

# The vocabulary a from-scratch run of each tokenizer gets: Shakespeare's 65 characters, and
# GPT-2's 50257 tokens padded to 50304 as nanoGPT does (GPTConfig's default).
VOCAB_SIZES = {"char": 65, "gpt2": GPTConfig.vocab_size}


def _seconds_per_call(fn, steps: int) -> float:
    """Mean seconds per call over `steps` calls dispatched back to back, as the training loop does."""
    start = time.perf_counter()
    for _ in range(steps):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / steps


def _memory_mib(compiled) -> float | None:
    """Peak memory of one compiled step as XLA plans it (arguments, outputs and temporaries,
    less the donated buffers that outputs reuse), MiB per device; None where unknown."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    total = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
             + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)
    return total / 2**20


def training(config, steps: int) -> dict:
    """Compile time, per-iteration time, tokens/s, model FLOP/s, MFU and memory of train_step and
    eval_step for the config on every device (the config's mesh)."""
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
    cfg = model_config(config, vocab_size=VOCAB_SIZES[config.tokenizer])
    model = GPT(cfg, rngs=nnx.Rngs(config.seed))
    n_params = model.num_params()
    state = TrainState.create(model, make_optimizer(config), seed=config.seed)
    state = sharding.place(state, sharding.state_shardings(state, mesh))
    A, B, T = config.gradient_accumulation_steps, config.batch_size, config.block_size
    tokens = np.random.default_rng(config.seed).integers(0, cfg.vocab_size, (A, B, T + 1), dtype=np.int32)
    tokens = tokens[:, sharding.process_rows(B)]  # this process's rows of the global batch
    tokens = tokens[0] if A == 1 else tokens
    x, y = sharding.put_batch((tokens[..., :-1], tokens[..., 1:]), mesh)
    x_eval, y_eval = (x, y) if A == 1 else sharding.put_batch((tokens[0, :, :-1], tokens[0, :, 1:]), mesh)

    start = time.perf_counter()
    compiled_train = train_step.lower(state, x, y).compile()
    compile_seconds = time.perf_counter() - start
    compiled_eval = eval_step.lower(state, x_eval, y_eval).compile()

    def one_step():
        nonlocal state
        state, metrics = compiled_train(state, x, y)
        return metrics

    start = time.perf_counter()
    jax.block_until_ready(one_step())
    first_step_seconds = time.perf_counter() - start
    _seconds_per_call(one_step, 1)  # the second call is still slow on some backends
    step_seconds = _seconds_per_call(one_step, steps)
    eval_call = lambda: compiled_eval(state, x_eval, y_eval)  # noqa: E731
    _seconds_per_call(eval_call, 1)
    eval_seconds = _seconds_per_call(eval_call, steps)

    tokens_per_step = A * B * T
    flops_per_step = flops_per_token(cfg, n_params) * tokens_per_step
    peak = peak_flops()
    results = {
        "params": n_params,
        "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        "compile_s": compile_seconds,
        "first_step_s": first_step_seconds,
        "train_ms_per_iter": step_seconds * 1e3,
        "train_tokens_per_s": tokens_per_step / step_seconds,
        "train_tflops_per_s": flops_per_step / step_seconds / 1e12,
        "mfu": flops_per_step / step_seconds / peak if peak else None,
        "train_memory_mib": _memory_mib(compiled_train),
        "eval_ms_per_batch": eval_seconds * 1e3,
        "eval_tokens_per_s": B * T / eval_seconds,
        "eval_memory_mib": _memory_mib(compiled_eval),
    }
    stats = jax.devices()[0].memory_stats()  # accelerators count what they really allocated
    if stats and "peak_bytes_in_use" in stats:
        results["device_peak_memory_mib"] = stats["peak_bytes_in_use"] / 2**20
    return results


def sampling(config, max_new_tokens: int, batch_size: int = 1) -> dict:
    """Tokens/s and time to the first token of gptjax.generate from a one-token prompt, with
    nanoGPT's exact context rule and with overflow_context=block_size // 2, and of the uncached
    reference (nanoGPT's method)."""
    model = GPT(model_config(config, vocab_size=VOCAB_SIZES[config.tokenizer]), rngs=nnx.Rngs(config.seed))
    model.eval()
    prompt = jnp.zeros((batch_size, 1), jnp.int32)
    variants = {
        "generate": lambda n: generate(model, prompt, n),
        "generate_overflow_half": lambda n: generate(model, prompt, n, overflow_context=config.block_size // 2),
        "uncached_reference": lambda n: generate_uncached(model, prompt, n),
    }
    results = {}
    for name, run in variants.items():
        jax.block_until_ready(run(max_new_tokens))  # compiles
        seconds = _seconds_per_call(lambda: run(max_new_tokens), 1)
        results[f"{name}_tokens_per_s"] = batch_size * max_new_tokens / seconds
        jax.block_until_ready(run(1))
        results[f"{name}_first_token_ms"] = _seconds_per_call(lambda: run(1), 3) * 1e3
    for name in ("generate", "generate_overflow_half"):
        results[f"{name}_speedup"] = results[f"{name}_tokens_per_s"] / results["uncached_reference_tokens_per_s"]
    return results
