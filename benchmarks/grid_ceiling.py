"""What a perfect network on a model's grid would score: the reference labels brought to the grid
a checkpoint's preprocessing makes (nearest neighbour, as its training labels were) and back to
the CT grid (linear, as the predictor's inverse), written as label maps that
`sim_to_real.py --labels` scores like any model's.

It separates what the grid costs (e.g. 3 mm voxels on small tumors) from what the network gets
wrong. It is the score of a network that reproduces its training targets exactly; soft scores
can carry partial volume that one-hot labels do not, so it is not a strict upper bound. The real
low-dose CT is resampled from its kidney labels; the DICOM series and the chest CT, which hold no
kidney, get empty maps.

Usage:
    python benchmarks/grid_ceiling.py --checkpoint src/kidneyseg/weights/sca-unet-3d-transfer.pt \
        --phantoms HELD_OUT --out OUT
    python benchmarks/sim_to_real.py --labels "grid ceiling=OUT" --phantoms HELD_OUT \
        --picture P --json J
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sim_to_real import LOWDOSE_LABELS, REAL_CTS


def on_grid_and_back(ct, labels, config) -> np.ndarray:
    """`labels` (on `ct`'s grid) resampled to the grid of the preprocessing `config` and back,
    background outside the crop the predictor takes from the CT alone (with labels, preprocessing
    widens its crop to keep every labelled voxel)."""
    from kidneyseg.preprocess import invert_labels, preprocess

    pre = preprocess(ct, config, labels=labels)
    back = invert_labels(pre.labels, pre.meta, mode="linear")
    crop = preprocess(ct, config).meta
    inside = invert_labels(np.ones(crop.shape, np.uint8), crop, mode="nearest") > 0
    return np.where(inside, back, 0).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    from kidneyseg.checkpoint import load_checkpoint
    from kidneyseg.data.cases import discover
    from kidneyseg.io.volume import read_volume, write_labels

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="the model whose grid is scored")
    parser.add_argument("--phantoms", type=Path, required=True, help="labelled phantoms (a dataset folder)")
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for <case>.nii.gz and the real CTs' maps"
    )
    args = parser.parse_args(argv)
    config = load_checkpoint(args.checkpoint).config.preprocess
    args.out.mkdir(parents=True, exist_ok=True)
    cases = discover(args.phantoms, require_labels=True).labelled
    for case in tqdm(cases, desc="phantoms", unit="case"):
        ct = read_volume(case.image)
        labels = on_grid_and_back(ct, read_volume(case.label), config)
        write_labels(args.out / f"{case.case_id}.nii.gz", labels, ct)
    for name, path in REAL_CTS.items():
        ct = read_volume(path)
        if name == "lowdose":
            labels = on_grid_and_back(ct, read_volume(LOWDOSE_LABELS), config)
        else:
            labels = np.zeros(ct.shape, np.uint8)
        write_labels(args.out / f"{name}.nii.gz", labels, ct)
    print(f"wrote {len(cases)} phantoms and {len(REAL_CTS)} real CTs to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
