"""The run record of `kidneyseg predict` (`predict_run.json`), and when a re-run may skip a case.

A case is skipped only when a run record in the output folder (any of them: shards and earlier
runs too) says it was predicted from the same input file(s) (path, size, modification time), with
the same models and the same settings that shape its outputs (`case_fingerprint`), and every
output file is still the one that run wrote (path, size, modification time). Anything else is
predicted again, so an output never silently belongs to another CT, model or setting. The
record is rewritten after every case (`RecordWriter`: less often when thousands of cases make
each rewrite long), so an interrupted run is continued where it stopped, and it keeps the
earlier runs' cases whose label map this run did not write (status `earlier`).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kidneyseg.io.stamps import as_stamped, file_stamp, recorded, stamp_hash

if TYPE_CHECKING:
    from kidneyseg.labels import LabelMap
    from kidneyseg.predict.outputs import OutputOptions
    from kidneyseg.predict.predictor import Predictor

RECORD_NAME = "predict_run.json"
FINISHED = ("done", "skipped", "earlier")
"""Statuses of a case whose outputs a re-run may use."""


@dataclass
class RunRecord:
    """The JSON run record (`predict_run.json`)."""

    started: str
    command: dict[str, Any]
    environment: dict[str, Any]
    models: list[dict[str, Any]]
    settings: dict[str, Any]
    cases: list[dict[str, Any]] = field(default_factory=list)
    startup_seconds: float = 0.0
    seconds: float = 0.0
    color_tables: list[dict[str, Any]] = field(default_factory=list)
    removed_stale: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [c for c in self.cases if c["status"] == "failed"]


def new_record(
    command: dict[str, Any], predictor: Predictor, options: OutputOptions, startup: float
) -> RunRecord:
    """This run's record, its cases still to come."""
    settings = predictor.settings
    return RunRecord(
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        command=command,
        environment=_environment(predictor),
        models=_models(predictor),
        settings={**asdict(settings), "resolved_inference": asdict(predictor.inference), **asdict(options)},
        startup_seconds=round(startup, 3),
    )


def _environment(predictor: Predictor) -> dict[str, Any]:
    import torch

    from kidneyseg.checkpoint import library_versions

    return {
        "versions": library_versions(),
        "platform": platform.platform(),
        "device": predictor.device,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        **predictor.backend.describe(),
        "backend_compile_seconds": round(predictor.compile_seconds, 3),
        "compile_cache": predictor.compile_cache(),
        "backend_fallback": predictor.backend_fallback,
        "precision": predictor.settings.precision,
        "calibration": predictor.calibration,
    }


def made_with(predictor: Predictor) -> dict[str, Any]:
    """What a case's entry keeps of the run that predicted it, so that a later run that skips the
    case (its record then describes that later run's environment) still says what made it: when,
    and the device, backend, precision, batch size and threads, which the skip does not compare
    (`case_fingerprint`)."""
    import torch

    from kidneyseg import __version__

    return {
        "predicted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kidneyseg": __version__,
        "device": predictor.device,
        "backend": predictor.backend.name,
        "precision": predictor.settings.precision,
        "sw_batch_size": predictor.inference.sw_batch_size,
        "torch_threads": torch.get_num_threads(),
    }


def _models(predictor: Predictor) -> list[dict[str, Any]]:
    from kidneyseg.predict.pretrained import bundled_name

    return [
        {
            "path": str(c.path),
            "pretrained": bundled_name(c.path),
            "model": c.config.model.name,
            "model_kwargs": dict(c.config.model.kwargs),
            "label_map": c.label_map.name,
            "written_by": c.versions,
        }
        for c in predictor.checkpoints
    ]


def write_record(path: Path, record: RunRecord, kept: list[dict[str, Any]]) -> None:
    """Write `record` with the earlier cases (`kept_cases`) whose label map this run has not
    written (nor re-used) so far, atomically."""
    from kidneyseg.io.atomic import write_text_atomic

    taken = {_label_map(c) for c in record.cases if c["status"] != "failed"}
    cases = record.cases + [c for c in kept if _label_map(c) not in taken]
    write_text_atomic(path, json.dumps({**asdict(record), "cases": cases}, indent=2) + "\n")


WRITE_SHARE = 0.05
"""The most of a run's time that rewriting its record may take: a record of thousands of cases
takes a quarter of a second to write, far more than a case a re-run skips."""


class RecordWriter:
    """Rewrites the run record after a case, unless the rewrites so far took more than
    `WRITE_SHARE` of the run's time; `flush` writes what is still pending (at the end, and when
    the run is interrupted). A run killed outright may have its last few cases unrecorded: its
    re-run predicts them again."""

    def __init__(self, path: Path, record: RunRecord, kept: list[dict[str, Any]]) -> None:
        self.path, self.record, self.kept = path, record, kept
        self.started, self.spent, self.pending = time.perf_counter(), 0.0, False

    def after_case(self) -> None:
        if not any(c["status"] != "failed" for c in self.record.cases):  # nothing to go on from
            return
        self.pending = True
        if self.spent <= WRITE_SHARE * (time.perf_counter() - self.started):
            self.flush()

    def flush(self) -> None:
        if self.pending:
            t = time.perf_counter()
            write_record(self.path, self.record, self.kept)
            self.spent += time.perf_counter() - t
            self.pending = False


