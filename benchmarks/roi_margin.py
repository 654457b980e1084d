"""How far renal masses reach beyond a coarse box around the kidney: the margin two-stage
prediction (`--roi kidneys`) needs so that it never cuts a kidney or an exophytic mass.

On every KiTS19 reference segmentation (kidney = 1, tumor = 2), the labels are taken on a coarse
grid (every n-th voxel, n = round(3 mm / spacing): the 3 mm grid of the stage-1 locator), the
kidney label alone is split into 26-connected components of at least `--min-ml`, and each gets its
box. The worst case for the locator is to see the kidney but none of the mass: the distance
reported per case is, over all tumor voxels, how far (in mm, the largest per-axis distance outside
the box, 0 inside) the voxel lies from its nearest kidney box. A locator that finds kidney and
masses together (as the bundled model labels both) needs less; this is the bound.

Usage:
    python benchmarks/roi_margin.py --kits19 ../shared/data/kits19 [--cases 0-209]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def case_distance(path: Path, grid_mm: float, min_ml: float) -> dict:
    """Tumor reach beyond the kidney boxes of one KiTS19 segmentation (mm; None: no tumor)."""
    import nibabel as nib
    from scipy import ndimage

    image = nib.load(str(path))
    spacing = np.asarray(image.header.get_zooms()[:3], dtype=float)
    step = np.maximum(np.round(grid_mm / spacing).astype(int), 1)
    labels = np.asarray(image.dataobj)[:: step[0], :: step[1], :: step[2]]
    coarse = spacing * step
    kidney, count = ndimage.label(labels == 1, structure=np.ones((3, 3, 3), bool))
    voxel_ml = float(np.prod(coarse)) / 1000.0
    sizes = np.bincount(kidney.ravel(), minlength=count + 1) * voxel_ml
    boxes = [
        (np.array([s.start for s in box]), np.array([s.stop - 1 for s in box]))
        for i, box in enumerate(ndimage.find_objects(kidney), start=1)
        if sizes[i] >= min_ml
    ]
    tumor = np.argwhere(labels == 2)
    if len(tumor) == 0 or not boxes:
        return {"case": path.parent.name, "tumor_beyond_kidney_box_mm": None, "kidney_boxes": len(boxes)}
    reach = np.full(len(tumor), np.inf)
    for lo, hi in boxes:
        outside = np.maximum(np.maximum(lo - tumor, tumor - hi), 0) * coarse
        reach = np.minimum(reach, outside.max(axis=1))
    return {
        "case": path.parent.name,
        "tumor_beyond_kidney_box_mm": round(float(reach.max()), 1),
        "kidney_boxes": len(boxes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kits19", required=True, type=Path, help="Folder of KiTS19 case_XXXXX folders.")
    parser.add_argument("--cases", default="0-209", help="Range of case numbers, e.g. 0-209.")
    parser.add_argument("--grid-mm", type=float, default=3.0, help="Coarse grid of the locator.")
    parser.add_argument("--min-ml", type=float, default=1.0, help="Smallest kidney component kept.")
    args = parser.parse_args()
    first, last = (int(x) for x in args.cases.split("-"))
    rows = []
    for number in range(first, last + 1):
        path = args.kits19 / f"case_{number:05d}" / "segmentation.nii.gz"
        if path.is_file():
            rows.append(case_distance(path, args.grid_mm, args.min_ml))
            print(json.dumps(rows[-1]), flush=True)
    reaches = [r["tumor_beyond_kidney_box_mm"] for r in rows]
    reach = np.array([r for r in reaches if r is not None])
    summary = {
        "cases": len(rows),
        "with_tumor": len(reach),
        "inside_box": int(np.sum(reach == 0)),
        "percentiles_mm": {p: round(float(np.percentile(reach, p)), 1) for p in (50, 90, 95, 99, 100)},
        "largest": sorted(
            ((r["tumor_beyond_kidney_box_mm"], r["case"]) for r in rows if r["tumor_beyond_kidney_box_mm"]),
            reverse=True,
        )[:5],
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
