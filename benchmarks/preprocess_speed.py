"""Time and peak memory of preprocessing one KiTS-size CT: kidneyseg vs MONAI's own chain.

A synthetic CT-like volume (512 × 512 × SLICES at 0.8 × 0.8 × 2.5 mm, stored like a KiTS file:
int16, slices on axis 0, IPL orientation) is written to a temporary NIfTI file. Each run is a
fresh child process that reads the file and preprocesses it (the SCA-UNet paper's grid:
RAS, 1.62 × 1.62 × 2 mm, HU [-80, 305] → [0, 1], body crop), timing the work after imports and
reporting the peak resident memory of that work (Linux: VmHWM after resetting it through
/proc/self/clear_refs). Runs alternate between

- `kidneyseg`: `read_volume` → `preprocess` (image only), and
- `monai`: LoadImaged → EnsureChannelFirstd → Orientationd → Spacingd(bilinear) →
  ScaleIntensityRanged(clip) → CropForegroundd,

and the medians and their ratio are printed. Two more children time `invert_probabilities` of a
4-class score volume on the preprocessed grid back to the 512 × 512 × SLICES grid: `inverse`
with network-like scores (class boundaries at surfaces), `inverse-noise` with random scores
(the worst case: every voxel interpolated); their peak memory is printed next to the size of
one full float32 [4, 512, 512, SLICES] array.

Usage: python benchmarks/preprocess_speed.py [--slices 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPACING = (2.5, 0.8, 0.8)  # array axes (slice, row, column) as in KiTS files


def make_case(path: Path, slices: int) -> None:
    """A CT-like int16 volume: air, table, elliptic body with fat, muscle, organs and noise."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[:slices, :512, :512]
    r_body = ((y - 250) / 170.0) ** 2 + ((x - 256) / 230.0) ** 2
    ct = np.full((slices, 512, 512), -1000, np.int16)
    ct[:, 440:452, 40:472] = 300  # the scanner table, apart from the body
    body = np.broadcast_to(r_body < 1, ct.shape)
    ct[body] = -100  # fat
    ct[np.broadcast_to(r_body < 0.8, ct.shape)] = 45  # muscle / soft tissue
    for cy, cx, value in ((250, 160, 150), (250, 352, 150), (200, 256, 60), (300, 256, 700)):
        organ = ((y - cy) / 35.0) ** 2 + ((x - cx) / 30.0) ** 2 + ((z - slices / 2) / (slices / 3)) ** 2 < 1
        ct[organ] = value
    ct += rng.normal(0, 12, ct.shape).astype(np.int16)
    affine = np.zeros((4, 4))
    affine[0, 2] = -SPACING[2]
    affine[1, 1] = -SPACING[1]
    affine[2, 0] = -SPACING[0]
    affine[3, 3] = 1
    nib.save(nib.Nifti1Image(ct, affine), str(path))


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def child(kind: str, path: str) -> dict:
    """One measured run in this (fresh) process."""
    import numpy as np
    import torch  # noqa: F401  (imported before the measurement in both pipelines)

    if kind == "monai":
        import monai.transforms as mt

        chain = mt.Compose(
            [
                mt.LoadImaged(keys="image", image_only=True),
                mt.EnsureChannelFirstd(keys="image"),
                mt.Orientationd(keys="image", axcodes="RAS"),
                mt.Spacingd(keys="image", pixdim=(1.62, 1.62, 2.0), mode="bilinear"),
                mt.ScaleIntensityRanged(keys="image", a_min=-80, a_max=305, b_min=0.0, b_max=1.0, clip=True),
                mt.CropForegroundd(keys="image", source_key="image"),
            ]
        )
        base = _rss_mb()
        _reset_peak()
        start = time.perf_counter()
        shape = tuple(chain({"image": path})["image"].shape[1:])
    else:
        from kidneyseg.config import PreprocessConfig
        from kidneyseg.io.volume import read_volume
        from kidneyseg.preprocess import invert_probabilities, preprocess

        if kind == "kidneyseg":
            base = _rss_mb()
            _reset_peak()
            start = time.perf_counter()
            shape = preprocess(read_volume(path), PreprocessConfig()).image.shape
        else:  # the inverse, of network-like scores or (worst case) of noise
            ct = read_volume(path)
            pre = preprocess(ct, PreprocessConfig())
            original = ct.shape
            del ct
            if kind == "inverse":  # one-hot of 4 intensity classes, softened: boundaries at surfaces
                classes = np.digitize(pre.image, (0.05, 0.4, 0.6)).astype(np.uint8)
                scores = np.stack([(classes == c).astype(np.float32) for c in range(4)]) * 4.0 - 2.0
            else:  # every cell mixed: all voxels interpolated
                scores = np.random.default_rng(0).random((4, *pre.image.shape), dtype=np.float32)
            meta = pre.meta
            del pre
            base = _rss_mb()
            _reset_peak()
            start = time.perf_counter()
            shape = invert_probabilities(scores, meta).shape
            assert shape == original
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": _peak_mb() - base, "shape": [int(s) for s in shape]}


