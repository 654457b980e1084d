"""The one exception type users see: a message naming the file and the problem."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
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


def check_utf8_name(path: str | PathLike[str]) -> None:
    """Refuse a path whose name is not valid UTF-8 (a Latin-1 name from a Windows share or a USB
    export): ITK's DICOM reader aborts the whole process on such a folder, and no report, record
    or console line can hold the name as it is.

    Raises:
        KidneysegError: naming the path with its undecodable bytes escaped.
    """
    raw = os.fsencode(path)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        shown = raw.decode("utf-8", "backslashreplace")
        raise KidneysegError(
            "the name is not valid UTF-8 (the escaped bytes): rename it, e.g. with convmv -f latin1 -t utf-8",
            shown,
        ) from None


def warn_on_stderr(message: str) -> None:
    """Print a warning on stderr, where the command line's warnings go (stdout holds results)."""
    print(message, file=sys.stderr, flush=True)


def some_names(names: Sequence[str], shown: int = 10) -> str:
    """The first `shown` of `names` for a message: "a, b, c and 7 more"."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def exception_line(exc: BaseException) -> str:
    """An exception's type and the first line of its message, for a one-line reason."""
    return f"{type(exc).__name__}: {exc}".strip().splitlines()[0]


def interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The interrupt (Ctrl-C, SIGTERM) that `exc` was raised while handling, if any: a signal sent
    to the whole process group also kills PyTorch's data-loader workers, and the main process
    then raises "DataLoader worker ... is killed by signal" on top of its own interrupt."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__context__
    return None
