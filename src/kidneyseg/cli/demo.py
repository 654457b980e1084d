"""`kidneyseg demo`: phantoms → train → predict → evaluate → report, in one output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kidneyseg.cli.common import one_line_errors

EXAMPLES = """
Examples:

  kidneyseg demo --out demo-output

  kidneyseg demo --fast --recipe attention-unet-2d --out demo-2d
"""


def register(app: typer.Typer) -> None:
    app.command("demo", epilog=EXAMPLES)(demo)


@one_line_errors
def demo(
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Output folder (an earlier demo there, same settings, is resumed)."),
    ] = Path("demo-output"),
    recipe: Annotated[
        str, typer.Option("--recipe", "-r", help="Recipe whose cpu variant is trained.")
    ] = "sca-unet-3d",
    cases: Annotated[int, typer.Option("--cases", help="Phantom cases to train and validate on.")] = 30,
    test_cases: Annotated[
        int, typer.Option("--test-cases", help="Test phantoms (another seed) scored as the held-out figures.")
    ] = 6,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the phantom cases.")] = 0,
    fast: Annotated[
        bool, typer.Option("--fast", help="A few-minute version: fewer cases, short training.")
    ] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    real_ct: Annotated[
        Path | None,
        typer.Option("--real-ct", help="A real CT to segment first with the bundled pretrained model."),
    ] = None,
    real_ct_labels: Annotated[
        Path | None,
        typer.Option("--real-ct-labels", help="Its kidney reference labels: the demo then gives its Dice."),
    ] = None,
    no_hu_check: Annotated[
        bool,
        typer.Option("--no-hu-check", help="Segment the real CT even if it does not look like CT in HU."),
    ] = False,
    from_scratch: Annotated[
        bool,
        typer.Option(
            "--from-scratch", help="Train from random weights, not from the bundled model's (SCA-UNet 3D)."
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Run the whole pipeline on synthetic phantoms and write an index.html that links the results."""
    from kidneyseg.demo import DemoSettings, run_demo

    settings = DemoSettings(
        recipe,
        cases,
        seed,
        fast,
        device=device,
        real_ct=real_ct,
        real_ct_labels=real_ct_labels,
        from_bundled=not from_scratch,
        hu_check=not no_hu_check,
        test_cases=test_cases,
    )
    result = run_demo(out, settings, progress=not quiet)
    s = result.scores
    typer.echo(
        "held-out Dice: kidney {k}, tumor {t}, cyst {c} (KiTS HEC Dice {h}, Surface Dice {sd})".format(
            k=_fmt(s["kidney_dice"]),
            t=_fmt(s["tumor_dice"]),
            c=_fmt(s["cyst_dice"]),
            h=_fmt(s["kits_hec_dice_mean"]),
            sd=_fmt(s["kits_hec_surface_dice_mean"]),
        )
    )
    typer.echo("stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()))
    typer.echo(f"open {result.index} (scores also in {result.out / 'demo.json'})")


def _fmt(value: float | None) -> str:
    return "n/a (no such structure in the test cases)" if value is None else f"{value:.3f}"
