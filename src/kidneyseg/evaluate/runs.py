"""Evaluate trained run folders on their own held-out and training cases, or on a test set.

A run folder written by `kidneyseg train` records its split (`run.json`: `val_cases`,
`train_cases`, `data_dir`) next to its checkpoints. Here each case of the split is predicted
with the public prediction API (`Predictor`, `predict_cases`: the same preprocessing, sliding
window and inversion to the CT grid as `kidneyseg predict`, and its run record, so a prediction
is reused only when it was made from the same checkpoint, settings and CT) and scored with `evaluate_pairs`
against the dataset's reference — the numbers the papers' tables report for the validation and
the training set. Cases are scored in the run's label map, the references mapped as the run
mapped its training labels (`data.label_mapping`): a KiTS19-label run is scored against
KiTS21/23 references with their cysts counted as kidney. `evaluate_test_set` does the same for
every case of another labelled dataset, one the run never saw (the demo's test phantoms).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kidneyseg.errors import KidneysegError, some_names
from kidneyseg.evaluate.folder import CSV_NAME, Scoring, check_jobs, evaluate_pairs, write_csv

if TYPE_CHECKING:
    from kidneyseg.data.cases import Case, Dataset
    from kidneyseg.predict import Predictor

SPLIT_KEYS = {"validation": "val_cases", "training": "train_cases"}


def read_run_split(run_dir: str | os.PathLike[str]) -> dict:
    """The run record (`run.json`) of a training run, checked to hold its split.

    Raises:
        KidneysegError: the folder is not a finished or interrupted kidneyseg training run.
    """
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise KidneysegError("not a kidneyseg training run (no run.json)", run_dir)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KidneysegError(f"cannot read the run record ({exc})", path) from None
    missing = [k for k in (*SPLIT_KEYS.values(), "data_dir") if k not in record]
    if missing:
        raise KidneysegError(f"the run record lacks {missing}", path)
    return record


def evaluate_run(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    data_sets: tuple[str, ...] = ("validation", "training"),
    jobs: int = 1,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, tuple[dict, ...]]:
    """Predict and evaluate a run's validation and/or training cases.

    Predictions go to `out_dir/<data set>/<case_id>.nii.gz` with predict's run record (a case is
    reused when its checkpoint, settings and CT are unchanged, so an interrupted comparison
    resumes; otherwise predicted again) and the per-case scores to `out_dir/<data set>/per_case.csv`
    (usable later with `kidneyseg compare --eval`).

    Args:
        run_dir: a `kidneyseg train` run folder (its best checkpoint is used).
        out_dir: where this run's predictions and scores go.
        data_dir: the dataset the run was trained on (default: the one in its run record).
        data_sets: which of "validation" and "training" to evaluate.
        jobs: evaluation worker processes.
        device: torch device for prediction.
        progress: show progress bars.

    Returns:
        `{data set: per-case rows}`.

    Raises:
        KidneysegError: not a run folder, dataset missing or lacking the run's cases or holding
            other files under their ids (sizes differ from those the run recorded), or a case could
            not be predicted.
    """
    from kidneyseg.io.formats import canonical_path

    check_jobs(jobs)  # before any case is predicted
    record = read_run_split(run_dir)
    predictor, scoring = _run_predictor(run_dir, device)
    dataset = _discover_as_run(predictor, data_dir or record["data_dir"])
    out_dir = canonical_path(out_dir)  # another spelling of the folder reuses its predictions
    chosen = {data_set: _checked_cases(record, dataset, data_set, run_dir) for data_set in data_sets}
    results = {}
    for data_set, cases in chosen.items():  # every set checked before any case is predicted
        if cases:
            command = {"run": str(run_dir), "data": str(dataset.root), "data_set": data_set}
            folder = out_dir / data_set
            results[data_set] = _score_cases(
                predictor, cases, folder, command, scoring, jobs, progress, data_set
            )
    return results


def evaluate_test_set(
    run_dir: str | os.PathLike[str],
    test_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    jobs: int = 1,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[dict, ...]:
    """Predict and evaluate every case of `test_dir`, a labelled dataset the run neither trained
    nor validated on, into `out_dir/test/` as `evaluate_run` does a run's own sets.

    Raises:
        KidneysegError: not a run folder, `test_dir` the run's own dataset or linking to one of
            its CT files, a case without a reference segmentation, or a case that could not be
            predicted.
    """
    from kidneyseg.io.formats import canonical_path

    check_jobs(jobs)
    record = read_run_split(run_dir)
    if canonical_path(test_dir) == canonical_path(record["data_dir"]):
        raise KidneysegError("is the dataset the run trained on, not a test set", test_dir)
    predictor, scoring = _run_predictor(run_dir, device)
    dataset = _discover_as_run(predictor, test_dir)
    _refuse_the_runs_own_cases(predictor, dataset, Path(record["data_dir"]))
    command = {"run": str(run_dir), "data": str(dataset.root), "data_set": "test"}
    folder = canonical_path(out_dir) / "test"
    return _score_cases(predictor, dataset.cases, folder, command, scoring, jobs, progress, "test")


def _refuse_the_runs_own_cases(predictor: Predictor, test: Dataset, run_data: Path) -> None:
    """Refuse a test set holding a CT of the run's own dataset under another name: a linked file
    or case folder, or a copy (same size and content; only files of a size the run's CTs have are
    read); a run whose dataset is no longer on disk cannot be checked this way."""
    if not run_data.is_dir():
        return
    own = {os.path.realpath(case.image) for case in _discover_as_run(predictor, run_data).cases}
    by_size: dict[int, list[str]] = {}
    for path in own:
        by_size.setdefault(os.path.getsize(path), []).append(path)
    digests: dict[str, str] = {}

    def digest(path: str) -> str:
        if path not in digests:
            digests[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return digests[path]

    def is_own(image: str) -> bool:
        real = os.path.realpath(image)
        same_size = by_size.get(os.path.getsize(real), [])
        return real in own or any(digest(real) == digest(path) for path in same_size)

    shared = [case.case_id for case in test.cases if is_own(case.image)]
    if shared:
        raise KidneysegError(
            f"holds {len(shared)} CT file(s) of the dataset the run trained on ({some_names(shared, 3)}), "
            "not a test set",
            test.root,
        )


def _run_predictor(run_dir: str | os.PathLike[str], device: str) -> tuple[Predictor, Scoring]:
    """The run's best weights over the whole body (not `--roi kidneys`: scoring a run measures its
    own network, not the locator's), and the scoring in its label map."""
    from kidneyseg.predict import Predictor, PredictSettings

    predictor = Predictor([run_dir], PredictSettings(roi="body"), device=device)
    return predictor, Scoring.of_run(predictor.label_map, predictor.config.data.label_mapping)


