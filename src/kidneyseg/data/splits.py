"""Seeded, reproducible case-level splits.

The SCA-UNet paper uses a shuffled 90:10 train/validation split of KiTS21; the attention U-Net
paper an 80:20 split of the 210 KiTS19 cases (168/42). Splits depend only on the sorted case
ids and the seed, never on the order in which files were listed. A run's split
(`run_split`) is one of these: the `val_fraction` split, or fold `data.fold` of `data.folds`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kidneyseg.config import DataConfig
from kidneyseg.errors import KidneysegError


def _shuffled(case_ids: Sequence[str], seed: int) -> list[str]:
    ids = sorted(set(case_ids))
    if len(ids) != len(case_ids):
        raise KidneysegError("case ids are not unique")
    order = np.random.default_rng(seed).permutation(len(ids))
    return [ids[i] for i in order]


def train_val_split(
    case_ids: Sequence[str], val_fraction: float, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Shuffle and split into (train, validation); validation gets round(n * fraction) cases,
    at least one when there are two or more cases."""
    if not 0.0 < val_fraction < 1.0:
        raise KidneysegError(f"validation fraction must be in (0, 1), got {val_fraction}")
    ids = _shuffled(case_ids, seed)
    if len(ids) < 2:
        raise KidneysegError(f"need at least 2 cases to split, got {len(ids)}")
    n_val = min(max(1, round(len(ids) * val_fraction)), len(ids) - 1)
    return sorted(ids[n_val:]), sorted(ids[:n_val])


def kfold_splits(case_ids: Sequence[str], k: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """k shuffled folds: a list of (train, validation) pairs whose validation sets partition
    the cases."""
    ids = _shuffled(case_ids, seed)
    if not 2 <= k <= len(ids):
        raise KidneysegError(f"k must be between 2 and the number of cases ({len(ids)}), got {k}")
    folds = np.array_split(np.arange(len(ids)), k)
    out = []
    for fold in folds:
        val = {ids[i] for i in fold}
        out.append((sorted(set(ids) - val), sorted(val)))
    return out


def run_split(case_ids: Sequence[str], data: DataConfig) -> tuple[list[str], list[str]]:
    """A run's (train, validation) case ids: fold `data.fold` of `data.folds` k-fold splits, or
    the `data.val_fraction` split when `data.folds` is 0; both seeded by `data.split_seed`."""
    if data.folds:
        return kfold_splits(case_ids, data.folds, data.split_seed)[data.fold]
    return train_val_split(case_ids, data.val_fraction, data.split_seed)
