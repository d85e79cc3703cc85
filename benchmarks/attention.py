"""Time the two causal-attention paths on this machine's default backend.

    python benchmarks/attention.py [--batch 64 --seq 256 --heads 6 --head-dim 64 --dtype float32]

Prints forward and forward+backward milliseconds for each path (median of --repeats runs, after
one compile run), with the XLA flags that train.py sets. "auto" in gptjax/attention.py picks its
path from these numbers.
"""

import argparse
import functools

import jax
import jax.numpy as jnp
from timing import median_seconds

from gptjax import attention, environment


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    shape = (args.batch, args.seq, args.heads, args.head_dim)
    q, k, v = (jax.random.normal(jax.random.key(i), shape, args.dtype) for i in range(3))
    paths = {
        "masked": lambda q, k, v: attention.masked_attention(  # with the model's transposes
            *(x.transpose(0, 2, 1, 3) for x in (q, k, v)), attention.causal_mask(args.seq)
        ).transpose(0, 2, 1, 3),
        "fast": attention.fast_attention,
    }
    print(f"backend={jax.default_backend()} B,T,H,D={shape} dtype={args.dtype}; {environment.describe()}")
    print(f"{'path':8s} {'forward ms':>11s} {'fwd+bwd ms':>11s}")
    for name, fn in paths.items():
        forward = jax.jit(fn)
        backward = jax.jit(jax.grad(lambda q, k, v, fn=fn: fn(q, k, v).astype(jnp.float32).sum(), (0, 1, 2)))
        print(f"{name:8s} {1e3 * median_seconds(functools.partial(forward, q, k, v), args.repeats):11.1f} "
              f"{1e3 * median_seconds(functools.partial(backward, q, k, v), args.repeats):11.1f}")


if __name__ == "__main__":
    environment.start_program()  # as train.py runs
    main()
