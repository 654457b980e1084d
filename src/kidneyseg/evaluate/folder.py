"""Evaluate a folder of predictions against a folder of references, case by case, in parallel.

Either folder may be a KiTS19/21/23 layout, whose case folders count with or without their CT
(scoring reads only label maps; the KiTS19 repository holds only the segmentations before the CT
download, a partial download some of the CTs; `kidneyseg.data.cases.walk_kits`), the plain
layout (every label map in its `labels/` folder), or a flat folder of `<case_id>.nii.gz` files (what
`kidneyseg predict` writes), each file's case id given by the one rule of
`kidneyseg.io.formats.case_id_of`; the masks and probabilities `predict` writes beside a case's
label map (`<case>_kidney.nii.gz`, ...; told by their headers:
`predict.outputs.without_side_files`) are left out with a warning. Cases are paired by id; those
on one side only are listed, never dropped. Cases are scored in one label map (`Scoring`): a
run's own (its references mapped with its `data.label_mapping`), or a named one with both sides
folded into it (`evaluate --label-map kits19`: KiTS19 counted cysts as kidney, so a cyst becomes
kidney on either side).
"""

from __future__ import annotations

import logging
import math
import os
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kidneyseg.errors import KidneysegError, some_names
from kidneyseg.evaluate.lesions import BIN_NAMES
from kidneyseg.evaluate.metrics import case_metrics
from kidneyseg.io.formats import files_by_case_id
from kidneyseg.labels import KITS23, LabelMap, check_label_values, folding, label_lut, lesion_classes

CSV_NAME = "per_case.csv"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scoring:
    """The label map cases are scored in, and the value mappings that bring each side into it.

    Attributes:
        label_map: the classes scored (per-label Dice, KiTS regions and lesion kinds follow it).
        ref_mapping: reference value -> class value (e.g. a run's `data.label_mapping`).
        pred_mapping: prediction value -> class value.
    """

    label_map: LabelMap = KITS23
    ref_mapping: dict[int, int] = field(default_factory=dict)
    pred_mapping: dict[int, int] = field(default_factory=dict)

    @classmethod
    def folded(cls, label_map: LabelMap) -> Scoring:
        """Score in `label_map`, both sides read in KiTS21/23 values and folded into it."""
        return cls(label_map, folding(label_map), folding(label_map))

    @classmethod
    def of_run(cls, label_map: LabelMap, label_mapping: dict[int, int]) -> Scoring:
        """Score a run's predictions (in its `label_map`) against references mapped as the run
        mapped its training labels (`data.label_mapping`)."""
        return cls(label_map, dict(label_mapping))


def _dataset_label_files(root: Path, annotation: str) -> dict[str, Path]:
    """Case id → label map of every case of a dataset layout under `root`, with its CT or not
    (scoring reads none): each KiTS case folder's reference, or every file in the plain layout's
    labels folder."""
    from kidneyseg.data.cases import plain_pairs_dirs, walk_kits

    try:
        cases = walk_kits(root, annotation=annotation)
    except KidneysegError:
        plain = plain_pairs_dirs(root)
        return files_by_case_id(plain[1]) if plain is not None and plain[1].is_dir() else {}
    return {c.case_id: c.label for c in cases if c.label is not None}


def label_files(root: str | os.PathLike[str], annotation: str = "AND") -> dict[str, Path]:
    """Map case id → label-map file for every case under `root` (see the module docstring).

    Raises:
        KidneysegError: the folder does not exist or holds no label maps.
    """
    from kidneyseg.data.cases import refuse_two_layouts
    from kidneyseg.predict.outputs import side_files_note, without_side_files

    root = Path(root)
    if not root.is_dir():
        raise KidneysegError("is a file, not a folder" if root.exists() else "folder does not exist", root)
    found = _dataset_label_files(root, annotation)
    for folder in dict.fromkeys([root, *(p.parent.parent for p in found.values())]):
        refuse_two_layouts(  # e.g. predictions written into the dataset: which to score is a guess
            folder,
            found.keys() & files_by_case_id(folder).keys(),
            "both in a dataset layout (case folders or labels/) and as <case_id>.nii.gz files",
            "score",
            "move one of them to a folder of its own",
        )
    if not found:  # `predict --per-class` masks and probabilities beside a case's label map are not cases
        found, left_out = without_side_files(files_by_case_id(root))
        if left_out:
            log.warning("%s", side_files_note(root, left_out))
    if not found:
        raise KidneysegError(
            "no label maps found: expected <case_id>.nii.gz files or a KiTS/plain dataset layout", root
        )
    return found


