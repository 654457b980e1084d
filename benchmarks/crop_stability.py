"""How firm is one real scan's figure? The same CT with 0 to `--slices` slices removed at either
end of its third axis (a scan started or stopped a few millimetres earlier), each crop predicted
whole (`--roi body`, default settings otherwise), with the kidney + masses Dice against the
reference over the slices the crop holds, and the volume labelled.

The kidneys stay inside every crop; what changes is where the windows fall, so the spread of the
figures is how much one scan's Dice depends on the scan's extent rather than on the model.

Usage:
    python benchmarks/crop_stability.py --model src/kidneyseg/weights/sca-unet-3d-transfer.pt \
        --ct ../shared/data/real-ct/lowdose_abdomen_4mm.nii.gz \
        --labels ../shared/data/real-ct/lowdose_abdomen_4mm_kidneys.nii.gz --slices 3
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from roi_agreement import both_empty_is_one, dice, slices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Trained checkpoint.")
    parser.add_argument("--ct", type=Path, required=True, help="CT file or DICOM folder.")
    parser.add_argument(
        "--labels", type=Path, help="Its reference label map (any label > 0: kidney + masses)."
    )
    parser.add_argument("--slices", type=int, default=3, help="Remove up to this many at each end.")
    args = parser.parse_args()

    from kidneyseg.io.volume import Volume, read_volume
    from kidneyseg.predict import Predictor, PredictSettings
    from kidneyseg.report.geometry import crop_affine

    ct = read_volume(args.ct)
    reference = read_volume(args.labels).array > 0 if args.labels else None
    predictor = Predictor([args.model], PredictSettings(roi="body"))
    voxel_ml = abs(float(np.linalg.det(ct.affine[:3, :3]))) / 1000.0
    count = ct.array.shape[2]
    rows = []
    for start in range(args.slices + 1):
        for end in range(args.slices + 1):
            keep = slice(start, count - end)
            crop = Volume(ct.array[..., keep], crop_affine(ct.affine, slices(ct, keep)), ct.source)
            labels = predictor.predict(crop).labels.array > 0
            row = {
                "removed_start": start,
                "removed_end": end,
                "labelled_ml": round(labels.sum() * voxel_ml, 1),
            }
            if reference is not None:
                row["dice"] = dice(labels, reference[..., keep])
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {
        "crops": len(rows),
        "labelled_ml": [min(r["labelled_ml"] for r in rows), max(r["labelled_ml"] for r in rows)],
    }
    if reference is not None:
        scores = [both_empty_is_one(r["dice"]) for r in rows]
        summary.update(
            dice_uncropped=rows[0]["dice"],
            dice_min=min(scores),
            dice_median=round(statistics.median(scores), 4),
            dice_max=max(scores),
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
