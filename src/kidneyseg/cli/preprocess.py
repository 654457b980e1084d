"""`kidneyseg preprocess`: cache a dataset on the network's grid (SCA-UNet paper preprocessing)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kidneyseg.cli.common import one_line_errors

EXAMPLES = """
Examples:

  kidneyseg preprocess --data kits23/dataset --out cache

  kidneyseg preprocess --data phantoms --out cache --spacing 2 2 3 --hu-window -100 300
"""


def register(app: typer.Typer) -> None:
    app.command("preprocess", epilog=EXAMPLES)(preprocess)


@one_line_errors
def preprocess(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder (KiTS19/21/23 layout or plain).")],
    out: Annotated[Path, typer.Option("--out", help="Cache folder; cases go to OUT/<case_id>/.")],
    layout: Annotated[
        str, typer.Option("--layout", help="auto, kits19, kits21, kits23 or plain (images/ + labels/).")
    ] = "auto",
    annotation: Annotated[
        str, typer.Option("--annotation", help="KiTS21 aggregated segmentation: AND, MAJ or OR.")
    ] = "AND",
    spacing: Annotated[
        tuple[float, float, float] | None,
        typer.Option("--spacing", help="Target voxel size in mm along x y z (default 1.62 1.62 2)."),
    ] = None,
    hu_window: Annotated[
        tuple[float, float] | None,
        typer.Option("--hu-window", help="HU clip window LO HI, rescaled to [0, 1] (default -80 305)."),
    ] = None,
    no_crop: Annotated[bool, typer.Option("--no-crop", help="Keep the full field of view.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Reorient to RAS, resample (image trilinear, labels nearest), crop to the body and window
    HU, writing image.npy, label.npy and meta.json per case; finished cases are skipped."""
    import dataclasses

    from kidneyseg.config import PreprocessConfig
    from kidneyseg.data.cases import discover
    from kidneyseg.preprocess import config_hash, preprocess_dataset

    cfg = PreprocessConfig()
    if spacing is not None:
        cfg = dataclasses.replace(cfg, spacing=tuple(float(s) for s in spacing))
    if hu_window is not None:
        cfg = dataclasses.replace(cfg, hu_window=tuple(float(v) for v in hu_window))
    if no_crop:
        cfg = dataclasses.replace(cfg, crop_foreground=False)
    dataset = discover(data, layout, annotation)
    folders = preprocess_dataset(dataset, cfg, out, progress=not quiet)
    typer.echo(
        f"{len(folders)} {dataset.layout} cases preprocessed in {out} (config {config_hash(cfg)}; "
        f"{len(dataset.labelled)} with labels)"
    )
