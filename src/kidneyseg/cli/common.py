"""Shared CLI plumbing: user errors become one line on stderr and exit code 2; Ctrl-C becomes
one line and exit code 130 (the shell's code for SIGINT)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from kidneyseg.errors import KidneysegError

F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(fn: F) -> F:
    """Decorate a command so that a `KidneysegError` prints `error: <message>` and exits 2, and
    an interrupt (Ctrl-C) prints `interrupted` and exits 130, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KidneysegError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]
