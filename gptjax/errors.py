"""The exceptions the programs print as one-line errors (bad input from the user, and work that
stopped part way), and the check of an output folder that they share."""

from pathlib import Path


class UsageError(ValueError):
    """Bad input from the user: the message says what was wrong and what to do, in one line."""


class Interrupted(UsageError):
    """Work stopped part way (Ctrl-C, a signal, a stream that broke off): what it did is kept, and
    running it again continues it."""


def make_folder(folder: Path, option: str) -> None:
    """folder and its parents made, or a UsageError naming the option that asked for it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{option}: cannot create the folder {folder} ({e.strerror})") from None
