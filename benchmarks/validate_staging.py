"""Validate the report's clinical T category against the pathology of the 210 KiTS19 cases.

Each reference mask (kidney 1, tumor 2) goes through `kidneyseg.report.measure` exactly as
`kidneyseg report` runs it (with a flat CT: the masks come without their images). The cT
category it gives is compared with `pathology_t_stage` in kits.json (confusion matrix, exact
agreement, Cohen's kappa unweighted and linearly weighted), and the size the category rests
on with `pathologic_size`. As the reference point, the same size-only staging is applied to
the radiologist's `radiographic_size` and to the pathologist's `pathologic_size`.

Usage:
    python benchmarks/validate_staging.py [--data ../shared/data/kits19] [--workers 2]
        [--rows rows.json] [--from-rows rows.json]

Replaces the "Clinical T category" section of docs/validation.md (or appends it).
`--rows` keeps every case's measurements; `--from-rows` rewrites the page from them without
measuring again (rows of another report schema are refused: their staging is another version's).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from kidneyseg.report import staging
from kidneyseg.report.checks import ReportOptions
from kidneyseg.report.measure import SCHEMA_VERSION

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "kits19"
COMMAND = "nice -n 15 python benchmarks/validate_staging.py --workers 2"
SECTION = "## Clinical T category against pathology"
ORDER = ("T0", "T1a", "T1b", "T2a", "T2b", "T3", "T4")
THRESHOLDS_MM = (0.0, 5.0, 10.0, 15.0, 20.0, 30.0)
FOLDS, FOLD_SEED = 10, 0
EXTENSION_MM = ReportOptions().extension_mm


def stage_case(path: Path) -> dict:
    """The report's staging of one reference mask, and the measurements it rests on."""
    from kidneyseg.io.volume import Volume, read_volume
    from kidneyseg.labels import KITS19
    from kidneyseg.report import measure

    start = time.perf_counter()
    labels = read_volume(path)
    ct = Volume(np.full(labels.shape, 40, np.int16), labels.affine, "flat CT")
    report = measure(ct, labels, KITS19)
    tumors = [r for r in report["lesions"] if r["type"] == "tumor"]
    staged = report["staging"] or {}
    extensions = [r["extension_mm"] for r in tumors if r["extension_mm"] is not None]
    return {
        "ct": staged.get("category", "none")[1:],
        "specimen_cm": staged.get("specimen_size_cm"),
        "axial_cm": max((r[staging.GREATEST_DIMENSION] for r in tumors), default=None),
        "max_3d_cm": max((r["max_3d_diameter_cm"] for r in tumors), default=None),
        "max_ml": max((r["volume_ml"] for r in tumors), default=None),
        "tumor_ml": [r["volume_ml"] for r in tumors],
        "extension_mm": max(extensions, default=None),
        "num_tumors": len(tumors),
        "seconds": time.perf_counter() - start,
    }


def fit_specimen_size(rows: list[dict]) -> np.ndarray:
    """Least squares of `pathologic_size` on 1 and the sphere diameter of each case's largest
    tumor: the fit behind `staging.SPECIMEN_SIZE_FIT`."""
    x = np.array([[1.0, staging.sphere_diameter_cm(max(r["tumor_ml"]))] for r in rows])
    return np.linalg.lstsq(x, np.array([r["pathologic_size"] for r in rows]), rcond=None)[0]


def out_of_fold_sizes(rows: list[dict], groups: list[np.ndarray]) -> np.ndarray:
    """Each case's specimen size estimate with the coefficients fitted on the cases outside its
    group."""
    sizes = np.empty(len(rows))
    for group in groups:
        held = set(group.tolist())
        fit = tuple(fit_specimen_size([r for i, r in enumerate(rows) if i not in held]))
        sizes[group] = [staging.specimen_size_cm(max(rows[i]["tumor_ml"]), fit) for i in group]
    return sizes


def in_t1_t2(category: str) -> bool:
    """Whether a pathologic T category is pT1 or pT2 (a, b): where size alone decides."""
    return category[:2] in ("T1", "T2")


