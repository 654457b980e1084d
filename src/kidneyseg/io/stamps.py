"""What a result was made from, to tell whether it can be re-used: files by path, size and
modification time, and settings by a short hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from kidneyseg.errors import KidneysegError


def file_stamp(path: Path) -> dict[str, Any]:
    """The file's resolved path, size and modification time (ns).

    Raises:
        KidneysegError: the file cannot be read.
    """
    try:
        stat = path.stat()
    except OSError as exc:
        raise KidneysegError(f"cannot read ({exc.strerror})", path) from None
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def stamp_hash(payload: Any) -> str:
    """A 16-hex-digit hash of a JSON-ready value (key order does not matter)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def recorded(path: Path, key: str) -> Any:
    """The value under `key` of the JSON record at `path` (a run record naming the files it
    wrote), or None when the file is missing, unreadable, not a JSON object or lacks the key: an
    earlier run's record is a hint, never a reason to stop."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record.get(key) if isinstance(record, dict) else None


def as_stamped(path: Path, stamp: dict[str, Any]) -> bool:
    """Whether `path` is still the file `stamp` (a `file_stamp`) was taken of."""
    return path.is_file() and file_stamp(path) == stamp
