"""Atomic writes: temporary files that a killed writer left behind are removed, a live one's kept."""

from __future__ import annotations

import os
import subprocess
import sys

from kidneyseg.io.atomic import _partial_name, remove_stale_partials


def test_stale_partials_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".last.partial-{dead_pid}.pt"
    stale_suffixes = tmp_path / f".case.partial-{dead_pid}.nii.gz"
    live = _partial_name(tmp_path / "metrics.csv")  # this process's: a write in progress
    kept = [tmp_path / "last.pt", tmp_path / ".hidden", tmp_path / "notes.partial-1.txt", live]
    for path in [stale, stale_suffixes, *kept]:
        path.write_text("x")
    (tmp_path / "sub").mkdir()
    below = tmp_path / "sub" / f".last.partial-{dead_pid}.pt"
    below.write_text("x")
    assert str(os.getpid()) in live.name
    assert remove_stale_partials(tmp_path) == sorted([stale, stale_suffixes])
    assert all(p.exists() for p in [*kept, below])
