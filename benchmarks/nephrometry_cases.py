"""R.E.N.A.L. and PADUA of the report on 20 KiTS19 reference masks, as a table with pictures.

Every tenth KiTS19 case (case_00000, case_00010, ... case_00190) goes through
`kidneyseg.report.measure` as `kidneyseg report` runs it (with a flat CT: the masks come without
their images). For the largest tumor of each case the page lists every nephrometry component,
continuous and scored, and draws two cuts through the tumor's centre on which a reader can check
them by eye: a coronal cut with the kidney's polar lines (L, PADUA's polar location, E) and an
axial cut with the kidney's coronal centre plane (A/P) and the patient's midline side (rim).

Usage:
    python benchmarks/nephrometry_cases.py [--data ../shared/data/kits19] [--step 10]
        [--page docs/nephrometry.md] [--picture docs/images/nephrometry_kits19.png]

Writes the whole page (`--page`) and the picture (`--picture`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "kits19"
COMMAND = "nice -n 15 python benchmarks/nephrometry_cases.py"
FIELD_MM = 70.0  # least half-width of each cut around the tumor's centre
COLUMNS = 4  # cases per row of the picture (two panels each)


def measure_case(path: Path) -> tuple[dict, object, object]:
    """The report of one reference mask (flat CT), and the mask as read."""
    from kidneyseg.io.volume import Volume, read_volume
    from kidneyseg.labels import KITS19
    from kidneyseg.report import measure

    labels = read_volume(path)
    ct = Volume(np.full(labels.shape, 40, np.int16), labels.affine, "flat CT")
    return measure(ct, labels, KITS19), labels, ct


def largest_tumor(report: dict) -> dict | None:
    tumors = [r for r in report["lesions"] if r["type"] == "tumor" and r["nephrometry"]]
    return max(tumors, key=lambda r: r["volume_ml"], default=None)


def table_row(case_id: str, report: dict, tumor: dict | None) -> str:
    if tumor is None:
        return f"| {case_id} | no tumor assigned to a kidney with nephrometry | " + " |" * 9
    renal, padua = tumor["nephrometry"]["renal"], tumor["nephrometry"]["padua"]
    kidney = next(k for k in report["kidneys"] if k["side"] == tumor["kidney"])

    def value(x, fmt, unit=""):
        return "—" if x is None else format(x, fmt) + unit

    total = "—" if renal["score"] is None else f"{renal['score']}{renal['a']} ({renal['complexity']})"
    padua_total = "—" if padua["score"] is None else f"{padua['score']} ({padua['complexity']})"
    return (
        f"| {case_id} | {tumor['id']} {tumor['kidney']}, {tumor['volume_ml']:.1f} mL | "
        f"{renal['radius_cm']:.2f} cm → {renal['r']} | {renal['exophytic_fraction']:.2f} → {renal['e']} | "
        f"{value(renal['nearness_mm'], '.1f', ' mm')} → {value(renal['n'], '')} | "
        f"{renal['anterior_fraction']:.2f} → {renal['a']} | "
        f"{renal['between_polar_lines_fraction']:.2f}{', crosses' if renal['crosses_axial_midline'] else ''}"
        f" → {renal['l']} | {total} | "
        f"{padua['polar_location']} {padua['polar_location_score']}, {padua['rim']} {padua['rim_score']}, "
        f"sinus {value(padua['sinus_score'], '')}, UCS {value(padua['collecting_system_score'], '')} | "
        f"{padua_total} | "
        f"{kidney['sinus_volume_ml']:.1f} mL |"
    )


def draw_case(axes, case_id: str, labels, ct, report: dict, tumor: dict) -> None:
    """Coronal and axial cuts through the tumor's centre, with the lines the scores rest on."""
    from kidneyseg.report.overlays import canonical

    seg, affine = canonical(labels)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    centre_mm = np.asarray(tumor["centroid_ras_mm"])
    centre = np.round(np.linalg.solve(affine[:3, :3], centre_mm - affine[:3, 3])).astype(int)
    centre = np.clip(centre, 0, np.asarray(seg.shape) - 1)
    half = np.ceil(max(FIELD_MM, 5 * tumor["max_3d_diameter_cm"] + 20) / spacing).astype(int)
    low, high = np.maximum(centre - half, 0), np.minimum(centre + half + 1, seg.shape)
    kidney = next(k for k in report["kidneys"] if k["side"] == tumor["kidney"])
    colors = np.array([[0, 0, 0], [0.85, 0.3, 0.3], [1.0, 0.85, 0.1]])

    def world(axis: int, index: np.ndarray) -> np.ndarray:
        return affine[axis, axis] * index + affine[axis, 3]

    x = world(0, np.arange(low[0], high[0]))
    # Coronal: rows superior (z) to inferior, columns patient right to left (radiological view).
    coronal = seg[low[0] : high[0], centre[1], low[2] : high[2]].T[::-1, ::-1]
    z = world(2, np.arange(low[2], high[2]))
    axes[0].imshow(colors[coronal], extent=(x[-1], x[0], z[0], z[-1]), interpolation="nearest")
    for line in kidney["polar_lines_z_mm"]:
        axes[0].axhline(line, color="cyan", linestyle="--", linewidth=1)
    renal = tumor["nephrometry"]["renal"]
    axes[0].set_title(f"{case_id} coronal: R{renal['r']} E{renal['e']} L{renal['l']}", fontsize=8)
    # Axial: rows anterior to posterior, columns patient right to left.
    axial = seg[low[0] : high[0], low[1] : high[1], centre[2]].T[::-1, ::-1]
    y = world(1, np.arange(low[1], high[1]))
    axes[1].imshow(colors[axial], extent=(x[-1], x[0], y[0], y[-1]), interpolation="nearest")
    axes[1].axhline(kidney["centroid_ras_mm"][1], color="cyan", linestyle="--", linewidth=1)
    axes[1].plot(*centre_mm[:2], marker="+", color="white", markersize=8)
    axes[1].set_title(f"axial: N{renal['n'] if renal['n'] is not None else '—'} {renal['a']}", fontsize=8)
    for ax, (top, bottom) in zip(axes, ((z[-1], z[0]), (y[-1], y[0])), strict=True):
        ax.set_xlim(x[-1], x[0])
        ax.set_ylim(bottom, top)
        ax.plot([x[0] + 5, x[0] + 25], [bottom + 5] * 2, color="white", linewidth=2)
        ax.set_xticks([])
        ax.set_yticks([])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--step", type=int, default=10, help="every STEP-th case (default 10: 21 of 210)")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--page", type=Path, default=REPO / "docs" / "nephrometry.md")
    parser.add_argument("--picture", type=Path, default=REPO / "docs" / "images" / "nephrometry_kits19.png")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = sorted(p for p in args.data.glob("case_*") if (p / "segmentation.nii.gz").is_file())
    cases = cases[:: args.step][: args.count]
    rows_n = -(-len(cases) // COLUMNS)
    fig, grid = plt.subplots(rows_n, 2 * COLUMNS, figsize=(2 * COLUMNS * 2.0, rows_n * 2.2), dpi=110)
    grid = np.atleast_2d(grid)
    for ax in grid.ravel():
        ax.set_axis_off()
    rows, seconds = [], []
    for i, case in enumerate(cases):
        start = time.perf_counter()
        report, labels, ct = measure_case(case / "segmentation.nii.gz")
        seconds.append(time.perf_counter() - start)
        tumor = largest_tumor(report)
        rows.append(table_row(case.name, report, tumor))
        print(rows[-1], flush=True)
        if tumor is not None:
            axes = grid[i // COLUMNS, 2 * (i % COLUMNS) : 2 * (i % COLUMNS) + 2]
            for ax in axes:
                ax.set_axis_on()
            draw_case(axes, case.name, labels, ct, report, tumor)
    fig.tight_layout(pad=0.3)
    args.picture.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.picture)
    write_page(args.page, args.picture, rows, seconds)


def write_page(page: Path, picture: Path, rows: list[str], seconds: list[float]) -> None:
    header = (
        "| case | largest tumor | R: radius | E: exophytic | N: nearness | A: anterior share | "
        "L: between polar lines | R.E.N.A.L. | PADUA components | PADUA | derived sinus |"
    )
    lines = [
        "# Nephrometry on 20 KiTS19 reference masks",
        "",
        "R.E.N.A.L. and PADUA as `kidneyseg report` scores them (rules and the derived sinus and polar",
        'lines: [report.md, "Nephrometry"](report.md#nephrometry)), for the largest tumor of every',
        "tenth KiTS19 case, measured on the reference mask with a flat CT (the masks come without",
        "their images, so sinus fat inside the kidney label cannot be seen: the derived sinus is only",
        "the hilar notch). Each component is given as measured → its score.",
        "",
        "Command (from the repository root, `../shared/data/kits19` beside it; rewrites this page and",
        "the picture):",
        "",
        "```",
        COMMAND,
        "```",
        "",
        f"Time per case (reading the mask and `measure`): median {np.median(seconds):.1f} s, "
        f"max {max(seconds):.1f} s.",
        "",
        header,
        "|" + "---|" * (header.count("|") - 1),
        *rows,
        "",
        "## Checking the scores by eye",
        "",
        f"![coronal and axial cuts through each tumor]({picture.relative_to(page.parent).as_posix()})",
        "",
        "Each case has two panels through the centre of its largest tumor, in the radiological view",
        "(patient's right on the left; red kidney, yellow tumor; the white bar is 2 cm):",
        "",
        "- **coronal** (superior at the top): the dashed cyan lines are the kidney's polar lines.",
        "  *L* is 1 when the tumor lies entirely above the upper or below the lower line, 2 when it",
        "  crosses one, 3 when more than half of it lies between them or it crosses the axial midline",
        "  halfway between them. *E*: how much of the tumor bulges beyond the kidney's outline.",
        "- **axial** (anterior at the top): the dashed cyan line is the kidney's coronal centre plane;",
        "  *a* when at least two thirds of the tumor lie above it, *p* when at most one third, else *x*.",
        "",
        "What a reader will see: on these masks the polar lines lie close together (the derived sinus",
        "is only the hilar notch, 13–80 mm long, median 40 mm, over the 33 kidneys with one), so *L* and",
        'PADUA\'s polar location lean towards "polar"; with the CT, the sinus fat inside the kidney label',
        "widens them (report.md).",
    ]
    page.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
