"""The run record of `kidneyseg predict` (`predict_run.json`), and when a re-run may skip a case:
only when an earlier run into the same folder predicted it from the same input file(s) (path,
size, modification time), with the same models and settings, and its output files are all there.
Anything else is predicted again, so an output never silently belongs to another CT, model or
setting."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kidneyseg.io.stamps import file_stamp, stamp_hash

RECORD_NAME = "predict_run.json"


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
    fingerprint: str = ""
    """A hash of the models and settings: a re-run with another one predicts every case again."""

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [c for c in self.cases if c["status"] == "failed"]


def record_name(shard: tuple[int, int] | None) -> str:
    """The run record's file name: one per shard, so that concurrent jobs never share a file."""
    return RECORD_NAME if shard is None else f"predict_run.{shard[0]}-of-{shard[1]}.json"


def input_stamp(path: Path, dicom_files: Iterable[str], series_uid: str | None) -> str:
    """A hash of the case's input: its file, or its DICOM series' files and UID."""
    files = [Path(f) for f in dicom_files] or [path]
    return stamp_hash({"files": [file_stamp(f) for f in files], "series_uid": series_uid})


def run_fingerprint(model_paths: Iterable[Path], settings: dict[str, Any]) -> str:
    """A hash of what every case of a run was predicted with: the model files and the settings
    (`overwrite`, which only says whether to redo, left out)."""
    kept = {k: v for k, v in settings.items() if k != "overwrite"}
    return stamp_hash({"models": [file_stamp(Path(p)) for p in model_paths], "settings": kept})


def finished_here(record_path: Path, fingerprint: str) -> dict[str, dict[str, Any]]:
    """The finished cases of the earlier run record at `record_path`, by case id, if that run had
    this `fingerprint` (else none)."""
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        cases = record["cases"] if record.get("fingerprint") == fingerprint else []
    except (OSError, ValueError, KeyError, AttributeError):
        return {}
    return {c["case_id"]: c for c in cases if c.get("status") in ("done", "skipped") and "input_stamp" in c}


def can_skip(previous: dict[str, dict[str, Any]], case_id: str, stamp: str, outputs: Iterable[Path]) -> bool:
    """Whether the case was finished from this very input and all its outputs are there."""
    entry = previous.get(case_id)
    return entry is not None and entry["input_stamp"] == stamp and all(p.exists() for p in outputs)
