"""End-to-end prediction speed and peak memory: `kidneyseg predict` against the MONAI pipeline.

On a KiTS-size phantom (512 × 512 × 202 slices, 0.82 × 0.82 × 1.5 mm, KiTS axis order) both
pipelines go read → preprocess → sliding windows → back to the CT grid → write, with the same
network weights (SCA-UNet 3D, Gohil & Lad, KiTS21: roi 128 × 128 × 64, 4 windows per pass,
Gaussian blending) and the same overlap:

- reference: the SCA-UNet authors' MONAI chain (LoadImaged, EnsureChannelFirstd, Spacingd to
  2 × 1.62 × 1.62 mm, Orientationd RAS, ScaleIntensityRanged [-80, 305] → [0, 1],
  CropForegroundd), `sliding_window_inference`, then `Invertd` on the logits, argmax, and a
  NIfTI write with the CT's affine;
- ours: `kidneyseg.predict.run_prediction` on the same file, the network run by PyTorch
  (`ours-torch`) or compiled by OpenVINO (`ours-openvino`, the default on CPU when installed);
  float32, or bfloat16 with a `-bf16` suffix, or (OpenVINO only) int8 with `-int8` (NNCF's
  post-training quantisation, calibrated on phantom windows); over the whole body (`--roi body`), or with a
  `-kidneys` suffix two-stage (`--roi kidneys`: the bundled model locates the kidneys, the network
  runs only around them).

Each run is a fresh process (so its peak resident memory is its own), which traces its networks
for OpenVINO afresh unless `--compile-cache` lets the later runs read them back; runs are interleaved
(reference, ours, reference, ours, ...) because the cores are shared, and medians are reported
with the ratio. Label agreement is measured against MONAI's output and, for the other backends,
against `ours-torch` (same grid, so only the backend differs). A second case, 512 × 512 × 600
slices (or `--long-slices`), measures our peak memory on a long scan.

Usage:
    python benchmarks/predict_speed.py [--repeats 3] [--reference-repeats 1] [--overlaps 0.8 0.5]
        [--checkpoint RUN] [--pipelines monai ours-torch ours-openvino ours-openvino-kidneys]
        [--long-overlap 0.8] [--long-slices 600 1000] [--compile-cache]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PIPELINES = (
    "monai",
    "ours-torch",
    "ours-openvino",
    "ours-torch-bf16",
    "ours-openvino-bf16",
    "ours-torch-kidneys",
    "ours-openvino-kidneys",
    "ours-openvino-int8-kidneys",
)
KITS_SEED = 1
KITS_SLICES = 202  # 512 x 512 x 202 slices, 0.82 x 0.82 x 1.5 mm, whatever the generator draws


def make_cases(folder: Path, long_slices: list[int]) -> dict[str, Path]:
    """The KiTS-size phantom and long versions of it (`long<N>`: each slice repeated, 1 mm apart,
    cut at N slices)."""
    from kidneyseg.data.phantom.generate import generate_case_on
    from kidneyseg.data.phantom.options import SizePreset
    from kidneyseg.io.volume import Volume, read_volume, write_volume

    kits = folder / "kits.nii.gz"
    grid = SizePreset(512, (0.82, 0.82), (), (1.5 * KITS_SLICES,) * 2, slices=KITS_SLICES)
    ct = read_volume(kits) if kits.is_file() else generate_case_on(grid, KITS_SEED, size_name="full").ct
    if not kits.is_file():
        write_volume(kits, ct)
    cases = {"kits": kits}
    slice_axis = int(np.argmax(ct.spacing))
    for n in long_slices:
        path = cases[f"long{n}"] = folder / f"long{n}.nii.gz"
        if path.is_file():
            continue
        repeats = -(-n // ct.shape[slice_axis])
        long_array = np.repeat(ct.array, repeats, axis=slice_axis)[
            (slice(None),) * slice_axis + (slice(0, n),)
        ]
        affine = ct.affine.copy()
        affine[:3, slice_axis] *= 1.0 / ct.spacing[slice_axis]
        write_volume(path, Volume(np.ascontiguousarray(long_array), affine))
    return cases


def make_checkpoint(folder: Path, seed: int) -> Path:
    """The paper's SCA-UNet 3D with randomly initialised weights (fixed seed), paper config."""
    import torch

    from kidneyseg.checkpoint import build_model_from_config, save_checkpoint
    from kidneyseg.config import RunConfig

    torch.manual_seed(seed)
    config = RunConfig()
    net = build_model_from_config(config)
    return save_checkpoint(folder / "sca_unet_3d_random.pt", model_state=net.state_dict(), config=config)