def _discover_as_run(predictor: Predictor, folder: str | os.PathLike[str]) -> Dataset:
    """The labelled dataset in `folder`, read as the run read its own."""
    from kidneyseg.data.cases import discover

    data = predictor.config.data
    return discover(folder, data.layout, data.annotation, require_labels=True)


def _score_cases(
    predictor: Predictor,
    cases: Sequence[Case],
    folder: Path,
    command: dict,
    scoring: Scoring,
    jobs: int,
    progress: bool,
    what: str,
) -> tuple[dict, ...]:
    """Predict labelled `cases` into `folder/<case_id>.nii.gz` (with predict's run record,
    `command` in it) and score them into `folder/per_case.csv`; the per-case rows.

    Raises:
        KidneysegError: a `what` case could not be predicted (no scores are written).
    """
    from kidneyseg.predict import CaseInput, OutputOptions
    from kidneyseg.predict.runner import Destination, predict_cases

    inputs = [CaseInput(c.case_id, c.image) for c in cases]
    made = predict_cases(predictor, inputs, Destination(folder), OutputOptions(), command, progress=progress)
    if made.failures:
        failed = made.failures[0]
        raise KidneysegError(
            f"{len(made.failures)} {what} case(s) could not be predicted; "
            f"{failed['case_id']}: {failed['reason']}",
            folder,
        )
    pairs = [(c.case_id, folder / f"{c.case_id}.nii.gz", c.label) for c in cases]
    rows = evaluate_pairs(pairs, jobs=jobs, progress=progress, scoring=scoring)
    write_csv(folder / CSV_NAME, rows)
    return rows


def _checked_cases(record: dict, dataset, data_set: str, run_dir: str | os.PathLike[str]) -> tuple:
    """The run's `data_set` cases in `dataset`, refused when one has no reference segmentation or
    other files than the run recorded (`case_file_sizes`, as `train --resume` checks them):
    another dataset under the same case ids is not the run's own training or validation set."""
    from kidneyseg.data.cases import differing_files

    cases = dataset.subset(record[SPLIT_KEYS[data_set]])
    unlabelled = [c.case_id for c in cases if c.label is None]
    if unlabelled:
        raise KidneysegError(
            f"{data_set} cases without a reference segmentation: {some_names(unlabelled)}", dataset.root
        )
    changed = differing_files(record.get("case_file_sizes"), {c.case_id: c.file_sizes() for c in cases})
    if changed:
        raise KidneysegError(
            f"{dataset.root} holds other files under the run's {data_set} case ids than it was trained "
            f"and validated on (sizes differ: {some_names(changed)}); "
            "to score a run on other data: kidneyseg predict, kidneyseg evaluate, then compare --eval",
            run_dir,
        )
    return cases
