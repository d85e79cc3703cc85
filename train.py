"""Train a GPT.

    python train.py --config configs/char.py [--config.KEY=VALUE ...]

Every key, its meaning and its default are in README.md ("Config keys").
"""

import sys

from gptjax.config import UsageError, from_command_line
from gptjax.sharding import initialize_distributed, use_measured_xla_flags
from gptjax.train import train


def main(argv: list[str]) -> None:
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip())
        return
    try:
        use_measured_xla_flags()
        initialize_distributed()  # before anything touches a device
        train(from_command_line(argv))
    except UsageError as e:
        sys.exit(f"train.py: error: {e}")


if __name__ == "__main__":
    main(sys.argv)
