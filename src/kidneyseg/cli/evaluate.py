"""`kidneyseg evaluate`: score a folder of predictions against the references."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kidneyseg.cli.common import one_line_errors

EXIT_MISSING = 1
"""Exit code when cases were found on one side only (the results are written all the same)."""


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)


@one_line_errors
def evaluate(
    pred: Annotated[Path, typer.Option("--pred", help="Predictions: <case_id>.nii.gz files or a dataset.")],
    ref: Annotated[Path, typer.Option("--ref", help="References: a KiTS/plain dataset or a folder of files.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for per_case.csv, summary.json, summary.md.")],
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Cases evaluated in parallel (processes).")] = 1,
    annotation: Annotated[
        str, typer.Option("--annotation", help="KiTS21 reference: AND, MAJ or OR aggregation.")
    ] = "AND",
    allow_missing: Annotated[
        bool,
        typer.Option("--allow-missing", help="Exit 0 even if some cases are on one side only (still listed)."),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Per-label Dice, KiTS21/23 Dice and Surface Dice, KiTS19 composite and lesion detection,
    per case and averaged. Exits 1 if cases are found on one side only (unless --allow-missing)."""
    from kidneyseg.evaluate.folder import evaluate_folders, write_outputs
    from kidneyseg.evaluate.tables import fmt

    result = evaluate_folders(pred, ref, jobs=jobs, annotation=annotation, progress=not quiet)
    paths = write_outputs(result, out)
    metrics = result.summary()["metrics"]
    typer.echo(
        f"{len(result.rows)} cases: Dice kidney {fmt(metrics['dice_kidney']['mean'])}, "
        f"tumor {fmt(metrics['dice_tumor']['mean'])}, cyst {fmt(metrics['dice_cyst']['mean'])}; "
        f"KiTS Dice {fmt(metrics['hec_dice_mean']['mean'])}, Surface Dice {fmt(metrics['hec_sd_mean']['mean'])}"
    )
    typer.echo(f"wrote {paths['csv']}, {paths['json']} and {paths['markdown']}")
    if result.missing_predictions:
        typer.echo(
            f"warning: {len(result.missing_predictions)} reference cases have no prediction: "
            f"{', '.join(result.missing_predictions[:10])}{' ...' if len(result.missing_predictions) > 10 else ''}",
            err=True,
        )
    if result.missing_references:
        typer.echo(
            f"warning: {len(result.missing_references)} predictions have no reference: "
            f"{', '.join(result.missing_references[:10])}{' ...' if len(result.missing_references) > 10 else ''}",
            err=True,
        )
    if not result.complete and not allow_missing:
        raise typer.Exit(EXIT_MISSING)
