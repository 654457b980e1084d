"""Would cleaning the predicted lesions raise held-out tumor and cyst Dice?

Two steps that KiTS entrants applied after the network, measured on a model's predictions of
labelled phantoms (KiTS layout, KiTS23 classes): (1) every mass component (26-connected tumor
and cyst voxels together) under `--min-ml` becomes kidney; (2) each mass component then takes
the class of most of its voxels, so one lesion is not part tumor, part cyst. Each case is
predicted once with default settings (`--roi body`; the model's own post-processing, such as the
bundled model's absorbed lesion islands, included) and scored as predicted, after step 1 and
after both, with the KiTS regions (Dice with the KiTS empty-mask rule) and the cyst Dice of
`kidneyseg evaluate` (a case with neither a reference nor a predicted cyst does not count).
Prints the mean figures per variant for every `--min-ml`, and the lesion mean (masses, tumor,
cyst). Choose on validation phantoms, then score the test phantoms once (docs/prediction.md).

Usage:
    python benchmarks/lesion_cleanup.py --model CHECKPOINT --data LABELLED_DIR [--min-ml 0.5 1 2]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy import ndimage

CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


def cleaned(labels: np.ndarray, voxel_ml: float, min_ml: float, majority: bool) -> np.ndarray:
    """`labels` (0 background, 1 kidney, 2 tumor, 3 cyst) with small mass components made kidney
    and, with `majority`, each remaining mass component given its commonest class."""
    out = labels.copy()
    components, _ = ndimage.label(labels >= 2, structure=CONNECTIVITY)
    for number, box in enumerate(ndimage.find_objects(components), start=1):
        mask = components[box] == number
        part = out[box]
        if mask.sum() * voxel_ml < min_ml:
            part[mask] = 1
        elif majority:
            tumor = np.count_nonzero(part[mask] == 2)
            part[mask] = 2 if 2 * tumor >= mask.sum() else 3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Run folder or checkpoint(s), comma-separated.")
    parser.add_argument("--data", required=True, help="Labelled phantoms (KiTS layout).")
    parser.add_argument("--min-ml", type=float, nargs="+", default=[0.5, 1.0, 2.0], help="Thresholds (mL).")
    args = parser.parse_args()

    from tqdm import tqdm

    from kidneyseg.data.cases import discover
    from kidneyseg.evaluate.metrics import dice, kits_dice
    from kidneyseg.io.volume import read_volume
    from kidneyseg.labels import KITS_REGIONS
    from kidneyseg.predict import Predictor, PredictSettings

    predictor = Predictor(args.model.split(","), PredictSettings(roi="body"))
    variants = {"as predicted": (0.0, False)}
    for min_ml in args.min_ml:
        variants[f"under {min_ml:g} mL made kidney"] = (min_ml, False)
        variants[f"under {min_ml:g} mL made kidney, then majority"] = (min_ml, True)
    scores: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for case in tqdm(discover(args.data, require_labels=True).labelled, unit="case"):
        ct, ref = read_volume(case.image), read_volume(case.label).array
        predicted = predictor.predict(ct).labels.array
        voxel_ml = float(np.prod(ct.spacing)) / 1000
        for name, (min_ml, majority) in variants.items():
            labels = cleaned(predicted, voxel_ml, min_ml, majority)
            row = {
                r.name: kits_dice(np.isin(ref, r.values()), np.isin(labels, r.values())) for r in KITS_REGIONS
            }
            scores[name].append(row | {"cyst": dice(ref == 3, labels == 3)})
    summary = {}
    for name, rows in scores.items():
        means = {key: float(np.nanmean([r[key] for r in rows])) for key in rows[0]}
        means["lesion_mean"] = float(np.mean([means["masses"], means["tumor"], means["cyst"]]))
        summary[name] = {key: round(value, 3) for key, value in means.items()}
    print(json.dumps({"model": args.model, "data": args.data, "mean_dice": summary}, indent=1))


if __name__ == "__main__":
    main()