def size_line(name: str, cm: np.ndarray, path_size: np.ndarray) -> str:
    return (
        f"- {name} vs `pathologic_size`: Pearson r {np.corrcoef(cm, path_size)[0, 1]:.3f}, median error "
        f"{np.median(cm - path_size):+.2f} cm, median |error| {np.median(np.abs(cm - path_size)):.2f} cm"
    )


def size_t(cm: float) -> str:
    return staging.size_category(cm)


def kappa(truth: list[str], guess: list[str], weighted: bool = False) -> float:
    """Cohen's kappa over the categories of `ORDER` (linear weights when `weighted`)."""
    index = {c: i for i, c in enumerate(ORDER)}
    n = len(ORDER)
    table = np.zeros((n, n))
    for t, g in zip(truth, guess, strict=True):
        table[index[t], index[g]] += 1
    table /= table.sum()
    expected = np.outer(table.sum(axis=1), table.sum(axis=0))
    i, j = np.indices((n, n))
    weights = np.abs(i - j) / (n - 1) if weighted else (i != j).astype(float)
    return float(1 - (weights * table).sum() / (weights * expected).sum())


def confusion(truth: list[str], guess: list[str], name: str) -> list[str]:
    shown = [c for c in ORDER if c in truth or c in guess]
    lines = [f"| pT \\ {name} | " + " | ".join(shown) + " | cases |", "|---" * (len(shown) + 2) + "|"]
    for t in shown:
        counts = [sum(1 for a, b in zip(truth, guess, strict=True) if a == t and b == g) for g in shown]
        lines.append(f"| {t} | " + " | ".join(str(c) for c in counts) + f" | {sum(counts)} |")
    return lines


def agreement_row(name: str, truth: list[str], guess: list[str]) -> str:
    pairs = list(zip(truth, guess, strict=True))
    within = [(t, g) for t, g in pairs if in_t1_t2(t)]
    return (
        f"| {name} | {np.mean([t == g for t, g in pairs]):.1%} | "
        f"{np.mean([t == g for t, g in within]):.1%} ({len(within)}) | "
        f"{kappa(truth, guess):.3f} | {kappa(truth, guess, weighted=True):.3f} |"
    )


