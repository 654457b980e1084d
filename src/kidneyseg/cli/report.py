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
) -> None:
    """Measure kidneys, tumors and cysts and write a JSON report and a self-contained HTML page."""
    from kidneyseg.io.volume import read_volume
    from kidneyseg.labels import get_label_map
    from kidneyseg.report import write_report

    classes = get_label_map(label_map)
    paths = write_report(read_volume(ct), read_volume(labels), out, label_map=classes, case_id=case_id)
    typer.echo(paths.message)
    if paths.status == "empty":
        typer.echo(f"note: {labels}: the segmentation is empty; the report says so", err=True)
    typer.echo(f"wrote {paths.json} and {paths.html}")
