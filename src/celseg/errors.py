"""Errors users see: each message names the bad value, file or key."""


class CelsegError(Exception):
    """Base class of every error the command line reports without a traceback."""


class DataError(CelsegError, ValueError):
    """A dataset file is missing, corrupt or inconsistent; the message names the file and value."""


class ModelLoadError(CelsegError, ValueError):
    """A model name, folder or weight file cannot be resolved or does not match."""


class OutputError(CelsegError, ValueError):
    """An output path would replace an input or a file celseg did not write, or cannot be
    written; the message names the path."""


class Interrupted(CelsegError):
    """A run stopped on a signal after saving what it needs to continue; ``exit_code`` is the
    shell's convention (128 + signal number)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
