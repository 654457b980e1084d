"""Atomic writes: temporary files that a killed writer left behind are removed, a live one's kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kidneyseg.io.atomic import partial_name, remove_stale_partials


def test_stale_partials_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)

    def dead_writers(name: str) -> Path:
        return partial_name(tmp_path / name).with_name(
            partial_name(tmp_path / name).name.replace(f"-{os.getpid()}", f"-{dead_pid}")
        )

    stale = dead_writers("last.pt")
    stale_suffixes = tmp_path / f".case.partial-{dead_pid}.nii.gz"  # named by an older version
    live = partial_name(tmp_path / "metrics.csv")  # this process's: a write in progress
    elsewhere = tmp_path / f".other.partial-00000000-{dead_pid}.pt"  # another machine's (a shared cache)
    kept = [tmp_path / "last.pt", tmp_path / ".hidden", tmp_path / "notes.partial-1.txt", live, elsewhere]
    for path in [stale, stale_suffixes, *kept]:
        path.write_text("x")
    (tmp_path / "sub").mkdir()
    below = tmp_path / "sub" / f".last.partial-{dead_pid}.pt"
    below.write_text("x")
    case = dead_writers("case_00003")  # a preprocessed case being written
    case.mkdir()
    (case / "image.npy").write_text("x")
    assert str(os.getpid()) in live.name
    assert remove_stale_partials(tmp_path) == sorted([stale, stale_suffixes, case])
    assert all(p.exists() for p in [*kept, below]) and not case.exists()


def test_a_killed_preprocess_or_phantom_run_leaves_no_temporary_file_after_a_rerun(tmp_path):
    """Found by a hostile review: SIGKILL mid-way left `.case_00003.partial-PID/` in the cache and
    `.imaging.partial-PID.nii.gz` in a phantom's case folder, and re-runs never removed them."""
    from kidneyseg.config import PreprocessConfig
    from kidneyseg.data.cases import discover
    from kidneyseg.data.phantom import generate_dataset
    from kidneyseg.preprocess import preprocess_dataset

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    generate_dataset(tmp_path / "ph", 2, size="tiny", progress=False)
    case = tmp_path / "ph" / "dataset" / "case_00001"
    (case / f".imaging.partial-{pid}.nii.gz").write_text("x")
    (tmp_path / "cache" / f".case_00001.partial-{pid}").mkdir(parents=True)
    generate_dataset(tmp_path / "ph", 2, size="tiny", progress=False)
    config = PreprocessConfig(spacing=(4.0, 4.0, 4.0))
    preprocess_dataset(discover(tmp_path / "ph"), config, tmp_path / "cache", progress=False)
    assert not [p.name for p in case.iterdir() if p.name.startswith(".")]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["case_00000", "case_00001"]


def test_a_lock_is_held_by_one_process_at_a_time_and_goes_with_it(tmp_path, monkeypatch):
    import errno
    import fcntl

    import pytest

    from kidneyseg.errors import KidneysegError
    from kidneyseg.io.atomic import exclusive

    lock = tmp_path / ".record.lock"
    holder = subprocess.Popen(  # another process holds the lock until told to let go
        [
            sys.executable,
            "-c",
            f"from kidneyseg.io.atomic import exclusive; from pathlib import Path\n"
            f"with exclusive(Path({str(lock)!r}), 'x'):\n    print('held', flush=True); input()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(KidneysegError) as refused, exclusive(lock, "busy now"):
        pass
    assert str(refused.value) == f"{tmp_path}: busy now"
    holder.communicate("\n")
    assert not lock.exists()
    with exclusive(lock, "busy now"):
        assert lock.exists()
    assert not lock.exists()

    lock.write_text("")  # another user's lock file, which this user may read but not write
    real_open = os.open

    def readable_only(path, flags, *mode):
        if path == lock and flags & os.O_RDWR:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *mode)

    monkeypatch.setattr(os, "open", readable_only)
    with exclusive(lock, "busy now"):
        holder = subprocess.run(  # held all the same: a second process is refused
            [
                sys.executable,
                "-c",
                f"from kidneyseg.io.atomic import exclusive; from pathlib import Path\n"
                f"with exclusive(Path({str(lock)!r}), 'busy'):\n    pass",
            ],
            capture_output=True,
            text=True,
        )
        assert holder.returncode != 0 and "busy" in holder.stderr
    monkeypatch.undo()

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with exclusive(lock, "busy now"):  # a file system that cannot lock: the block runs unlocked
        ran = True
    assert ran and not lock.exists()
