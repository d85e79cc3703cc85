"""gptjax against karpathy/nanoGPT (PyTorch, eager) on this machine, side by side in one run.

    git clone https://github.com/karpathy/nanoGPT /tmp/nanoGPT      # never committed here
    python benchmarks/vs_nanogpt.py /tmp/nanoGPT [--setting laptop|char] [--steps 20] [--generate]

Both models get the same settings (nanoGPT's names), float32, dropout 0, random token batches.
A training step is what nanoGPT's train.py does per iteration: forward, backward, clip the
gradient norm to 1.0, AdamW step, and read the loss back as a float. Evaluation is one forward
pass with the loss. --generate also times 500 new tokens from a one-token prompt: nanoGPT's
generate against gptjax.generate (nanoGPT's exact context rule, and overflow_context=block/2).
Prints medians after warm-up (the first gptjax call compiles) and gptjax's speed-up.
"""

import argparse
import functools
import sys
import time

from timing import median_seconds

from gptjax import environment

SETTINGS = {  # nanoGPT's README laptop command, and config/train_shakespeare_char.py
    "laptop": dict(block_size=64, batch_size=12, n_layer=4, n_head=4, n_embd=128),
    "char": dict(block_size=256, batch_size=64, n_layer=6, n_head=6, n_embd=384),
}


def nanogpt_timings(path: str, s: dict, tokens, steps: int, generate: bool) -> dict:
    import torch

    sys.path.insert(0, path)
    from model import GPT, GPTConfig  # nanoGPT's model.py, from the checkout given

    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=s["block_size"], vocab_size=65, n_layer=s["n_layer"], n_head=s["n_head"],
                          n_embd=s["n_embd"], dropout=0.0, bias=False))
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")
    x, y = (torch.from_numpy(tokens[:, :-1]).long().contiguous(), torch.from_numpy(tokens[:, 1:]).long().contiguous())

    def train_step():
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()

    def evaluate():
        with torch.no_grad():
            model(x, y)[1].item()

    out = {"train": median_seconds(train_step, steps, warmup=2), "eval": median_seconds(evaluate, steps, warmup=2)}
    if generate:
        model.eval()
        prompt = torch.zeros((1, 1), dtype=torch.long)
        with torch.no_grad():
            out["generate"] = median_seconds(lambda: model.generate(prompt, 500), 1, warmup=0)
    return out


def gptjax_timings(s: dict, tokens, steps: int, generate: bool) -> dict:
    import jax.numpy as jnp
    from flax import nnx

    import gptjax

    cfg = gptjax.GPTConfig(block_size=s["block_size"], vocab_size=65, n_layer=s["n_layer"], n_head=s["n_head"],
                           n_embd=s["n_embd"], dropout=0.0, bias=False)
    model = gptjax.GPT(cfg, rngs=nnx.Rngs(0))
    state = gptjax.TrainState.create(model, gptjax.adamw(1e-3, weight_decay=0.1, beta2=0.99, grad_clip=1.0))
    x, y = jnp.asarray(tokens[:, :-1], jnp.int32), jnp.asarray(tokens[:, 1:], jnp.int32)

    def train_step():
        nonlocal state
        state, metrics = gptjax.train_step(state, x, y)
        float(metrics["loss"])

    start = time.perf_counter()
    train_step()
    out = {"first step": time.perf_counter() - start}
    out["train"] = median_seconds(train_step, steps, warmup=2)
    out["eval"] = median_seconds(lambda: float(gptjax.eval_step(state, x, y)), steps, warmup=2)
    if generate:
        model = state.model()
        prompt = jnp.zeros((1, 1), jnp.int32)
        for name, context in (("generate", None), ("generate, overflow_context=block/2", cfg.block_size // 2)):
            out[name] = median_seconds(
                functools.partial(gptjax.generate, model, prompt, 500, overflow_context=context), 1)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nanogpt", help="path of a karpathy/nanoGPT checkout")
    parser.add_argument("--setting", choices=SETTINGS, default="laptop")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--generate", action="store_true")
    args = parser.parse_args()
    import numpy as np

    s = SETTINGS[args.setting]
    tokens = np.random.default_rng(0).integers(0, 65, (s["batch_size"], s["block_size"] + 1))
    theirs = nanogpt_timings(args.nanogpt, s, tokens, args.steps, args.generate)
    ours = gptjax_timings(s, tokens, args.steps, args.generate)
    tokens_per_step = s["batch_size"] * s["block_size"]
    print(f"setting {args.setting}: {s}, float32, dropout 0; median of {args.steps} steps; "
          f"{environment.describe()}")
    print(f"{'':36s} {'nanoGPT':>12s} {'gptjax':>12s} {'speed-up':>9s}")
    for name in ("train", "eval"):
        print(f"{name + ' tokens/s':36s} {tokens_per_step / theirs[name]:12,.0f} "
              f"{tokens_per_step / ours[name]:12,.0f} {theirs[name] / ours[name]:8.2f}x")
    for name in [k for k in ours if k.startswith("generate")]:
        print(f"{name + ' tokens/s':36s} {500 / theirs['generate']:12,.1f} {500 / ours[name]:12,.1f} "
              f"{theirs['generate'] / ours[name]:8.2f}x")
    print(f"gptjax first step (compile + run): {ours['first step']:.1f} s")


if __name__ == "__main__":
    environment.start_program()  # huge pages and XLA flags, as train.py runs (both frameworks share the process)
    main()
