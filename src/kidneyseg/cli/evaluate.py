"""`kidneyseg evaluate`: score a folder of predictions against the references."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kidneyseg.cli.common import one_line_errors
from kidneyseg.errors import some_names

EXIT_MISSING = 1
"""Exit code when cases were found on one side only (the results are written all the same)."""


EXAMPLES = """
Examples:

  kidneyseg evaluate --pred out --ref kits23/dataset --out eval

  kidneyseg evaluate --pred out --ref kits21/data --annotation MAJ --out eval -j 2

  kidneyseg evaluate --pred out --ref kits19/data --label-map kits19 --out eval
"""


def register(app: typer.Typer) -> None:
    app.command("evaluate", epilog=EXAMPLES)(evaluate)


@one_line_errors
def evaluate(
    pred: Annotated[Path, typer.Option("--pred", help="Predictions: <case_id>.nii.gz files or a dataset.")],
    ref: Annotated[Path, typer.Option("--ref", help="References: KiTS/plain dataset or NIfTI folder.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for per_case.csv, summary.json, summary.md.")],
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Cases evaluated in parallel (processes).")] = 1,
    annotation: Annotated[
        str | None,
        typer.Option("--annotation", help="KiTS21 reference: AND (default), MAJ or OR aggregation."),
    ] = None,
    allow_missing: Annotated[
        bool,
        typer.Option("--allow-missing", help="Exit 0 even if cases are on one side only (still listed)."),
    ] = False,
    label_map: Annotated[
        str,
        typer.Option(
            "--label-map",
            help="Classes scored: kits23, or kits19 (KiTS19 references: a cyst counts as kidney).",
        ),
    ] = "kits23",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Per-label Dice, KiTS21/23 Dice and Surface Dice, KiTS19 composite and lesion detection,
    per case and averaged. Exits 1 if cases are found on one side only (unless --allow-missing)."""
    from kidneyseg.config import KITS21_ANNOTATIONS, check_choice
    from kidneyseg.data.cases import kits_layout
    from kidneyseg.errors import KidneysegError
    from kidneyseg.evaluate.folder import evaluate_folders, write_outputs
    from kidneyseg.evaluate.tables import fmt
    from kidneyseg.labels import get_label_map

    if annotation is not None:
        check_choice("--annotation", annotation, KITS21_ANNOTATIONS)
        if kits_layout(ref) != "kits21":  # was: ignored without a word
            raise KidneysegError(
                "--annotation chooses a KiTS21 aggregated segmentation; this is no KiTS21 layout", ref
            )
    classes = get_label_map(label_map)
    result = evaluate_folders(
        pred, ref, jobs=jobs, annotation=annotation or "AND", progress=not quiet, label_map=classes
    )
    paths = write_outputs(result, out)
    means = {k: fmt(v["mean"]) for k, v in result.summary()["metrics"].items()}
    per_class = ", ".join(f"{c.name} {means[f'dice_{c.name}']}" for c in classes.foreground)
    typer.echo(
        f"{len(result.rows)} cases: Dice {per_class}; "
        f"KiTS Dice {means['hec_dice_mean']}, Surface Dice {means['hec_sd_mean']}"
    )
    typer.echo(f"wrote {paths['csv']}, {paths['json']} and {paths['markdown']}")
    references, predicted = (_total(result.rows, f"cyst_lesions_{k}") for k in ("ref", "fp"))
    if "cyst" in classes.names and not references and predicted:
        typer.echo(
            f"warning: {ref}: no reference holds a cyst, but the predictions do; if these are KiTS19 "
            "references (no cyst label: cysts were drawn as kidney), --label-map kits19 counts them "
            "as kidney",
            err=True,
        )
    for cases, what in (
        (result.missing_predictions, "reference cases have no prediction"),
        (result.missing_references, "predictions have no reference"),
    ):
        if cases:
            typer.echo(f"warning: {len(cases)} {what}: {some_names(cases)}", err=True)
    if not result.complete and not allow_missing:
        raise typer.Exit(EXIT_MISSING)


def _total(rows, column: str) -> float:
    return sum(r.get(column, 0.0) for r in rows if r.get(column) == r.get(column))  # NaN left out
