"""Write the case report: `<stem>.json` (docs/report.md) and a self-contained `<stem>.html`.

The HTML page needs nothing but itself: styles inline, pictures embedded as base64 PNG,
no script, no network. Both files are built in memory first, written under temporary names and renamed
only once both are complete, so a failure leaves no partial report.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

import numpy as np

from kidneyseg.io.atomic import atomic_path
from kidneyseg.io.volume import Volume
from kidneyseg.labels import KITS23, LabelMap
from kidneyseg.report.measure import measure, validate_inputs
from kidneyseg.report.overlays import WINDOW_HU, render_views

KIDNEY_COLUMNS = (
    ("side", "Side", ""),
    ("volume_ml", "Volume incl. lesions (mL)", "{:.1f}"),
    ("parenchyma_volume_ml", "Parenchyma (mL)", "{:.1f}"),
    ("cranio_caudal_extent_cm", "Cranio-caudal (cm)", "{:.1f}"),
    ("num_tumors", "Tumors", ""),
    ("num_cysts", "Cysts", ""),
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
)


@dataclass(frozen=True)
class ReportPaths:
    """The files of one written report, with its status (`ok` or `empty`) and one-line message."""

    json: Path
    html: Path
    status: str
    message: str


def write_report(
    ct: Volume,
    labels: Volume,
    out_dir: Path,
    label_map: LabelMap = KITS23,
    case_id: str | None = None,
) -> ReportPaths:
    """Measure `labels` on `ct` and write `<case_id>_report.json` and `.html` (or `report.*`).

    Args:
        ct: the CT in Hounsfield units.
        labels: its label map on exactly the same grid (predicted or reference).
        out_dir: the folder to write into (created if needed).
        label_map: the classes of `labels`.
        case_id: names the files and the report; default: none (`report.json`).

    Raises:
        KidneysegError: the inputs do not fit together, or the folder is not writable.
    """
    report = measure(ct, labels, label_map, case_id=case_id)
    focus, focus_name = _focus(report)
    pictures = render_views(ct, validate_inputs(ct, labels, label_map), label_map, focus, focus_name)
    page = render_html(report, pictures, label_map)
    stem = f"{case_id}_report" if case_id else "report"
    out_dir = Path(out_dir)
    json_path, html_path = out_dir / f"{stem}.json", out_dir / f"{stem}.html"
    # Both files appear together or not at all: each is renamed only once both are written.
    with atomic_path(json_path) as json_tmp, atomic_path(html_path) as html_tmp:
        json_tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        html_tmp.write_text(page, encoding="utf-8")
    return ReportPaths(json=json_path, html=html_path, status=report["status"], message=report["message"])


def _focus(report: dict) -> tuple[np.ndarray | None, str]:
    """Where the pictures cut: the largest lesion, else the largest kidney, else the image centre."""
    if report["lesions"]:
        lesion = max(report["lesions"], key=lambda r: r["volume_ml"])
        return np.asarray(lesion["centroid_ras_mm"]), f"{lesion['type']} {lesion['id']}"
    if report["kidneys"]:
        kidney = max(report["kidneys"], key=lambda r: r["volume_ml"])
        return np.asarray(kidney["centroid_ras_mm"]), f"the {kidney['side']} kidney"
    return None, "the image centre"


def render_html(report: dict, pictures: dict[str, bytes], label_map: LabelMap) -> str:
    """The report page as one HTML string with the pictures embedded."""
    template = Template(resources.files("kidneyseg.report").joinpath("template.html").read_text("utf-8"))
    case = report["case_id"] or Path(report["inputs"]["ct"] or "CT").name
    summary = report["summary"]
    largest = summary["largest_tumor_axial_diameter_cm"]
    summary_rows = [
        ("Kidneys found", ", ".join(summary["kidneys_found"]) or "none"),
        ("Tumors", str(summary["num_tumors"])),
        ("Cysts", str(summary["num_cysts"])),
        ("Largest tumor, max axial diameter", "—" if largest is None else f"{largest:.1f} cm"),
        ("Total tumor volume", f"{summary['total_tumor_volume_ml']:.1f} mL"),
        ("Total cyst volume", f"{summary['total_cyst_volume_ml']:.1f} mL"),
        ("Other kidney-label fragments", _fragments(report["other_components"])),
    ]
    inputs = report["inputs"]
    images = "\n".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}" '
        f'alt="{name} view"></figure>'
        for name, data in pictures.items()
    )
    legend = "".join(
        f'<span style="background: rgb{tuple(c.color)}"></span>{html.escape(c.name)}'
        for c in label_map.foreground
    )
    level, width = WINDOW_HU
    return template.substitute(
        title=html.escape(f"Kidney report — {case}"),
        meta=html.escape(
            f"CT: {inputs['ct']} · labels: {inputs['labels']} ({inputs['label_map']['name']}) · "
            f"{' × '.join(map(str, inputs['shape']))} voxels of "
            f"{' × '.join(f'{s:.2f}' for s in inputs['spacing_mm'])} mm ({inputs['orientation']}) · "
            f"kidneyseg {report['kidneyseg_version']} · {report['created_utc']}"
        ),
        status=html.escape(report["status"]),
        message=html.escape(report["message"]),
        summary=_table(("Measure", "Value"), summary_rows),
        kidneys=_records(report["kidneys"], KIDNEY_COLUMNS, "No kidney segmented."),
        lesions=_records(report["lesions"], LESION_COLUMNS, "No tumor or cyst segmented."),
        legend=legend,
        images=images,
        notes=html.escape(
            f"Window W {width:.0f} / L {level:.0f} HU; radiological convention (patient's right on the "
            "image's left); + marks the centre of the lesion shown. Diameters are edge to edge; the axial "
            "diameter is the largest in-plane diameter over axial slices. Position: thirds of the kidney's "
            "cranio-caudal extent. Exophytic: share of the lesion outside the convex hull of the kidney's "
            "parenchyma on each axial slice. Research use only; not a medical device."
        ),
    )


def _fragments(other: dict) -> str:
    if not other["count"]:
        return "none"
    volume = other["volume_ml"]
    return f"{other['count']} ({'< 0.1' if volume < 0.1 else f'{volume:.1f}'} mL)"


def _records(rows: list[dict], columns: tuple[tuple[str, str, str], ...], empty: str) -> str:
    if not rows:
        return f"<p>{html.escape(empty)}</p>"
    body = [
        tuple(
            "—" if row[key] is None else fmt.format(row[key]) if fmt else str(row[key])
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
