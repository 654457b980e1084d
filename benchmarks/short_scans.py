"""Does a model take something else for a kidney on a short scan that holds none?

For every labelled phantom, cuts a slab of the CT `--length` mm long that starts `--gap` mm
above the top of its reference kidneys (cranial to them: liver, spleen, stomach, colon; a
phantom whose CT does not reach that far is skipped), and predicts it with each model given, as
`kidneyseg predict` does (behind the bundled locator, the anatomy check on; `--roi body`: over
the whole slab). A slab holds no kidney, so everything labelled is false: the benchmark prints
and writes the number of slabs with more than 0.5 mL labelled, the total and the largest volume
labelled, per model, and beside them what the model labels in the same slab when it predicts
the whole CT (the control: the same anatomy, with the rest of the scan around it). The real
contrast-enhanced DICOM slab of `../shared/data/real-ct` (40 mm of upper abdomen, no kidney) is
the case it stands in for.

Usage:
    python benchmarks/short_scans.py --run NAME=CHECKPOINT_OR_RUN [--run ...] \
        --phantoms DATASET [--gap 10] [--length 40] [--roi kidneys|body] [--json out.json]

`--run bundled=` (empty) is the bundled pretrained model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def slab_above_kidneys(ct, labels: np.ndarray, gap: float, length: float):
    """The slab of `ct` from `gap` to `gap + length` mm above its labelled kidneys' top (world
    superior axis) and the box of `ct` it is, or None when the CT does not reach that far."""
    from kidneyseg.io.volume import Volume
    from kidneyseg.report.geometry import crop_affine, slice_axis

    axis = slice_axis(ct.affine)
    heights = ct.affine[2, 3] + ct.affine[2, axis] * np.arange(ct.array.shape[axis])
    others = tuple(i for i in range(3) if i != axis)
    top = heights[labels.any(axis=others)].max()
    chosen = np.flatnonzero((heights > top + gap) & (heights <= top + gap + length))
    if len(chosen) < round(length / abs(ct.affine[2, axis])) - 1:
        return None
    box = tuple(
        slice(chosen.min(), chosen.max() + 1) if i == axis else slice(0, n)
        for i, n in enumerate(ct.array.shape)
    )
    return Volume(ct.array[box], crop_affine(ct.affine, box), source=f"{ct.source} (slab)"), box


def score(model: str, cases: list, gap: float, length: float, roi: str) -> dict:
    """Volumes (mL) the model labels on each case's slab, cut out and within the whole CT."""
    from tqdm import tqdm

    from kidneyseg.io.volume import read_volume
    from kidneyseg.predict import Predictor, PredictSettings
    from kidneyseg.predict.pretrained import default_model

    predictor = Predictor([model or default_model()], PredictSettings(roi=roi))
    labelled, in_whole = {}, {}
    for case in tqdm(cases, desc=model or "bundled", unit="case"):
        ct = read_volume(case.image)
        cut = slab_above_kidneys(ct, read_volume(case.label).array > 0, gap, length)
        if cut is None:
            continue
        slab, box = cut
        ml = float(np.prod(slab.spacing)) / 1000
        labelled[case.case_id] = round(int((predictor.predict(slab).labels.array > 0).sum()) * ml, 1)
        in_whole[case.case_id] = round(int((predictor.predict(ct).labels.array[box] > 0).sum()) * ml, 1)
    return {"slab": _figures(labelled), "whole_ct": _figures(in_whole)}


def _figures(labelled: dict[str, float]) -> dict:
    volumes = np.array(list(labelled.values()))
    return {
        "slabs": len(volumes),
        "slabs_over_half_ml": int((volumes > 0.5).sum()),
        "total_ml": round(float(volumes.sum()), 1),
        "largest_ml": round(float(volumes.max()), 1) if len(volumes) else None,
        "per_slab_ml": labelled,
    }


def main() -> None:
    from kidneyseg.data.cases import discover

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=MODEL")
    parser.add_argument("--phantoms", type=Path, required=True)
    parser.add_argument("--gap", type=float, default=10.0, help="mm above the kidneys' top")
    parser.add_argument("--length", type=float, default=40.0, help="slab length, mm")
    parser.add_argument("--roi", choices=("kidneys", "body"), default="kidneys")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cases = discover(args.phantoms, require_labels=True).labelled
    results = {}
    for item in args.run:
        name, _, model = item.partition("=")
        results[name] = score(model, cases, args.gap, args.length, args.roi)
        for how, row in results[name].items():
            print(
                f"{name}, {how}: {row['slabs_over_half_ml']} of {row['slabs']} slabs with more than 0.5 mL "
                f"labelled, {row['total_ml']} mL in all, largest {row['largest_ml']} mL"
            )
    if args.json:
        settings = {"gap_mm": args.gap, "length_mm": args.length, "roi": args.roi}
        settings["phantoms"] = str(args.phantoms)
        args.json.write_text(json.dumps({"settings": settings, "runs": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
