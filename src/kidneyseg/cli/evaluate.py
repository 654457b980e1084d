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
    from kidneyseg.evaluate.folder import evaluate_folders, pair_folders, write_outputs
    from kidneyseg.evaluate.tables import fmt
    from kidneyseg.labels import get_label_map

    if annotation is not None:
        check_choice("--annotation", annotation, KITS21_ANNOTATIONS)
        if kits_layout(ref) != "kits21":  # was: ignored without a word
            raise KidneysegError(
                "--annotation chooses a KiTS21 aggregated segmentation; this is no KiTS21 layout", ref
            )
    classes = get_label_map(label_map)
    pairing = pair_folders(pred, ref, annotation or "AND")
    result = evaluate_folders(pred, ref, jobs=jobs, progress=not quiet, label_map=classes, pairing=pairing)
    for note in _header_notes(pairing, classes, pred, ref):  # after: a refusal stays one line
        typer.echo(f"warning: {note}", err=True)
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


def _header_notes(pairing, classes, pred: Path, ref: Path) -> list[str]:
    """What the label files' headers say against this evaluation (only headers are read): a
    reference kidneyseg predict wrote (are --pred and --ref swapped? Dice would not tell, lesion
    detection would), predictions whose label map lacks a class that is scored."""
    from kidneyseg.errors import KidneysegError
    from kidneyseg.labels import LABEL_MAPS
    from kidneyseg.predict.label_files import written_label_map

    def named(path: Path) -> str | None:
        try:
            return written_label_map(path)
        except KidneysegError:  # unreadable: the evaluation itself names the file
            return None

    notes = []
    predicted_refs = [case for case, _, ref_path in pairing.pairs if named(ref_path)]
    if predicted_refs:
        notes.append(
            f"{ref}: {len(predicted_refs)} reference(s) were written by kidneyseg predict, as their "
            f"headers say ({some_names(predicted_refs)}): if --pred and --ref are swapped, the "
            "lesion detection counts are the wrong way round (Dice is symmetric)"
        )
    for name in sorted({n for _, pred_path, _ in pairing.pairs if (n := named(pred_path)) in LABEL_MAPS}):
        lacking = [c for c in classes.names if c not in LABEL_MAPS[name].names and c != "background"]
        if lacking:
            notes.append(
                f"{pred}: predictions of the {name} label map, as their headers say, which has no "
                f"{', '.join(lacking)} class: scored as {classes.name}, every reference "
                f"{', '.join(lacking)} counts as missed (--label-map {name} scores them as {name} does)"
            )
    return notes
