"""Phantom generation time per case size, against a yardstick measured in the same run.

For each size, the median over `--repeats` seeds of `generate_case` (everything but writing), the
time to write the case as gzip NIfTI (`write_volume` + `write_labels`), and, as the same-run
reference, one `scipy.ndimage.gaussian_filter` (sigma 1 voxel) over a float32 array of the case's
shape: the ratio says how many such filter passes a phantom costs, which carries over between
machines better than seconds do. `kits200` is a KiTS-size grid of exactly 512×512×200 voxels
(0.8 × 0.8 × 1.5 mm); `full` draws its slice count like the `--size full` option. Peak Python-side
memory (tracemalloc, which sees numpy's buffers) is measured on one `kits200` case. Usage:

    python benchmarks/phantom_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from kidneyseg.data.phantom import SIZES, SizePreset, case_seeds, generate_case_on
from kidneyseg.io.volume import write_labels, write_volume

KITS200 = SizePreset(512, (0.8, 0.8), (), (300, 300), slices=200)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def bench(name: str, preset: SizePreset, repeats: int, folder: Path) -> dict:
    generate, write, reference, voxels = [], [], [], []
    for seed in case_seeds(2024, repeats):
        seconds, case = timed(lambda s=seed: generate_case_on(preset, s))
        generate.append(seconds)
        voxels.append(int(np.prod(case.ct.shape)))
        out = folder / name
        seconds, _ = timed(
            lambda c=case, o=out: (
                write_volume(o / "imaging.nii.gz", c.ct),
                write_labels(o / "segmentation.nii.gz", c.labels.array, c.ct),
            )
        )
        write.append(seconds)
        array = np.zeros(case.ct.shape, dtype=np.float32)
        seconds, _ = timed(lambda a=array: ndi.gaussian_filter(a, 1.0))
        reference.append(seconds)
        del case, array
    return {
        "size": name,
        "voxels": statistics.median(voxels),
        "generate": statistics.median(generate),
        "write": statistics.median(write),
        "reference": statistics.median(reference),
        "ratio": statistics.median(g / r for g, r in zip(generate, reference, strict=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    generate_case_on(SIZES["tiny"], 0)  # imports and first-call set-up outside the timings
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, preset, repeats in (
            ("tiny", SIZES["tiny"], 3 * args.repeats),
            ("small", SIZES["small"], 2 * args.repeats),
            ("kits200", KITS200, args.repeats),
            ("full", SIZES["full"], args.repeats),
        ):
            rows.append(bench(name, preset, repeats, Path(tmp)))
    tracemalloc.start()
    generate_case_on(KITS200, 1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(
        "| size | voxels (median) | generate (s) | write .nii.gz (s) "
        "| one 3D Gaussian filter (s) | generate / filter |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {r['voxels'] / 1e6:.2f} M | {r['generate']:.2f} | {r['write']:.2f} | "
            f"{r['reference']:.2f} | {r['ratio']:.1f} |"
        )
    print(f"\npeak traced memory generating one kits200 case: {peak / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
