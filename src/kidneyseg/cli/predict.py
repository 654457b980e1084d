"""`kidneyseg predict`: segment a CT (NIfTI or DICOM) or a folder of cases with trained checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kidneyseg.cli.common import one_line_errors

EXAMPLES = """
Examples:

  kidneyseg predict -i case.nii.gz -o out --model runs/sca

  kidneyseg predict -i dicom_folder -o out --model runs/sca --dicom-seg --series 1.2.840...

  kidneyseg predict -i phantoms -o out --model runs/fold0 --model runs/fold1 --tta --probabilities
"""


def register(app: typer.Typer) -> None:
    app.command("predict", epilog=EXAMPLES)(predict)


@one_line_errors
def predict(
    input_path: Annotated[
        Path, typer.Option("--input", "-i", help="CT (NIfTI), DICOM series folder, or a folder of cases.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    model: Annotated[
        list[Path],
        typer.Option("--model", "-m", help="Run folder or checkpoint; repeat for an ensemble."),
    ],
    overlap: Annotated[
        float | None, typer.Option("--overlap", help="Window overlap (checkpoint's default; paper: 0.8).")
    ] = None,
    blend: Annotated[str | None, typer.Option("--blend", help="gaussian or constant.")] = None,
    batch: Annotated[
        int | None, typer.Option("--batch", help="Windows (3D) or slices (2D) per forward pass.")
    ] = None,
    tta: Annotated[
        bool, typer.Option("--tta", help="Mirroring test-time augmentation on every axis.")
    ] = False,
    probabilities: Annotated[
        bool, typer.Option("--probabilities", help="Also write class probabilities (network grid).")
    ] = False,
    postprocess: Annotated[
        bool | None,
        typer.Option(
            "--postprocess/--no-postprocess",
            help="Keep only foreground connected to the two largest kidney components "
            "(default: see docs/prediction.md).",
            show_default=False,
        ),
    ] = None,
    dicom_seg: Annotated[
        bool, typer.Option("--dicom-seg", help="Also write a DICOM SEG (DICOM input only).")
    ] = False,
    series: Annotated[
        str | None, typer.Option("--series", help="Series UID when a DICOM folder holds several.")
    ] = None,
    precision: Annotated[
        str, typer.Option("--precision", help="float32, or bfloat16 (faster on CPUs with bf16).")
    ] = "float32",
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="auto (OpenVINO on CPU when installed, else PyTorch), torch or openvino.",
        ),
    ] = "auto",
    report: Annotated[
        bool, typer.Option("--report", help="Also write the case report (JSON + HTML).")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo cases that are already done.")] = False,
    no_hu_check: Annotated[
        bool, typer.Option("--no-hu-check", help="Predict even if the image does not look like CT in HU.")
    ] = False,
    device: Annotated[
        str, typer.Option("--device", help="auto (CUDA if available, else CPU), cpu or cuda[:N].")
    ] = "auto",
    threads: Annotated[int | None, typer.Option("--threads", help="torch CPU threads.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Segment kidneys, tumors and cysts; labels come out on exactly the input CT's grid."""
    import torch

    from kidneyseg.errors import KidneysegError
    from kidneyseg.predict.predictor import POSTPROCESS_DEFAULT, PredictSettings
    from kidneyseg.predict.runner import OutputOptions, run_prediction
    from kidneyseg.predict.sliding_window import BLENDS, PRECISIONS
    from kidneyseg.train.distributed import pick_device

    if blend is not None and blend not in BLENDS:
        raise KidneysegError(f"--blend must be one of {BLENDS}, got {blend!r}")
    if precision not in PRECISIONS:
        raise KidneysegError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
    if overlap is not None and not 0.0 <= overlap < 1.0:
        raise KidneysegError(f"--overlap must be in [0, 1), got {overlap}")
    if batch is not None and batch < 1:
        raise KidneysegError(f"--batch must be at least 1, got {batch}")
    device = str(pick_device(device))
    if threads is not None:
        torch.set_num_threads(threads)
    settings = PredictSettings(
        overlap=overlap,
        blend=blend,
        sw_batch_size=batch,
        mirror_axes=(0, 1, 2) if tta else None,
        precision=precision,
        backend=backend,
        postprocess=POSTPROCESS_DEFAULT if postprocess is None else postprocess,
        probabilities=probabilities,
    )
    options = OutputOptions(dicom_seg=dicom_seg, report=report, overwrite=overwrite, hu_check=not no_hu_check)
    record = run_prediction(
        input_path,
        out,
        list(model),
        settings,
        options,
        series_uid=series,
        device=device,
        progress=not quiet,
        warn=lambda message: typer.echo(message, err=True),
    )
    done = [c for c in record.cases if c["status"] == "done"]
    skipped = [c for c in record.cases if c["status"] == "skipped"]
    typer.echo(
        f"{len(done)} predicted, {len(skipped)} already done, {len(record.failures)} failed "
        f"in {record.seconds:.1f} s; outputs in {out}"
    )
    if record.failures:
        typer.echo(f"{len(record.failures)} case(s) failed:", err=True)
        for case in record.failures:
            typer.echo(f"  {case['case_id']}: {case['reason']}", err=True)
        raise typer.Exit(1)
