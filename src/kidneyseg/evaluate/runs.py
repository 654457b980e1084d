"""Evaluate trained run folders on their own held-out and training cases.

A run folder written by `kidneyseg train` records its split (`run.json`: `val_cases`,
`train_cases`, `data_dir`) next to its checkpoints. Here each case of the split is predicted
with the public prediction API (`Predictor`, `predict_cases`: the same preprocessing, sliding
window and inversion to the CT grid as `kidneyseg predict`, and its run record, so a prediction
is reused only when it was made from the same checkpoint, settings and CT) and scored with `evaluate_pairs`
against the dataset's reference — the numbers the papers' tables report for the validation and
the training set. Cases are scored in the run's label map, the references mapped as the run
mapped its training labels (`data.label_mapping`): a KiTS19-label run is scored against
KiTS21/23 references with their cysts counted as kidney.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kidneyseg.errors import KidneysegError, some_names
from kidneyseg.evaluate.folder import CSV_NAME, Scoring, check_jobs, evaluate_pairs, write_csv

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
    from kidneyseg.data.cases import discover
    from kidneyseg.io.formats import canonical_path
    from kidneyseg.predict import CaseInput, OutputOptions, Predictor, PredictSettings
    from kidneyseg.predict.runner import Destination, predict_cases

    check_jobs(jobs)  # before any case is predicted
    record = read_run_split(run_dir)
    # The whole body, not --roi kidneys: scoring a run measures its own network, not the locator's.
    predictor = Predictor([run_dir], PredictSettings(roi="body"), device=device)
    data = predictor.config.data  # the dataset read as the run read it
    dataset = discover(data_dir or record["data_dir"], data.layout, data.annotation, require_labels=True)
    scoring = Scoring.of_run(predictor.label_map, predictor.config.data.label_mapping)
    out_dir = canonical_path(out_dir)  # another spelling of the folder reuses its predictions
    chosen = {data_set: _checked_cases(record, dataset, data_set, run_dir) for data_set in data_sets}
    results = {}
    for data_set, cases in chosen.items():  # every set checked before any case is predicted
        if not cases:
            continue
        folder = out_dir / data_set
        inputs = [CaseInput(c.case_id, c.image) for c in cases]
        command = {"run": str(run_dir), "data": str(dataset.root), "data_set": data_set}
        made = predict_cases(
            predictor, inputs, Destination(folder), OutputOptions(), command, progress=progress
        )
        if made.failures:
            failed = made.failures[0]
            raise KidneysegError(
                f"{len(made.failures)} {data_set} case(s) could not be predicted; "
                f"{failed['case_id']}: {failed['reason']}",
                folder,
            )
        pairs = [(c.case_id, folder / f"{c.case_id}.nii.gz", c.label) for c in cases]
        rows = evaluate_pairs(pairs, jobs=jobs, progress=progress, scoring=scoring)
        write_csv(folder / CSV_NAME, rows)
        results[data_set] = rows
    return results


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