def write_section(rows: list[dict], seconds: float, workers: int, path: Path) -> dict:
    shipped = staging.SPECIMEN_SIZE_FIT
    rows = [r for r in rows if r["ct"] != "none" and r["pathologic_size"] is not None]
    truth = ["T" + r["pathology_t_stage"] for r in rows]
    ours = [r["ct"] for r in rows]
    radiologist = [size_t(r["radiographic_size"]) for r in rows]
    pathologist = [size_t(r["pathologic_size"]) for r in rows]
    pt3 = np.array([t == "T3" for t in truth])
    extension = np.array([r["extension_mm"] if r["extension_mm"] is not None else -np.inf for r in rows])
    sizes = np.array([r["axial_cm"] for r in rows])
    specimen = np.array([r["specimen_cm"] for r in rows])
    shipped_sizes = np.array([round(staging.specimen_size_cm(max(r["tumor_ml"])), 2) for r in rows])
    if not np.allclose(specimen, shipped_sizes):
        raise SystemExit("the saved rows were measured with another SPECIMEN_SIZE_FIT: measure again")
    path_size = np.array([r["pathologic_size"] for r in rows])
    radio_size = np.array([r["radiographic_size"] for r in rows])
    folds = np.array_split(np.random.default_rng(FOLD_SEED).permutation(len(rows)), FOLDS)
    parity = np.array([int(r["case_id"][-5:]) % 2 for r in rows])
    out_of_fold = {
        f"{FOLDS} folds": out_of_fold_sizes(rows, folds),
        "leave one out": out_of_fold_sizes(rows, [np.array([i]) for i in range(len(rows))]),
        "fit on even case numbers, tested on odd, and the reverse": out_of_fold_sizes(
            rows, [np.flatnonzero(parity == 0), np.flatnonzero(parity == 1)]
        ),
    }
    fit = fit_specimen_size(rows)
    threshold_rows = [
        f"| {t:g} | {int((extension > t)[pt3].sum())} / {int(pt3.sum())} | "
        f"{int((extension > t)[~pt3].sum())} / {int((~pt3).sum())} | "
        + (f"{pt3[extension > t].mean():.0%}" if (extension > t).any() else "—")
        + " |"
        for t in THRESHOLDS_MM
    ]
    flag_as_t3 = ["T3" if e > EXTENSION_MM else t for t, e in zip(ours, extension, strict=True)]
    times = np.array([r["seconds"] for r in rows])
    lines = [
        SECTION,
        "",
        '`kidneyseg report` gives a clinical T category (report.md, "Clinical T category"): the TNM 8th '
        "edition size category (T1a ≤ 4 cm, T1b ≤ 7, T2a ≤ 10, T2b > 10 cm) of the largest tumor's specimen "
        "size estimated from its volume (a + c × the diameter of the sphere of its volume, fitted here "
        f"against `pathologic_size`); a tumor reaching more than {EXTENSION_MM:g} mm medially beyond "
        "its kidney's parenchyma is flagged beside it as a possible cT3. Each of the KiTS19 reference "
        "masks is run through "
        "`kidneyseg.report.measure` as the command runs it and compared with `pathology_t_stage`, and its "
        "size with `pathologic_size`, from "
        "kits.json. Reference points: the same size-only staging from the radiologist's "
        "`radiographic_size` and from the pathologist's own `pathologic_size`.",
        "",
        "Command (from the repository root, `../shared/data/kits19` beside it; rewrites this section):",
        "",
        "```",
        COMMAND,
        "```",
        "",
        f"Run time: {seconds:.0f} s with {workers} worker processes on the shared 2-core machine; "
        f"`measure` per case median {np.median(times):.1f} s, max {times.max():.1f} s (including reading "
        "the mask).",
        "",
        f"### Agreement with the pathologic T stage ({len(rows)} cases)",
        "",
        "| staging | exact agreement | exact within pT1–pT2 (cases) | Cohen's κ | linearly weighted κ |",
        "|---|---|---|---|---|",
        agreement_row("report: cT (shipped fit, in sample)", truth, ours),
        agreement_row("the same, cT3 when the extension flag is raised", truth, flag_as_t3),
        *(
            agreement_row(f"specimen size estimate, out of fold ({name})", truth, [size_t(c) for c in cm])
            for name, cm in out_of_fold.items()
        ),
        agreement_row("max axial diameter of the mask, size only", truth, [size_t(c) for c in sizes]),
        agreement_row("radiologist's size, size only", truth, radiologist),
        agreement_row("pathologic size, size only (ceiling)", truth, pathologist),
        "",
        f"The shipped coefficients (`staging.SPECIMEN_SIZE_FIT`) are a {shipped[0]:+.3f}, "
        f"c {shipped[1]:+.3f}; this run's fit over all cases gives a {fit[0]:+.3f}, c {fit[1]:+.3f}. "
        "The in-sample row uses the cases the coefficients were fitted on; the out-of-fold rows "
        f"estimate each case with coefficients fitted without it ({FOLDS} folds of a seed-{FOLD_SEED} "
        "permutation, each case alone, and a split by case number), which is what to expect on new "
        "patients.",
        "",
        "κ over the categories T0 (benign), T1a, T1b, T2a, T2b, T3, T4. The report's cT never gives "
        f"T0 ({truth.count('T0')} benign cases), T3 or T4 ({truth.count('T4')}); the second row stages the "
        "flagged cases cT3.",
        "",
        "Confusion matrix of the report's cT (rows: pathology):",
        "",
        *confusion(truth, ours, "report cT"),
        "",
        "Confusion matrix of size-only staging from the radiologist's size:",
        "",
        *confusion(truth, radiologist, "radiologist size"),
        "",
        "### Size against the pathologic size",
        "",
        *(
            size_line(name, cm, path_size)
            for name, cm in {
                "report's specimen size estimate (shipped fit, in sample)": specimen,
                f"specimen size estimate, out of fold ({FOLDS} folds)": out_of_fold[f"{FOLDS} folds"],
                "largest max axial diameter of any tumor": sizes,
                "radiologist's size": radio_size,
            }.items()
        ),
        "",
        "### The extension flag (possible cT3)",
        "",
        "How far the tumor reaches medially beyond its kidney's parenchyma, against pT3 (renal vein or "
        "perinephric/sinus fat invasion at pathology), for several thresholds (the report uses "
        f"{EXTENSION_MM:g} mm; "
        "pT3 is the flag's positive predictive value):",
        "",
        "| threshold (mm) | flagged among pT3 | flagged among the others | flagged that are pT3 |",
        "|---|---|---|---|",
        *threshold_rows,
        "",
    ]
    measure_lines, exact_by_measure = other_measures(rows, truth, path_size)
    lines += measure_lines
    lines += verdict(truth, out_of_fold, radiologist, extension, pt3, sizes, path_size, exact_by_measure)
    _replace_section(path, "\n".join(lines))
    return {
        "exact": float(np.mean([t == g for t, g in zip(truth, ours, strict=True)])),
        "kappa": kappa(truth, ours),
    }


