"""Errors users see: each message names the bad value, file or key."""


class CelsegError(Exception):
    """Base class of every error the command line reports without a traceback."""


class DataError(CelsegError, ValueError):
    """A dataset file is missing, corrupt or inconsistent; the message names the file and value."""


class ModelLoadError(CelsegError, ValueError):
    """A model name, folder or weight file cannot be resolved or does not match."""
