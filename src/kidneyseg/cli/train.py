"""`kidneyseg train`: run a paper's recipe on a KiTS-layout dataset (or resume / fine-tune a run)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kidneyseg.cli.common import one_line_errors
from kidneyseg.errors import KidneysegError

if TYPE_CHECKING:
    from kidneyseg.train.trainer import RunResult

EXAMPLES = """
Examples:

  kidneyseg train --recipe sca-unet-3d:cpu --data phantoms --out runs/sca

  kidneyseg train --recipe attention-unet-2d --variant cpu --data phantoms --out runs/ag train.epochs=5

  kidneyseg train --resume runs/sca

  kidneyseg train --recipe sca-unet-3d:transfer --init-weights runs/sca --data phantoms --out runs/sca-ft

  kidneyseg train --finetune-tumor runs/ag --data phantoms --out runs/ag-tumor train.epochs=10

  torchrun --nproc_per_node 2 -m kidneyseg train --recipe sca-unet-3d --data kits21 --out runs/sca
"""


def register(app: typer.Typer) -> None:
    app.command("train", epilog=EXAMPLES)(train)


OutOption = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Run folder to create (a run there without a checkpoint starts again)."),
]
ResumeOption = Annotated[
    Path | None,
    typer.Option(
        "--resume",
        help="Continue this run from its last checkpoint, or from scratch if it has none yet "
        "(only the epochs and time limit may change).",
    ),
]
FinetuneOption = Annotated[
    Path | None,
    typer.Option(
        "--finetune-tumor", help="2D stage 2: fine-tune this run on tumor slices, shallow levels frozen."
    ),
]
InitWeightsOption = Annotated[
    Path | None,
    typer.Option(
        "--init-weights",
        help="Start from this run's best weights (or this checkpoint) of the same network, not random ones.",
    ),
]


@one_line_errors
def train(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(metavar="[SECTION.KEY=VALUE]...", help="Config overrides, e.g. train.epochs=5."),
    ] = None,
    recipe: Annotated[
        str | None, typer.Option("--recipe", "-r", help="Recipe name, or NAME:VARIANT (see --list-recipes).")
    ] = None,
    variant: Annotated[str | None, typer.Option("--variant", help="Recipe variant, e.g. cpu.")] = None,
    data: Annotated[
        Path | None, typer.Option("--data", "-d", help="Dataset folder (KiTS or plain layout).")
    ] = None,
    out: OutOption = None,
    resume: ResumeOption = None,
    finetune_tumor: FinetuneOption = None,
    init_weights: InitWeightsOption = None,
    cache: Annotated[
        Path | None,
        typer.Option("--cache", help="Preprocessed-case cache (default RUN/preprocessed); shareable."),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars: one log line per epoch.")
    ] = False,
    list_recipes: Annotated[
        bool, typer.Option("--list-recipes", help="List the recipes and their variants.")
    ] = False,
    show_config: Annotated[
        bool, typer.Option("--show-config", help="Print the resolved config (recipe + overrides) and exit.")
    ] = False,
) -> None:
    """Train a model with one of the papers' recipes; writes config, metrics, curves and checkpoints."""
    overrides = list(overrides or [])
    if list_recipes:
        _list_recipes()
        return
    if resume is not None:
        if recipe or finetune_tumor or out or init_weights:
            raise KidneysegError("--resume takes only the run folder (and train.epochs=N to extend it)")
        _resume(resume, overrides, data, cache, device, quiet)
        return
    if finetune_tumor is not None:
        if recipe or init_weights:
            raise KidneysegError(
                "--finetune-tumor takes its recipe and weights from the stage-1 run: "
                "leave out --recipe and --init-weights"
            )
        if data is None or out is None:
            raise KidneysegError("--finetune-tumor needs --data and --out")
        _finetune(finetune_tumor, data, out, overrides, cache, device, quiet)
        return
    if recipe is None:
        raise KidneysegError("--recipe is required (see --list-recipes), or --resume RUN")
    from kidneyseg.plaindata import dump_yaml
    from kidneyseg.recipes import load_recipe

    config = load_recipe(recipe, variant, overrides)
    if show_config:
        typer.echo(dump_yaml(config), nl=False)
        return
    if data is None or out is None:
        raise KidneysegError("--data and --out are required to train")
    from kidneyseg.train.engine import train as run_train

    _report(
        run_train(
            config, data, out, cache_dir=cache, device=device, progress=not quiet, init_weights=init_weights
        )
    )


def _finetune(
    stage1: Path, data: Path, out: Path, overrides: list[str], cache: Path | None, device: str, quiet: bool
) -> None:
    from kidneyseg.train.engine import finetune_tumor

    result = finetune_tumor(
        stage1, data, out, overrides=overrides, cache_dir=cache, device=device, progress=not quiet
    )
    _report(result)


def _list_recipes() -> None:
    from kidneyseg.recipes import list_recipes, recipe_document

    for name in list_recipes():
        doc = recipe_document(name)
        variants = ", ".join(doc.get("variants") or {}) or "-"
        typer.echo(f"{name:20s} variants: {variants:10s} {doc['recipe'].get('paper', '')}")


def _resume(
    run: Path, overrides: list[str], data: Path | None, cache: Path | None, device: str, quiet: bool
) -> None:
    from kidneyseg.plaindata import parse_override

    changes: dict[str, float] = {}
    for item in overrides:
        key, value = parse_override(item)
        if key not in ("train.epochs", "train.time_limit_minutes"):
            raise KidneysegError(
                f"a resumed run keeps its config; only train.epochs and train.time_limit_minutes may change, "
                f"got {item!r}"
            )
        kind = int if key == "train.epochs" else (int, float)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise KidneysegError(f"{key} must be a number, got {value!r}")
        changes[key.removeprefix("train.")] = value if key == "train.epochs" else float(value)
    from kidneyseg.train.engine import resume as run_resume

    _report(run_resume(run, **changes, data_dir=data, cache_dir=cache, device=device, progress=not quiet))


def _report(result: RunResult) -> None:
    typer.echo(
        f"{result.status}: {result.epochs} epochs, best validation Dice {result.best_dice:.4f} "
        f"(epoch {result.best_epoch}) -> {result.run_dir}"
    )