def other_measures(
    rows: list[dict], truth: list[str], path_size: np.ndarray
) -> tuple[list[str], dict[str, float]]:
    """Size-only staging from other sizes of the same masks' tumors, beside the report's and the
    radiologist's: the table, and each other size's exact agreement within pT1–pT2."""
    report = [r["axial_cm"] for r in rows]
    radiologist = [r["radiographic_size"] for r in rows]
    others = {
        "the max 3D diameter of the largest tumor": [r["max_3d_cm"] for r in rows],
        "the diameter of the sphere of the largest tumor's volume": [
            staging.sphere_diameter_cm(r["max_ml"]) for r in rows
        ],
    }
    within = [i for i, t in enumerate(truth) if in_t1_t2(t)]
    exact_by_measure = {}
    lines = [
        "### Other size measures",
        "",
        "Size-only staging from other sizes of the same masks (largest tumor by volume for the sphere):",
        "",
        "| size | exact within pT1–pT2 | median error vs `pathologic_size` (cm) | Pearson r |",
        "|---|---|---|---|",
    ]
    table = {
        "the largest max axial diameter of any tumor (measured)": report,
        **others,
        "the radiologist's size": radiologist,
    }
    for name, values in table.items():
        cm = np.array(values, dtype=float)
        exact = float(np.mean([size_t(cm[i]) == truth[i] for i in within]))
        if name in others:
            exact_by_measure[name] = exact
        r = np.corrcoef(cm, path_size)[0, 1]
        lines.append(f"| {name} | {exact:.1%} | {np.median(cm - path_size):+.2f} | {r:.3f} |")
    return [*lines, ""], exact_by_measure


