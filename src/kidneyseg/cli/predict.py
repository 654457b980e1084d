"""`kidneyseg predict`: segment a CT (NIfTI or DICOM) or a folder of cases with trained checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kidneyseg.cli.common import one_line_errors

EXAMPLES = """
Examples:

  kidneyseg predict -i ct.nii.gz -o seg.nii.gz --model runs/sca

  kidneyseg predict -i dicom_folder -o out --model runs/sca --dicom-seg --dicom-rtstruct --new-uids

  kidneyseg predict -i cases -o out --model runs/sca --split-sides --per-class --report

  kidneyseg predict -i cases -o out --model runs/fold0 --model runs/fold1 --tta --shard 3/8
"""

Input = Annotated[
    Path, typer.Option("--input", "-i", help="CT (NIfTI), DICOM series folder, or a folder of cases.")
]
Out = Annotated[  # a string: a Path would drop the trailing separator that says "a folder"
    str, typer.Option("--out", "-o", help="Output folder; for one CT also a file name ending in .nii.gz.")
]
Model = Annotated[
    list[Path] | None,
    typer.Option(
        "--model", "-m", help="Run folder or checkpoint; repeat for an ensemble.", show_default=False
    ),
]
Overlap = Annotated[
    float | None, typer.Option(help="Window overlap (default: the checkpoint's inference.overlap).")
]
Blend = Annotated[str | None, typer.Option(help="gaussian or constant.")]
Batch = Annotated[int | None, typer.Option(help="Windows (3D) or slices (2D) per forward pass.")]
Postprocess = Annotated[
    bool | None,
    typer.Option(
        "--postprocess/--no-postprocess",
        help="Keep only foreground connected to the two largest kidney components (default: on).",
        show_default=False,
    ),
]
NoAnatomyCheck = Annotated[
    bool,
    typer.Option(
        "--no-anatomy-check",
        help="Keep components the CT rules out as kidneys (at the body surface, in a blood pool or "
        "bone, of fat or air, without kidney voxels).",
    ),
]
Series = Annotated[
    str | None,
    typer.Option(
        help="Series UID when a DICOM folder holds several (in a folder of cases: for the case "
        "folder that holds it)."
    ),
]
Precision = Annotated[
    str,
    typer.Option(
        # "\\[": Typer's rich markup would take "[int8]" for a style tag and drop it
        help="float32; bfloat16 (faster on CPUs with bf16); int8 (OpenVINO, calibrated on phantom "
        "windows at start-up; needs NNCF: pip install nncf, or '.\\[int8]' in a kidneyseg checkout)."
    ),
]
Backend = Annotated[
    str, typer.Option(help="auto (OpenVINO on CPU when installed, else PyTorch), torch or openvino.")
]
Roi = Annotated[
    str | None,
    typer.Option(
        help="kidneys: locate the kidneys with the bundled model, run --model only around them "
        "(the default when the bundled model is installed); body: the whole body.",
        show_default=False,
    ),
]
RoiMargin = Annotated[
    float | None, typer.Option(help="Margin (mm) around each kidney box with --roi kidneys (default 30).")
]
AbsorbIslands = Annotated[
    float | None,
    typer.Option(
        "--absorb-islands-ml",
        min=0.0,
        help="Tumor and cyst islands smaller than this (mL) take the class around them "
        "(default: the model's; 0 keeps every island).",
    ),
]
Device = Annotated[str, typer.Option(help="auto (CUDA if available, else CPU), cpu or cuda[:N].")]
Threads = Annotated[int | None, typer.Option(min=1, help="torch CPU threads.")]
Shard = Annotated[
    str | None, typer.Option(help="i/n: predict only the i-th of n shares of a folder (one job of n).")
]


def _flag(help_text: str, *names: str):
    return Annotated[bool, typer.Option(*names, help=help_text)]


def register(app: typer.Typer) -> None:
    app.command("predict", epilog=EXAMPLES)(predict)


@one_line_errors
def predict(
    input_path: Input,
    out: Out,
    model: Model = None,
    overlap: Overlap = None,
    blend: Blend = None,
    batch: Batch = None,
    tta: _flag("Mirroring test-time augmentation on every axis.", "--tta") = False,
    probabilities: _flag("Also write class probabilities (network grid).", "--probabilities") = False,
    postprocess: Postprocess = None,
    no_anatomy_check: NoAnatomyCheck = False,
    split_sides: _flag("Label kidney, tumor and cyst right and left (1-6).", "--split-sides") = False,
    per_class: _flag("Also write one binary mask per class.", "--per-class") = False,
    dicom_seg: _flag("Also write a DICOM SEG (DICOM input).", "--dicom-seg") = False,
    dicom_rtstruct: _flag("Also write a DICOM RTSTRUCT (DICOM input).", "--dicom-rtstruct") = False,
    new_uids: _flag("Give an anonymised series new UIDs for SEG/RTSTRUCT.", "--new-uids") = False,
    series: Series = None,
    precision: Precision = "float32",
    backend: Backend = "auto",
    roi: Roi = None,
    roi_margin: RoiMargin = None,
    absorb_islands_ml: AbsorbIslands = None,
    report: _flag("Also write the case report (JSON + HTML).", "--report") = False,
    overwrite: _flag("Redo cases that are already done.", "--overwrite") = False,
    no_hu_check: _flag("Predict even if the image does not look like CT in HU.", "--no-hu-check") = False,
    shard: Shard = None,
    device: Device = "auto",
    threads: Threads = None,
    quiet: _flag("No progress bar and no line per case.", "--quiet", "-q") = False,
) -> None:
    """Segment kidneys, tumors and cysts; labels come out on exactly the input CT's grid."""
    import time
    from dataclasses import replace

    import torch

    from kidneyseg.cli import STARTED
    from kidneyseg.device import pick_device
    from kidneyseg.predict.inputs import refuse_series_of_a_file
    from kidneyseg.predict.outputs import OutputOptions
    from kidneyseg.predict.pretrained import default_model
    from kidneyseg.predict.runner import parse_shard, run_prediction

    refuse_series_of_a_file(input_path, series, "--series")
    settings = _settings(overlap, blend, batch, tta, precision, backend, probabilities, roi)
    settings = replace(settings, anatomy_check=not no_anatomy_check)
    if postprocess is not None:
        settings = replace(settings, postprocess=postprocess)
    if roi_margin is not None:
        settings = replace(settings, roi_margin_mm=roi_margin)
    if absorb_islands_ml is not None:
        settings = replace(settings, absorb_islands_ml=absorb_islands_ml)
    device = str(pick_device(device))
    if threads is not None:
        torch.set_num_threads(threads)
    options = OutputOptions(
        dicom_seg=dicom_seg,
        dicom_rtstruct=dicom_rtstruct,
        new_uids=new_uids,
        report=report,
        split_sides=split_sides,
        per_class=per_class,
        overwrite=overwrite,
        hu_check=not no_hu_check,
    )
    record = run_prediction(
        input_path,
        out,
        list(model) if model else [default_model()],
        settings,
        options,
        series_uid=series,
        device=device,
        progress=not quiet,
        shard=parse_shard(shard) if shard else None,
        echo=None if quiet else typer.echo,
    )
    _summary(record, out, time.perf_counter() - STARTED)


