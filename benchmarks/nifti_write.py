"""Writing a KiTS-size label map as NIfTI: our tiled Fortran-order copy against nibabel's own path.

A predicted label map is a C-ordered uint8 array; NIfTI stores voxels in Fortran order. Three ways
to write it as `.nii.gz`, timed in the same process, interleaved, medians of `--repeats`:

- `nibabel`: `nib.save` of the C-ordered array (nibabel gathers each output slice across it);
- `asfortranarray`: `np.asfortranarray` first, then `nib.save`;
- `ours`: `kidneyseg.predict.label_files.write_label_image` (`kidneyseg.io.volume.fortran_ordered`
  copies tile by tile, then `nib.save`).

The labels mimic a prediction: background with two kidney-sized blocks and 1 % scattered voxels
of the lesion classes. All three files must hold the same voxels (checked).

Usage:
    python benchmarks/nifti_write.py [--shape 383 512 512] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def label_map_array(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    n0, n1, n2 = shape
    labels[n0 // 4 : n0 // 2, n1 // 3 : n1 // 2, n2 // 5 : n2 // 3] = 1
    labels[n0 // 4 : n0 // 2, n1 // 3 : n1 // 2, 2 * n2 // 3 : 4 * n2 // 5] = 1
    scattered = rng.random(shape, dtype=np.float32) < 0.01
    labels[scattered] = rng.integers(2, 4, int(scattered.sum()), dtype=np.uint8)
    return labels


def main() -> None:
    import nibabel as nib

    from kidneyseg.io.volume import Volume
    from kidneyseg.labels import KITS23
    from kidneyseg.predict.label_files import write_label_image

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[383, 512, 512])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    labels = label_map_array(tuple(args.shape))
    like = Volume(labels, np.diag([0.8, 0.8, 1.5, 1.0]))
    ways = {
        "nibabel": lambda path: nib.save(nib.Nifti1Image(labels, like.affine), str(path)),
        "asfortranarray": lambda path: nib.save(
            nib.Nifti1Image(np.asfortranarray(labels), like.affine), str(path)
        ),
        "ours": lambda path: write_label_image(path, labels, like, KITS23),
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, write in ways.items():
                start = time.perf_counter()
                write(Path(tmp) / f"{name}.nii.gz")
                seconds[name].append(time.perf_counter() - start)
        for name in ways:
            written = np.asarray(nib.load(Path(tmp) / f"{name}.nii.gz").dataobj)
            if not np.array_equal(written, labels):
                raise SystemExit(f"{name}: the written voxels differ from the labels")
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    summary = {
        "shape": args.shape,
        "seconds": {name: [round(s, 3) for s in values] for name, values in seconds.items()},
        "median_seconds": {name: round(m, 3) for name, m in medians.items()},
        "nibabel_over_ours": round(medians["nibabel"] / medians["ours"], 2),
        "asfortranarray_over_ours": round(medians["asfortranarray"] / medians["ours"], 2),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
