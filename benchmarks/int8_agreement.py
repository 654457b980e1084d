"""`--precision int8` against float32 (and bfloat16) end to end, with a trained network.

Runs `kidneyseg.predict.run_prediction` — what `kidneyseg predict` runs — with the bundled model
(or `--checkpoint`), OpenVINO, default settings otherwise, once per precision on held-out phantoms
(`generate_case(seed, size="small")`, seeds unlike the calibration's 0–3) and `--repeats` times,
interleaved, on a real CT (default: the labelled low-dose scan beside the repository). Reported:

- per precision, the median seconds of a case after start-up (read, preprocess, windows, back to
  the CT grid, write), of its network part alone (the windows: locating the kidneys and around
  them), and of the start-up itself (loading, compiling; with int8 also the
  calibration windows and NNCF's quantisation unless the compile cache holds the quantised
  network from an earlier run: `compile_cache` in the output), and the ratio to float32 in the
  same run;
- per case, int8's and bfloat16's agreement with float32: % identical voxels and the Dice of
  kidney + masses (every foreground class together) between the two label maps;
- on the real CT, each precision's kidney + masses Dice against the reference label.

Usage:
    python benchmarks/int8_agreement.py [--repeats 3] [--phantoms 500 501 502]
        [--real-ct CT --real-labels LABELS] [--checkpoint RUN]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

PRECISIONS = ("float32", "bfloat16", "int8")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-ct"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum() + b.sum())
    return 2 * int((a & b).sum()) / total if total else 1.0


def predict(ct: Path, out: Path, model: Path, precision: str) -> tuple[np.ndarray, dict]:
    from kidneyseg.predict.predictor import PredictSettings
    from kidneyseg.predict.runner import run_prediction

    settings = PredictSettings(backend="openvino", precision=precision)
    record = run_prediction(ct, out, [model], settings, progress=False, warn=lambda message: None)
    case = record.cases[0]
    labels = np.asarray(nib.load(case["outputs"]["labels"]).dataobj)
    timing = {
        "case_seconds": case["total_seconds"],
        "network_seconds": round(case["seconds"].get("locate", 0) + case["seconds"].get("windows", 0), 3),
        "startup_seconds": record.startup_seconds,
        "compile_seconds": record.environment["backend_compile_seconds"],
        "calibration": record.environment["calibration"],
        "compile_cache": record.environment["compile_cache"],
    }
    return labels, timing


def agreement(labels: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    reference = labels["float32"]
    return {
        p: {
            "identical_voxels_pct": round(100 * float(np.mean(labels[p] == reference)), 4),
            "dice_kidney_masses": round(dice(labels[p] > 0, reference > 0), 4),
        }
        for p in PRECISIONS[1:]
    }


def main() -> None:
    from kidneyseg.data.phantom import generate_case
    from kidneyseg.io.volume import write_volume
    from kidneyseg.predict.pretrained import default_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="Runs per precision on the real CT.")
    parser.add_argument("--phantoms", type=int, nargs="*", default=[500, 501, 502])
    parser.add_argument("--real-ct", type=Path, default=SHARED / "lowdose_abdomen_4mm.nii.gz")
    parser.add_argument("--real-labels", type=Path, default=SHARED / "lowdose_abdomen_4mm_kidneys.nii.gz")
    parser.add_argument("--checkpoint", type=Path, help="Run or checkpoint (default: the bundled model).")
    args = parser.parse_args()
    model = args.checkpoint or default_model()
    results: dict = {"model": str(model), "phantoms": {}, "real_ct": None}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for seed in args.phantoms:
            ct = write_volume(work / f"phantom_{seed}.nii.gz", generate_case(seed, size="small").ct)
            labels = {p: predict(ct, work / f"{seed}_{p}", model, p)[0] for p in PRECISIONS}
            results["phantoms"][seed] = agreement(labels)
            print(f"phantom {seed}", json.dumps(results["phantoms"][seed]), flush=True)
        if args.real_ct.is_file():
            runs: dict[str, list[dict]] = {p: [] for p in PRECISIONS}
            labels = {}
            for i in range(args.repeats):
                for p in PRECISIONS:  # interleaved: the cores are shared
                    labels[p], timing = predict(args.real_ct, work / f"real_{i}_{p}", model, p)
                    runs[p].append(timing)
                    print(f"real CT run {i + 1} {p}", json.dumps(timing), flush=True)
            reference = np.asarray(nib.load(args.real_labels).dataobj) > 0
            case = {p: statistics.median(r["case_seconds"] for r in runs[p]) for p in PRECISIONS}
            network = {p: statistics.median(r["network_seconds"] for r in runs[p]) for p in PRECISIONS}
            results["real_ct"] = {
                "ct": args.real_ct.name,
                "agreement_with_float32": agreement(labels),
                "dice_vs_reference": {p: round(dice(labels[p] > 0, reference), 4) for p in PRECISIONS},
                "case_seconds_median": case,
                "case_speedup_vs_float32": {p: round(case["float32"] / case[p], 2) for p in PRECISIONS},
                "network_seconds_median": network,
                "network_speedup_vs_float32": {
                    p: round(network["float32"] / network[p], 2) for p in PRECISIONS
                },
                "startup_seconds_median": {
                    p: statistics.median(r["startup_seconds"] for r in runs[p]) for p in PRECISIONS
                },
                "runs": runs,
            }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
