"""The exceptions the programs print as one-line errors (bad input from the user, and work that
stopped part way), the option parser that raises them, and the check of an output folder that
they share."""

import argparse
import difflib
import itertools
import sys
import tempfile
from pathlib import Path


class UsageError(ValueError):
    """Bad input from the user: the message says what was wrong and what to do, in one line."""


class Interrupted(UsageError):
    """Work stopped part way (Ctrl-C, a signal, a stream that broke off): what it did is kept, and
    running it again continues it."""


def program_name(argv0: str) -> str:
    """The program as the user ran it, to begin its messages: "train.py" from a clone, "python -m
    gptjax.train" as a module."""
    module, ran = f"gptjax.{Path(argv0).stem}", getattr(sys, "orig_argv", [])
    as_module = any(a == "-m" and b == module for a, b in itertools.pairwise(ran))
    return f"python -m {module}" if as_module else Path(argv0).name


def out_of_memory(error: Exception) -> UsageError | None:
    """error in one line with what to do, when it says that a device ran out of memory (XLA's
    RESOURCE_EXHAUSTED: a batch, context or model too large for it); None for any other error."""
    said = str(error).strip().partition("\n")[0].rstrip(".")
    if not said.startswith("RESOURCE_EXHAUSTED"):
        return None
    return UsageError(f"the device ran out of memory ({said}): lower --config.batch_size (a larger "
                      "gradient_accumulation_steps keeps the tokens per update) or block_size, or pass "
                      "--config.remat=True or --config.dtype=bfloat16, or shard with mesh.fsdp across devices")


def cannot_write(folder: Path, option: str, error: OSError) -> UsageError:
    """The one-line error for a folder that an option names and that cannot be made or written."""
    return UsageError(f"{option}: cannot write in the folder {folder} ({error.strerror}): choose one you can write to")


def make_folder(folder: Path, option: str) -> None:
    """folder and its parents made, and able to take files; else a UsageError naming the option
    that asked for it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise cannot_write(folder, option, e) from None
    check_writable(folder, option)


def check_writable(folder: Path, option: str) -> None:
    """An existing folder tried with a real write (a file made and removed) as the user running,
    which permissions, a read-only mount or a full quota may refuse; a UsageError naming the option
    that asked for it when it cannot take files."""
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise cannot_write(folder, option, e) from None


# nanoGPT's options that gptjax has no use for, and what to do instead (train.py's config and the
# other programs' options alike).
NANOGPT_ONLY = {
    "device": "JAX chooses the device; JAX_PLATFORMS=cpu runs on the CPU",
    "compile": "gptjax always compiles its steps (jax.jit)",
    "backend": "a multi-host run joins with JAX_COORDINATOR_ADDRESS (docs/scaling.md)",
}


def nanogpt_only(option: str) -> UsageError | None:
    """The error for one of nanoGPT's options that gptjax has no use for (`option` as given:
    --device=cpu, --config.compile=False); None for any other."""
    key = option.lstrip("-").removeprefix("config.").split("=", 1)[0]
    if key not in NANOGPT_ONLY:
        return None
    return UsageError(f"{option.split('=', 1)[0]} is nanoGPT's: {NANOGPT_ONLY[key]}; leave it out")


class OptionParser(argparse.ArgumentParser):
    """argparse's parser, whose mistakes (an unknown option, a bad value or choice, a missing
    argument) raise UsageError in one line, naming the closest valid options, instead of
    printing the usage block and exiting."""

    def error(self, message: str):
        unknown = message.partition("unrecognized arguments: ")[2].split()
        for option in unknown:
            if nanogpt := nanogpt_only(option):
                raise nanogpt
        if not unknown:  # a bad value or choice, a missing argument: argparse's message says which
            raise UsageError(message)
        options = [o for o in self._option_string_actions if o.startswith("--")]
        closest = [match for option in unknown if option.startswith("-")
                   for match in difflib.get_close_matches(option.split("=", 1)[0], options, n=1, cutoff=0.7)]
        hint = f"did you mean {', '.join(dict.fromkeys(closest))}?" if closest else f"{self.prog} --help lists them"
        raise UsageError(f"{message}; {hint}")
