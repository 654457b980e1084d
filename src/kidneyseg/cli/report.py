"""`kidneyseg report`: kidney and lesion measurements of one case as JSON and HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kidneyseg.cli.common import one_line_errors


def register(app: typer.Typer) -> None:
    app.command("report")(report)


@one_line_errors
def report(
    ct: Annotated[Path, typer.Option("--ct", help="CT in HU: NIfTI file or DICOM series folder.")],
    labels: Annotated[Path, typer.Option("--labels", help="Label map on the CT's grid (NIfTI or DICOM).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the .json and .html report.")],
    label_map: Annotated[str, typer.Option("--label-map", help="Classes: kits23 or kits19.")] = "kits23",
    case_id: Annotated[
        str | None, typer.Option("--case-id", help="Case name for the report and its file names.")
    ] = None,
    min_lesion_mm: Annotated[
        float, typer.Option("--min-lesion-mm", help="Leave out lesions under this 3D diameter (counted).")
    ] = 3.0,
    min_lesion_ml: Annotated[
        float, typer.Option("--min-lesion-ml", help="Leave out lesions under this volume (counted).")
    ] = 0.05,
    confidence: Annotated[
        float | None,
        typer.Option("--confidence", help="The model's confidence in the labels (0-1), if known."),
    ] = None,
) -> None:
    """Measure kidneys, tumors and cysts and write a JSON report and a self-contained HTML page."""
    from kidneyseg.io.volume import read_volume
    from kidneyseg.labels import get_label_map
    from kidneyseg.report import ReportOptions, write_report

    classes = get_label_map(label_map)
    options = ReportOptions(min_lesion_diameter_mm=min_lesion_mm, min_lesion_volume_ml=min_lesion_ml)
    paths = write_report(
        read_volume(ct), read_volume(labels), out, classes, case_id, options=options, confidence=confidence
    )
    typer.echo(paths.message)
    if paths.warnings:
        typer.echo(f"warnings: {', '.join(paths.warnings)} (see the report)", err=True)
    if paths.status == "empty":
        typer.echo(f"note: {labels}: the segmentation is empty; the report says so", err=True)
    typer.echo(f"wrote {paths.json}, {paths.html} and {paths.preview}")
