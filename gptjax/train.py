"""Train a GPT.

    python -m gptjax.train --config char [--config.KEY=VALUE ...]       # a shipped recipe, by name
    python train.py --config configs/char.py [--config.KEY=VALUE ...]   # a recipe file (from a clone)

SIGTERM, SIGINT (Ctrl-C) and SIGUSR1 finish the current step, save a checkpoint and exit (SIGINT
with status 130, the others 0); a second Ctrl-C stops at once. During data preparation they stop
it, keeping its work for the next run to continue.

Recipes: char, char_cpu, gpt2, eval_gpt2[:MODEL], finetune_shakespeare (configs/). Every key, its
meaning and its default: docs/config.md.
"""

from gptjax import environment

if __name__ == "__main__":  # before JAX loads: this may re-execute the program once (huge pages)
    environment.start_program(compilation_cache=True)

import signal
import sys
from pathlib import Path

from gptjax.config import command_line_keys, from_command_line
from gptjax.errors import UsageError, out_of_memory
from gptjax.loop import StopRequest, train
from gptjax.sharding import initialize_distributed


def main(argv: list[str]) -> None:
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip())
        return
    try:
        environment.use_measured_xla_flags()
        initialize_distributed()  # before anything touches a device
        with StopRequest() as stop:
            train(from_command_line(argv), given=frozenset(command_line_keys(argv)), stop=stop)
    except UsageError as e:
        sys.exit(f"{Path(argv[0]).name}: error: {e}")
    except Exception as e:  # a device out of memory is one line too; any other error keeps its traceback
        if (too_large := out_of_memory(e)) is None:
            raise
        sys.exit(f"{Path(argv[0]).name}: error: {too_large}")
    if stop.signal == signal.SIGINT:  # saved; a shell reads 130 as "interrupted"
        sys.exit(130)


if __name__ == "__main__":
    main(sys.argv)