def compare_resamplers(path: Path, runs: int) -> None:
    """The trilinear step alone, on the preprocessing grid of the case: torch grid_sample in
    slabs (kidneyseg's `resample_linear`) vs `scipy.ndimage.map_coordinates(order=1)`."""
    import numpy as np
    from scipy import ndimage

    from kidneyseg.config import PreprocessConfig
    from kidneyseg.io.volume import read_volume
    from kidneyseg.preprocess.spatial import resample_linear, resampled_grid

    ct = read_volume(path)
    shape, maps = resampled_grid(ct.shape, ct.spacing, PreprocessConfig().spacing[::-1])
    positions = tuple(m.to_source(np.arange(n)) for m, n in zip(maps, shape, strict=True))
    times: dict[str, list[float]] = {"grid_sample": [], "map_coordinates": []}
    for _ in range(runs):
        start = time.perf_counter()
        ours = resample_linear(ct.array, positions)
        times["grid_sample"].append(time.perf_counter() - start)
        start = time.perf_counter()
        coords = np.meshgrid(*positions, indexing="ij", sparse=False)
        theirs = ndimage.map_coordinates(ct.array, coords, order=1, mode="nearest", output=np.float32)
        times["map_coordinates"].append(time.perf_counter() - start)
        del coords
    a, b = statistics.median(times["grid_sample"]), statistics.median(times["map_coordinates"])
    print(
        f"trilinear {ct.shape} -> {shape}: grid_sample {a:.2f} s, map_coordinates {b:.2f} s "
        f"(x{b / a:.2f}); max difference {np.abs(ours - theirs).max():.3f} HU"
    )


def run_child(kind: str, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "case.nii.gz"
        make_case(path, args.slices)
        print(f"case: 512 x 512 x {args.slices} int16 at {SPACING[::-1]} mm (x, y, z), IPL, gzip NIfTI")
        threads = torch.get_num_threads()
        print(f"torch {torch.__version__}, {threads} threads; {args.runs} runs each, alternating")
        results: dict[str, list[dict]] = {"kidneyseg": [], "monai": [], "inverse": [], "inverse-noise": []}
        for _ in range(args.runs):
            for kind in results:
                results[kind].append(run_child(kind, path))
        compare_resamplers(path, args.runs)
    summary = {
        kind: (
            statistics.median(r["seconds"] for r in runs),
            statistics.median(r["peak_mb"] for r in runs),
            runs[0]["shape"],
        )
        for kind, runs in results.items()
    }
    for kind, (seconds, peak, shape) in summary.items():
        times = ", ".join(f"{r['seconds']:.2f}" for r in results[kind])
        print(f"{kind:10s} median {seconds:6.2f} s  peak +{peak:6.0f} MB  output {shape}  (runs: {times})")
    ours, theirs = summary["kidneyseg"], summary["monai"]
    print(f"MONAI / kidneyseg: time x{theirs[0] / ours[0]:.2f}, peak memory x{theirs[1] / ours[1]:.2f}")
    full = 4 * 512 * 512 * args.slices * 4 / 2**20
    for kind in ("inverse", "inverse-noise"):
        print(
            f"{kind} (4 classes): peak +{summary[kind][1]:.0f} MB, "
            f"vs {full:.0f} MB for one full float32 [4, 512, 512, {args.slices}] array"
        )


if __name__ == "__main__":
    main()