def run_reference(case: Path, checkpoint: Path, overlap: float, out: Path) -> dict[str, float]:
    """The MONAI pipeline of the SCA-UNet authors' code; returns seconds per stage and in total."""
    import nibabel as nib
    import torch
    from monai.inferers import sliding_window_inference
    from monai.transforms import (
        AsDiscreted,
        Compose,
        CropForegroundd,
        EnsureChannelFirstd,
        Invertd,
        LoadImaged,
        Orientationd,
        ScaleIntensityRanged,
        Spacingd,
    )

    from kidneyseg.checkpoint import build_model_from_checkpoint, load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    net = build_model_from_checkpoint(ckpt)
    cfg, inference = ckpt.config.preprocess, ckpt.config.inference
    start = time.perf_counter()
    header = nib.load(str(case))
    # The authors resample before reorienting, so pixdim is given in the file's axis order.
    codes = nib.orientations.aff2axcodes(header.affine)
    pixdim = [cfg.spacing["RLAPSI".index(c) // 2] for c in codes]
    pre = Compose(
        [
            LoadImaged("image"),
            EnsureChannelFirstd("image"),
            Spacingd("image", pixdim=pixdim, mode="bilinear"),
            Orientationd("image", axcodes="RAS"),
            ScaleIntensityRanged(
                "image", a_min=cfg.hu_window[0], a_max=cfg.hu_window[1], b_min=0.0, b_max=1.0, clip=True
            ),
            CropForegroundd("image", source_key="image"),
        ]
    )
    data = pre({"image": str(case)})
    stages = {"preprocess": time.perf_counter() - start}
    with torch.inference_mode():
        data["pred"] = sliding_window_inference(
            data["image"][None],
            inference.roi_size,
            inference.sw_batch_size,
            net,
            overlap=overlap,
            mode="gaussian",
        )[0]
        stages["windows"] = time.perf_counter() - start - sum(stages.values())
        post = Compose(
            [
                Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True),
                AsDiscreted("pred", argmax=True),
            ]
        )
        data = post(data)
    labels = data["pred"][0].numpy().astype(np.uint8)
    stages["inverse"] = time.perf_counter() - start - sum(stages.values())
    nib.save(nib.Nifti1Image(labels, header.affine), str(out))
    stages["write"] = time.perf_counter() - start - sum(stages.values())
    return {"seconds": time.perf_counter() - start, "stages": stages}


def run_ours(
    case: Path, checkpoint: Path, overlap: float, out: Path, backend: str, precision: str, roi: str
) -> dict[str, float]:
    """`kidneyseg predict` on one file; returns seconds per stage (from its run record) and in total."""
    from kidneyseg.predict import OutputOptions, PredictSettings, run_prediction

    run_dir = out.parent / f"{out.name.removesuffix('.nii.gz')}_run"
    start = time.perf_counter()
    record = run_prediction(
        case,
        run_dir,
        [checkpoint],
        PredictSettings(overlap=overlap, precision=precision, backend=backend, roi=roi),
        OutputOptions(overwrite=True),
        progress=False,
    )
    seconds = time.perf_counter() - start
    (run_dir / f"{case.name.split('.')[0]}.nii.gz").rename(out)
    entry = record.cases[0]
    stages = {"compile": record.environment["backend_compile_seconds"], **entry["seconds"]}
    roi_record = entry["roi"] and {k: v for k, v in entry["roi"].items() if k != "locator"}
    return {
        "seconds": seconds,
        "stages": stages,
        "compile_cache": record.environment["compile_cache"],
        "windows": entry["windows"],
        "roi": roi_record,
    }


def child(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if args.pipeline == "monai":
        result = run_reference(Path(args.case), Path(args.checkpoint), args.overlap, out)
    else:
        parts = args.pipeline.split("-")
        precision = "bfloat16" if "bf16" in parts else "int8" if "int8" in parts else "float32"
        roi = "kidneys" if "kidneys" in parts else "body"
        result = run_ours(Path(args.case), Path(args.checkpoint), args.overlap, out, parts[1], precision, roi)
    result["peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


def spawn(pipeline: str, case: Path, checkpoint: Path, overlap: float, out: Path) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        pipeline,
        "--case",
        str(case),
        "--checkpoint",
        str(checkpoint),
    ]
    command += ["--overlap", str(overlap), "--out", str(out)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def agreement(a: Path, b: Path) -> dict:
    import nibabel as nib

    x, y = np.asarray(nib.load(a).dataobj), np.asarray(nib.load(b).dataobj)
    dice = {}
    for value in range(1, 4):
        both, total = np.sum((x == value) & (y == value)), np.sum(x == value) + np.sum(y == value)
        dice[value] = float(2 * both / total) if total else None
    return {
        "identical_fraction": float(np.mean(x == y)),
        "foreground_voxels": [int(np.sum(x > 0)), int(np.sum(y > 0))],
        "dice_by_class": dice,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--reference-repeats", type=int, help="Runs of the whole-volume pipelines (default: --repeats)."
    )
    parser.add_argument("--overlaps", type=float, nargs="+", default=[0.8, 0.5])
    parser.add_argument(
        "--pipelines",
        nargs="+",
        default=["monai", "ours-torch", "ours-openvino"],
        choices=PIPELINES,
    )
    parser.add_argument("--checkpoint", help="Trained run or checkpoint (default: random weights, seed 0).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-long", action="store_true", help="Skip the long memory cases.")
    parser.add_argument("--long-only", action="store_true", help="Only the long memory cases.")
    parser.add_argument("--long-slices", type=int, nargs="+", default=[600])
    parser.add_argument("--long-overlap", type=float, default=0.8)
    parser.add_argument("--long-pipeline", default="ours-openvino", choices=PIPELINES[1:])
    parser.add_argument("--workdir", help="Keep cases and outputs here (default: a temporary folder).")
    parser.add_argument(
        "--compile-cache",
        action="store_true",
        help="Our runs keep the converted networks in WORKDIR/cache, emptied first: the first run "
        "of each network traces it (cold), the later ones read it back (warm). Default: every run traces.",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--overlap", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.pipeline = args.child
        return child(args)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        cases = make_cases(work, [] if args.skip_long else args.long_slices)
        from kidneyseg.predict.compile_cache import CACHE_ENV

        cache = work / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        os.environ[CACHE_ENV] = str(cache) if args.compile_cache else ""  # the children inherit it
        if args.checkpoint:
            from kidneyseg.checkpoint import resolve_checkpoint

            checkpoint, weights = resolve_checkpoint(args.checkpoint), f"trained: {args.checkpoint}"
        else:
            checkpoint, weights = (
                make_checkpoint(work, args.seed),
                f"random initialisation, torch seed {args.seed}",
            )
        import torch

        results: dict = {"weights": weights, "torch_threads": torch.get_num_threads(), "overlaps": {}}
        for overlap in [] if args.long_only else args.overlaps:
            runs: dict[str, list[dict]] = {p: [] for p in args.pipelines}
            for repeat in range(args.repeats):
                for pipeline in args.pipelines:
                    reference = not pipeline.endswith("-kidneys")
                    if reference and repeat >= (args.reference_repeats or args.repeats):
                        continue
                    out = work / f"{pipeline}_{overlap}.nii.gz"
                    runs[pipeline].append(spawn(pipeline, cases["kits"], checkpoint, overlap, out))
                    print(f"overlap {overlap} run {repeat + 1} {pipeline}: {runs[pipeline][-1]}", flush=True)
            summary = {
                p: {
                    "median_seconds": statistics.median(r["seconds"] for r in rs),
                    "seconds": [round(r["seconds"], 2) for r in rs],
                    "median_peak_gb": statistics.median(r["peak_bytes"] for r in rs) / 2**30,
                }
                for p, rs in runs.items()
            }
            for p in args.pipelines:
                for reference in ("monai", "ours-torch", "ours-openvino"):
                    if p in (reference, "monai") or reference not in summary:
                        continue
                    summary[p][f"speedup_vs_{reference}"] = (
                        summary[reference]["median_seconds"] / summary[p]["median_seconds"]
                    )
                    summary[p][f"agreement_vs_{reference}"] = agreement(
                        work / f"{reference}_{overlap}.nii.gz", work / f"{p}_{overlap}.nii.gz"
                    )
            results["overlaps"][str(overlap)] = summary
            print(json.dumps(summary, indent=2), flush=True)
        for n in args.long_slices if args.long_only or not args.skip_long else []:
            long = spawn(
                args.long_pipeline,
                cases[f"long{n}"],
                checkpoint,
                args.long_overlap,
                work / f"ours_long{n}.nii.gz",
            )
            results[f"long{n}"] = {
                "shape": [512, 512, n],
                "pipeline": args.long_pipeline,
                "overlap": args.long_overlap,
                **long,
                "peak_gb": long["peak_bytes"] / 2**30,
            }
            print(json.dumps(results[f"long{n}"]), flush=True)
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
