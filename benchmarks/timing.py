"""The one timing helper the benchmark scripts share (they run as `python benchmarks/NAME.py`,
which puts this folder on the import path)."""

import statistics
import time

import jax


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() over `repeats` calls after `warmup` untimed ones (the first call
    of a jitted function compiles); waits for JAX's asynchronous results."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)
