"""Measure how fast a config trains (and samples) on this machine.

    python -m gptjax.bench --config char [--config.KEY=VALUE ...] [--steps 10] [--sample] [--profile DIR]
                           [--json FILE]
    python bench.py --config configs/char.py ...                        # the same, from a clone

Prints compile time, ms per iteration, tokens/s, model TFLOP/s, MFU (where the device's peak is
known) and XLA's planned memory for train_step and eval_step; --sample adds generation tokens/s;
--profile DIR traces one more train step into DIR (for xprof or TensorBoard, and a Perfetto file)
and prints the XLA ops that took the most time in it (if it fails, the measurements are printed
and written all the same, and the program ends with the profiler's error); DIR/train_step.hlo.txt.gz
is the compiled step's optimised HLO, which names what each traced op computes.
Random weights and random tokens; the model, optimizer, batch shape, dtype, attention path and
mesh are the config's, so a number here is what training with the same config runs at. (Text, which
repeats a few tokens thousands of times a batch, once ran a GPU step 4x slower than random tokens:
model.ONE_HOT_MAX_VOCAB; benchmarks/accelerator_check.sh times both.) Nothing is read or written
but the optional --json FILE and --profile DIR.
"""

from gptjax import environment

if __name__ == "__main__":  # before JAX loads: this may re-execute the program once (huge pages)
    environment.start_program()

import argparse
import collections
import functools
import gzip
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from gptjax import flops, optim, sharding
from gptjax.config import from_command_line, model_config
from gptjax.errors import OptionParser, UsageError, make_folder, out_of_memory, program_name
from gptjax.generation import generate, generate_uncached
from gptjax.model import GPT, GPTConfig
from gptjax.start import sharded_state
from gptjax.step import eval_step, train_step

# The vocabulary a from-scratch run of each tokenizer gets: Shakespeare's 65 characters, and
# GPT-2's 50257 tokens padded to 50304 as nanoGPT does (GPTConfig's default).
VOCAB_SIZES = {"char": 65, "gpt2": GPTConfig.vocab_size}


def seconds_per_call(fn: Callable[[], object], steps: int) -> float:
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


