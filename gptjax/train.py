"""Train a GPT.

    python -m gptjax.train --config char [--config.KEY=VALUE ...]       # a shipped recipe, by name
    python train.py --config configs/char.py [--config.KEY=VALUE ...]   # a recipe file (from a clone)

SIGTERM, SIGINT (Ctrl-C) and SIGUSR1 finish the current step, save a checkpoint and exit (SIGINT
with status 130, the others 0); a second Ctrl-C stops at once. While the run starts, they stop it
at once (status 130, 143 or 138) and nothing of the run is written; during data preparation they
stop it, keeping its work for the next run to continue.

Recipes: char, char_cpu, gpt2, eval_gpt2[:MODEL], finetune_shakespeare (configs/). Every key, its
meaning and its default: docs/config.md.
"""

from gptjax import environment, stopping

if __name__ == "__main__":  # before JAX loads: this may re-execute the program once (huge pages)
    environment.start_program(compilation_cache=True)
    stopping.exit_at_once_while_importing()

import signal
import sys
from pathlib import Path

import jax

from gptjax import checkpoint
from gptjax.config import command_line_keys, from_command_line
from gptjax.errors import Interrupted, UsageError, out_of_memory, program_name
from gptjax.loop import train
from gptjax.sharding import initialize_distributed
from gptjax.start import resumed_settings


def _fail(program: str, message: str, status: int) -> None:
    print(f"{program}: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def _what_is_saved(out_dir: str) -> str:
    """What a run stopped at once leaves to continue from, in words."""
    newest = checkpoint.latest_step(Path(out_dir))
    if newest is None:
        return "no checkpoint was saved, so the next run starts anew"
    return f"{Path(out_dir).absolute()}/checkpoints/{newest} is the newest checkpoint; --config.init_from=resume " \
           "continues from it"


def main(argv: list[str]) -> None:
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip())
        return
    program = program_name(argv[0])
    stop = stopping.StopRequest(program)
    try:
        environment.use_measured_xla_flags()
        checkpoint.quiet_from_now_on()  # orbax's noise about a damaged checkpoint: one line says it
        # before anything touches a device, and before the handlers: joining a multi-host run
        # installs JAX's own SIGTERM handler (its preemption notifier), which would take SIGTERM
        initialize_distributed()
        config, given = from_command_line(argv), frozenset(command_line_keys(argv))
        with stop:
            say = print if jax.process_index() == 0 else lambda _: None
            train(resumed_settings(config, given, say), given=given, stop=stop)
    except stopping.Stopped:
        stop.end_starting()
    except KeyboardInterrupt:
        _fail(program, f"stopped at once by a second Ctrl-C, without saving: {_what_is_saved(config.out_dir)}",
              stopping.exit_status(signal.SIGINT))
    except UsageError as e:
        if isinstance(e, Interrupted) and stop.signal is not None:  # a preparation a signal stopped
            _fail(program, f"error: {e}", stopping.exit_status(stop.signal))
        sys.exit(f"{program}: error: {e}")
    except Exception as e:  # a device out of memory is one line too; any other error keeps its traceback
        if (too_large := out_of_memory(e)) is None:
            raise
        sys.exit(f"{program}: error: {too_large}")
    if stop.signal == signal.SIGINT:  # saved; a shell reads 130 as "interrupted"
        sys.exit(130)


if __name__ == "__main__":
    main(sys.argv)
