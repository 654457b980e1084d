"""Report speed: `measure` and `write_report` (measure, pictures, HTML, preview) on full-size
KiTS19 label maps with a flat CT, wall time, this checkout's code against another checkout's
(`--reference SRC`, the `src` folder of e.g. `git worktree add ../ref <commit>`) in the same run.

Rounds alternate between the two codes; each round is a fresh process per code and case that
reads the map, writes one report to warm up (imports), then times `--repeats` of each call.
The table gives the median over all rounds and repeats, and the reference's median over ours.

    python benchmarks/report_speed.py --cases case_00151 case_00000 --rounds 3 --repeats 3 \\
        --reference ../ref/src
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
SRC = HERE.parents[1] / "src"
DATA = HERE.parents[2] / "shared" / "data" / "kits19"


def child(case: str, repeats: int) -> dict:
    """Time `measure` and `write_report` on one case with whichever kidneyseg is importable."""
    import numpy as np

    import kidneyseg
    from kidneyseg.io.volume import Volume, read_volume
    from kidneyseg.labels import KITS19
    from kidneyseg.report import measure, write_report

    labels = read_volume(DATA / case / "segmentation.nii.gz")
    ct = Volume(np.full(labels.shape, 40, np.int16), labels.affine, "flat CT")
    with tempfile.TemporaryDirectory() as out:
        write_report(ct, labels, Path(out) / "warm-up", KITS19)
        times: dict[str, list[float]] = {"measure": [], "write_report": []}
        for repeat in range(repeats):
            start = time.perf_counter()
            measure(ct, labels, KITS19)
            times["measure"].append(time.perf_counter() - start)
            start = time.perf_counter()
            write_report(ct, labels, Path(out) / str(repeat), KITS19)
            times["write_report"].append(time.perf_counter() - start)
    return {"code": str(Path(kidneyseg.__file__).parents[1]), "shape": list(labels.shape), **times}


def run(src: Path, case: str, repeats: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, str(HERE), "--child", case, "--repeats", str(repeats)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="+", default=["case_00151", "case_00000"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference", type=Path, help="another checkout's src folder, timed in the same run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.repeats)))
        return
    codes = {"ours": SRC} | ({"reference": args.reference.resolve()} if args.reference else {})
    found: dict[tuple[str, str], dict[str, list[float]]] = {}
    for number in range(1, args.rounds + 1):
        for case in args.cases:
            for name, src in codes.items():
                result = run(src, case, args.repeats)
                if Path(result["code"]) != src:
                    sys.exit(f"{name}: imported kidneyseg from {result['code']}, not {src}")
                times = found.setdefault((case, name), {"measure": [], "write_report": []})
                for call in times:
                    times[call] += result[call]
                print(
                    f"round {number} {case} {name}: "
                    + ", ".join(f"{call} {' '.join(f'{t:.2f}' for t in result[call])} s" for call in times),
                    flush=True,
                )
    print("\n| case | code | measure (median s) | write_report (median s) | reference / ours |")
    print("|---|---|---|---|---|")
    for (case, name), times in found.items():
        medians = {call: statistics.median(values) for call, values in times.items()}
        ratio = ""
        if name == "reference":
            ours = statistics.median(found[(case, "ours")]["write_report"])
            ratio = f"{medians['write_report'] / ours:.2f}× (write_report)"
        print(f"| {case} | {name} | {medians['measure']:.2f} | {medians['write_report']:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
