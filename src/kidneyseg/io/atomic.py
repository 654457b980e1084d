"""Write files under a temporary name in the target folder, then rename: no partial output."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kidneyseg.errors import KidneysegError

_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
"""This machine in temporary names: a folder shared between machines (a cache) may hold another
machine's writes in progress, whose process numbers mean nothing here."""
_PARTIAL = re.compile(r"^\..+\.partial-(?:([0-9a-f]{8})-)?(\d+)(\..*)?$")


def partial_name(path: Path) -> Path:
    """The temporary name a write of `path` goes under: `.NAME.partial-HOST-PID.SUFFIX`, hidden,
    naming the machine and process, and keeping the full suffix (.nii.gz, .json, ...) so that
    writers that pick a format from the file name still do the right thing."""
    stem, dot, rest = path.name.partition(".")
    return path.with_name(f".{stem}.partial-{_HOST}-{os.getpid()}{dot}{rest}")


def make_folder(folder: Path, kind: str = "output") -> bool:
    """Create `folder` (and its parents) if needed and make sure it can be written; returns True
    if it had to be created. `kind` names it in the one-line errors ("output", "cache", "run").

    Raises:
        KidneysegError: the path is a file, cannot be created (under a file, on a read-only or
            virtual file system), or is not writable.
    """
    existed = folder.exists()
    if existed and not folder.is_dir():
        raise KidneysegError(f"the {kind} path exists and is not a folder", folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KidneysegError(f"cannot create the {kind} folder ({exc.strerror or exc})", folder) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise KidneysegError(f"the {kind} folder is not writable", folder)
    return not existed


def remove_empty_folders(folder: Path) -> None:
    """Remove `folder` and the folders under it that hold no file: what a command that failed
    leaves of the folders it made (files written in them, e.g. preprocessed cases, are kept)."""
    for path in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(path.iterdir()):
            path.rmdir()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


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
    tmp = partial_name(path)
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_partials(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files and folders in `folder` (not below it) that a killed writer
    left behind: those named by `partial_name` (`atomic_path`, a preprocessed case's folder) on
    this machine, whose process is gone. Those of live writers and of other machines are kept.

    Returns:
        The files and folders removed.
    """
    removed = []
    for path in sorted(Path(folder).iterdir()):
        match = _PARTIAL.match(path.name)
        here = match is not None and match.group(1) in (None, _HOST)  # no machine: an older name
        if here and not _alive(int(match.group(2))):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextmanager
def exclusive(lock: Path, busy: str) -> Iterator[None]:
    """Hold the lock file `lock` (created, and removed when released) for the block, or refuse at
    once with `busy` when another process holds it: two runs writing one record would each keep
    only their own cases. A holder removes the file only while holding it, and a process that
    locked a file already removed tries again, so two holders never meet. Without `fcntl`
    (Windows), or on a file system that cannot lock, the block runs unlocked.

    Raises:
        KidneysegError: another process holds the lock (`busy`, naming the lock's folder).
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:  # another user's lock file: a read-only descriptor locks it too
            fd = os.open(lock, os.O_RDONLY)
        except OSError as exc:
            raise KidneysegError(f"could not write ({exc.strerror or exc})", lock) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise KidneysegError(busy, lock.parent) from None
        except OSError:  # a file system without locks (some network shares)
            os.close(fd)
            lock.unlink(missing_ok=True)
            yield
            return
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # another user's file in a sticky folder stays
            lock.unlink(missing_ok=True)
        os.close(fd)
