"""`kidneyseg compare`: the papers' comparison tables from per-case evaluations of several models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kidneyseg.cli.common import one_line_errors


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)


@one_line_errors
def compare(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for comparison.md, comparison.json and box plots.")
    ],
    evaluations: Annotated[
        list[str] | None,
        typer.Option(
            "--eval",
            help="NAME=DIR: a model's `kidneyseg evaluate` output (or per_case.csv) on held-out cases.",
        ),
    ] = None,
    train_evaluations: Annotated[
        list[str] | None,
        typer.Option("--train-eval", help="NAME=DIR: the same model evaluated on its training cases."),
    ] = None,
    n_boot: Annotated[
        int, typer.Option("--bootstrap", help="Bootstrap resamples for the 95 % CIs.")
    ] = 10_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = 0,
) -> None:
    """Rows per model, columns Kidney / Tumor / Cyst / Mean (and the KiTS metrics), with bootstrap
    95 % CIs, paired tests between models and a box plot per class."""
    import json

    from kidneyseg.errors import KidneysegError
    from kidneyseg.evaluate.compare import load_scores, paper_table, parse_named, write_comparison

    if not evaluations:
        raise KidneysegError("give at least one --eval NAME=DIR")
    if n_boot < 100:
        raise KidneysegError(f"--bootstrap must be at least 100, got {n_boot}")
    data_sets: dict[str, dict[str, list[dict]]] = {"validation": {}, "training": {}}
    for data_set, specs, option in (
        ("validation", evaluations, "--eval"),
        ("training", train_evaluations or [], "--train-eval"),
    ):
        for spec in specs:
            name, path = parse_named(spec, option)
            if name in data_sets[data_set]:
                raise KidneysegError(f"{option}: model name {name!r} is given twice")
            data_sets[data_set][name] = load_scores(path)
    paths = write_comparison(data_sets, out, n_boot=n_boot, seed=seed)
    typer.echo(paper_table(json.loads(paths["json"][0].read_text(encoding="utf-8"))), nl=False)
    typer.echo(
        f"wrote {paths['markdown'][0]}, {paths['json'][0]} and {len(paths['plots'])} box plots in {out}"
    )
