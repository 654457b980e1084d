"""Write the case report: `<stem>.json` (docs/report.md) and a self-contained `<stem>.html`.

The HTML page needs nothing but itself: styles inline, pictures embedded as base64 PNG,
no script, no network. Both files are built in memory first, written under temporary names and renamed
only once both are complete, so a failure leaves no partial report.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

import numpy as np

from kidneyseg.io.atomic import atomic_path
from kidneyseg.io.volume import Volume
from kidneyseg.labels import KITS23, LabelMap
from kidneyseg.plaindata import json_text
from kidneyseg.report.checks import ReportOptions
from kidneyseg.report.measure import label_array, measure
from kidneyseg.report.overlays import WINDOW_HU, Scene, compose
from kidneyseg.report.staging import shown_category

if TYPE_CHECKING:
    from kidneyseg.predict.votes import Votes

KIDNEY_COLUMNS = (
    ("side", "Side", ""),
    ("volume_ml", "Volume incl. lesions (mL)", "{:.1f}"),
    ("parenchyma_volume_ml", "Parenchyma (mL)", "{:.1f}"),
    ("parenchyma_hu_median", "Parenchyma median (HU)", "{:.0f}"),
    ("cranio_caudal_extent_cm", "Cranio-caudal (cm)", "{:.1f}"),
    ("num_tumors", "Tumors", ""),
    ("num_cysts", "Cysts", ""),
)
LOWER_BOUNDS = {
    "volume_ml",
    "parenchyma_volume_ml",
    "cranio_caudal_extent_cm",
    "max_axial_diameter_cm",
    "max_3d_diameter_cm",
}
NEPHROMETRY_HEADER = (
    "Tumor",
    "R: diameter",
    "E: exophytic",
    "N: to sinus",
    "A: anterior share",
    "L: between polar lines",
    "R.E.N.A.L.",
    "PADUA location, rim, sinus, collecting system",
    "PADUA",
)
LESION_COLUMNS = (
    ("id", "Lesion", ""),
    ("type", "Type", ""),
    ("kidney", "Kidney", ""),
    ("max_axial_diameter_cm", "Max axial diameter (cm)", "{:.1f}"),
    ("max_3d_diameter_cm", "Max 3D diameter (cm)", "{:.1f}"),
    ("cranio_caudal_extent_cm", "Cranio-caudal (cm)", "{:.1f}"),
    ("volume_ml", "Volume (mL)", "{:.1f}"),
    ("hu_mean", "Mean HU", "{:.0f}"),
    ("hu_sd", "SD HU", "{:.0f}"),
    ("position", "Position", ""),
    ("exophytic_fraction", "Exophytic", "{:.0%}"),
    ("sure_fraction", "Model sure", "{:.0%}"),
)


MAX_LESION_VIEWS = 6  # lesions pictured (tumors first, then cysts, each by decreasing volume)


@dataclass(frozen=True)
class ReportPaths:
    """The files of one written report, with its status (`ok` or `empty`), one-line message and
    warning codes."""

    json: Path
    html: Path
    preview: Path
    status: str
    message: str
    warnings: tuple[str, ...] = ()


def report_files(out_dir: Path, case_id: str | None) -> tuple[Path, Path, Path]:
    """The report's JSON, HTML page and preview picture for `case_id` in `out_dir`."""
    stem = f"{case_id}_" if case_id else ""
    return out_dir / f"{stem}report.json", out_dir / f"{stem}report.html", out_dir / f"{stem}preview.png"


def write_report(
    ct: Volume,
    labels: Volume,
    out_dir: Path,
    label_map: LabelMap = KITS23,
    case_id: str | None = None,
    options: ReportOptions | None = None,
    confidence: float | None = None,
    votes: Votes | None = None,
    absorbed: Sequence[dict] = (),
) -> ReportPaths:
    """Measure `labels` on `ct` and write `<case_id>_report.json`, `.html` and
    `<case_id>_preview.png` (or `report.*`, `preview.png`).

    Args:
        ct: the CT in Hounsfield units.
        labels: its label map on exactly the same grid (predicted or reference); its
            `source` is written as the labels' path.
        out_dir: the folder to write into (created if needed).
        label_map: the classes of `labels`.
        case_id: names the files and the report; default: none (`report.json`).
        options: thresholds of the plausibility checks.
        confidence: the model's confidence in `labels` (0-1), when predicted.
        votes: the network's foreground voxels, when predicted (each lesion's sure fraction).
        absorbed: the lesion islands post-processing relabelled, when predicted.

    Raises:
        KidneysegError: the inputs do not fit together, or the folder is not writable.
    """
    report = measure(ct, labels, label_map, case_id, options, confidence, votes, absorbed)
    scene = Scene(ct, label_array(labels), label_map)  # validated by `measure`
    figures = [(title, scene.views(focus, title, line)) for title, focus, line in _focus_points(report)]
    page = render_html(report, figures, label_map)
    json_path, html_path, preview_path = report_files(Path(out_dir), case_id)
    preview = compose(list(figures[0][1].values()))
    # All files appear together or not at all: each is renamed only once all are written, the
    # page first (the innermost), so that a failure there leaves nothing behind.
    with (
        atomic_path(preview_path) as png,
        atomic_path(json_path) as json_tmp,
        atomic_path(html_path) as html_tmp,
    ):
        json_tmp.write_text(json_text(report), encoding="utf-8")
        html_tmp.write_text(page, encoding="utf-8")
        png.write_bytes(preview)
    return ReportPaths(
        json=json_path,
        html=html_path,
        preview=preview_path,
        status=report["status"],
        message=report["message"],
        warnings=tuple(w["code"] for w in report["warnings"]),
    )


