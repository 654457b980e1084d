"""The one exception type users see: a message naming the file and the problem."""

from __future__ import annotations

from os import PathLike


class KidneysegError(Exception):
    """An error caused by the user's input or environment, reported as one line by the CLI.

    Args:
        message: what is wrong, phrased so that it suggests the fix.
        path: the file or folder the problem is in, if any; it prefixes the message.
    """

    def __init__(self, message: str, path: str | PathLike[str] | None = None):
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(message if path is None else f"{path}: {message}")


def exception_line(exc: BaseException) -> str:
    """An exception's type and the first line of its message, for a one-line reason."""
    return f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
