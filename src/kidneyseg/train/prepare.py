"""From a dataset folder to checked, preprocessed training and validation cases.

Finds the labelled cases, splits them by case (seeded; one fold of a k-fold split with
`data.folds`), preprocesses them once into a cache
folder named by the preprocessing config's hash (`kidneyseg.preprocess.config_hash`, the hash
that also decides whether a cached case is fresh; runs with the same grid share it), and checks
every label value against the run's label map.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kidneyseg.config import RunConfig
from kidneyseg.data.cases import Case, discover
from kidneyseg.data.splits import run_split
from kidneyseg.errors import KidneysegError, some_names
from kidneyseg.labels import label_lut
from kidneyseg.train.data import CaseRecord, scan_case
from kidneyseg.train.distributed import DistContext, barrier
from kidneyseg.train.rundir import RecordedCases

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedData:
    """Checked, preprocessed cases of one run (their classes: the run config's label map)."""

    lut: np.ndarray
    train: tuple[CaseRecord, ...]
    val: tuple[CaseRecord, ...]
    cache_dir: Path
    file_sizes: dict[str, list[int]]
    """Per case id, the sizes in bytes of its CT and label map (a resume checks them)."""
    max_validated: int = 0
    """`train.val_max_cases`: validate on the first this many of `val` (0: all)."""

    @property
    def validated(self) -> tuple[CaseRecord, ...]:
        """The validation cases whose Dice chooses `best.pt`."""
        return self.val[: self.max_validated] if self.max_validated else self.val


def prepare_data(
    config: RunConfig,
    data_dir: str | os.PathLike[str],
    cache_root: str | os.PathLike[str],
    ctx: DistContext,
    progress: bool = True,
    cases: RecordedCases | None = None,
) -> PreparedData:
    """Discover, split, preprocess (rank 0; the others wait) and check the cases.

    Args:
        cases: a resumed run's cases; other cases in the data (new, gone or split otherwise)
            are refused before anything is preprocessed.

    Raises:
        KidneysegError: no labelled cases, fewer than two, one CT under two case ids, other
            cases than a resumed run's, or label values the run's label map does not know
            (naming the file).
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
    _refuse_one_ct_twice(labelled, data_dir)
    train_ids, val_ids = run_split([c.case_id for c in labelled], config.data)
    file_sizes = {c.case_id: c.file_sizes() for c in labelled}
    if cases is not None:
        cases.check(train_ids, val_ids, Path(data_dir), file_sizes)
    cache_dir = Path(cache_root) / config_hash(config.preprocess)
    if ctx.is_main:
        preprocess_dataset(  # with a mapping, `scan_case` checks the mapped values
            dataclasses.replace(dataset, cases=labelled),
            config.preprocess,
            cache_dir,
            progress,
            mapped=bool(config.data.label_mapping),
        )
    barrier(ctx)

    def scan(ids: list[str], what: str) -> tuple[CaseRecord, ...]:
        bar = tqdm(ids, desc=f"checking {what} cases", disable=not (progress and ctx.is_main), leave=False)
        return tuple(scan_case(i, cache_dir / i, label_map, lut) for i in bar)

    train, val = scan(train_ids, "training"), scan(val_ids, "validation")
    data = PreparedData(lut, train, val, cache_dir, file_sizes, config.train.val_max_cases)
    _check_foreground(config, data, Path(data_dir))
    return data


def _check_foreground(config: RunConfig, data: PreparedData, data_dir: Path) -> None:
    """Refuse data whose training cases hold nothing to learn (no foreground; no tumor for a 2D
    run on tumor slices), or whose validated cases hold no foreground: no Dice could choose
    `best.pt`. Cases whose label map is all background are named in a warning (a label map
    exported empty by mistake is otherwise trained on as "no kidney here").

    Raises:
        KidneysegError: naming the dataset folder (and the validation cases).
    """
    classes = [c.name for c in config.label_map.foreground]
    anything = ", ".join(classes[:-1]) + f" or {classes[-1]}" if len(classes) > 1 else classes[0]
    tumor = config.data.sampling == "slice2d" and config.data.slice_filter == "tumor"
    train = data.train
    if not any(r.tumor_slices if tumor else r.foreground_slices for r in train):
        raise KidneysegError(
            f"none of the {len(train)} training case(s) holds {'tumor' if tumor else anything}: "
            "nothing to train on",
            data_dir,
        )
    empty = [r.case_id for r in (*train, *data.val) if not r.foreground_slices]
    if empty:
        log.warning(
            "%s: %d case(s) with an all-background label map: %s", data_dir, len(empty), some_names(empty)
        )
    if not any(r.foreground_slices for r in data.validated):
        raise KidneysegError(
            f"the validation case(s) {some_names([r.case_id for r in data.validated])} hold no {anything}: "
            "no validation Dice could choose best.pt; label them, or split otherwise "
            "(data.split_seed, data.val_fraction)",
            data_dir,
        )


def _refuse_one_ct_twice(cases: tuple[Case, ...], data_dir: str | os.PathLike[str]) -> None:
    """Refuse a dataset holding one CT file under two case ids (a link to another case's folder
    or file): split into training and validation, the model would be scored on what it trained on.

    Raises:
        KidneysegError: naming both case ids.
    """
    seen: dict[Path, str] = {}
    for case in cases:
        real = case.image.resolve()
        if real in seen:
            raise KidneysegError(
                f"cases {seen[real]} and {case.case_id} are one CT ({real}): a case in both training "
                "and validation would score the model on what it trained on; remove the link",
                data_dir,
            )
        seen[real] = case.case_id
