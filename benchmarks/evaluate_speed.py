"""Per-case evaluation time: ours vs DeepMind's `surface-distance` (the official KiTS evaluation's
library) on a full-size real KiTS19 mask, measured in the same run.

The prediction is the reference shifted by (1, -2, 1) voxels with three small islands added.
Timed, each as the median of `--repeats` runs:

- reference: what the official KiTS21/23 evaluation computes per case — for each of the three
  HECs, `compute_surface_distances` + `compute_surface_dice_at_tolerance` +
  `compute_dice_coefficient` on the full-size region masks (built once, outside the timing);
- ours (same metrics): `kits_dice` and `surface_dice` for the three HECs on the same masks;
- ours (everything): `case_metrics` — the above plus per-label Dice, the KiTS19 composite and
  lesion detection for tumor, cyst and masses.

Reading the NIfTI files is excluded (both pay it equally) and reported separately. Usage:

    python benchmarks/evaluate_speed.py [--case case_00000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

from kidneyseg.evaluate.metrics import case_metrics, kits_dice
from kidneyseg.evaluate.surface import surface_dice
from kidneyseg.labels import KITS_REGIONS

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kits19"


def perturbed(labels: np.ndarray) -> np.ndarray:
    pred = np.roll(labels, (1, -2, 1), axis=(0, 1, 2))
    rng = np.random.default_rng(0)
    for value in (1, 2, 2):
        centre = [int(rng.integers(10, n - 10)) for n in labels.shape]
        pred[tuple(slice(c - 3, c + 3) for c in centre)] = value
    return pred


def region_masks(labels: np.ndarray) -> list[np.ndarray]:
    masks = []
    for region in KITS_REGIONS:
        lookup = np.zeros(256, dtype=bool)
        lookup[list(region.values())] = True
        masks.append(lookup[labels])
    return masks


def reference_scores(ref_masks, pred_masks, spacing) -> list[tuple[float, float]]:
    import surface_distance as sd

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for region, a, b in zip(KITS_REGIONS, ref_masks, pred_masks, strict=True):
            distances = sd.compute_surface_distances(a, b, spacing)
            out.append(
                (
                    float(sd.compute_dice_coefficient(a, b)),
                    float(sd.compute_surface_dice_at_tolerance(distances, region.tolerance_mm)),
                )
            )
    return out


def ours_scores(ref_masks, pred_masks, spacing) -> list[tuple[float, float]]:
    return [
        (kits_dice(a, b), surface_dice(a, b, spacing, r.tolerance_mm))
        for r, a, b in zip(KITS_REGIONS, ref_masks, pred_masks, strict=True)
    ]


def timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="case_00000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()

    path = args.data / args.case / "segmentation.nii.gz"
    read_s, _, image = timed(lambda: nib.load(str(path)), 1)
    start = time.perf_counter()
    ref = np.ascontiguousarray(image.dataobj, dtype=np.uint8)
    read_s += time.perf_counter() - start
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    pred = perturbed(ref)
    print(f"{args.case}: shape {ref.shape}, spacing {spacing} mm; reading the mask took {read_s:.2f} s")

    ref_masks, pred_masks = region_masks(ref), region_masks(pred)
    ref_s, ref_all, ref_values = timed(lambda: reference_scores(ref_masks, pred_masks, spacing), args.repeats)
    hec_s, hec_all, hec_values = timed(lambda: ours_scores(ref_masks, pred_masks, spacing), args.repeats)
    all_s, all_all, _ = timed(lambda: case_metrics(pred, ref, spacing), args.repeats)

    for region, (rd, rs), (od, os_) in zip(KITS_REGIONS, ref_values, hec_values, strict=True):
        print(f"  {region.name:18s} Dice {od:.6f} (ref {rd:.6f})  Surface Dice {os_:.6f} (ref {rs:.6f})")
        assert abs(rd - od) < 1e-6 and abs(rs - os_) < 1e-6
    print(
        f"reference (surface-distance, 3 HECs): median {ref_s:.2f} s  runs {[round(t, 2) for t in ref_all]}"
    )
    print(
        f"ours (same metrics):                  median {hec_s:.2f} s  runs {[round(t, 2) for t in hec_all]}"
    )
    print(
        f"ours (all metrics incl. lesions):     median {all_s:.2f} s  runs {[round(t, 2) for t in all_all]}"
    )
    print(f"speed-up, same metrics: {ref_s / hec_s:.1f}x; all metrics vs reference: {ref_s / all_s:.1f}x")


if __name__ == "__main__":
    main()
