"""The one exception type for bad input from the user, and the check of an output folder that
the programs share."""

from pathlib import Path


class UsageError(ValueError):
    """Bad input from the user: the message says what was wrong and what to do, in one line."""


def make_folder(folder: Path, option: str) -> None:
    """folder and its parents made, or a UsageError naming the option that asked for it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{option}: cannot create the folder {folder} ({e.strerror})") from None
