"""Iterations and wall time to first reach a validation loss: karpathy/nanoGPT's laptop command
against a gptjax recipe, one after the other, on this machine.

    git clone https://github.com/karpathy/nanoGPT /tmp/nanoGPT      # never committed here
    python /tmp/nanoGPT/data/shakespeare_char/prepare.py             # nanoGPT's data, once
    python benchmarks/time_to_loss.py /tmp/nanoGPT [--config configs/char_cpu_fast.py] [--target 1.8857]
        [--eval_interval 100] [--eval_iters 100] [--skip_nanogpt] [--config.KEY=VALUE ...]

Both programs run as they are, in a pipe, evaluating every --eval_interval iterations on
--eval_iters batches of each split (so that one crossing is not noise), and stop at the first
evaluation whose val loss is at most --target (default: what nanoGPT's laptop command ends at
after its 2000 iterations). An evaluation's own time, from the log line before it to the one
that reports it, is taken out of the wall time; starting, compiling and saving checkpoints stay
in (gptjax compiles as on its first run: its compilation cache starts empty). gptjax trains on the
checkout's data/shakespeare_char/input.txt. Further --config.KEY=VALUE arguments go to gptjax's
train.py.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# nanoGPT's README: "a decent result ... on a MacBook" with the CPU settings
NANOGPT_LAPTOP = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
                  "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
                  "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0"]
EVALUATION = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)")


def evaluations(command: list[str], cwd: Path, target: float, env: dict | None = None) -> tuple[list[dict], float]:
    """Run command until it reports a val loss <= target (or ends); each evaluation's iteration, val
    loss and wall time so far without the evaluations, and the evaluations' own time."""
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    last_line_at, evaluating, found = start, 0.0, []
    for line in process.stdout:
        now = time.monotonic()
        match = EVALUATION.match(line)
        if match:
            evaluating += now - last_line_at
            found.append({"iterations": int(match[1]), "val_loss": float(match[3]), "wall": now - start - evaluating})
            if found[-1]["val_loss"] <= target:
                break
        last_line_at = now
    process.kill()
    process.wait()
    return found, evaluating


def first_at_or_below(found: list[dict], target: float) -> dict | None:
    return next((e for e in found if e["val_loss"] <= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nanogpt", type=Path, help="a karpathy/nanoGPT checkout with data/shakespeare_char prepared")
    parser.add_argument("--config", default=str(REPO / "configs/char_cpu_fast.py"), help="gptjax's recipe")
    parser.add_argument("--target", type=float, default=1.8857)
    parser.add_argument("--eval_interval", type=int, default=100)
    parser.add_argument("--eval_iters", type=int, default=100)
    parser.add_argument("--skip_nanogpt", action="store_true", help="time only gptjax")
    args, overrides = parser.parse_known_args()
    corpus = args.nanogpt / "data/shakespeare_char/input.txt"
    if not (args.nanogpt / "train.py").is_file() or not corpus.is_file():
        sys.exit(f"{args.nanogpt} is not a nanoGPT checkout with data/shakespeare_char prepared (see the docstring)")
    evaluation = [f"--eval_interval={args.eval_interval}", f"--eval_iters={args.eval_iters}"]
    runs = {}
    with tempfile.TemporaryDirectory() as scratch:
        if not args.skip_nanogpt:
            command = [sys.executable, "train.py", *NANOGPT_LAPTOP, *evaluation, f"--out_dir={scratch}/nanogpt"]
            runs["nanoGPT laptop command"] = evaluations(command, args.nanogpt, args.target)
        command = [sys.executable, str(REPO / "train.py"), "--config", args.config, f"--config.input_file={corpus}",
                   f"--config.data_dir={scratch}/data", f"--config.out_dir={scratch}/gptjax",
                   *(f"--config.{option[2:]}" for option in evaluation), *overrides]
        first_run = {**os.environ, "JAX_COMPILATION_CACHE_DIR": f"{scratch}/xla-cache"}
        runs[f"gptjax {Path(args.config).name} {' '.join(overrides)}".strip()] = evaluations(command, REPO, args.target,
                                                                                              first_run)
    print(f"first val loss <= {args.target} (evaluations every {args.eval_interval} iterations on "
          f"{args.eval_iters} batches, their time left out)")
    print(f"{'run':<60} {'iterations':>10} {'wall s':>8} {'evals s':>8} {'lowest val':>10}")
    for name, (found, evaluating) in runs.items():
        reached = first_at_or_below(found, args.target)
        print(f"{name:<60} {reached['iterations'] if reached else 'never':>10} "
              f"{reached['wall'] if reached else float('nan'):>8.1f} {evaluating:>8.1f} "
              f"{min(e['val_loss'] for e in found):>10.4f}")
    if len(runs) == 2:
        (nanogpt, _), (ours, _) = runs.values()
        # nanoGPT's lowest val loss as the target when it never reached --target itself
        target = args.target if first_at_or_below(nanogpt, args.target) else min(e["val_loss"] for e in nanogpt)
        theirs, mine = first_at_or_below(nanogpt, target), first_at_or_below(ours, target)
        if mine:
            print(f"to val loss {target:.4f}: gptjax {mine['iterations']} iterations, {mine['wall']:.1f} s; nanoGPT "
                  f"{theirs['iterations']}, {theirs['wall']:.1f} s: {mine['iterations'] / theirs['iterations']:.2f}x "
                  f"the iterations, {mine['wall'] / theirs['wall']:.2f}x the wall time")
        else:
            print(f"gptjax did not reach {target:.4f}, nanoGPT's lowest val loss")


if __name__ == "__main__":
    main()
