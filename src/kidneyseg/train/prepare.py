"""From a dataset folder to checked, preprocessed training and validation cases.

Finds the labelled cases, splits them by case (seeded; one fold of a k-fold split with
`data.folds`), preprocesses them once into a cache
folder named by the preprocessing config's hash (`kidneyseg.preprocess.config_hash`, the hash
that also decides whether a cached case is fresh; runs with the same grid share it), and checks
every label value against the run's label map.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kidneyseg.config import RunConfig
from kidneyseg.data.cases import discover
from kidneyseg.data.splits import run_split
from kidneyseg.errors import KidneysegError
from kidneyseg.labels import label_lut
from kidneyseg.train.data import CaseRecord, scan_case
from kidneyseg.train.distributed import DistContext, barrier


@dataclass(frozen=True)
class PreparedData:
    """Checked, preprocessed cases of one run (their classes: the run config's label map)."""

    lut: np.ndarray
    train: tuple[CaseRecord, ...]
    val: tuple[CaseRecord, ...]
    cache_dir: Path


def prepare_data(
    config: RunConfig,
    data_dir: str | os.PathLike[str],
    cache_root: str | os.PathLike[str],
    ctx: DistContext,
    progress: bool = True,
) -> PreparedData:
    """Discover, split, preprocess (rank 0; the others wait) and check the cases.

    Raises:
        KidneysegError: no labelled cases, fewer than two, or label values the run's label map
            does not know (naming the file).
    """
    from kidneyseg.preprocess import config_hash, preprocess_dataset

    label_map = config.label_map
    lut = label_lut(label_map, config.data.label_mapping)
    ratios = config.data.class_ratios
    if ratios and len(ratios) != label_map.num_classes:
        raise KidneysegError(
            f"data.class_ratios needs {label_map.num_classes} weights, one per class of the "
            f"{label_map.name} label map (background first), got {list(ratios)}"
        )
    dataset = discover(data_dir, config.data.layout, config.data.annotation, require_labels=True)
    labelled = dataset.labelled
    if len(labelled) < 2:
        raise KidneysegError(
            f"need at least 2 labelled cases to train and validate, found {len(labelled)}", data_dir
        )
    train_ids, val_ids = run_split([c.case_id for c in labelled], config.data)
    cache_dir = Path(cache_root) / config_hash(config.preprocess)
    if ctx.is_main:
        preprocess_dataset(
            dataclasses.replace(dataset, cases=labelled), config.preprocess, cache_dir, progress
        )
    barrier(ctx)

    def scan(ids: list[str], what: str) -> tuple[CaseRecord, ...]:
        bar = tqdm(ids, desc=f"checking {what} cases", disable=not (progress and ctx.is_main), leave=False)
        return tuple(scan_case(i, cache_dir / i, label_map, lut) for i in bar)

    return PreparedData(lut, scan(train_ids, "training"), scan(val_ids, "validation"), cache_dir)
