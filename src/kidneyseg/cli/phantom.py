"""`kidneyseg phantom`: write synthetic abdominal CT cases with reference labels (KiTS23 layout)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kidneyseg.cli.common import one_line_errors

EXAMPLES = """
Examples:

  kidneyseg phantom --out phantoms --cases 10

  kidneyseg phantom --out real-shapes --anatomy kits19/data --size full

  kidneyseg phantom --out each-mask --anatomy my-masks --anatomy-in-order --cases 30
"""

CHEST_HELP = "Share of cases that also cover the chest through the heart, as chest-abdomen scans do."
TUMORS_AS_KIDNEY_HELP = (
    "Share of the real tumors of --anatomy painted and labelled as kidney: kidneys with the outline of a "
    "tumor-bearing one and no tumor."
)
MIRROR_HELP = (
    "Share of cases whose --anatomy label map is mirrored left to right (new outlines to a network)."
)

COLLAPSED_BOWEL_HELP = (
    "Share of small-bowel loops collapsed: a solid enhancing cord with no lumen, as most jejunum lies on CT."
)


def register(app: typer.Typer) -> None:
    app.command("phantom", epilog=EXAMPLES)(phantom)


@one_line_errors
def phantom(
    out: Annotated[Path, typer.Option("--out", help="Output folder; cases go to OUT/dataset/case_XXXXX/.")],
    cases: Annotated[int, typer.Option("--cases", "-n", help="Number of cases (at least 1).")] = 4,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Dataset seed (same seed, same cases).")] = 0,
    size: Annotated[
        str,
        typer.Option(
            "--size",
            help="full: KiTS-like 512×512 at 0.6-1 mm, 0.5-5 mm slices; small: 176×176 at ~2 mm, ~3 mm "
            "slices (CPU training, demo); tiny: 64×64×32 (tests).",
        ),
    ] = "small",
    anatomy: Annotated[
        Path | None,
        typer.Option(
            "--anatomy",
            help="Folder of real KiTS label maps (e.g. kits19/data): kidneys and tumors taken from them, "
            "the body synthesised around them.",
        ),
    ] = None,
    anatomy_in_order: Annotated[
        bool,
        typer.Option(
            "--anatomy-in-order",
            help="Case i takes the i-th label map of --anatomy (sorted, cycling) instead of a random one: "
            "as many cases as maps use each once.",
        ),
    ] = False,
    orientation: Annotated[
        str,
        typer.Option(
            "--orientation", help="Axis codes of the written arrays: IPL (KiTS files), RAS, LPS, ..."
        ),
    ] = "IPL",
    chest: Annotated[float, typer.Option("--chest", min=0.0, max=1.0, help=CHEST_HELP)] = 0.0,
    tumors_as_kidney: Annotated[
        float, typer.Option("--tumors-as-kidney", min=0.0, max=1.0, help=TUMORS_AS_KIDNEY_HELP)
    ] = 0.0,
    mirror: Annotated[float, typer.Option("--mirror", min=0.0, max=1.0, help=MIRROR_HELP)] = 0.0,
    collapsed_bowel: Annotated[
        float, typer.Option("--collapsed-bowel", min=0.0, max=1.0, help=COLLAPSED_BOWEL_HELP)
    ] = 0.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Generate synthetic abdominal CT (unenhanced or in a contrast phase) with kidney, tumor and
    cyst labels, plus a phantom.json ground truth per case (lesion kind, side, centre, diameters,
    volume)."""
    from kidneyseg.data.phantom import generate_dataset

    folders = generate_dataset(
        out,
        cases,
        seed=seed,
        size=size,
        anatomy=anatomy,
        orientation=orientation,
        progress=not quiet,
        chest=chest,
        anatomy_in_order=anatomy_in_order,
        tumors_as_kidney=tumors_as_kidney,
        mirror=mirror,
        collapsed_bowel=collapsed_bowel,
    )
    typer.echo(f"wrote {len(folders)} cases to {Path(out) / 'dataset'}")
