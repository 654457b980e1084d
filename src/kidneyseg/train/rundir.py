"""A run folder's checks: a new run's `--out`, a resumed run's `config.yaml`, cases, cache and
best checkpoint, and making the folder (removed again, if empty, when a run fails before it
started)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kidneyseg.checkpoint import BEST_NAME, LAST_NAME, load_checkpoint
from kidneyseg.config import RunConfig
from kidneyseg.data.cases import differing_files
from kidneyseg.errors import KidneysegError, some_names
from kidneyseg.io.stamps import recorded
from kidneyseg.plaindata import differences, from_dict, load_yaml

if TYPE_CHECKING:
    from kidneyseg.train.trainer import RunState

RUN_FILES = ("config.yaml", "metrics.csv", "curves.png", "run.json", LAST_NAME, BEST_NAME)


def stopped_before_first_checkpoint(out: Path, files: list[str]) -> bool:
    """Whether `files` are what a run writes before its first checkpoint: its record (0 epochs
    done) and its config, both readable (a foreign `config.yaml` is not taken for a run's)."""
    if not set(files) <= {"run.json", "config.yaml"}:
        return False
    try:
        if "config.yaml" in files:
            from_dict(RunConfig, load_yaml(out / "config.yaml"), str(out / "config.yaml"))
        started = json.loads((out / "run.json").read_text(encoding="utf-8")) if "run.json" in files else {}
    except (KidneysegError, OSError, ValueError):
        return False
    return isinstance(started, dict) and started.get("epochs_done", 0) == 0


def check_new_run_dir(out: Path) -> str | None:
    """Refuse a folder holding a run, or say so when starting again one that stopped before its
    first checkpoint."""
    if out.exists() and not out.is_dir():
        raise KidneysegError("--out is a file, not a folder", out)
    taken = [n for n in RUN_FILES if (out / n).exists()]
    if not taken:
        return None
    if stopped_before_first_checkpoint(out, taken):
        return f"{out}: the run here stopped before its first checkpoint ({LAST_NAME}); starting it again"
    raise KidneysegError(
        f"folder already holds a run ({taken[0]}); use --resume to continue it or another --out", out
    )


RESUME_MAY_CHANGE = ("train.epochs", "train.time_limit_minutes")
"""The config keys a resume may change (`train --resume KEY=VALUE`)."""
CHOSEN_AFTER_TRAINING = ("inference.absorb_islands_ml",)
"""The config keys `best.pt` may hold otherwise than the run: chosen when training ends
(`kidneyseg.train.postprocessing`)."""


def _differences(a: RunConfig, b: RunConfig) -> list[tuple[str, object, object]]:
    """Where two configs of one run may not differ: `differences` but for `RESUME_MAY_CHANGE`."""
    return [d for d in differences(a, b) if d[0] not in RESUME_MAY_CHANGE]


def check_config_file(path: Path, config: RunConfig) -> None:
    """Refuse to resume when the run's config.yaml says otherwise than its last checkpoint: a
    hand-edited config.yaml (the resume would train on and overwrite it) or a last.pt of another
    run. The epochs and time limit, which a resume may change, do not count. A config.yaml that
    is not a valid config is rewritten from the checkpoint."""
    try:
        written = from_dict(RunConfig, load_yaml(path), str(path))
    except (KidneysegError, OSError, ValueError):  # ValueError: not UTF-8 text
        return
    odd = _differences(written, config)
    if odd:
        key, here, there = odd[0]
        raise KidneysegError(
            f"says {key}: {here!r} but the run's {LAST_NAME} was trained with {there!r} "
            f"({len(odd)} key(s) differ); a resumed run keeps its config: put config.yaml back, "
            "or start a new run (train --init-weights to begin from these weights)",
            path,
        )


@dataclass(frozen=True)
class RecordedCases:
    """The training and validation cases a run was trained and validated on: a resume must
    find the same cases split the same way, or its epochs would differ from the run's; and, where
    the run recorded them (`file_sizes`: case id -> sizes in bytes of its CT and label map), the
    same files under those ids."""

    run_dir: Path
    train: tuple[str, ...]
    val: tuple[str, ...]
    file_sizes: dict[str, list[int]] | None = None

    @classmethod
    def of_run(cls, run_dir: Path, extra: dict[str, Any]) -> RecordedCases | None:
        """The cases in the last checkpoint's training state, else in the run's `run.json`;
        None for a run that recorded neither."""
        found = [
            extra.get(key) or recorded(run_dir / "run.json", key) for key in ("train_cases", "val_cases")
        ]
        if not all(isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in found):
            return None
        sizes = extra.get("case_file_sizes") or recorded(run_dir / "run.json", "case_file_sizes")
        return cls(run_dir, tuple(found[0]), tuple(found[1]), sizes if isinstance(sizes, dict) else None)

    def check(
        self, train: Sequence[str], val: Sequence[str], data_dir: Path, file_sizes: dict[str, list[int]]
    ) -> None:
        """Refuse a resume whose data holds other cases, or splits them otherwise, or other files
        under the run's case ids (`file_sizes` differ from the run's), naming them.

        Raises:
            KidneysegError: the cases differ (names the run, the data and the cases new, gone or
                changed).
        """
        if set(train) == set(self.train) and set(val) == set(self.val):
            changed = differing_files(self.file_sizes, file_sizes)
            if changed:
                raise KidneysegError(
                    f"cannot resume: {data_dir} holds other files under the run's case ids than it was "
                    f"trained on (sizes differ: {some_names(changed)}); --data gives the run's dataset "
                    "moved elsewhere: give it, or start a new run",
                    self.run_dir,
                )
            return
        had, has = {*self.train, *self.val}, {*train, *val}
        new, gone = sorted(has - had), sorted(had - has)
        moved = sorted(i for i in has & had if (i in self.val) != (i in val))
        what = [
            f"{label}: {some_names(ids)}"
            for label, ids in (("new", new), ("gone", gone), ("split otherwise", moved))
            if ids
        ]
        raise KidneysegError(
            f"cannot resume: {data_dir} does not hold the cases the run was trained and validated on "
            f"({'; '.join(what)}); give --data the run's dataset, or start a new run",
            self.run_dir,
        )


def cache_of(run_dir: Path, kept: str | None, given: str | os.PathLike[str] | None) -> Path:
    """The cache a resumed run uses: the one given, else the one it recorded while that is still
    there, else the run folder's own `preprocessed/` (a run folder moved with its default cache:
    was, the old location made again and filled anew)."""
    if given is not None:
        return Path(given)
    if kept and Path(kept).is_dir():
        return Path(kept)
    return run_dir / "preprocessed"


def forget_a_lost_best(run_dir: Path, state: RunState, config: RunConfig) -> str | None:
    """When `best.pt` is missing or is not the checkpoint of the run's best epoch (deleted,
    replaced by another run's, damaged), the best is chosen again from the epochs to come rather
    than reported for weights that are not there; returns the notice saying so. `config`: the
    run's, from its last checkpoint."""
    best = run_dir / BEST_NAME
    if state.best_epoch in (0, state.epoch):  # none yet, or rewritten from last.pt on resume
        return None
    try:
        found = load_checkpoint(best)
        odd = [d for d in _differences(found.config, config) if d[0] not in CHOSEN_AFTER_TRAINING]
        if int(found.extra.get("epoch", -1)) == state.best_epoch and not odd:
            return None
    except KidneysegError:
        pass
    state.best_dice, state.best_epoch = -math.inf, 0
    return (
        f"{best}: missing or not the checkpoint of the best epoch; the best is chosen again from the "
        "epochs still to come"
    )