@dataclass(frozen=True)
class Pairing:
    """Cases paired by id, and the ids found on one side only."""

    pairs: tuple[tuple[str, Path, Path], ...]
    missing_predictions: tuple[str, ...]
    missing_references: tuple[str, ...]


def pair_folders(
    pred_dir: str | os.PathLike[str], ref_dir: str | os.PathLike[str], annotation: str = "AND"
) -> Pairing:
    """Pair predictions with references by case id."""
    preds = label_files(pred_dir, annotation)
    refs = label_files(ref_dir, annotation)
    common = sorted(preds.keys() & refs.keys())
    if not common:
        raise KidneysegError(
            f"no case ids in common with the references in {ref_dir} "
            f"(predictions: {sorted(preds)[:3]}..., references: {sorted(refs)[:3]}...)",
            pred_dir,
        )
    if same := [c for c in common if os.path.samefile(preds[c], refs[c])]:  # e.g. KITS vs KITS/data
        problem = f"the predictions are the reference files themselves ({some_names(same)}, in {ref_dir})"
        raise KidneysegError(f"{problem}: every score would be perfect", pred_dir)
    return Pairing(
        tuple((c, preds[c], refs[c]) for c in common),
        tuple(sorted(refs.keys() - preds.keys())),
        tuple(sorted(preds.keys() - refs.keys())),
    )


def _read_labels(path: Path, label_map: LabelMap, mapping: dict[int, int]):
    """The volume at `path` and its labels as classes of `label_map` (after `mapping`).

    Raises:
        KidneysegError: fractional values, or a value that is not a class after the mapping.
    """
    from kidneyseg.predict.label_files import read_label_file

    volume = read_label_file(path)
    check_label_values(volume.array, None if mapping else label_map, path)
    labels = np.asarray(volume.array, dtype=np.uint8)
    if mapping:
        labels = label_lut(label_map, mapping).astype(np.uint8)[labels]
        check_label_values(labels, label_map, path)
    return volume, labels


def evaluate_case(case_id: str, pred_path: Path, ref_path: Path, scoring: Scoring = Scoring()) -> dict:
    """Read one prediction/reference pair and compute `case_metrics` with the reference's spacing,
    both sides brought into `scoring.label_map`.

    Raises:
        KidneysegError: a file is unreadable, holds unknown labels, or the grids differ.
    """
    ref_volume, ref = _read_labels(Path(ref_path), scoring.label_map, scoring.ref_mapping)
    pred_volume, pred = _read_labels(Path(pred_path), scoring.label_map, scoring.pred_mapping)
    difference = pred_volume.grid_difference(ref_volume)
    if difference:
        raise KidneysegError(
            f"grid differs from the reference {ref_path}: {difference} "
            "(predictions must be on the reference CT's grid)",
            pred_path,
        )
    return {"case_id": case_id, **case_metrics(pred, ref, ref_volume.spacing, scoring.label_map)}