def _focus_points(report: dict) -> list[tuple[str, np.ndarray | None, float | None]]:
    """Where the pictures cut: each lesion (tumors first, then cysts, at most `MAX_LESION_VIEWS`),
    else the largest kidney, else the image centre; with the kidney's medial edge (world x)
    for a tumor flagged as extending beyond it."""
    points = []
    for row in report["lesions"][:MAX_LESION_VIEWS]:
        line = None
        if row.get("extension_mm") is not None and row["id"] in (report["staging"] or {}).get(
            "extension_tumor_ids", []
        ):
            line = next(k["medial_edge_x_mm"] for k in report["kidneys"] if k["side"] == row["kidney"])
        title = f"{row['type']} {row['id']}" + (" (extends beyond the kidney)" if line is not None else "")
        points.append((title, np.asarray(row["centroid_ras_mm"]), line))
    if points:
        return points
    if report["kidneys"]:
        kidney = max(report["kidneys"], key=lambda r: r["volume_ml"])
        return [(f"the {kidney['side']} kidney", np.asarray(kidney["centroid_ras_mm"]), None)]
    return [("the image centre", None, None)]


def render_html(report: dict, figures: list[tuple[str, dict[str, bytes]]], label_map: LabelMap) -> str:
    """The report page as one HTML string with the pictures (title, {view: PNG}) embedded."""
    template = Template(resources.files("kidneyseg.report").joinpath("template.html").read_text("utf-8"))
    case = report["case_id"] or Path(report["inputs"]["ct"] or "CT").name
    images = "\n".join(
        f'<h3>{html.escape(title)}</h3><div class="views">'
        + "".join(
            f'<figure><img src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}" '
            f'alt="{name} view through {html.escape(title)}"></figure>'
            for name, data in views.items()
        )
        + "</div>"
        for title, views in figures
    )
    legend = "".join(
        f'<span style="background: rgb{tuple(c.color)}"></span>{html.escape(c.name)}'
        for c in label_map.foreground
    )
    level, width = WINDOW_HU
    tumors = [r for r in report["lesions"] if r.get("nephrometry")]
    return template.substitute(
        title=html.escape(f"Kidney report — {case}"),
        meta=html.escape(_meta(report)),
        status=html.escape(report["status"]),
        message=html.escape(report["message"]),
        warnings=_warnings(report["warnings"]),
        summary=_table(("Measure", "Value"), _summary_rows(report)),
        kidneys=_records(report["kidneys"], KIDNEY_COLUMNS, "No kidney segmented."),
        lesions=_records(report["lesions"], LESION_COLUMNS, "No tumor or cyst segmented."),
        nephrometry=_table(NEPHROMETRY_HEADER, [_nephrometry_row(r) for r in tumors])
        if tumors
        else "<p>No tumor.</p>",
        legend=legend,
        images=images,
        notes=html.escape(
            f"Window W {width:.0f} / L {level:.0f} HU; radiological convention (patient's right on the "
            "image's left); + marks the centre of the lesion shown; the dashed cyan line is the kidney's "
            "medial edge for a tumor flagged as extending beyond it. Diameters are edge to edge; the axial "
            "diameter is the largest in-plane diameter over axial slices. ≥: the object touches the edge of "
            "the scan, the value is a lower bound. Exophytic: share of the lesion outside the convex hull of "
            "the kidney's parenchyma on each axial slice. Sinus and collecting system are derived from the "
            "kidney's shape, not segmented (docs/report.md). Research use only; not a medical device."
        ),
    )


def _meta(report: dict) -> str:
    inputs = report["inputs"]
    parts = [
        f"CT: {inputs['ct']} · labels: {inputs['labels']} ({inputs['label_map']['name']})",
        f"{' × '.join(map(str, inputs['shape']))} voxels of "
        f"{' × '.join(f'{s:.2f}' for s in inputs['spacing_mm'])} mm ({inputs['orientation']})",
    ]
    if inputs["dicom"]:
        parts.append(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in inputs["dicom"].items()))
    if inputs["model_confidence"] is not None:
        parts.append(f"model confidence {inputs['model_confidence']:.2f}")
    parts.append(f"kidneyseg {report['kidneyseg_version']} · {report['created_utc']}")
    return " · ".join(parts)


