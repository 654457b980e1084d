"""How large are the kidneys of a set of label maps? Tumor-free kidneys only, KiTS layout.

For every label map (`segmentation.nii.gz` under each folder given, or the files themselves)
the two largest 26-connected foreground components are taken as the kidneys; a kidney holding
1 mL of tumor or more is left out. Each kept kidney's label-1 volume (mL) and its extents along
its principal axes (length, width, thickness, cm) are gathered, and their 10th / 50th / 90th
percentiles printed per set. The procedural phantoms' kidney sizes
(`kidneyseg/data/phantom/kidney.py`) were set from KiTS19's training cases this way:

    python benchmarks/kidney_sizes.py --set kits19-train=runs/kits19-train \
        --set procedural=runs/data/big/proc/dataset
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

TUMOR_FREE_ML = 1.0


def label_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(root.glob("*/segmentation.nii.gz")) or sorted(root.glob("*.nii*"))


def read_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A label map (uint8) and its voxel spacing (mm)."""
    image = nib.load(path)
    return np.asarray(image.dataobj).astype(np.uint8), np.asarray(image.header.get_zooms()[:3], dtype=float)


def kidneys(labels: np.ndarray) -> list[tuple[tuple[slice, ...], np.ndarray]]:
    """The two largest 26-connected foreground components, the largest first: each one's
    bounding box and its mask within the box."""
    components, count = ndimage.label(labels > 0, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
    boxes = ndimage.find_objects(components)
    return [(boxes[n - 1], components[boxes[n - 1]] == n) for n in np.argsort(sizes)[::-1][:2] + 1]


def kidney_sizes(path: Path) -> list[tuple[float, float, float, float]]:
    """(volume mL, length, width, thickness cm) of each tumor-free kidney in one label map."""
    labels, spacing = read_labels(path)
    voxel_ml = float(np.prod(spacing)) / 1000
    found = []
    for box, mask in kidneys(labels):
        kidney = labels[box][mask]
        if (kidney == 2).sum() * voxel_ml >= TUMOR_FREE_ML:
            continue
        points = np.argwhere(mask) * spacing
        points -= points.mean(axis=0)
        _, axes = np.linalg.eigh(np.cov(points.T))
        along = points @ axes[:, ::-1]
        extents = (along.max(axis=0) - along.min(axis=0)) / 10
        found.append((float((kidney == 1).sum() * voxel_ml), *map(float, extents)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", required=True, help="NAME=FOLDER (repeatable)")
    args = parser.parse_args()
    print(f"{'set':>14} {'kidneys':>8}   10th / 50th / 90th percentile")
    for spec in args.set:
        name, _, folder = spec.partition("=")
        sizes = np.array([size for path in label_files(Path(folder)) for size in kidney_sizes(path)])
        for column, what in enumerate(("volume mL", "length cm", "width cm", "thickness cm")):
            low, mid, high = np.percentile(sizes[:, column], [10, 50, 90])
            head = f"{name:>14} {len(sizes):>8}" if column == 0 else " " * 23
            print(f"{head}   {what:>12}: {low:6.1f} / {mid:6.1f} / {high:6.1f}")


if __name__ == "__main__":
    main()
