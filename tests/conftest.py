"""Shared fixtures: the real data beside the repository and tiny seeded volumes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Every test (and the processes tests start) compiles its networks afresh: nothing is read from or
# written to the user's compile cache (tests of the cache give their own folder).
os.environ["KIDNEYSEG_CACHE_DIR"] = ""


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the repository (real KiTS19 masks and real CT files)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks run fastest on one thread; two threads spin-wait badly on a loaded 2-core CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
