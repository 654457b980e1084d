"""Real KiTS19 masks through preprocess → inverse: how much of the anatomy comes back.

Each reference mask is preprocessed (SCA-UNet grid, 1.62 × 1.62 × 2 mm) as the labels of a
CT-like volume built around it (as in tests/test_preprocess_kits19.py), then brought back with
`invert_labels` in `nearest` mode and in its default `linear` mode (the arg-max of the
trilinearly interpolated one-hot labels, as `invert_probabilities` would give). Prints the
Dice of kidney (label 1), tumor (2) and kidney + tumor against the original per case, and the
minimum and median over the cases; the shapes are checked to be the original's.

Usage: python benchmarks/preprocess_roundtrip.py [--kits19 ../shared/data/kits19] [--step 7]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from kidneyseg.config import PreprocessConfig
from kidneyseg.io.volume import Volume, read_volume
from kidneyseg.labels import KITS19
from kidneyseg.preprocess import invert_labels, preprocess

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "kits19"


def ct_around(labels: Volume) -> Volume:
    """-1000 HU air, a 40 HU elliptic body in the slice plane, 150 HU kidney, 90 HU tumor."""
    array = labels.array
    slice_axis = int(np.argmax(labels.spacing))
    grids = np.ogrid[tuple(slice(0, n) for n in array.shape)]
    r2 = sum(
        ((grids[a] - array.shape[a] / 2) / (0.47 * array.shape[a])) ** 2 for a in range(3) if a != slice_axis
    )
    ct = np.where(r2 < 1, np.int16(40), np.int16(-1000))
    ct = np.where(array == 1, np.int16(150), np.where(array == 2, np.int16(90), ct))
    return Volume(ct.astype(np.int16), labels.affine, labels.source)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float("nan") if total == 0 else 2.0 * np.logical_and(a, b).sum() / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kits19", type=Path, default=DEFAULT)
    parser.add_argument("--step", type=int, default=7, help="Every STEP-th case.")
    args = parser.parse_args()
    cases = sorted(p for p in args.kits19.glob("case_*") if (p / "segmentation.nii.gz").exists())[
        :: args.step
    ]
    rows = []
    print("Dice of kidney (k), tumor (t), kidney+tumor (kt) after invert_labels: nearest (n), linear (l)")
    names = ("k n", "t n", "kt n", "k l", "t l", "kt l")
    print(f"{'case':12s} {'slice mm':>8s}  " + " ".join(f"{c:>6s}" for c in names))
    for folder in cases:
        labels = read_volume(folder / "segmentation.nii.gz")
        original = np.asarray(labels.array)
        pre = preprocess(ct_around(labels), PreprocessConfig(), labels, KITS19)
        nearest = invert_labels(pre.labels, pre.meta, mode="nearest")
        interpolated = invert_labels(pre.labels, pre.meta)
        row = []
        for back in (nearest, interpolated):
            assert back.shape == labels.shape
            row += [
                dice(original == 1, back == 1),
                dice(original == 2, back == 2),
                dice(original > 0, back > 0),
            ]
        rows.append(row)
        cells = " ".join(f"{v:6.4f}" for v in row)
        print(f"{folder.name:12s} {labels.spacing[0]:8.2f}  {cells}")  # KiTS19: slices on axis 0
    columns = list(zip(*rows, strict=True))
    for name, fn in (("min", min), ("median", statistics.median)):
        values = [fn(v for v in col if v == v) for col in columns]
        print(f"{name:12s} {'':8s}  " + " ".join(f"{v:6.4f}" for v in values))


if __name__ == "__main__":
    main()
