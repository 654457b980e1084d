"""`kidneyseg compare`: the papers' comparison tables from per-case evaluations of several models."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Annotated

import typer

from kidneyseg.cli.common import one_line_errors

EXAMPLES = """
Examples:

  kidneyseg compare --run sca=runs/sca-unet-3d --run resunet=runs/residual-unet-3d --out cmp

  kidneyseg compare --eval sca=eval/sca --eval unet=eval/unet --out cmp
"""


def register(app: typer.Typer) -> None:
    app.command("compare", epilog=EXAMPLES)(compare)


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
    runs: Annotated[
        list[str] | None,
        typer.Option(
            "--run",
            help="NAME=RUN_DIR: a `kidneyseg train` run; its held-out and training cases are predicted "
            "and evaluated (results kept in OUT/runs/NAME).",
        ),
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset of the --run runs (default: each run's own).")
    ] = None,
    train_set: Annotated[
        bool,
        typer.Option("--train-set/--no-train-set", help="Also predict and score the runs' training cases."),
    ] = True,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Cases evaluated in parallel (processes).")] = 1,
    device: Annotated[str, typer.Option("--device", help="Device for predicting --run cases.")] = "cpu",
    n_boot: Annotated[
        int, typer.Option("--bootstrap", help="Bootstrap resamples for the 95 % CIs.")
    ] = 10_000,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the bootstrap.")] = 0,
) -> None:
    """Rows per model, columns Kidney / Tumor / Cyst / Mean (and the KiTS metrics), with bootstrap
    95 % CIs, paired tests between models and a box plot per class. Models are given as
    per-case evaluations (--eval, --train-eval) or as training runs (--run), predicted and
    evaluated on their own held-out and training cases."""
    import json

    from kidneyseg.errors import KidneysegError
    from kidneyseg.evaluate.compare import load_scores, paper_table, write_comparison
    from kidneyseg.evaluate.runs import evaluate_run

    if not evaluations and not runs:
        raise KidneysegError("give at least one --eval NAME=DIR or --run NAME=RUN_DIR")
    if n_boot < 100:
        raise KidneysegError(f"--bootstrap must be at least 100, got {n_boot}")
    data_sets: dict[str, dict[str, list[dict]]] = {"validation": {}, "training": {}}
    seen: dict[Path, str] = {}
    for data_set, specs, option in (
        ("validation", evaluations or [], "--eval"),
        ("training", train_evaluations or [], "--train-eval"),
    ):
        for name, path in _named_evaluations(specs, option, seen):
            data_sets[data_set][name] = load_scores(path)
    wanted = ("validation", "training") if train_set else ("validation",)
    named_runs = _named_runs(runs or [], data_sets["validation"])
    _check_training_evaluations(data_sets, {name for name, _ in named_runs}, train_set)
    for name, path in named_runs:
        scores = evaluate_run(path, out / "runs" / name, data, wanted, jobs=jobs, device=device)
        for data_set, rows in scores.items():
            data_sets[data_set][name] = list(rows)
    paths = write_comparison(data_sets, out, n_boot=n_boot, seed=seed)
    if paths["removed"]:
        names = ", ".join(p.name for p in paths["removed"])
        typer.echo(
            f"removed the box plots of an earlier comparison in {out} that this one lacks: {names}", err=True
        )
    typer.echo(paper_table(json.loads(paths["json"][0].read_text(encoding="utf-8"))), nl=False)
    typer.echo(
        f"wrote {paths['markdown'][0]}, {paths['json'][0]} and {len(paths['plots'])} box plots in {out}"
    )


def _check_training_evaluations(data_sets: dict, run_names: set[str], train_set: bool) -> None:
    """Each `--train-eval NAME` beside the held-out figures of its model (`--eval NAME` or
    `--run NAME`), and not beside a run's own training set."""
    from kidneyseg.errors import KidneysegError

    for name in sorted(data_sets["training"]):
        if name not in data_sets["validation"] and name not in run_names:
            raise KidneysegError(
                f"--train-eval: model {name!r} has no --eval {name}=DIR: a model's training-set "
                "figures sit beside its held-out ones (--run gives both)"
            )
        if name in run_names and train_set:
            raise KidneysegError(
                f"--train-eval: model {name!r} is a --run, whose training cases compare predicts and "
                f"scores itself; leave out --train-eval {name}, or add --no-train-set to use it instead"
            )


def _named_evaluations(specs: list[str], option: str, seen: dict[Path, str]) -> list[tuple[str, Path]]:
    """The `NAME=DIR` pairs of one option: each name given once, and each evaluation once over
    the options (`seen`: evaluation file -> where it was given; one file under two names would
    be compared with itself, or be a model's held-out and training set at once)."""
    from kidneyseg.errors import KidneysegError
    from kidneyseg.evaluate.compare import parse_named, scores_file

    named = []
    for spec in specs:
        name, path = parse_named(spec, option)
        if name in dict(named):
            raise KidneysegError(f"{option}: model name {name!r} is given twice")
        key = scores_file(path).resolve()
        if key in seen:
            raise KidneysegError(f"{option}: {key} is given as both {seen[key]} and {option} {name}")
        seen[key] = f"{option} {name}"
        named.append((name, path))
    return named


def _named_runs(specs: list[str], taken: Collection[str]) -> list[tuple[str, Path]]:
    """The `--run NAME=RUN_DIR` pairs, all checked before any run is predicted: each NAME names
    its folder OUT/runs/NAME, so it must be a plain name, and given once (not among `taken`)."""
    from kidneyseg.errors import KidneysegError
    from kidneyseg.evaluate.compare import parse_named
    from kidneyseg.io.formats import is_plain_name

    named = [parse_named(spec, "--run") for spec in specs]
    for i, (name, _) in enumerate(named):
        if not is_plain_name(name):
            raise KidneysegError(
                f"--run: the model name names its folder OUT/runs/NAME and must be a plain name, got {name!r}"
            )
        if name in taken or name in [n for n, _ in named[:i]]:
            raise KidneysegError(f"--run: model name {name!r} is given twice")
    return named
