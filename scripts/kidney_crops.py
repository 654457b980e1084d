"""Cut every case of a labelled dataset down to the box around its kidneys, to train a network
that `kidneyseg predict --roi kidneys` runs only there (the second stage of a cascade).

Per case, the box of all voxels labelled kidney, tumor or cyst, grown by `--margin-mm` on each
side and kept inside the scan, is cut from `imaging.nii.gz`, `segmentation.nii.gz` and, for
phantoms, `tissue.nii.gz` (so `data.synth_randomize` still works); the affine moves with the
cut, so every voxel keeps its place in the world. `phantom.json` is copied unchanged. A case
without any kidney label is left out and named; a case that cannot be read stops the run with
one line naming it. The margin should be at least `kidneyseg.predict.roi.MARGIN_MM` (where
stage 2's scores count) plus half a window (what the network sees beyond them). Where stage 1
finds no kidney, `--roi kidneys` runs the network over the whole body, which such a network
never saw (docs/pretrained/tried.md, "A second stage trained around the kidneys").

Run:
    python scripts/kidney_crops.py --data runs/data/water/dataset --out runs/crops/dataset --margin-mm 60
"""

from __future__ import annotations

import argparse
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np

from kidneyseg.data.cases import IMAGE_FILE, TISSUE_FILE

SEGMENTATION = "segmentation.nii.gz"
COPIED_FILES = ("phantom.json",)


def kidney_box(labels: np.ndarray, spacing: tuple[float, ...], margin_mm: float) -> tuple[slice, ...] | None:
    """The box (slices) of the voxels of `labels` above 0, grown by `margin_mm` per side and
    clipped to the array; None when no voxel is labelled."""
    found = np.nonzero(labels > 0)
    if not found[0].size:
        return None
    box = []
    for axis, size, step in zip(found, labels.shape, spacing, strict=True):
        pad = int(np.ceil(margin_mm / float(step)))
        box.append(slice(max(0, int(axis.min()) - pad), min(size, int(axis.max()) + 1 + pad)))
    return tuple(box)


def crop_case(case: Path, out: Path, margin_mm: float) -> str | None:
    """Write the cut case `out/<case name>`; returns the case's name when it holds no kidney."""
    seg = nib.load(case / SEGMENTATION)
    box = kidney_box(np.asarray(seg.dataobj), tuple(seg.header.get_zooms()[:3]), margin_mm)
    if box is None:
        return case.name
    tmp = out / f".{case.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    nib.save(seg.slicer[box], tmp / SEGMENTATION)
    for name in (IMAGE_FILE, TISSUE_FILE):
        if (case / name).exists():
            nib.save(nib.load(case / name).slicer[box], tmp / name)
    for name in COPIED_FILES:
        if (case / name).exists():
            shutil.copy2(case / name, tmp / name)
    shutil.rmtree(out / case.name, ignore_errors=True)
    tmp.rename(out / case.name)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of case_XXXXX folders")
    parser.add_argument("--out", type=Path, required=True, help="folder for the cut cases")
    parser.add_argument("--margin-mm", type=float, default=60.0, help="margin around the kidneys (mm)")
    parser.add_argument("--workers", type=int, default=2, help="cases cut at once")
    args = parser.parse_args()
    cases = sorted(
        p for p in args.data.iterdir() if p.name.startswith("case_") and (p / SEGMENTATION).exists()
    )
    if not cases:
        raise SystemExit(f"{args.data}: no case_XXXXX folder with {SEGMENTATION}")
    args.out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(args.workers) as pool:
        futures = {case: pool.submit(crop_case, case, args.out, args.margin_mm) for case in cases}
        empty = []
        for case, future in futures.items():
            try:
                if future.result() is not None:
                    empty.append(case.name)
            except Exception as exc:  # nibabel's and the file system's errors share no base class
                raise SystemExit(f"{case}: cannot be cut ({type(exc).__name__}: {exc})") from None
    print(f"{len(cases) - len(empty)} cases cut to their kidneys in {args.out}")
    if empty:
        print(f"left out (no kidney label): {', '.join(empty)}")


if __name__ == "__main__":
    main()
