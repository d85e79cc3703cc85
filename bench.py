"""Measure how fast a config trains (and samples) on this machine.

    python bench.py --config configs/char.py [--config.KEY=VALUE ...] [--steps 10] [--sample] [--json FILE]

Prints compile time, ms per iteration, tokens/s, model TFLOP/s, MFU (where the device's peak is
known) and XLA's planned memory for train_step and eval_step; --sample adds generation tokens/s.
Random weights and tokens: nothing is read or written but the optional --json FILE.
"""

import argparse
import json
import sys

from gptjax import bench
from gptjax.config import UsageError, from_command_line
from gptjax.sharding import initialize_distributed, use_measured_xla_flags


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], usage=__doc__.splitlines()[2].strip())
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
        use_measured_xla_flags()
        initialize_distributed()
        config = from_command_line(config_argv)
        results = bench.training(config, args.steps)
        if args.sample:
            results.update(bench.sampling(config, args.max_new_tokens))
    except UsageError as e:
        sys.exit(f"bench.py: error: {e}")
    print(f"{' '.join(config_argv[1:])}: batch {config.gradient_accumulation_steps} x {config.batch_size} x "
          f"{config.block_size}, {config.dtype}, attention {config.attention}, mean of {args.steps} iterations")
    for name, value in results.items():
        print(_row(name, value))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"argv": config_argv[1:], **results}, f, indent=2)


if __name__ == "__main__":
    main(sys.argv)
