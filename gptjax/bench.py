"""Measure how fast a config trains (and samples) on this machine.

    python -m gptjax.bench --config char [--config.KEY=VALUE ...] [--steps 10] [--sample] [--json FILE]
    python bench.py --config configs/char.py ...                        # the same, from a clone

Prints compile time, ms per iteration, tokens/s, model TFLOP/s, MFU (where the device's peak is
known) and XLA's planned memory for train_step and eval_step; --sample adds generation tokens/s.
Random weights and random tokens; the model, optimizer, batch shape, dtype, attention path and
mesh are the config's, so a number here is what training with the same config runs at. (Text, which
repeats a few tokens thousands of times a batch, once ran a GPU step 4x slower than random tokens:
model.ONE_HOT_MAX_VOCAB; benchmarks/accelerator_check.sh times both.) Nothing is read or written
but the optional --json FILE.
"""

from gptjax import environment

if __name__ == "__main__":  # before JAX loads: this may re-execute the program once (huge pages)
    environment.start_program()

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from gptjax import flops, optim, sharding
from gptjax.config import from_command_line, model_config
from gptjax.errors import UsageError
from gptjax.generation import generate, generate_uncached
from gptjax.model import GPT, GPTConfig
from gptjax.step import TrainState, eval_step, train_step

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


def training(config: ml_collections.ConfigDict, steps: int) -> dict:
    """Compile time, per-iteration time, tokens/s, model FLOP/s, MFU and memory of train_step and
    eval_step for the config on every device (the config's mesh)."""
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
    cfg = model_config(config, vocab_size=VOCAB_SIZES[config.tokenizer])
    state = TrainState.new(cfg, optim.from_config(config), mesh, seed=config.seed)
    n_params = state.model().num_params()
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
    eval_call = lambda: compiled_eval(state, x_eval, y_eval)
    _seconds_per_call(eval_call, 1)
    eval_seconds = _seconds_per_call(eval_call, steps)

    tokens_per_step = A * B * T
    results = {
        "params": n_params,
        "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        "compile_s": compile_seconds,
        "first_step_s": first_step_seconds,
        "train_ms_per_iter": step_seconds * 1e3,
        "train_tokens_per_s": tokens_per_step / step_seconds,
        "train_tflops_per_s": flops.flops_per_token(cfg, n_params) * tokens_per_step / step_seconds / 1e12,
        "mfu": flops.mfu(cfg, n_params, tokens_per_step / step_seconds),
        "train_memory_mib": _memory_mib(compiled_train),
        "eval_ms_per_batch": eval_seconds * 1e3,
        "eval_tokens_per_s": B * T / eval_seconds,
        "eval_memory_mib": _memory_mib(compiled_eval),
    }
    stats = jax.devices()[0].memory_stats()  # accelerators count what they really allocated
    if stats and "peak_bytes_in_use" in stats:
        results["device_peak_memory_mib"] = stats["peak_bytes_in_use"] / 2**20
    return results


def sampling(config: ml_collections.ConfigDict, max_new_tokens: int, batch_size: int = 1) -> dict:
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
        seconds = _seconds_per_call(functools.partial(run, max_new_tokens), 1)
        results[f"{name}_tokens_per_s"] = batch_size * max_new_tokens / seconds
        jax.block_until_ready(run(1))
        results[f"{name}_first_token_ms"] = _seconds_per_call(functools.partial(run, 1), 3) * 1e3
    for name in ("generate", "generate_overflow_half"):
        results[f"{name}_speedup"] = results[f"{name}_tokens_per_s"] / results["uncached_reference_tokens_per_s"]
    return results


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog=Path(argv[0]).name, description=__doc__.splitlines()[0],
                                     usage=__doc__.splitlines()[2].strip())
    parser.add_argument("--steps", type=int, default=10, help="timed iterations after two warm-up ones")
    parser.add_argument("--sample", action="store_true", help="also time generation")
    parser.add_argument("--max_new_tokens", type=int, default=500, help="tokens per generation (--sample)")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE as JSON")
    args, config_args = parser.parse_known_args(argv[1:])
    return args, [argv[0], *config_args]


def _row(name: str, value) -> str:
    if value is None:
        return f"{name:38s} {'n/a':>14s}"
    if isinstance(value, float):
        return f"{name:38s} {value:14,.{3 if abs(value) < 10 else 1}f}"
    return f"{name:38s} {value!s:>14s}"


def main(argv: list[str]) -> None:
    args, config_argv = parse_args(argv)
    try:
        if args.steps < 1 or args.max_new_tokens < 1:
            raise UsageError("--steps and --max_new_tokens must be >= 1")
        environment.use_measured_xla_flags()
        sharding.initialize_distributed()
        config = from_command_line(config_argv)
        results = training(config, args.steps)
        if args.sample:
            results.update(sampling(config, args.max_new_tokens))
    except UsageError as e:
        sys.exit(f"{Path(argv[0]).name}: error: {e}")
    print(f"{' '.join(config_argv[1:])}: batch {config.gradient_accumulation_steps} x {config.batch_size} x "
          f"{config.block_size}, {config.dtype}, attention {config.attention}, mean of {args.steps} iterations; "
          f"{environment.describe()}")
    for name, value in results.items():
        print(_row(name, value))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"argv": config_argv[1:], "environment": environment.describe(), **results}, f, indent=2)


if __name__ == "__main__":
    main(sys.argv)