def _warnings(warnings: list[dict]) -> str:
    if not warnings:
        return ""
    items = "".join(
        f"<li><b>{html.escape(w['code'])}</b>: {html.escape(w['message'])}</li>" for w in warnings
    )
    return f'<div class="warnings"><p>Check before use: {len(warnings)} warning(s)</p><ul>{items}</ul></div>'


def _summary_rows(report: dict) -> list[tuple[str, str]]:
    summary = report["summary"]
    largest = summary["largest_tumor_axial_diameter_cm"]
    staging = report["staging"]
    small = summary["small_lesions"]
    return [
        ("Kidneys found", ", ".join(summary["kidneys_found"]) or "none"),
        ("Tumors", str(summary["num_tumors"])),
        ("Cysts", str(summary["num_cysts"])),
        (
            "Largest tumor, max axial diameter",
            "—" if largest is None else f"{_bound(summary)}{largest:.1f} cm",
        ),
        ("Clinical T category (images)", _staging(staging, _uncertain(report["warnings"]))),
        ("Total tumor volume", f"{summary['total_tumor_volume_ml']:.1f} mL"),
        ("Total cyst volume", f"{summary['total_cyst_volume_ml']:.1f} mL"),
        (
            f"Fragments left out (< {small['min_diameter_mm']:g} mm or < {small['min_volume_ml']:g} mL)",
            f"{small['count']} ({small['volume_ml']:.2f} mL)" if small["count"] else "none",
        ),
        ("Other kidney-label fragments", _fragments(report["other_components"])),
    ]


def _bound(summary: dict) -> str:
    """ "≥ " before the largest tumor's diameter when the scan's edge cuts it (a lower bound)."""
    return "≥ " if summary.get("largest_tumor_is_lower_bound") else ""


def _uncertain(warnings: list[dict]) -> set[str]:
    """The ids of the lesions the model was unsure of (`uncertain_lesions`)."""
    return {i for w in warnings if w["code"] == "uncertain_lesions" for i in w["lesions"]}


def _staging(staging: dict | None, uncertain: set[str]) -> str:
    if staging is None:
        return "— (no tumor)"

    def bound(key: str) -> str:
        return "≥ " if staging[key] else ""

    text = (
        f"{shown_category(staging)} ({staging['tumor_id']}: specimen "
        f"size estimate {bound('specimen_size_is_lower_bound')}{staging['specimen_size_cm']:.2f} cm; max "
        f"axial diameter {bound('greatest_dimension_is_lower_bound')}"
        f"{staging['greatest_dimension_cm']:.2f} cm → {staging['measured_size_category']})"
    )
    if staging["extension_beyond_kidney"]:
        ids = staging["extension_tumor_ids"]
        text += (
            f"; possible cT3: {', '.join(ids)} {'reach' if len(ids) > 1 else 'reaches'} more than "
            f"{staging['extension_threshold_mm']:g} mm medially beyond the kidney (check the renal vein "
            "and the sinus fat)"
        )
    if staging["tumor_id"] in uncertain:
        text += f"; the model was unsure of {staging['tumor_id']} (see the warning)"
    return text


def _nephrometry_row(row: dict) -> tuple[str, ...]:
    renal, padua = row["nephrometry"]["renal"], row["nephrometry"]["padua"]
    near = "—" if renal["nearness_mm"] is None else f"{renal['nearness_mm']:.1f} mm → {renal['n']}"
    total = "—" if renal["score"] is None else f"{renal['score']}{renal['a']} ({renal['complexity']})"
    padua_total = "—" if padua["score"] is None else f"{padua['score']} ({padua['complexity']})"
    return (
        row["id"],
        f"{renal['radius_cm']:.1f} cm → {renal['r']}",
        f"{renal['exophytic_fraction']:.0%} → {renal['e']}",
        near,
        f"{renal['anterior_fraction']:.0%} → {renal['a']}",
        f"{renal['between_polar_lines_fraction']:.0%} → {renal['l']}",
        total,
        f"{padua['polar_location']} {padua['polar_location_score']}, {padua['rim']} {padua['rim_score']}, "
        f"sinus {padua['sinus_score'] or '—'}, UCS {padua['collecting_system_score'] or '—'}",
        padua_total,
    )


def _fragments(other: dict) -> str:
    if not other["count"]:
        return "none"
    volume = other["volume_ml"]
    return f"{other['count']} ({'< 0.1' if volume < 0.1 else f'{volume:.1f}'} mL)"


def _records(rows: list[dict], columns: tuple[tuple[str, str, str], ...], empty: str) -> str:
    """A table of report rows; sizes of an object cut by the scan's edge are shown as lower bounds (≥)."""
    if not rows:
        return f"<p>{html.escape(empty)}</p>"
    body = [
        tuple(
            ("≥ " if row.get("incomplete") and key in LOWER_BOUNDS and row[key] is not None else "")
            + _cell(row[key], fmt)
            for key, _, fmt in columns
        )
        for row in rows
    ]
    return _table(tuple(title for _, title, _ in columns), body)


def _cell(value: object, fmt: str) -> str:
    if value is None:
        return "—"
    return fmt.format(value) if fmt else str(value)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
