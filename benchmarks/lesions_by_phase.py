"""How many lesions are found on the unenhanced and on the contrast-enhanced phantoms of a set,
and whether the report's `unenhanced_scan` check tells the two apart (docs/pretrained.md,
"Limits"; docs/report.md). Their Dice, split the same way, is `benchmarks/sim_to_real.py`'s.

Reads `kidneyseg evaluate`'s `per_case.csv` (its lesion detection counts) and each phantom's
`phantom.json` (its contrast phase). With `--pred` (the folder `kidneyseg predict` wrote for the
same phantoms) it also measures the report of each prediction and counts the phantoms it flags
`unenhanced_scan`, with the range of the best-enhanced kidney's parenchyma median.

Usage (from the repository root):
    kidneyseg predict -i PHANTOMS -o PRED
    kidneyseg evaluate --pred PRED --ref PHANTOMS --out EVAL
    python benchmarks/lesions_by_phase.py --eval EVAL --phantoms PHANTOMS [--pred PRED]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

GROUPS = ("unenhanced", "contrast-enhanced")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval", type=Path, required=True, help="kidneyseg evaluate's output folder")
    parser.add_argument("--phantoms", type=Path, required=True, help="the phantom folder evaluated")
    parser.add_argument("--pred", type=Path, help="kidneyseg predict's output folder for the same phantoms")
    args = parser.parse_args()
    groups: dict[str, list[dict]] = {g: [] for g in GROUPS}
    with (args.eval / "per_case.csv").open() as f:
        for row in csv.DictReader(f):
            phase = json.loads((args.phantoms / row["case_id"] / "phantom.json").read_text())["phase"]
            if args.pred is not None:
                row.update(_flag(args.phantoms / row["case_id"], args.pred / f"{row['case_id']}.nii.gz"))
            groups[GROUPS[phase != "noncontrast"]].append(row)
    print("| phantoms | cases | tumors found | cysts found | flagged unenhanced |")
    print("|---|---|---|---|---|")
    for name, rows in groups.items():
        if rows:
            cells = (name, str(len(rows)), _found(rows, "tumor"), _found(rows, "cyst"), _flagged(rows))
            print("| " + " | ".join(cells) + " |")


def _flag(case: Path, pred: Path) -> dict:
    from kidneyseg.io.volume import read_volume
    from kidneyseg.report import ReportOptions, measure
    from kidneyseg.report.checks import best_enhanced_hu

    ct, labels = read_volume(case / "imaging.nii.gz"), read_volume(pred)
    report = measure(ct, labels, options=ReportOptions(nephrometry=False))
    hu = best_enhanced_hu(report["kidneys"])
    return {
        "flagged": any(w["code"] == "unenhanced_scan" for w in report["warnings"]),
        "hu": np.nan if hu is None else hu,
    }


def _found(rows: list[dict], kind: str) -> str:
    found = sum(int(r[f"{kind}_lesions_detected"]) for r in rows)
    return f"{found} of {sum(int(r[f'{kind}_lesions_ref']) for r in rows)}"


def _flagged(rows: list[dict]) -> str:
    if "flagged" not in rows[0]:
        return "—"
    hu = [r["hu"] for r in rows]
    flagged = sum(r["flagged"] for r in rows)
    return f"{flagged} of {len(rows)} (parenchyma {np.nanmin(hu):.0f}–{np.nanmax(hu):.0f} HU)"


if __name__ == "__main__":
    main()
