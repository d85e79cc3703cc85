"""The one exception type for bad input from the user."""


class UsageError(ValueError):
    """Bad input from the user: the message says what was wrong and what to do, in one line."""
