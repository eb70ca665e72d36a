"""One exception type for every user-facing failure.

The CLI turns a `FincocktailError` into a single line on stderr and a non-zero exit, so a
message raised anywhere must already say what was wrong and what was expected (file, line,
field). Anything else that escapes is a bug and keeps its traceback.
"""


class FincocktailError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 1


class ConfigError(FincocktailError):
    """A config file or option holds a value we cannot use."""

    exit_code = 2


class DataError(FincocktailError):
    """A dataset file is missing or malformed."""


class ModelError(FincocktailError):
    """A model cannot be found, downloaded, verified or loaded."""


class UnknownModelError(ModelError):
    """A model name or folder that names nothing: a typo, so a usage error (exit 2), not a broken model."""

    exit_code = 2