def _settings(overlap, blend, batch, tta, precision, backend, probabilities, roi):
    """Checked inference settings (postprocessing as by default)."""
    from kidneyseg.config import BLENDS
    from kidneyseg.errors import KidneysegError
    from kidneyseg.predict.roi import ROIS
    from kidneyseg.predict.settings import EVERY_AXIS, PredictSettings
    from kidneyseg.predict.sliding_window import PRECISIONS

    if blend is not None and blend not in BLENDS:
        raise KidneysegError(f"--blend must be one of {BLENDS}, got {blend!r}")
    if precision not in PRECISIONS:
        raise KidneysegError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
    if overlap is not None and not 0.0 <= overlap < 1.0:
        raise KidneysegError(f"--overlap must be in [0, 1), got {overlap}")
    if batch is not None and batch < 1:
        raise KidneysegError(f"--batch must be at least 1, got {batch}")
    if roi is not None and roi not in ROIS:
        raise KidneysegError(f"--roi must be one of {ROIS}, got {roi!r}")
    return PredictSettings(
        overlap=overlap,
        blend=blend,
        sw_batch_size=batch,
        mirror_axes=EVERY_AXIS if tta else None,
        precision=precision,
        backend=backend,
        probabilities=probabilities,
        roi=roi,
    )


def _summary(record, out: str, seconds: float) -> None:
    done = [c for c in record.cases if c["status"] == "done"]
    skipped = [c for c in record.cases if c["status"] == "skipped"]
    if not record.cases:
        typer.echo(f"this shard holds none of the folder's cases: nothing to predict in {seconds:.1f} s")
        return
    typer.echo(
        f"{len(done)} predicted, {len(skipped)} already done, {len(record.failures)} failed "
        f"in {seconds:.1f} s ({seconds - record.seconds + record.startup_seconds:.1f} s start-up: "
        f"libraries and models); outputs in {out}"
    )
    if record.failures:
        typer.echo(f"{len(record.failures)} case(s) failed:", err=True)
        for case in record.failures:
            typer.echo(f"  {case['case_id']}: {case['reason']}", err=True)
        raise typer.Exit(1)
