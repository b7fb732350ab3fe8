"""Errors that the CLI reports as one line (`error: ...`) instead of a traceback: each one says
what is wrong and what to do about it."""


class WsolError(Exception):
    """Base class of user-facing errors."""


class ConfigError(WsolError, ValueError):
    """A config value is missing, of the wrong type, or out of range."""


class WorkdirError(WsolError):
    """The workdir cannot be written, or lacks the checkpoint a stage needs."""


class DataError(WsolError):
    """A dataset file is missing, corrupt or inconsistent."""


class TrainingError(WsolError):
    """Training went wrong in a way that would make the numbers meaningless (a non-finite loss,
    a classifier at chance, weight maps that localise nothing)."""
