"""Write files under a temporary name in the target folder, then rename: no partial output."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kidneyseg.errors import KidneysegError


def _partial_name(path: Path) -> Path:
    # Keep the full suffix (.nii.gz, .json, ...) so that writers that pick a format
    # from the file name still do the right thing.
    name = path.name
    stem, dot, rest = name.partition(".")
    return path.with_name(f".{stem}.partial-{os.getpid()}{dot}{rest}")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, else delete it."""
    path = Path(path)
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KidneysegError(f"cannot create the output folder ({exc.strerror})", parent) from None
    if not os.access(parent, os.W_OK):
        raise KidneysegError("the output folder is not writable", parent)
    tmp = _partial_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise KidneysegError(f"could not write ({exc.strerror or exc})", path) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call `write(tmp_path)` and rename the result to `path` only if it succeeded."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