@dataclass(frozen=True)
class EvaluationResult:
    """Per-case rows (sorted by case id) and the cases found on one side only."""

    rows: tuple[dict, ...]
    missing_predictions: tuple[str, ...] = ()
    missing_references: tuple[str, ...] = ()
    sources: dict = field(default_factory=dict)
    label_map: LabelMap = KITS23

    @property
    def complete(self) -> bool:
        return not (self.missing_predictions or self.missing_references)

    def summary(self) -> dict:
        """Means (over the cases where a metric is defined), lesion detection totals and
        the missing cases, as a JSON-ready dict."""
        columns = [k for k in self.rows[0] if k != "case_id" and "_lesions_" not in k]
        metrics = {}
        for column in columns:
            values = np.array([r[column] for r in self.rows], dtype=np.float64)
            values = values[~np.isnan(values)]
            metrics[column] = {
                "mean": float(values.mean()) if values.size else None,
                "std": float(values.std(ddof=1)) if values.size > 1 else None,
                "median": float(np.median(values)) if values.size else None,
                "n": int(values.size),
            }
        n_cases = len(self.rows)
        lesions = {}
        for name in lesion_classes(self.label_map):

            def total(suffix: str, name: str = name) -> int:
                return sum(r[f"{name}_lesions_{suffix}"] for r in self.rows)

            entry = _detection({k: total(k) for k in ("ref", "detected", "fp")}, n_cases)
            entry["bins"] = {
                b: _detection({k: total(f"{k}_{b}") for k in ("ref", "detected", "fp")}, n_cases)
                for b in BIN_NAMES
            }
            entry["missed_as"] = {c: total(f"missed_as_{c}") for c in self.label_map.names}
            lesions[name] = entry
        return {
            "n_cases": n_cases,
            "label_map": self.label_map.name,
            **self.sources,
            "missing_predictions": list(self.missing_predictions),
            "missing_references": list(self.missing_references),
            "metrics": metrics,
            "lesions": lesions,
        }


def _detection(total: dict[str, int], n_cases: int) -> dict:
    return {
        **total,
        "sensitivity": total["detected"] / total["ref"] if total["ref"] else None,
        "fp_per_case": total["fp"] / n_cases if n_cases else None,
    }


def check_jobs(jobs: int) -> None:
    """Refuse a number of evaluation worker processes below 1 (`--jobs`)."""
    if jobs < 1:
        raise KidneysegError(f"--jobs must be at least 1, got {jobs}")


def evaluate_pairs(
    pairs: tuple[tuple[str, Path, Path], ...] | list[tuple[str, Path, Path]],
    jobs: int = 1,
    progress: bool = True,
    scoring: Scoring = Scoring(),
) -> tuple[dict, ...]:
    """Evaluate (case id, prediction file, reference file) triples; rows sorted by case id.

    Args:
        pairs: the cases to evaluate.
        jobs: worker processes (1 = evaluate in this process).
        progress: show a tqdm progress bar.
        scoring: the label map the cases are scored in and how each side is mapped into it.

    Raises:
        KidneysegError: any case fails to evaluate (nothing is returned).
    """
    from tqdm import tqdm

    check_jobs(jobs)
    rows = []
    with tqdm(total=len(pairs), desc="evaluate", unit="case", disable=not progress) as bar:
        if jobs == 1:
            for pair in pairs:
                rows.append(evaluate_case(*pair, scoring))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=min(jobs, len(pairs))) as pool:
                pending = {pool.submit(evaluate_case, *p, scoring) for p in pairs}
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for future in done:
                        if future.exception() is not None:
                            for other in pending:
                                other.cancel()
                            raise future.exception()
                        rows.append(future.result())
                        bar.update()
    return tuple(sorted(rows, key=lambda r: r["case_id"]))


