"""What did a model call each reference lesion, and where did it label lesions that are not there?

Reads the label maps `kidneyseg predict` wrote for a set of labelled cases (KiTS layout). Every
reference lesion, a 26-connected component of tumor or of cyst of at least `MIN_ML`, is scored
by the share of its voxels predicted background, kidney, tumor and cyst (each lesion weighs the
same; "found" when its own class holds more than half). Predicted tumor or cyst components that
touch no reference lesion voxel are false lesions; their volume is split by the size of the
case's larger kidney (the more label-1 volume of the reference's two largest components;
`--kidney-ml`), which is where docs/pretrained.md ("Real-size kidneys") found the false tumor.
Last, the tumor labelled inside the kidneys that hold no reference lesion, by their volume and by
the phantom's contrast phase (`phantom.json`), where docs/pretrained/tried.md ("Tumors painted as
kidney") placed it.

Usage (from the repository root):
    kidneyseg predict -i PHANTOMS -o PRED
    python benchmarks/lesion_calls.py --pred PRED --phantoms PHANTOMS
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from kidney_sizes import kidneys, read_labels

MIN_ML = 0.1
"""Smaller reference components (KiTS19 shapes hold one-voxel fragments) are not lesions here."""
SMALL_MM = 15.0
VOLUME_BINS_ML = (150.0, 200.0, 250.0, 300.0)
CALLED = ("background", "kidney", "tumor", "cyst")
LESIONS = {2: "tumor", 3: "cyst"}


def score_case(ref: np.ndarray, pred: np.ndarray, voxel_ml: float) -> tuple[list[dict], dict[str, float]]:
    """The case's reference lesions (class, diameter mm, shares called) and false lesion mL."""
    connect = np.ones((3, 3, 3), dtype=bool)
    lesions = []
    for value, name in LESIONS.items():
        components, _ = ndimage.label(ref == value, structure=connect)
        for number, box in enumerate(ndimage.find_objects(components), start=1):
            voxels = pred[box][components[box] == number]
            if voxels.size * voxel_ml >= MIN_ML:
                shares = np.bincount(voxels, minlength=len(CALLED))[: len(CALLED)] / voxels.size
                called = dict(zip(CALLED, shares, strict=True))
                diameter = (6 * voxels.size * voxel_ml * 1000 / np.pi) ** (1 / 3)
                lesions.append({"class": name, "diameter_mm": diameter, **called})
    spurious = {}
    for value, name in LESIONS.items():
        components, count = ndimage.label(pred == value, structure=connect)
        touching = np.unique(components[(ref >= 2) & (components > 0)])
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        sizes[0], sizes[touching] = 0, 0
        spurious[name] = float(sizes.sum() * voxel_ml)
    return lesions, spurious


def free_kidneys(
    ref: np.ndarray,
    pred: np.ndarray,
    voxel_ml: float,
    found_kidneys: list[tuple[tuple[slice, ...], np.ndarray]],
) -> list[tuple[float, float]]:
    """(volume mL, tumor labelled in it mL) of each of the case's kidneys (`kidneys(ref)`) holding
    no reference lesion."""
    found = []
    for box, mask in found_kidneys:
        if not (ref[box][mask] >= 2).any():
            found.append((float(mask.sum() * voxel_ml), float((pred[box][mask] == 2).sum() * voxel_ml)))
    return found


def print_free(rows: list[tuple[float, float, str]]) -> None:
    """False tumor in lesion-free kidneys (volume mL, tumor mL, phase) by volume bin and phase."""
    edges = (0.0, *VOLUME_BINS_ML, np.inf)
    groups = {
        f"{lo:g}–{hi:g} mL" if hi < np.inf else f"over {lo:g} mL": [r for r in rows if lo <= r[0] < hi]
        for lo, hi in itertools.pairwise(edges)
    }
    for phase in sorted({r[2] for r in rows}):
        groups[phase] = [r for r in rows if r[2] == phase]
    print("\n| kidneys holding no reference lesion | kidneys | tumor labelled in one (mL) | over 5 mL |")
    print("|---|---|---|---|")
    for name, group in groups.items():
        if group:
            tumor = np.array([r[1] for r in group])
            print(f"| {name} | {len(group)} | {tumor.mean():.1f} | {np.mean(tumor > 5):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pred", type=Path, required=True, help="kidneyseg predict's output folder")
    parser.add_argument("--phantoms", type=Path, required=True, help="the labelled cases predicted")
    parser.add_argument("--kidney-ml", type=float, default=230.0, help="split false lesions here (mL)")
    args = parser.parse_args()
    lesions, groups, free = [], ([], []), []
    for case in sorted(p for p in args.phantoms.iterdir() if (p / "segmentation.nii.gz").exists()):
        ref, spacing = read_labels(case / "segmentation.nii.gz")
        pred, _ = read_labels(args.pred / f"{case.name}.nii.gz")
        if pred.shape != ref.shape:
            raise SystemExit(f"error: {case.name}.nii.gz in {args.pred}: grid {pred.shape}, not {ref.shape}")
        voxel_ml = float(np.prod(spacing)) / 1000
        found, spurious = score_case(ref, pred, voxel_ml)
        lesions += found
        found_kidneys = kidneys(ref)
        kidney_ml = max(float((ref[box][mask] == 1).sum()) * voxel_ml for box, mask in found_kidneys)
        groups[kidney_ml > args.kidney_ml].append(spurious)
        truth = case / "phantom.json"
        phase = json.loads(truth.read_text())["phase"] if truth.exists() else "phase not known"
        free += [(*kidney, phase) for kidney in free_kidneys(ref, pred, voxel_ml, found_kidneys)]
    print("| reference lesions | count | called background / kidney / tumor / cyst | found |")
    print("|---|---|---|---|")
    for name in LESIONS.values():
        for label, below in ((name, np.inf), (f"{name}, under {SMALL_MM:g} mm", SMALL_MM)):
            rows = [r for r in lesions if r["class"] == name and r["diameter_mm"] < below]
            if rows:
                shares = " / ".join(f"{np.mean([r[c] for r in rows]):.2f}" for c in CALLED)
                found = np.mean([r[name] > 0.5 for r in rows])
                print(f"| {label} | {len(rows)} | {shares} | {found:.2f} |")
    split = f"{args.kidney_ml:g} mL"
    print(f"\n| false lesions (mL a case) | larger kidney ≤ {split} | over {split} |")
    print("|---|---|---|")
    for name in LESIONS.values():
        cells = [f"{np.mean([f[name] for f in g]):.1f} ({len(g)} cases)" if g else "–" for g in groups]
        print(f"| {name} | {' | '.join(cells)} |")
    print_free(free)


if __name__ == "__main__":
    main()
