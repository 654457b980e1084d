"""Peak memory of `kidneyseg predict` against the pre-check's estimate (`predict/checks.py`).

The estimate must be an upper bound: a machine whose free memory passes the check must not run
out. Each case is a synthetic int16 CT (air around an elliptic cylinder of soft tissue, so the
HU and body checks pass and the body crop keeps most of the grid) predicted by `kidneyseg predict`
(default backend) in a fresh process with a tiny 3D network, so that the memory measured is the
pipeline's, not the network's: the read, resampling, windows' scores, the inverse back to the CT
grid, post-processing and the write. Two kinds of case separate the two per-voxel terms:

- `coarse`: the network grid is 6 mm, so almost all memory is per original voxel;
- `native`: the network grid is the CT's own spacing, so every original voxel is also a
  preprocessed one (scores and weights for every class).

The peak is the process's maximum resident set (`ru_maxrss`). Results go to stdout as JSON.

Usage:
    python benchmarks/predict_memory.py [--slices 100 200 400] [--native-slices 64 128 256]
        [--long]   # also 512 x 512 x 1000 slices, the case of issue 19 (≈ 5 GiB)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = """
import sys
from kidneyseg.cli import main
peak_file = sys.argv[1]
sys.argv = ["kidneyseg", "predict", *sys.argv[2:]]
try:
    main()
finally:  # VmHWM: this process's own peak (ru_maxrss can carry the forking parent's over exec)
    with open("/proc/self/status") as status, open(peak_file, "w") as f:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
        f.write(str(kib * 1024))
"""


def make_ct(path: Path, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Path:
    """Air (-1000 HU) around an elliptic cylinder of noisy soft tissue (40 ± 150 HU) along the
    third axis, written as .nii. The noise makes the random network's labels speckled: many
    foreground components everywhere, the worst case for post-processing's memory."""
    import nibabel as nib

    x, y = np.ogrid[: shape[0], : shape[1]]
    cx, cy = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    body = ((x - cx) / (0.45 * shape[0])) ** 2 + ((y - cy) / (0.35 * shape[1])) ** 2 <= 1
    array = np.full(shape, -1000, np.int16)
    rng = np.random.default_rng(0)
    for k in range(shape[2]):
        array[..., k][body] = rng.integers(-110, 190, int(body.sum()), dtype=np.int16)
    image = nib.Nifti1Image(array, np.diag([*spacing, 1.0]))
    nib.save(image, str(path))
    return path


def tiny_checkpoint(path: Path, spacing: tuple[float, float, float]) -> Path:
    import torch

    from kidneyseg.checkpoint import build_model_from_config, save_checkpoint
    from kidneyseg.config import InferenceConfig, ModelConfig, PreprocessConfig, RunConfig

    config = RunConfig(
        labels="kits23",
        preprocess=PreprocessConfig(spacing=spacing),
        model=ModelConfig("sca_unet_3d", {"channels": [4, 8, 16, 16]}),
        inference=InferenceConfig(roi_size=(64, 64, 32), overlap=0.0, sw_batch_size=1),
    )
    torch.manual_seed(0)
    net = build_model_from_config(config)
    return save_checkpoint(path, model_state=net.state_dict(), config=config)


def measure(ct: Path, checkpoint: Path, work: Path) -> dict:
    import nibabel as nib

    from kidneyseg.checkpoint import load_checkpoint
    from kidneyseg.io.formats import read_header
    from kidneyseg.predict.checks import GIB, estimate_memory

    ckpt = load_checkpoint(checkpoint)
    header = read_header(ct)
    estimate = estimate_memory(header, ckpt.config.preprocess, ckpt.label_map.num_classes)
    peak_file = work / "peak"
    args = ["-i", str(ct), "-o", str(work / "out"), "-m", str(checkpoint), "-q", "--overwrite"]
    subprocess.run(
        [sys.executable, "-c", CHILD, str(peak_file), *args], check=True, stdout=subprocess.DEVNULL
    )
    peak = int(peak_file.read_text())
    labels = np.asanyarray(nib.load(str(work / "out" / f"{ct.name.split('.')[0]}.nii.gz")).dataobj)
    return {
        "shape": list(header.shape),
        "network_spacing": list(ckpt.config.preprocess.spacing),
        "peak_gib": round(peak / GIB, 3),
        "estimate_gib": round(estimate / GIB, 3),
        "estimate_over_peak": round(estimate / peak, 3),
        "foreground_fraction": round(float((labels > 0).mean()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--slices", type=int, nargs="*", default=[100, 200, 400])
    parser.add_argument("--native-slices", type=int, nargs="*", default=[64, 128, 256])
    parser.add_argument("--long", action="store_true", help="Also 512 x 512 x 1000 slices.")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        coarse = tiny_checkpoint(work / "coarse.pt", (6.0, 6.0, 6.0))
        native = tiny_checkpoint(work / "native.pt", (2.0, 2.0, 2.0))
        cases = [("coarse", (256, 256, n), (0.8, 0.8, 1.0), coarse) for n in args.slices]
        cases += [("native", (128, 128, n), (2.0, 2.0, 2.0), native) for n in args.native_slices]
        if args.long:
            cases.append(("coarse", (512, 512, 1000), (0.8, 0.8, 1.0), coarse))
        for kind, shape, spacing, checkpoint in cases:
            ct = make_ct(work / "ct.nii", shape, spacing)
            results.append({"kind": kind, **measure(ct, checkpoint, work)})
            print(json.dumps(results[-1]), file=sys.stderr)
            ct.unlink()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
