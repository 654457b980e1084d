"""Does a lesion's sure fraction tell a real lesion from a false one? Chooses and checks the report's
`uncertain_lesions` threshold (`ReportOptions.min_sure_fraction`, docs/report.md).

Every lesion the report of the model's prediction lists (a connected component of tumor or of
cyst of at least the report's minimum volume and diameter, the largest of each class) is scored by
its sure fraction (`lesions[].sure_fraction`, `kidneyseg.predict.votes.Votes.sure_fraction`) and
called real when at least half of its voxels carry the same class in the reference labels. Per
class it prints the area under the ROC curve, and, with `--choose`, the threshold that flags at
most `--true-flagged` (10 %) of the real lesions of at least `--rule-min-ml` (1 mL), both classes
together: the rule the shipped threshold came from. Sub-millilitre lesions are left out of the
rule because the 3 mm model is almost never sure of them, real or not, so the share of them in a
draw of phantoms, not the model, would set the threshold (with them, two draws of tuning phantoms
gave 0.60 and 0.20). Then, at the shipped threshold, the share of real and of false lesions that
get the warning on every folder given.

Usage (from `benchmarks/`):
    python lesion_confidence.py --choose TUNING_PHANTOMS --check HELD_OUT_PHANTOMS \
        --real --rows ROWS.json
    python lesion_confidence.py --from-rows ROWS.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from sim_to_real import LOWDOSE_LABELS, REAL_CTS


def lesion_rows(predictor, ct, reference: np.ndarray | None, name: str) -> list[dict]:
    """One row per lesion the report of `ct`'s prediction lists: class, volume (mL), sure fraction
    (as the report gives it) and, with a `reference`, the share of its voxels the reference gives
    the same class. The report's rows are matched to the label map's components by voxel count
    and centroid."""
    from kidneyseg.io.volume import Volume
    from kidneyseg.report import geometry, measure

    prediction = predictor.predict(ct)
    labels, label_map = prediction.labels.array, predictor.label_map
    report = measure(ct, Volume(labels, ct.affine), label_map, votes=prediction.votes)
    voxel_ml = abs(float(np.linalg.det(ct.affine[:3, :3]))) / 1000.0
    rows = []
    for class_name in ("tumor", "cyst"):
        listed = [r for r in report["lesions"] if r["type"] == class_name]
        if not listed:
            continue
        value = label_map.value(class_name)
        components, count = geometry.components(labels == value)
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        centroids = geometry.to_world(
            np.asarray(ndimage.center_of_mass(components > 0, components, range(1, count + 1))), ct.affine
        )
        for row in listed:
            voxels = round(row["volume_ml"] / voxel_ml)
            candidates = np.flatnonzero(np.abs(sizes[1:] - voxels) <= 1) + 1
            distance = np.linalg.norm(centroids[candidates - 1] - row["centroid_ras_mm"], axis=1)
            number = int(candidates[np.argmin(distance)])
            same = None if reference is None else float((reference[components == number] == value).mean())
            rows.append(
                {
                    "case": name,
                    "type": class_name,
                    "volume_ml": row["volume_ml"],
                    "sure": row["sure_fraction"],
                    "same": same,
                }
            )
    return rows


def auc(real: list[float], false: list[float]) -> float | None:
    """The probability that a real lesion's sure fraction exceeds a false one's (ties count half)."""
    if not real or not false:
        return None
    a, b = np.asarray(real)[:, None], np.asarray(false)[None]
    return float((a > b).mean() + 0.5 * (a == b).mean())


SIZES_ML = ((0.0, 1.0), (1.0, 10.0), (10.0, float("inf")))
"""Volume bins (mL) the lesions are also summarised in: specks, small lesions, the rest."""


def summarise(rows: list[dict], threshold: float) -> dict:
    """Per class, in all, and in all per `SIZES_ML` bin: lesions real and false, AUC, and the share
    of each flagged at `threshold`."""
    kinds = {kind: (kind, 0.0, float("inf")) for kind in ("tumor", "cyst", "all")}
    kinds |= {f"{lo:g}-{hi:g} mL": ("all", lo, hi) for lo, hi in SIZES_ML}
    out = {}
    for name, (kind, lo, hi) in kinds.items():
        mine = [
            r
            for r in rows
            if r["sure"] is not None and kind in ("all", r["type"]) and lo <= r["volume_ml"] < hi
        ]
        real = [r["sure"] for r in mine if r["same"] is not None and r["same"] >= 0.5]
        false = [r["sure"] for r in mine if r["same"] is None or r["same"] < 0.5]
        out[name] = {
            "real": len(real),
            "false": len(false),
            "auc": None if auc(real, false) is None else round(auc(real, false), 3),
            "real_flagged": round(float(np.mean(np.asarray(real) < threshold)), 3) if real else None,
            "false_flagged": round(float(np.mean(np.asarray(false) < threshold)), 3) if false else None,
        }
    return out


def choose(rows: list[dict], true_flagged: float, min_ml: float) -> float:
    """The largest threshold (to 0.05) that flags at most `true_flagged` of the real lesions of at
    least `min_ml`."""
    real = np.asarray(
        [r["sure"] for r in rows if r["sure"] is not None and r["same"] >= 0.5 and r["volume_ml"] >= min_ml]
    )
    steps = np.round(np.arange(0.0, 1.0001, 0.05), 2)
    return float(max(t for t in steps if np.mean(real < t) <= true_flagged))


def measure_folders(folders: dict[str, list[Path]], real: bool, model: str | None) -> dict[str, list[dict]]:
    """The lesion rows of every labelled case of each folder (keys `role:folder`), and with `real`
    of the three shared real CTs (`real:<name>`; only the low-dose one has labels, kidney alone,
    so every lesion found on them is false)."""
    from kidneyseg.data.cases import discover
    from kidneyseg.io.volume import read_volume
    from kidneyseg.predict import Predictor
    from kidneyseg.predict.pretrained import default_model

    predictor = Predictor([model or default_model()])
    groups = {
        f"{role}:{folder}": [
            (c.case_id, c.image, c.label) for c in discover(folder, require_labels=True).labelled
        ]
        for role, paths in folders.items()
        for folder in paths
    }
    if real:
        for name, path in REAL_CTS.items():
            groups[f"real:{name}"] = [(name, path, LOWDOSE_LABELS if name == "lowdose" else None)]
    out: dict[str, list[dict]] = {}
    for key, cases in groups.items():
        out[key] = []
        for name, image, label in tqdm(cases, desc=key, unit="case"):
            reference = None if label is None else read_volume(label).array
            out[key] += lesion_rows(predictor, read_volume(image), reference, name)
    return out


def main(argv: list[str] | None = None) -> int:
    from kidneyseg.report.checks import ReportOptions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--choose", type=Path, action="append", default=[], help="tuning phantoms")
    parser.add_argument("--check", type=Path, action="append", default=[], help="held-out phantoms")
    parser.add_argument("--real", action="store_true", help="also the shared real CTs")
    parser.add_argument("--model", help="checkpoint (default: the bundled model)")
    parser.add_argument("--true-flagged", type=float, default=0.1, help="the rule's share of real lesions")
    parser.add_argument("--rule-min-ml", type=float, default=1.0, help="the rule's smallest lesion (mL)")
    parser.add_argument("--rows", type=Path, help="save the lesion rows here")
    parser.add_argument("--from-rows", type=Path, help="summarise saved rows instead of predicting")
    args = parser.parse_args(argv)
    if args.from_rows:
        groups = json.loads(args.from_rows.read_text())
    else:
        groups = measure_folders({"choose": args.choose, "check": args.check}, args.real, args.model)
        if args.rows:
            args.rows.write_text(json.dumps(groups, indent=1))
    shipped = ReportOptions().min_sure_fraction
    tuning = [r for key, rows in groups.items() if key.startswith("choose:") for r in rows]
    if tuning:
        threshold = choose(tuning, args.true_flagged, args.rule_min_ml)
        print(f"rule's threshold on the tuning lesions: {threshold:.2f}")
    print(f"shipped threshold: {shipped:.2f}")
    if tuning:
        groups = {"choose (all folders)": tuning, **groups}
    for key, rows in groups.items():
        print(key)
        for kind, s in summarise(rows, shipped).items():
            print(f"  {kind:12s} {json.dumps(s)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
