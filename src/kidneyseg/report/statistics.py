"""Cohort statistics: one CSV row per case from its report, and a one-line summary per case.

`kidneyseg predict` writes `statistics.csv` beside the label maps of a folder run, and
`kidneyseg report --labels DIR --ct DIR` writes it for label maps made elsewhere. Volumes are
in mL, diameters in cm; several lesions are listed largest first, separated by `;`.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kidneyseg.io.atomic import write_text_atomic
from kidneyseg.report.staging import shown_category

STATISTICS_NAME = "statistics.csv"

COLUMNS = (
    "case_id",
    "status",
    "kidneys_found",
    "right_kidney_ml",
    "left_kidney_ml",
    "right_parenchyma_ml",
    "left_parenchyma_ml",
    "num_tumors",
    "num_cysts",
    "tumor_diameters_cm",
    "cyst_diameters_cm",
    "total_tumor_ml",
    "total_cyst_ml",
    "ct_category",
    "extension_tumors",
    "confidence",
    "warnings",
    "seconds",
)


def _diameters(report: dict, kind: str) -> str:
    rows = sorted(
        (r for r in report.get("lesions", []) if r.get("type") == kind),
        key=lambda r: -(r.get("max_axial_diameter_cm") or 0),
    )
    return ";".join(  # ≥: a lesion cut by the scan's edge, its diameter a lower bound
        f"{'≥' if r.get('incomplete') else ''}{r['max_axial_diameter_cm']:.2f}"
        for r in rows
        if r.get("max_axial_diameter_cm") is not None
    )


def statistics_row(
    case_id: str, report: dict, warnings: Iterable[str] = (), seconds: float | None = None
) -> dict[str, object]:
    """The CSV row of one case: its report's numbers, its warnings (the report's codes and
    `warnings`, further codes, e.g. those of reading the CT) and the model's confidence when the
    report has one."""
    kidneys = {k["side"]: k for k in report.get("kidneys", [])}
    summary = report.get("summary", {})
    staging = report.get("staging") or {}
    codes = [w["code"] for w in report.get("warnings", [])]
    return {
        "case_id": case_id,
        "status": _status(report),
        "kidneys_found": " ".join(summary.get("kidneys_found", [])),
        "right_kidney_ml": kidneys.get("right", {}).get("volume_ml", ""),
        "left_kidney_ml": kidneys.get("left", {}).get("volume_ml", ""),
        "right_parenchyma_ml": kidneys.get("right", {}).get("parenchyma_volume_ml", ""),
        "left_parenchyma_ml": kidneys.get("left", {}).get("parenchyma_volume_ml", ""),
        "num_tumors": summary.get("num_tumors", 0),
        "num_cysts": summary.get("num_cysts", 0),
        "tumor_diameters_cm": _diameters(report, "tumor"),
        "cyst_diameters_cm": _diameters(report, "cyst"),
        "total_tumor_ml": summary.get("total_tumor_volume_ml", ""),
        "total_cyst_ml": summary.get("total_cyst_volume_ml", ""),
        "ct_category": shown_category(report.get("staging")) or "",
        "extension_tumors": ";".join(staging.get("extension_tumor_ids", [])),
        "confidence": report.get("inputs", {}).get("model_confidence") or "",
        "warnings": "; ".join([*codes, *warnings]),
        "seconds": "" if seconds is None else round(seconds, 1),
    }


RECORDED_SCHEMA_SINCE = 10
"""The first report schema whose version `predict`'s run record keeps beside each case's row."""


def schema_status(written: int | None, status: str, again: str) -> str:
    """`status`, or for a row of a report another version wrote (an earlier batch's, in the same
    folder; None: a run record from before `RECORDED_SCHEMA_SINCE`) that its figures follow that
    version's schema, e.g. its staging, and what to do (`again`)."""
    from kidneyseg.report.measure import SCHEMA_VERSION

    if written == SCHEMA_VERSION:
        return status
    schema = f"before {RECORDED_SCHEMA_SINCE}" if written is None else written
    return f"report schema {schema}, this version writes {SCHEMA_VERSION}: {again}"


def _status(report: dict) -> str:
    """The report's status, marked when another version wrote the report (`schema_status`)."""
    from kidneyseg.report.measure import SCHEMA_VERSION

    written = report.get("schema_version", SCHEMA_VERSION)
    return schema_status(written, report.get("status", ""), "report the case again")


def write_statistics(path: str | os.PathLike[str], rows: Iterable[dict[str, object]]) -> Path:
    """Write the rows as CSV (atomically), sorted by case id."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: str(r["case_id"])))
    return write_text_atomic(path, buffer.getvalue())


def update_statistics(path: Path, rows: Iterable[dict[str, object]]) -> Path:
    """Put `rows` into the statistics file at `path` in place of the rows of their cases, keeping
    every other row (those of an earlier batch, or of `kidneyseg report` over a cohort)."""
    with open(path, newline="", encoding="utf-8") as f:
        kept = {r["case_id"]: r for r in csv.DictReader(f)}
    kept.update({str(r["case_id"]): r for r in rows})
    return write_statistics(path, [{key: row.get(key, "") for key in COLUMNS} for row in kept.values()])


def case_line(row: dict[str, object]) -> str:
    """One console line for a case, e.g.
    `case_7: 12.3 s; kidneys right 151 mL, left 148 mL; 1 tumor (largest 4.10 cm)`."""
    sides = [s for s in ("right", "left") if row[f"{s}_kidney_ml"] != ""]
    volumes = [f"{s} {float(row[f'{s}_kidney_ml']):.0f} mL" for s in sides]  # type: ignore[arg-type]
    kidneys = ", ".join(volumes) or "none found"
    timing = f" {row['seconds']} s;" if row["seconds"] != "" else ""
    parts = [f"{row['case_id']}:{timing} kidneys {kidneys}"]
    for kind in ("tumor", "cyst"):
        count = int(row[f"num_{kind}s"])  # type: ignore[call-overload]
        if count:
            largest = str(row[f"{kind}_diameters_cm"]).split(";")[0]
            parts.append(f"{count} {kind}{'s' if count > 1 else ''} (largest {largest} cm)")
    if row["warnings"]:
        parts.append(f"warnings: {row['warnings']}")
    return "; ".join(parts)


def write_cohort_statistics(out_dir: Path) -> Path:
    """`statistics.csv` from the finished cases of every run record (every shard) in `out_dir`:
    per case, the row of the entry whose outputs are the files on disk (`on_disk`), else the last
    one read; a row another version made says so in its status (`schema_status`)."""
    from kidneyseg.predict.run_record import on_disk, recorded_cases

    rows: dict[str, tuple[bool, dict[str, Any]]] = {}
    for case in (c for c in recorded_cases(out_dir) if "statistics" in c):
        current = on_disk(case)
        if current or not rows.get(case["case_id"], (False, None))[0]:
            row = case["statistics"]
            status = schema_status(case.get("report_schema"), row.get("status", ""), "predict the case again")
            rows[case["case_id"]] = (current, {**row, "status": status})
    return write_statistics(out_dir / STATISTICS_NAME, [row for _, row in rows.values()])
