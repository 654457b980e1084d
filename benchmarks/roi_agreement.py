"""Does two-stage prediction (`--roi kidneys`) give the whole-volume labels (`--roi body`)?

For each trained model and each CT, both modes predict with the default settings (post-processing
on); reported per case: the fraction of identical voxels, the Dice of kidney + masses (labels > 0)
between the two, both modes' kidney + masses Dice against the reference where there is one, the
windows and seconds of each mode, stage 1's boxes or fallback, and how far (mm, largest per-axis
distance) reference kidney + masses lies outside the margin-less stage-1 boxes: the margin the
locator needed on that case.

With `--floor`, each CT is also predicted whole (`--roi body`) with one slice removed at the end
of its third axis farther from the kidneys: how much the whole-volume labels themselves change
when the scan is one slice shorter (the window grid then shifts, and networks with instance
normalisation label a voxel a little differently from other windows). The identical voxels and
kidney + masses Dice against the full scan's labels, over the slices both hold, are the
yardstick for the two-stage agreement: what the whole-volume result keeps of itself when its
windows move.

Usage:
    python benchmarks/roi_agreement.py --model src/kidneyseg/weights/sca-unet-3d-transfer.pt \
        --model runs/exp/run-a/best.pt --data runs/exp/test-anat/dataset [--real ../shared/data/real-ct] \
        [--floor]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REAL = {
    "lowdose_abdomen_4mm": ("lowdose_abdomen_4mm.nii.gz", "lowdose_abdomen_4mm_kidneys.nii.gz"),
    "chest_ct_1.5mm": ("chest_ct_1.5mm.nii.gz", None),
    "dicom_series": ("dicom_series", None),
}


def dice(a: np.ndarray, b: np.ndarray) -> float | None:
    total = int(a.sum() + b.sum())
    return round(2 * int((a & b).sum()) / total, 5) if total else None


def reach_beyond(reference: np.ndarray, affine: np.ndarray, boxes_mm: list[dict]) -> float | None:
    """Largest per-axis distance (mm) of a reference foreground voxel outside every box."""
    points = np.argwhere(reference)
    if len(points) == 0 or not boxes_mm:
        return None
    world = points @ affine[:3, :3].T + affine[:3, 3]
    reach = np.full(len(world), np.inf)
    for box in boxes_mm:
        lo, hi = np.array(box["low"]), np.array(box["high"])
        reach = np.minimum(reach, np.maximum(np.maximum(lo - world, world - hi), 0).max(axis=1))
    return round(float(reach.max()), 1)


def both_empty_is_one(value: float | None) -> float:
    """A Dice that `dice` left undefined (both masks empty) counts as agreement."""
    return 1.0 if value is None else value


def slices(ct, keep: slice) -> tuple[slice, slice, slice]:
    """The sub-array of `ct` that keeps the slices `keep` of its third axis."""
    return (slice(0, ct.array.shape[0]), slice(0, ct.array.shape[1]), keep)


def cases(data: Path | None, real: Path | None) -> list[tuple[str, Path, Path | None]]:
    out = []
    if data is not None:
        for folder in sorted(p for p in data.iterdir() if (p / "imaging.nii.gz").is_file()):
            out.append((folder.name, folder / "imaging.nii.gz", folder / "segmentation.nii.gz"))
    if real is not None:
        for name, (image, labels) in REAL.items():
            out.append((name, real / image, real / labels if labels else None))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="Trained checkpoint (repeat).")
    parser.add_argument("--data", type=Path, help="Folder of phantom cases (KiTS layout).")
    parser.add_argument("--real", type=Path, help="../shared/data/real-ct")
    parser.add_argument("--floor", action="store_true", help="Also the whole volume one slice shorter.")
    args = parser.parse_args()

    from kidneyseg.io.volume import Volume, read_volume
    from kidneyseg.predict import Predictor, PredictSettings
    from kidneyseg.report.geometry import crop_affine

    results = []
    for model in args.model:
        predictors = {roi: Predictor([model], PredictSettings(roi=roi)) for roi in ("body", "kidneys")}
        for name, image, labels in cases(args.data, args.real):
            ct = read_volume(image)
            row: dict = {"model": model, "case": name}
            out = {}
            for roi, predictor in predictors.items():
                start = time.perf_counter()
                prediction = predictor.predict(ct)
                row[f"{roi}_seconds"] = round(time.perf_counter() - start, 2)
                row[f"{roi}_windows"] = prediction.windows["total"]
                out[roi] = prediction.labels.array
                if prediction.roi is not None:
                    row["stage1_windows"] = prediction.roi["locator_windows"]["total"]
                    row["boxes"] = len(prediction.roi["boxes_mm"])
                    row["fallback"] = prediction.roi["fallback"]
                    boxes = prediction.roi["boxes_mm"]
            row["identical"] = round(float(np.mean(out["body"] == out["kidneys"])), 6)
            row["dice_kidneys_vs_body"] = dice(out["body"] > 0, out["kidneys"] > 0)
            if args.floor:
                found = np.argwhere(out["body"] > 0)
                near_start = len(found) and found[:, 2].mean() < ct.array.shape[2] / 2
                keep = slice(0, -1) if near_start else slice(1, None)
                shorter = Volume(ct.array[..., keep], crop_affine(ct.affine, slices(ct, keep)), ct.source)
                labels_shorter = predictors["body"].predict(shorter).labels.array
                common = out["body"][..., keep]
                row["identical_body_vs_shorter"] = round(float(np.mean(common == labels_shorter)), 6)
                row["dice_body_vs_shorter"] = dice(common > 0, labels_shorter > 0)
            if labels is not None:
                reference = read_volume(labels).array > 0
                for roi in ("body", "kidneys"):
                    row[f"dice_{roi}_vs_reference"] = dice(out[roi] > 0, reference)
                row["reference_beyond_boxes_mm"] = reach_beyond(reference, ct.affine, boxes)
            results.append(row)
            print(json.dumps(row), flush=True)
    for model in args.model:
        rows = [r for r in results if r["model"] == model]
        summary = {
            "model": model,
            "cases": len(rows),
            "min_identical": min(r["identical"] for r in rows),
            "min_dice_kidneys_vs_body": min(both_empty_is_one(r["dice_kidneys_vs_body"]) for r in rows),
            "windows_body": sum(r["body_windows"] for r in rows),
            "windows_kidneys": sum(r["kidneys_windows"] for r in rows),
        }
        if args.floor:
            summary["min_identical_body_vs_shorter"] = min(r["identical_body_vs_shorter"] for r in rows)
            summary["min_dice_body_vs_shorter"] = min(
                both_empty_is_one(r["dice_body_vs_shorter"]) for r in rows
            )
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