def record_name(shard: tuple[int, int] | None) -> str:
    """The run record's file name: one per shard, so that concurrent jobs never share a file."""
    return RECORD_NAME if shard is None else f"predict_run.{shard[0]}-of-{shard[1]}.json"


def input_stamp(path: Path, dicom_files: Iterable[str], series_uid: str | None) -> str:
    """A hash of the case's input: its file, or its DICOM series' files and UID."""
    files = [Path(f) for f in dicom_files] or [path]
    return stamp_hash({"files": [file_stamp(f) for f in files], "series_uid": series_uid})


def _numbers_as_floats(value: Any) -> Any:
    """`value` with every number a float (0 and 0.0 are one setting), for hashing."""
    if isinstance(value, dict):
        return {k: _numbers_as_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_numbers_as_floats(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def case_fingerprint(predictor: Predictor, options: OutputOptions) -> str:
    """A hash of what a case's outputs depend on: the model files (the locator's too), the
    resolved inference settings, precision, post-processing, the ROI mode and margin, the output
    options and the report's schema version (its measurements feed every case's statistics row).
    Left out: the batch size, chunking and backend (they change at most the
    last bits of a score), `overwrite` and `hu_check` (they decide whether to predict, not what),
    and the islands' volume to absorb where nothing is absorbed (0, or no post-processing; so the
    fingerprints of runs made before the setting existed hold)."""
    from kidneyseg.report.measure import SCHEMA_VERSION

    settings = predictor.settings
    models = predictor.model_paths + (predictor.locator.model_paths if predictor.locator else [])
    absorbs = settings.postprocess and predictor.inference.absorb_islands_ml > 0
    left_out = ("sw_batch_size",) if absorbs else ("sw_batch_size", "absorb_islands_ml")
    inference = {k: v for k, v in asdict(predictor.inference).items() if k not in left_out}
    chosen = {
        "precision": settings.precision,
        "postprocess": settings.postprocess,
        "anatomy_check": settings.anatomy_check,
        "probabilities": settings.probabilities,
        "roi": predictor.roi,
        "roi_margin_mm": settings.roi_margin_mm,
    }
    kept = {k: v for k, v in asdict(options).items() if k not in ("overwrite", "hu_check")}
    payload = {"inference": inference, "settings": chosen, "options": kept, "report_schema": SCHEMA_VERSION}
    return stamp_hash({"models": [file_stamp(Path(p)) for p in models], **_numbers_as_floats(payload)})


def output_stamps(outputs: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """The stamps of a case's output files (folders, e.g. a DICOM copy, are not stamped)."""
    return {name: file_stamp(path) for name, path in outputs.items() if path.is_file()}


def _read_cases(path: Path) -> list[dict[str, Any]]:
    cases = recorded(path, "cases")
    return [c for c in cases if isinstance(c, dict) and "case_id" in c] if isinstance(cases, list) else []


def _finished(entry: dict[str, Any]) -> bool:
    """Whether a re-run may use the entry: finished, and recorded with what `reusable` checks."""
    return entry.get("status") in FINISHED and "fingerprint" in entry


def _records(out_dir: Path) -> list[Path]:
    """Every run record (every shard's) in `out_dir`, in file-name order."""
    return sorted(out_dir.glob("predict_run*.json"))


def recorded_cases(out_dir: Path) -> list[dict[str, Any]]:
    """Every case entry of every run record (every shard) in `out_dir`, in file-name order."""
    return [c for path in _records(out_dir) for c in _read_cases(path)]


def color_table_entry(path: Path, label_map: str) -> dict[str, Any]:
    """The record's entry of the colour table at `path` of the label map called `label_map`."""
    return {"label_map": label_map, "stamp": file_stamp(path)}


def recorded_color_tables(*records: Path) -> list[dict[str, Any]]:
    """The colour tables (`color_table_entry`) the run records at `records` list."""
    found = []
    for path in records:
        tables = recorded(path, "color_tables")
        for entry in tables if isinstance(tables, list) else []:
            if not isinstance(entry, dict) or not isinstance(entry.get("label_map"), str):
                continue
            if isinstance(entry.get("stamp"), dict) and isinstance(entry["stamp"].get("path"), str):
                found.append(entry)
    return found


def earlier_color_tables(out_dir: Path) -> list[dict[str, Any]]:
    """The colour tables of every run record in `out_dir` (read before this run writes)."""
    return recorded_color_tables(*_records(out_dir))


def kept_color_tables(tables: list[dict[str, Any]], current: dict[str, Any]) -> list[dict[str, Any]]:
    """The colour tables a run records: its own (`current`), and those of `tables` (its record
    file's earlier entries) at other paths that are still as written, for a later run to remove
    once no label map is of them (`stale_color_tables`)."""
    kept = {
        e["stamp"]["path"]: e
        for e in tables
        if e["stamp"]["path"] != current["stamp"]["path"] and as_stamped(Path(e["stamp"]["path"]), e["stamp"])
    }
    return [current, *kept.values()]


def stale_color_tables(earlier: list[dict[str, Any]], current: Path, out_dir: Path) -> list[Path]:
    """Colour tables earlier runs wrote (`earlier`: their entries) that this run does not write
    again (it wrote `current`), that are still as written, and whose label map no label file in
    `out_dir` is of any more: e.g. `kits23-sides_ColorTable.ctbl` once a run without
    `--split-sides` has rewritten every sided label map. While one still is (a case that failed,
    another shard's), the table stays."""
    from kidneyseg.predict.label_files import folder_holds_label_map

    stale = []
    for entry in earlier:
        path = Path(entry["stamp"]["path"])
        if path == current.resolve() or path in stale or not as_stamped(path, entry["stamp"]):
            continue
        if not folder_holds_label_map(out_dir, entry["label_map"]):
            stale.append(path)
    return stale


def earlier_cases(out_dir: Path) -> list[dict[str, Any]]:
    """The finished cases of every run record in `out_dir` (read before this run writes)."""
    return [c for c in recorded_cases(out_dir) if _finished(c)]


def kept_cases(record_path: Path) -> list[dict[str, Any]]:
    """The finished cases of the earlier record at `record_path` (status `earlier`): kept in the
    rewritten record unless this run writes their label map again (`write_record`)."""
    return [{**c, "status": "earlier"} for c in _read_cases(record_path) if _finished(c)]


def _label_map(entry: dict[str, Any]) -> str | None:
    return (entry.get("outputs") or {}).get("labels")


def on_disk(entry: dict[str, Any]) -> bool:
    """Whether the entry's output files are still the ones it wrote (False without stamps)."""
    stamps = entry.get("output_stamps") or {}
    paths = {name: Path(path) for name, path in (entry.get("outputs") or {}).items()}
    return bool(stamps) and all(
        name in paths and as_stamped(paths[name], stamp) for name, stamp in stamps.items()
    )


def stale_outputs(earlier: list[dict[str, Any]], outputs: dict[str, Path]) -> list[Path]:
    """Files earlier runs wrote beside the label map in `outputs`, that this case does not write
    again and that are still as those runs wrote them: e.g. the `--per-class` masks of a run
    before one without. Once the label map is rewritten they no longer belong to it."""
    label, current = str(outputs["labels"]), {str(p) for p in outputs.values()}
    stale = []
    for entry in earlier:
        if _label_map(entry) != label:
            continue
        stamps = entry.get("output_stamps") or {}
        for name, path in (entry.get("outputs") or {}).items():
            if path not in current and name in stamps and as_stamped(Path(path), stamps[name]):
                stale.append(Path(path))
    return list(dict.fromkeys(stale))  # shards' and later runs' records may list a file again


def reusable(
    earlier: list[dict[str, Any]], case_id: str, fingerprint: str, stamp: str, outputs: dict[str, Path]
) -> dict[str, Any] | None:
    """The earlier entry of this case made from this very input with these models and settings,
    into these very outputs, whose files are still the ones it wrote; None if there is none."""
    wanted = (case_id, fingerprint, stamp, {name: str(path) for name, path in outputs.items()})
    for entry in earlier:
        made = (entry["case_id"], entry["fingerprint"], entry.get("input_stamp"), entry.get("outputs"))
        if made == wanted and on_disk(entry) and all(path.exists() for path in outputs.values()):
            return entry
    return None


def write_color_tables(
    out_dir: Path,
    label_map: LabelMap,
    record: RunRecord,
    earlier: list[dict[str, Any]],
    warn: Callable[[str], None],
) -> None:
    """Write the run's colour table and list it in `record.color_tables`; remove the tables
    earlier runs wrote (`earlier`) that no label map in the folder is of any more
    (`stale_color_tables`), naming them, and list them in `record.removed_stale`."""
    from kidneyseg.predict.label_files import write_color_table

    current = color_table_entry(write_color_table(out_dir, label_map), label_map.name)
    stale = stale_color_tables(earlier, Path(current["stamp"]["path"]), out_dir)
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        names = ", ".join(p.name for p in stale)
        warn(f"warning: removed what an earlier run wrote for label maps no longer in {out_dir}: {names}")
    record.color_tables = kept_color_tables(record.color_tables, current)
    record.removed_stale = [str(p) for p in stale]
