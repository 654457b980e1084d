"""Validate the report's tumor diameter against the radiologists' tumor sizes of KiTS19.

For each of the 210 KiTS19 reference masks (kidney 1, tumor 2), compute the maximum axial
diameter of the largest tumor (by volume) exactly as `kidneyseg report` does
(`kidneyseg.report.geometry`), and compare it with `radiographic_size` (cm) in kits.json:
Pearson r, median absolute error, the worst cases with the evidence that explains them
(diameters in the other planes, in 3D, number of tumors), and a scatter plot.

Usage:
    python benchmarks/validate_tumor_size.py [--data ../shared/data/kits19] [--workers 2]

Writes docs/validation.md and docs/validation_tumor_size.png. Each mask is cropped to its
tumor bounding box before measuring; cases run in parallel worker processes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "kits19"
COMMAND = "python benchmarks/validate_tumor_size.py --workers 2"
SPECK_ML = 0.5  # tumor components smaller than this are annotation specks, not separate tumors
MATCH_CM = 0.5  # an alternative measurement "explains" a case if it is within this of the size
SEEN = {
    # What the masks show, looked at by hand on the axial slice of the largest diameter.
    "case_00151": "an irregular 242 mL tumor plus a second 20 mL one; the stated size fits the smaller",
    "case_00184": "bilateral: one large tumor and several 2-4 cm tumors in the other kidney",
    "case_00118": "one tumor in each kidney (56 and 26 mL); the stated size fits the smaller",
    "case_00114": "a 1.4 L tumor, longest cranio-caudally",
    "case_00028": "multilobulated: several lobes side by side on the axial slices",
    "case_00051": "round mass with a tongue-like extension leaving the kidney (the round part is smaller)",
    "case_00139": "a large round tumor, larger than stated in every plane",
    "case_00187": "a round axial section; the tumor is longer cranio-caudally",
    "case_00057": "a round mass with an irregular lateral bulge",
    "case_00059": "a round tumor inside the kidney, larger than stated in every plane",
    "case_00069": "upper-pole tumor, longest antero-posteriorly; the stated size fits its coronal diameter",
    "case_00113": "lobulated, with a second lobe above the main mass",
}


def measure_case(path: Path) -> dict:
    """Diameters (cm) of the tumors in one reference mask.

    `axial` is what the report's summary calls the largest tumor diameter: the largest
    maximum axial diameter over the tumor's 26-connected components. That component is
    also measured in the coronal and sagittal planes and in 3D.
    """
    import nibabel as nib
    from scipy import ndimage

    from kidneyseg.report import diameters, geometry

    image = nib.load(str(path))
    tumor = np.asarray(image.dataobj) == 2
    if not tumor.any():
        return {"num_tumors": 0}
    box = tuple(
        slice(int(ix[0]), int(ix[-1]) + 1)
        for ix in (np.flatnonzero(tumor.any(axis=tuple(b for b in range(3) if b != a))) for a in range(3))
    )
    affine = image.affine.copy()
    affine[:3, 3] = geometry.to_world(np.array([[s.start for s in box]], dtype=np.float64), image.affine)[0]
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000
    labelled, count = geometry.components(tumor[box])
    sizes = np.bincount(labelled.ravel(), minlength=count + 1)[1:]
    axial = [
        diameters.max_axial_diameter_mm(labelled[b] == i + 1, affine)[0] / 10
        for i, b in enumerate(ndimage.find_objects(labelled))
    ]
    largest = int(np.argmax(axial))
    mask = labelled == largest + 1
    others = sorted(
        (d for i, d in enumerate(axial) if i != largest and sizes[i] * voxel_ml >= SPECK_ML), reverse=True
    )
    return {
        "num_tumors": int((sizes * voxel_ml >= SPECK_ML).sum()),
        "volume_ml": float(sizes[largest] * voxel_ml),
        "axial": axial[largest],
        "coronal": diameters.max_planar_diameter_mm(mask, affine, normal=1)[0] / 10,
        "sagittal": diameters.max_planar_diameter_mm(mask, affine, normal=0)[0] / 10,
        "max_3d": diameters.max_3d_diameter_mm(mask, affine) / 10,
        "other_tumors_axial": " ".join(f"{d:.2f}" for d in others),
        "slice_mm": float(np.linalg.norm(affine[:3, geometry.slice_axis(affine)])),
    }


def explain(row: dict) -> str:
    """The evidence that best explains a disagreement, from the measurements alone."""
    size, ours = row["radiographic_size"], row["axial"]
    gap = abs(ours - size)
    reasons = []
    others = [float(d) for d in row["other_tumors_axial"].split()]
    if others:
        reasons.append(f"multifocal: {len(others) + 1} tumors ≥ {SPECK_ML} mL")
        closest = min(others, key=lambda d: abs(d - size))
        if abs(closest - size) < min(MATCH_CM, gap):
            reasons.append(f"the size matches another tumor ({closest:.1f} cm axial)")
    planes = {"coronal": row["coronal"], "sagittal": row["sagittal"], "3D": row["max_3d"]}
    plane, value = min(planes.items(), key=lambda kv: abs(kv[1] - size))
    if abs(value - size) < min(MATCH_CM, gap):
        reasons.append(f"measured in another plane: the {plane} diameter is {value:.1f} cm")
    elif ours < size <= max(row["coronal"], row["sagittal"]) + MATCH_CM:
        reasons.append(
            f"tumor longest off the axial plane (coronal {row['coronal']:.1f}, "
            f"sagittal {row['sagittal']:.1f} cm): "
            "the size was likely measured on a coronal/sagittal or oblique reformat"
        )
    if len(reasons) == (1 if others else 0):
        if ours > size and all(v > size + MATCH_CM for v in planes.values()):
            reasons.append(
                "the mask is larger than the stated size in every plane (size from another study?)"
            )
        elif ours < size and all(v < size - MATCH_CM for v in planes.values()):
            reasons.append(
                "the mask is smaller than the stated size in every plane (size from another study?)"
            )
    return "; ".join(reasons) or "no single explanation in the mask"


def scatter(rows: list[dict], path: Path, r: float, mae: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = np.array([row["radiographic_size"] for row in rows])
    ours = np.array([row["axial"] for row in rows])
    top = float(max(size.max(), ours.max())) * 1.05
    fig, ax = plt.subplots(figsize=(6, 6), dpi=120)
    ax.plot([0, top], [0, top], color="0.6", lw=1, label="identity")
    ax.scatter(size, ours, s=12, alpha=0.7, color="#e6194b", label=f"{len(rows)} KiTS19 cases")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_aspect("equal")
    ax.set_xlabel("radiographic size in kits.json (cm)")
    ax.set_ylabel("largest tumor, max axial diameter from the mask (cm)")
    ax.set_title(f"Tumor size: Pearson r = {r:.3f}, median |error| = {mae:.2f} cm")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


SIZE_BINS_CM = (0, 2, 3, 4, 5, 7, 10, 100)
KEEP_FROM = "## Clinical T category against pathology"


def write_markdown(rows: list[dict], skipped: list[str], path: Path, png: Path, seconds: float, workers: int):
    from scipy.stats import spearmanr

    size = np.array([row["radiographic_size"] for row in rows])
    ours = np.array([row["axial"] for row in rows])
    error = ours - size
    r = float(np.corrcoef(size, ours)[0, 1])
    mae = float(np.median(np.abs(error)))
    offset = float(np.median(error))
    by_error = np.argsort(-np.abs(error))
    planes = [
        ("max axial diameter (reported)", "axial"),
        ("max coronal diameter", "coronal"),
        ("max sagittal diameter", "sagittal"),
        ("max 3D diameter", "max_3d"),
    ]
    plane_rows = []
    for name, key in planes:
        values = np.array([row[key] for row in rows])
        plane_rows.append(
            f"| {name} | {np.corrcoef(size, values)[0, 1]:.3f} | {np.median(np.abs(values - size)):.2f} | "
            f"{np.median(values - size):+.2f} |"
        )
    bin_rows = []
    for low, high in itertools.pairwise(SIZE_BINS_CM):
        inside = (size >= low) & (size < high)
        if inside.any():
            bin_rows.append(
                f"| {low}–{high if high < 100 else '…'} | {inside.sum()} | {np.median(error[inside]):+.2f} | "
                f"{np.median(ours[inside] / size[inside]):.2f} |"
            )
    scatter(rows, png, r, mae)
    lines = [
        "# Validation: tumor size against the radiologists' measurements (KiTS19)",
        "",
        "`kits.json` gives each KiTS19 case's `radiographic_size`: the tumor size in cm a radiologist "
        "reported from the preoperative imaging. From each of the 210 reference masks (kidney 1, tumor 2) "
        "we compute what the report's summary calls the largest tumor diameter: the largest maximum axial "
        "diameter over the 26-connected tumor components, measured edge to edge on the convex hull of each "
        "axial slice's outline in world mm from the affine (see [report.md](report.md); the KiTS19 files "
        "have their slices on array axis 0, which the affine tells us).",
        "",
        "Command (from the repository root, with `../shared/data/kits19` beside it; writes this page and "
        f"`{png.name}`):",
        "",
        "```",
        COMMAND,
        "```",
        "",
        f"Run time: {seconds:.0f} s with {workers} worker processes on the shared 2-core machine "
        "(each mask cropped to its tumor bounding box before measuring).",
        "",
        "## Result",
        "",
        f"- Cases compared: **{len(rows)}** (skipped: {', '.join(skipped) if skipped else 'none'})",
        f"- Pearson r: **{r:.3f}** (target ≥ 0.97); without the single worst case "
        f"{_r(size, ours, by_error[1:]):.3f}, "
        f"without the 3 worst {_r(size, ours, by_error[3:]):.3f}; Spearman ρ {spearmanr(size, ours)[0]:.3f}",
        f"- Median absolute error: **{mae:.3f} cm** (target ≤ 0.5 cm)",
        f"- Median signed error (ours − radiographic): **{offset:+.2f} cm**; after removing this constant "
        f"offset the median absolute error is {np.median(np.abs(error - offset)):.2f} cm",
        f"- |error| ≤ 0.5 cm in {np.mean(np.abs(error) <= 0.5):.0%} of cases, ≤ 1 cm in "
        f"{np.mean(np.abs(error) <= 1.0):.0%}",
        "",
        f"![scatter plot]({png.name})",
        "",
        "## The offset does not scale with size",
        "",
        "| radiographic size (cm) | cases | median error (cm) | median ratio ours / radiographic |",
        "|---|---|---|---|",
        *bin_rows,
        "",
        "A scale error (wrong spacing, wrong axis) would give a constant ratio; what we see instead is a "
        "roughly constant additive offset, about half of it on each edge of the tumor. Likely causes: "
        "the reference masks include the tumor's rim and partial-volume voxels more generously than "
        "where a radiologist puts the calipers, and a radiologist measures one slice in one direction "
        "by eye rather than the exact maximum over all slices and directions. Our edge-to-edge "
        "convention accounts for only about half a voxel (≈ 0.04 cm, see report.md) of it.",
        "",
        f"Verdict: Pearson r {'meets' if r >= 0.97 else 'misses'} the 0.97 target ({r:.3f}; without the "
        f"single worst case {_r(size, ours, by_error[1:]):.3f}) and the median absolute error "
        f"{'meets' if mae <= 0.5 else 'misses'} the 0.5 cm target ({mae:.3f} cm). The error is dominated by "
        "the constant offset above and, for r, by a few cases where the "
        "radiologist measured another tumor or another plane (below).",
        "",
        "## Which plane matches the radiologists best",
        "",
        "The same largest tumor measured in the other planes and in 3D (the axial diameter is the one "
        "the report gives):",
        "",
        "| measurement from the mask | Pearson r | median abs. error (cm) | median error (cm) |",
        "|---|---|---|---|",
        *plane_rows,
        "",
        "## Worst cases",
        "",
        "Reasons come from the evidence in the mask (diameters in the other planes and of the other "
        f"tumors): an alternative explains a case when it is within {MATCH_CM} cm of the stated size and "
        "closer than our axial diameter.",
        "",
        "| case | radiographic (cm) | ours, axial (cm) | coronal | sagittal | 3D | other tumors, axial (cm) "
        "| slice (mm) | reason (from the measurements) | seen on the mask |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *[
            f"| {row['case_id']} | {row['radiographic_size']:.1f} | {row['axial']:.2f} | "
            f"{row['coronal']:.2f} | "
            f"{row['sagittal']:.2f} | {row['max_3d']:.2f} | {row['other_tumors_axial'] or '—'} | "
            f"{row['slice_mm']:.1f} | {explain(row)} | {SEEN.get(row['case_id'], 'not looked at')} |"
            for row in (rows[i] for i in by_error[:12])
        ],
        "",
    ]
    # Keep the sections other benchmarks write below this one (validate_staging.py).
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    tail = old[old.index(KEEP_FROM) :] if KEEP_FROM in old else ""
    path.write_text("\n".join(lines) + ("\n" + tail if tail else ""), encoding="utf-8")
    return r, mae


def _r(x: np.ndarray, y: np.ndarray, keep: np.ndarray) -> float:
    return float(np.corrcoef(x[keep], y[keep])[0, 1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with kits.json and case_*")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="only the first N cases (quick check)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "validation.md")
    parser.add_argument("--csv", type=Path, default=None, help="also write every case's measurements here")
    args = parser.parse_args(argv)
    from tqdm import tqdm

    clinical = json.loads((args.data / "kits.json").read_text())[: args.limit]
    todo = [(c, args.data / c["case_id"] / "segmentation.nii.gz") for c in clinical]
    todo = [(c, p) for c, p in todo if p.exists() and c.get("radiographic_size") is not None]
    skipped = sorted({c["case_id"] for c in clinical} - {c["case_id"] for c, _ in todo})
    start = time.perf_counter()
    rows = []
    with ProcessPoolExecutor(args.workers) as pool:
        results = pool.map(measure_case, [p for _, p in todo], chunksize=2)
        for (case, _), result in tqdm(zip(todo, results, strict=True), total=len(todo), desc="cases"):
            if result["num_tumors"] == 0 and "axial" not in result:
                skipped.append(f"{case['case_id']} (no tumor in the mask)")
                continue
            rows.append(
                {"case_id": case["case_id"], "radiographic_size": float(case["radiographic_size"]), **result}
            )
    seconds = time.perf_counter() - start
    if args.csv is not None:
        import csv

        with args.csv.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    png = args.out.with_name("validation_tumor_size.png")
    r, mae = write_markdown(rows, skipped, args.out, png, seconds, args.workers)
    print(
        f"{len(rows)} cases: Pearson r = {r:.3f}, median |error| = {mae:.2f} cm "
        f"({seconds:.0f} s) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
