"""How long saving a checkpoint stops training, written in the foreground and in the background.

    python benchmarks/checkpoint_stall.py [--config char] [--config gpt2] [--saves 3]

For each recipe's train state (random weights, AdamW state, on this machine's devices): the
seconds that checkpoint.Writer.save() holds up the loop, and the seconds until the checkpoint is
complete on disk, with async_checkpointing off and on; and a train step's time (batch size 1),
for scale. The
checkpoints go to a temporary folder, deleted at the end.
"""

import argparse
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from timing import median_seconds

from gptjax import checkpoint, environment, loop, optim, sharding, start
from gptjax.config import from_command_line, model_config
from gptjax.step import train_step


def measure(recipe: str, saves: int) -> dict:
    # one sequence a step: the state's size is the recipe's, the step is only there for scale
    config = from_command_line(["bench", "--config", recipe, "--config.gradient_accumulation_steps=1",
                                "--config.batch_size=1"])
    vocab = 65 if config.tokenizer == "char" else 50304
    mesh = sharding.make_mesh()
    state = start.sharded_state(model_config(config, vocab), optim.from_config(config), mesh)
    tokens = np.random.default_rng(0).integers(0, vocab, 1_000_000).astype(np.uint16)
    x, y = sharding.put_batch(loop._train_batch(tokens, config, 0), mesh)
    state, _ = jax.block_until_ready(train_step(state, x, y))  # compiles

    def step():
        nonlocal state
        state = jax.block_until_ready(train_step(state, x, y))[0]

    results = {"state_mib": sum(a.nbytes for a in jax.tree.leaves(state)) / 2**20,
               "train_step_s": median_seconds(step, repeats=3)}
    for background in (False, True):
        with tempfile.TemporaryDirectory() as out_dir:
            stalls, completes = [], []
            with checkpoint.Writer(Path(out_dir), keep=2, background=background) as writer:
                for i in range(saves):
                    started = time.perf_counter()
                    writer.save(i + 1, start.checkpoint_items(state), {"iter": i + 1})
                    stalls.append(time.perf_counter() - started)
                    step()  # the next step reuses the saved buffers (donation)
                    writer.wait()
                    completes.append(time.perf_counter() - started)
        mode = "background" if background else "foreground"
        results[f"{mode}_stall_s"] = float(np.median(stalls))
        results[f"{mode}_complete_s"] = float(np.median(completes))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", help="recipes (default: char and gpt2)")
    parser.add_argument("--saves", type=int, default=3)
    args = parser.parse_args()
    print(f"{jax.device_count()} x {jax.devices()[0].device_kind}; {environment.describe()}")
    for recipe in args.config or ["char", "gpt2"]:
        r = measure(recipe, args.saves)
        print(f"{recipe}: state {r['state_mib']:.0f} MiB, train step {r['train_step_s']:.3f} s; save stalls the loop "
              f"{r['foreground_stall_s']:.3f} s in the foreground (complete {r['foreground_complete_s']:.3f} s), "
              f"{r['background_stall_s']:.3f} s in the background (complete, with one step, "
              f"{r['background_complete_s']:.3f} s)")


if __name__ == "__main__":
    environment.start_program()
    main()