def evaluate_folders(
    pred_dir: str | os.PathLike[str],
    ref_dir: str | os.PathLike[str],
    jobs: int = 1,
    annotation: str = "AND",
    progress: bool = True,
    label_map: LabelMap = KITS23,
    pairing: Pairing | None = None,
) -> EvaluationResult:
    """Evaluate every prediction in `pred_dir` that has a reference in `ref_dir`: their
    `pair_folders`, or `pairing` where the caller made it of these folders already.

    Args:
        pred_dir: predictions (a flat folder of `<case_id>.nii.gz`, or a dataset layout).
        ref_dir: references (a KiTS or plain dataset layout, or a flat folder).
        jobs: worker processes (1 = evaluate in this process).
        annotation: which KiTS21 aggregated segmentation is the reference.
        progress: show a tqdm progress bar.
        label_map: the classes scored; both sides are folded into it (`Scoring.folded`), so
            KITS19 scores KiTS19-layout references (cysts counted as kidney).

    Raises:
        KidneysegError: the folders hold no common case, or any case fails to evaluate.
    """
    pairing = pairing or pair_folders(pred_dir, ref_dir, annotation)
    rows = evaluate_pairs(pairing.pairs, jobs=jobs, progress=progress, scoring=Scoring.folded(label_map))
    return EvaluationResult(
        rows,
        pairing.missing_predictions,
        pairing.missing_references,
        {"pred": str(pred_dir), "ref": str(ref_dir)},
        label_map,
    )


def write_csv(path: str | os.PathLike[str], rows: tuple[dict, ...] | list[dict]) -> Path:
    """Write per-case rows as CSV (atomically); undefined values (NaN) are left empty."""
    import csv
    import io

    from kidneyseg.io.atomic import write_text_atomic

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()})
    return write_text_atomic(path, buffer.getvalue())


def _csv_row(raw: dict[str, str], where: str, path: Path) -> dict:
    """One per-case row: `case_id` a string, the rest floats (empty = NaN), scores in [0, 1]."""
    if not (raw.get("case_id") or "").strip():
        raise KidneysegError(f"{where}: the case_id is empty", path)
    try:
        row = {k: v if k == "case_id" else (float(v) if v != "" else math.nan) for k, v in raw.items()}
    except (TypeError, ValueError):
        raise KidneysegError(f"{where}: a metric value is not a number", path) from None
    scores = ("dice" in k or "_sd_" in k or k.endswith("_composite") for k in row)
    for key, is_score in zip(row, scores, strict=True):
        value = row[key]
        if is_score and not (math.isnan(value) or 0.0 <= value <= 1.0):
            raise KidneysegError(f"{where}: {key} = {value:g} is not in [0, 1]", path)
    return row


def read_csv(path: str | os.PathLike[str]) -> list[dict]:
    """Read a per-case CSV written by `write_csv`: `case_id` stays a string, the rest are floats
    (empty = NaN).

    Raises:
        KidneysegError: the file is missing or is not a per-case evaluation CSV, a case id is
            empty or appears twice, or a Dice score lies outside [0, 1].
    """
    import csv

    path = Path(path)
    if not path.is_file():
        raise KidneysegError("no such per-case evaluation CSV", path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "case_id" not in reader.fieldnames:
            raise KidneysegError("not a per-case evaluation CSV (no case_id column)", path)
        rows: list[dict] = []
        seen: set[str] = set()
        for line, raw in enumerate(reader, start=2):
            row = _csv_row(raw, f"line {line}", path)
            if row["case_id"] in seen:
                raise KidneysegError(f"line {line}: case {row['case_id']} appears twice", path)
            seen.add(row["case_id"])
            rows.append(row)
    if not rows:
        raise KidneysegError("the evaluation CSV has no cases", path)
    return rows


def write_outputs(result: EvaluationResult, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write `per_case.csv`, `summary.json` and `summary.md` into `out_dir` (each atomically)."""
    import json

    from kidneyseg.evaluate.tables import evaluation_markdown
    from kidneyseg.io.atomic import write_text_atomic

    out_dir = Path(out_dir)
    summary = result.summary()
    return {
        "csv": write_csv(out_dir / CSV_NAME, result.rows),
        "json": write_text_atomic(out_dir / SUMMARY_JSON, json.dumps(summary, indent=2) + "\n"),
        "markdown": write_text_atomic(out_dir / SUMMARY_MD, evaluation_markdown(summary)),
    }