def verdict(
    truth: list[str], out_of_fold: dict, radiologist: list[str], extension, pt3, axial, path_size, others
):
    """What the images can and cannot stage, in numbers from this run (`out_of_fold`: the specimen
    size estimates fitted without each case, `axial`: the masks' max axial diameters, `path_size`:
    the pathologic sizes, cm, `others`: exact agreement within pT1–pT2 of other sizes of the masks)."""

    def within(guess: list[str]) -> float:
        pairs = [(t, g) for t, g in zip(truth, guess, strict=True) if in_t1_t2(t)]
        return float(np.mean([t == g for t, g in pairs]))

    flagged = extension > EXTENSION_MM
    best_shift, best = max(
        ((shift, within([size_t(cm - shift) for cm in axial])) for shift in np.arange(0.0, 0.55, 0.05)),
        key=lambda pair: pair[1],
    )
    closest = max(others.items(), key=lambda pair: pair[1])
    held_out = ", ".join(
        f"{within([size_t(c) for c in cm]):.1%} ({name})" for name, cm in out_of_fold.items()
    )
    cases = sum(in_t1_t2(t) for t in truth)
    first = next(iter(out_of_fold.values()))
    return [
        "### What the images can and cannot stage",
        "",
        f"- **Size (pT1–pT2)**: the masks' max axial diameter reads larger than the pathologic size "
        f"(median {np.median(axial - path_size):+.2f} cm), so tumors near a cut-off (4, 7, 10 cm) go up a "
        f"category: it agrees exactly in {within([size_t(c) for c in axial]):.1%} of the pT1–pT2 cases "
        f"against the radiologist's size's {within(radiologist):.1%}. Subtracting a constant does not close "
        f"the gap (the best shift from 0 to 0.5 cm, {best_shift:.2f} cm chosen on these very cases, reaches "
        f"{best:.1%}); {closest[0]} comes closer ({closest[1]:.1%}). The report's specimen size estimate "
        "is the diameter of the sphere of the largest tumor's volume calibrated against the pathologic "
        "size. Fitted without the case it "
        "stages, it agrees in "
        f"{held_out}: {round(within([size_t(c) for c in first]) * cases)} of {cases} cases with {FOLDS} "
        f"folds, where the radiologist's size gets {round(within(radiologist) * cases)}; on {cases} cases "
        "a few either way are within the noise. "
        "The estimate is calibrated on KiTS19's reference masks; a model's masks may be drawn differently.",
        f"- **T3**: {int(pt3.sum())} cases are pT3 (mostly pT3a: perinephric or sinus fat invasion, seen "
        f"under the microscope). The extension flag finds {int(flagged[pt3].sum())} of them and flags "
        f"{int(flagged[~pt3].sum())} of the {int((~pt3).sum())} others: a tumor reaching "
        f"{EXTENSION_MM:g} mm medially beyond the kidney is rare in the masks, and the reference labels "
        "do not mark the renal vein. "
        "The flag is a prompt to look, beside the size category: staging the flagged cases cT3 lowers "
        "exact agreement (the second row of the table).",
        f"- **T0 and T4**: benign tumors ({truth.count('T0')}) and T4 ({truth.count('T4')}) cannot be told "
        "from a label map.",
        "",
    ]


def _replace_section(path: Path, section: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    head = text.split(SECTION)[0].rstrip("\n")
    path.write_text((head + "\n\n" if head else "") + section, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with kits.json and case_*")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="only the first N cases (quick check)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "validation.md")
    parser.add_argument("--rows", type=Path, default=None, help="also write every case's measurements here")
    parser.add_argument("--from-rows", type=Path, default=None, help="rewrite the page from saved rows")
    args = parser.parse_args(argv)
    if args.from_rows is not None:
        saved = json.loads(args.from_rows.read_text())
        if saved.get("report_schema") != SCHEMA_VERSION:
            sys.exit(
                f"error: {args.from_rows}: rows of report schema {saved.get('report_schema', 'before 10')}, "
                f"this version writes {SCHEMA_VERSION}: measure them again (--rows)"
            )
        rows, seconds = saved["rows"], saved["seconds"]
    else:
        clinical = json.loads((args.data / "kits.json").read_text())[: args.limit]
        todo = [(c, args.data / c["case_id"] / "segmentation.nii.gz") for c in clinical]
        todo = [(c, p) for c, p in todo if p.exists()]
        start = time.perf_counter()
        with ProcessPoolExecutor(args.workers) as pool:
            results = list(pool.map(stage_case, [p for _, p in todo]))
        seconds = time.perf_counter() - start
        keys = ("case_id", "pathology_t_stage", "pathologic_size", "radiographic_size")
        rows = [{**{k: c[k] for k in keys}, **r} for (c, _), r in zip(todo, results, strict=True)]
        if args.rows is not None:
            saved = {"report_schema": SCHEMA_VERSION, "rows": rows, "seconds": seconds}
            args.rows.write_text(json.dumps(saved, indent=1))
    result = write_section(rows, seconds, args.workers, args.out)
    print(f"{len(rows)} cases: exact {result['exact']:.1%}, kappa {result['kappa']:.3f} ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
