"""The exceptions the programs print as one-line errors (bad input from the user, and work that
stopped part way), and the check of an output folder that they share."""

import tempfile
from pathlib import Path


class UsageError(ValueError):
    """Bad input from the user: the message says what was wrong and what to do, in one line."""


class Interrupted(UsageError):
    """Work stopped part way (Ctrl-C, a signal, a stream that broke off): what it did is kept, and
    running it again continues it."""


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
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise cannot_write(folder, option, e) from None
