"""How far does the best HU window get on each phantom? (An oracle no threshold method has.)

For each of `--cases` default `small` phantoms (`case_seeds(--seed, --cases)`) the window
[lo, hi) on a 10 HU grid that best segments that case's kidney (label 1) is searched on that
case alone, and its kidney Dice reported, per case and per contrast phase. Phantoms a window
can segment teach a network to threshold; real CT does not allow it (docs/phantom.md).

Usage:
    python benchmarks/phantom_oracle.py [--cases 24] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from kidneyseg.data.phantom import case_seeds, generate_case
from phantom_learnability import best_window, dice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    per_phase: dict[str, list[float]] = {}
    scores = []
    for seed in case_seeds(args.seed, args.cases):
        case = generate_case(seed, size="small")
        ct, kidney = case.ct.array, case.labels.array == 1
        lo, hi = best_window([(ct, case.labels.array)])
        score = dice((ct >= lo) & (ct < hi), kidney)
        scores.append(score)
        per_phase.setdefault(case.truth["phase"], []).append(score)
        what = f"{case.truth['phase']:>16} {case.truth['dose']:>8} dose"
        print(f"{what}  window [{lo}, {hi})  kidney Dice {score:.3f}")
    print(f"all {len(scores)}: median {statistics.median(scores):.3f}, max {max(scores):.3f}")
    for phase, values in sorted(per_phase.items()):
        print(f"{phase}: {len(values)} cases, mean {np.mean(values):.3f}, max {max(values):.3f}")


if __name__ == "__main__":
    main()
