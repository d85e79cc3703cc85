"""Generation speed: the KV-cache generator against the uncached reference.

    python benchmarks/sample.py [--max-new-tokens 500 --batch 1]

The model is configs/char.py's (6 layers, 384 wide, block 256, 65 characters), randomly
initialised: speed does not depend on the weights. The prompt is one token, so 500 new tokens
run past block_size. Each variant runs once to compile, then is timed (median of --repeats).
"""

import argparse

import jax
import jax.numpy as jnp
from flax import nnx

import gptjax
from timing import median_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-new-tokens", type=int, default=500)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    cfg = gptjax.GPTConfig(block_size=256, vocab_size=65, n_layer=6, n_head=6, n_embd=384, bias=False)
    model = gptjax.GPT(cfg, rngs=nnx.Rngs(0))
    prompt = jnp.zeros((args.batch, 1), jnp.int32)
    n, key = args.max_new_tokens, jax.random.key(0)
    variants = {
        "cached, exact past block_size": lambda k: gptjax.generate(model, prompt, k, rng=key),
        "cached, overflow_context=128": lambda k: gptjax.generate(model, prompt, k, rng=key, overflow_context=128),
        "uncached reference": lambda k: gptjax.generate_uncached(model, prompt, k, rng=key),
    }
    print(f"backend={jax.default_backend()} model=char (10.65M) batch={args.batch} new tokens={n}")
    print(f"{'generator':32s} {'tokens/s':>10s} {'first token ms':>15s}")
    results = {}
    for name, run in variants.items():
        repeats = 1 if name == "uncached reference" else args.repeats  # it takes tens of seconds
        seconds = median_seconds(lambda: run(n), repeats)
        first = median_seconds(lambda: run(1), args.repeats)
        results[name] = seconds
        print(f"{name:32s} {args.batch * n / seconds:10.1f} {first * 1e3:15.1f}")
    reference = results["uncached reference"]
    for name in list(variants)[:2]:
        print(f"speed-up of '{name}' over the reference: {reference / results[name]:.1f}x")


if __name__ == "__main__":
    main()
