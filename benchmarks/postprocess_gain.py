"""Does keeping only the two largest kidney components improve held-out Dice?

Predicts every case of a labelled held-out folder (KiTS layout, e.g. phantoms from
`kidneyseg.data.phantom.generate_dataset` with a seed the model was not trained on) once,
then scores the label map as predicted and after `keep_largest_components`, with the KiTS
hierarchical regions (kidney + masses, masses, tumor; Dice with the KiTS empty-mask rule).
The default of `kidneyseg predict --postprocess` follows this measurement (docs/prediction.md).

Usage:
    python benchmarks/postprocess_gain.py --model RUN --data HELD_OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Run folder or checkpoint.")
    parser.add_argument("--data", required=True, help="Held-out labelled cases (KiTS layout).")
    parser.add_argument("--overlap", type=float, default=None, help="Default: the checkpoint's.")
    args = parser.parse_args()

    from tqdm import tqdm

    from kidneyseg.data.cases import discover
    from kidneyseg.evaluate.metrics import kits_dice
    from kidneyseg.io.volume import read_volume
    from kidneyseg.labels import KITS_REGIONS
    from kidneyseg.predict import Predictor, PredictSettings
    from kidneyseg.predict.postprocess import keep_largest_components

    predictor = Predictor([args.model], PredictSettings(overlap=args.overlap, roi="body"))
    dataset = discover(args.data, require_labels=True)
    rows = []
    for case in tqdm(dataset.labelled, unit="case"):
        ct, ref = read_volume(case.image), read_volume(case.label).array
        raw = predictor.predict(ct).labels.array
        kept = keep_largest_components(raw)
        row = {"case_id": case.case_id, "changed_voxels": int(np.sum(raw != kept))}
        for region in KITS_REGIONS:
            truth = np.isin(ref, region.values)
            row[f"{region.name}_raw"] = kits_dice(truth, np.isin(raw, region.values))
            row[f"{region.name}_kept"] = kits_dice(truth, np.isin(kept, region.values))
        rows.append(row)
    summary = {}
    for region in KITS_REGIONS:
        raw = statistics.mean(r[f"{region.name}_raw"] for r in rows)
        kept = statistics.mean(r[f"{region.name}_kept"] for r in rows)
        summary[region.name] = {
            "without": round(raw, 4),
            "with": round(kept, 4),
            "gain": round(kept - raw, 4),
        }
    print(
        json.dumps(
            {"model": args.model, "cases": len(rows), "mean_dice": summary, "per_case": rows}, indent=2
        )
    )


if __name__ == "__main__":
    main()
