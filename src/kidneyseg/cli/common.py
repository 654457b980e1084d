"""Shared CLI plumbing: user errors become one line on stderr and exit code 2; Ctrl-C and SIGTERM
become one line and exit codes 130 and 143 (the shell's codes for SIGINT and SIGTERM)."""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import typer

from kidneyseg.errors import KidneysegError, interrupt_behind

F = TypeVar("F", bound=Callable[..., Any])

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (`kill`, `timeout`, a job scheduler's time limit). An interrupt, not an
    `Exception`, so that code going on after a bad case does not swallow it and the atomic
    writers' cleanup runs on the way out."""


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises `Terminated` in this process; forked workers (data loaders,
    evaluation pools) still die of it as before."""
    main = os.getpid()

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        # A SIGTERM to the process group kills PyTorch's data-loader workers too; its SIGCHLD
        # handler would raise about them while the interrupt unwinds (`interrupt_behind`).
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    child = signal.getsignal(signal.SIGCHLD)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGCHLD, child)


_OMP_THREADS = re.compile(r"^\s*[1-9]\d*(\s*,\s*[1-9]\d*)*\s*$")


def check_environment() -> None:
    """Refuse an `OMP_NUM_THREADS` that OpenMP cannot use (it would print its own complaint when
    torch loads), and keep matplotlib from printing warnings about an unwritable HOME or
    MPLCONFIGDIR (it falls back to a temporary folder by itself)."""
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads is not None and not _OMP_THREADS.match(threads):
        raise KidneysegError(
            f"environment variable OMP_NUM_THREADS={threads!r} must be a positive whole number (or unset)"
        )
    logging.getLogger("matplotlib").setLevel(logging.ERROR)


def _stopped(interrupt: KeyboardInterrupt) -> NoReturn:
    terminated = isinstance(interrupt, Terminated)
    typer.echo("terminated" if terminated else "interrupted", err=True)
    raise typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED) from None


def one_line_errors(fn: F) -> F:
    """Decorate a command so that a `KidneysegError` prints `error: <message>` and exits 2, and
    an interrupt prints `interrupted` (Ctrl-C, exit 130) or `terminated` (SIGTERM, exit 143),
    without a traceback, also when another error was raised on top of it (`interrupt_behind`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with sigterm_raises():
                check_environment()
                return fn(*args, **kwargs)
        except KidneysegError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as exc:
            _stopped(exc)
        except Exception as exc:
            interrupt = interrupt_behind(exc)
            if interrupt is None:
                raise
            _stopped(interrupt)

    return wrapper  # type: ignore[return-value]
