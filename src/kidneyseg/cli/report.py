"""`kidneyseg report`: kidney and lesion measurements as JSON and HTML, for one case or a cohort."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kidneyseg.cli.common import one_line_errors
from kidneyseg.errors import some_names

EXAMPLES = """
Examples:

  kidneyseg report --ct ct.nii.gz --labels seg.nii.gz --out report

  kidneyseg report --ct dicom_folder --labels seg.nii.gz --out report --case-id patient7

  kidneyseg report --ct cases --labels predictions --out cohort   (one row per case in statistics.csv)
"""


def register(app: typer.Typer) -> None:
    app.command("report", epilog=EXAMPLES)(report)


@one_line_errors
def report(
    ct: Annotated[
        Path, typer.Option("--ct", help="CT in HU: NIfTI file or DICOM series folder, or a folder of cases.")
    ],
    labels: Annotated[
        Path,
        typer.Option("--labels", help="Label map on the CT's grid, or a folder of <case>.nii.gz label maps."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for the .json and .html reports.")],
    label_map: Annotated[str, typer.Option("--label-map", help="Classes: kits23 or kits19.")] = "kits23",
    case_id: Annotated[
        str | None, typer.Option("--case-id", help="Case name for the report and its file names.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (cohort).")] = False,
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
    hu_check: Annotated[
        bool,
        typer.Option(
            "--hu-check/--no-hu-check", help="Refuse a CT that is clearly not in HU (as predict does)."
        ),
    ] = True,
) -> None:
    """Measure kidneys, tumors and cysts and write a JSON report and a self-contained HTML page.

    Given a folder of label maps, report every case of the --ct folder that has one and write
    statistics.csv, one row per case.
    """
    from kidneyseg.errors import KidneysegError
    from kidneyseg.io.formats import files_by_case_id
    from kidneyseg.io.volume import read_volume
    from kidneyseg.labels import get_label_map
    from kidneyseg.predict.checks import content_warnings
    from kidneyseg.predict.inputs import find_inputs
    from kidneyseg.predict.label_files import read_label_file
    from kidneyseg.report import ReportOptions, write_report

    _check_options(min_lesion_mm, min_lesion_ml, confidence, case_id)
    classes = get_label_map(label_map)
    options = ReportOptions(min_lesion_diameter_mm=min_lesion_mm, min_lesion_volume_ml=min_lesion_ml)
    if labels.is_dir() and files_by_case_id(labels):
        for option, value in (("--case-id", case_id), ("--confidence", confidence)):
            if value is not None:
                raise KidneysegError(
                    f"{option} is for one case: a folder of label maps names each case by its file", labels
                )
        _cohort(ct, labels, out, classes, quiet, options, hu_check)
        return
    if ct.is_dir() and find_inputs(ct)[1]:
        given = "holds no <case>.nii.gz label map" if labels.is_dir() else "is one label map"
        raise KidneysegError(
            f"--ct is a folder of CTs ({ct}) but --labels {given}: give the folder of their "
            "<case>.nii.gz label maps",
            labels,
        )
    image = read_volume(ct)
    for doubt in content_warnings(image, hu_check):
        typer.echo(f"warning: {doubt.message}", err=True)
    paths = write_report(
        image, read_label_file(labels), out, classes, case_id, options=options, confidence=confidence
    )
    typer.echo(paths.message)
    if paths.warnings:
        typer.echo(f"warnings: {', '.join(paths.warnings)} (see the report)", err=True)
    if paths.status == "empty":
        typer.echo(f"note: {labels}: the segmentation is empty; the report says so", err=True)
    typer.echo(f"wrote {paths.json}, {paths.html} and {paths.preview}")


def _check_options(min_mm: float, min_ml: float, confidence: float | None, case_id: str | None) -> None:
    """Refuse thresholds that filter nothing or everything, and a case id that would put the
    report's files outside --out."""
    import math

    from kidneyseg.errors import KidneysegError
    from kidneyseg.io.formats import is_plain_name

    for option, value in (("--min-lesion-mm", min_mm), ("--min-lesion-ml", min_ml)):
        if not (math.isfinite(value) and value >= 0):
            raise KidneysegError(f"{option} must be a number >= 0, got {value}")
    if confidence is not None and not 0.0 <= confidence <= 1.0:
        raise KidneysegError(f"--confidence must be between 0 and 1, got {confidence}")
    if case_id is not None and not is_plain_name(case_id):
        raise KidneysegError(f"--case-id names the report's files and must be a plain name, got {case_id!r}")


def _cohort(ct: Path, labels: Path, out: Path, classes, quiet: bool, options, hu_check: bool) -> None:
    from kidneyseg.predict.outputs import side_files_note
    from kidneyseg.report.cohort import report_cohort

    echo = None if quiet else typer.echo
    result = report_cohort(
        ct, labels, out, classes, progress=not quiet, echo=echo, options=options, hu_check=hu_check
    )
    typer.echo(
        f"{len(result.reported)} case(s) reported, {len(result.failures)} failed; wrote {result.statistics}"
    )
    for case_id, reason in result.failures.items():
        typer.echo(f"  {case_id}: {reason}", err=True)
    if result.side_files:
        typer.echo(f"warning: {side_files_note(labels, result.side_files)}", err=True)
    for cases, what in (
        (result.cts_without_labels, f"CT(s) of {ct} have no label map in {labels}"),
        (result.labels_without_ct, f"label map(s) in {labels} have no CT in {ct}"),
    ):
        if cases:
            typer.echo(f"warning: {len(cases)} {what}: {some_names(cases)}", err=True)
    if result.removed:
        names = [path.name for path in result.removed]
        typer.echo(
            f"warning: removed {len(names)} report file(s) an earlier run wrote for CTs whose label map "
            f"is gone: {some_names(names)}",
            err=True,
        )
    if result.failures:
        raise typer.Exit(1)