def op_times(perfetto_trace: Path) -> dict[str, float]:
    """Milliseconds spent in each kind of XLA op (its HLO name less the ".N" suffix: fusion, dot,
    custom-call, ...) in a Perfetto trace written by jax.profiler, busiest first. An op's time is
    its own, less the ops nested in it (a while loop's body). Where the trace has an accelerator,
    only its busiest line (its compute stream) counts: the host only launched those ops."""
    events = json.loads(gzip.decompress(perfetto_trace.read_bytes()))["traceEvents"]
    devices = {e["pid"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"
               and e["args"]["name"].startswith("/device:")}
    ops = [e for e in events if e.get("ph") == "X" and "hlo_op" in e.get("args", {})
           and (not devices or e["pid"] in devices)]
    if devices and ops:
        busy = collections.Counter()
        for e in ops:
            busy[e["pid"], e["tid"]] += e["dur"]
        busiest = busy.most_common(1)[0][0]
        ops = [e for e in ops if (e["pid"], e["tid"]) == busiest]
    kind = lambda e: re.sub(r"\.\d+$", "", e["args"]["hlo_op"])
    own_us = collections.Counter()
    enclosing = []  # the ops still open around the current one, on its line
    for e in sorted(ops, key=lambda e: (e["pid"], e["tid"], e["ts"], -e["dur"])):
        while enclosing and ((enclosing[-1]["pid"], enclosing[-1]["tid"]) != (e["pid"], e["tid"])
                             or e["ts"] >= enclosing[-1]["ts"] + enclosing[-1]["dur"]):
            enclosing.pop()
        own_us[kind(e)] += e["dur"]
        if enclosing:
            own_us[kind(enclosing[-1])] -= e["dur"]
        enclosing.append(e)
    return {name: us / 1e3 for name, us in own_us.most_common()}


def profile(step, folder: Path, top: int = 8) -> dict:
    """Trace one call of `step` into `folder` (xprof's and TensorBoard's layout, with a Perfetto
    file beside) and return the trace's path and its `top` busiest kinds of XLA op (op_times)."""
    with jax.profiler.trace(str(folder), create_perfetto_trace=True):
        jax.block_until_ready(step())
    traces = list(folder.glob("plugins/profile/*/perfetto_trace.json.gz"))
    if not traces:
        raise RuntimeError(f"the profiler wrote no Perfetto trace into {folder}")
    trace = max(traces, key=lambda path: path.stat().st_mtime)
    if not (times := op_times(trace)):
        raise RuntimeError(f"{trace} holds no XLA ops (events with an hlo_op) to count")
    return {"profile": str(trace), "profile_ops_ms": sum(times.values()),
            **{f"op_ms {kind}": ms for kind, ms in list(times.items())[:top]}}


def training(config: ml_collections.ConfigDict, steps: int, profile_dir: Path | None = None) -> dict:
    """Compile time, per-iteration time, tokens/s, model FLOP/s, MFU and memory of train_step and
    eval_step for the config on every device (the config's mesh); with profile_dir, profile()
    of one more train step, or its failure as "profile_error" beside the measurements."""
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
    cfg = model_config(config, vocab_size=VOCAB_SIZES[config.tokenizer])
    state = sharded_state(cfg, optim.from_config(config), mesh, seed=config.seed)
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
    seconds_per_call(one_step, 1)  # the second call is still slow on some backends
    step_seconds = seconds_per_call(one_step, steps)
    eval_call = lambda: compiled_eval(state, x_eval, y_eval)
    seconds_per_call(eval_call, 1)
    eval_seconds = seconds_per_call(eval_call, steps)

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
    if profile_dir is not None:
        # the program the trace's ops belong to (they carry its instruction names), to read them by
        hlo = profile_dir / "train_step.hlo.txt.gz"
        hlo.write_bytes(gzip.compress(compiled_train.as_text().encode()))
        results["train_step_hlo"] = str(hlo)
        try:
            results.update(profile(one_step, profile_dir))
        except Exception as e:  # a profiler this machine lacks, a trace laid out otherwise: the numbers above stand
            results["profile_error"] = f"{type(e).__name__}: {e}"
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
        seconds = seconds_per_call(functools.partial(run, max_new_tokens), 1)
        results[f"{name}_tokens_per_s"] = batch_size * max_new_tokens / seconds
        jax.block_until_ready(run(1))
        results[f"{name}_first_token_ms"] = seconds_per_call(functools.partial(run, 1), 3) * 1e3
    for name in ("generate", "generate_overflow_half"):
        results[f"{name}_speedup"] = results[f"{name}_tokens_per_s"] / results["uncached_reference_tokens_per_s"]
    return results


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = OptionParser(prog=program_name(argv[0]), description=__doc__.split("\n\n")[0],
                          usage=__doc__.splitlines()[2].strip())
    parser.add_argument("--steps", type=int, default=10, help="timed iterations after two warm-up ones")
    parser.add_argument("--sample", action="store_true", help="also time generation")
    parser.add_argument("--max_new_tokens", type=int, default=500, help="tokens per generation (--sample)")
    parser.add_argument("--profile", metavar="DIR", type=Path, help="trace one more train step into DIR")
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write the results to FILE as JSON")
    args, config_args = parser.parse_known_args(argv[1:])
    return args, [argv[0], *config_args]


def _row(name: str, value) -> str:
    if value is None:
        return f"{name:38s} {'n/a':>14s}"
    if isinstance(value, float):
        return f"{name:38s} {value:14,.{3 if abs(value) < 10 else 1}f}"
    return f"{name:38s} {value!s:>14s}"


def main(argv: list[str]) -> None:
    try:
        args, config_argv = parse_args(argv)
        if args.steps < 1 or args.max_new_tokens < 1:
            raise UsageError("--steps and --max_new_tokens must be >= 1")
        environment.use_measured_xla_flags()
        if args.profile:
            # XLA's CPU backend writes its ops into a trace only when asked (accelerators always do)
            environment.add_xla_flags({"--xla_cpu_enable_xprof_traceme": "true"})
            make_folder(args.profile, f"--profile {args.profile}")
        if args.json:  # refused now, not after the measurements
            if args.json.is_dir():
                raise UsageError(f"--json {args.json} is a folder: give the path of a file to write")
            make_folder(args.json.parent, f"--json {args.json}")
        sharding.initialize_distributed()
        config = from_command_line(config_argv)
        results = training(config, args.steps, args.profile)
        if args.sample:
            results.update(sampling(config, args.max_new_tokens))
    except UsageError as e:
        sys.exit(f"{program_name(argv[0])}: error: {e}")
    except Exception as e:  # a device out of memory is one line too; any other error keeps its traceback
        if (too_large := out_of_memory(e)) is None:
            raise
        sys.exit(f"{program_name(argv[0])}: error: {too_large}")
    print(f"{' '.join(config_argv[1:])}: batch {config.gradient_accumulation_steps} x {config.batch_size} x "
          f"{config.block_size}, {config.dtype}, attention {config.attention}, mean of {args.steps} iterations; "
          f"{environment.describe()}")
    for name, value in results.items():
        print(_row(name, value))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"argv": config_argv[1:], "environment": environment.describe(), **results}, f, indent=2)
    if "profile_error" in results:
        sys.exit(f"{program_name(argv[0])}: error: --profile failed, the measurements above stand: "
                 f"{results['profile_error']}")


if __name__ == "__main__":
    main(sys.argv)
