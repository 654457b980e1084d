"""The wheel: `python -m build` makes one that installs into a fresh venv and runs there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_builds_installs_and_runs():
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check-wheel.sh"), sys.executable],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "wheel OK" in result.stdout
