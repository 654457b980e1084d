"""Per-tissue HU statistics and noise of phantoms beside the real CTs in ../shared/data/real-ct.

Phantoms: `N` `small` phantoms (`case_seeds(SEED, N)`); for each case and tissue, the mean HU
and SD inside the tissue eroded by one voxel (away from partial volume), then the median over
the cases of each phase. Real CTs: the kidney from the low-dose scan's label (eroded); the other
tissues from small boxes placed by eye on organs in the slices named in `ROIS` (voxel indices
in LPS order; a reader can check them on the pictures this script draws). "Noise" is the SD
inside the homogeneous region (fat, muscle, liver): quantum noise plus parenchymal texture.

Usage:
    python benchmarks/phantom_vs_real.py --cases 24 --picture docs/images/phantom_vs_real.png
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-ct"
TISSUES = ("kidney", "liver", "spleen", "fat", "muscle", "aorta")
ROIS: dict[str, dict[str, tuple[int, int, int, int]]] = {
    # file: tissue -> (x, y, z, half-width) in LPS voxel indices; only what could be identified
    "lowdose_abdomen_4mm.nii.gz": {
        "liver": (28, 35, 60, 3),
        "spleen": (72, 42, 62, 1),
        "fat": (54, 6, 30, 1),
        "muscle": (44, 45, 35, 1),
    },
    "dicom_series": {
        "liver": (150, 300, 10, 12),
        "spleen": (365, 320, 10, 8),
        "aorta": (262, 297, 10, 3),
        "fat": (88, 300, 10, 2),
        "muscle": (215, 390, 10, 2),
    },
    "chest_ct_1.5mm.nii.gz": {
        "liver": (18, 50, 20, 5),
    },
}


def _lps(volume) -> np.ndarray:
    import nibabel as nib

    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(volume.affine), nib.orientations.axcodes2ornt(("L", "P", "S"))
    )
    return nib.orientations.apply_orientation(volume.array, ornt).astype(np.float32)


def real_rows() -> dict[str, dict[str, tuple[float, float]]]:
    from scipy import ndimage as ndi

    from kidneyseg.io.volume import read_volume

    rows = {}
    for name, rois in ROIS.items():
        volume = read_volume(REAL / name)
        ct = _lps(volume)
        row = {}
        for tissue, (x, y, z, h) in rois.items():
            box = ct[x - h : x + h + 1, y - h : y + h + 1, z]
            row[tissue] = (float(box.mean()), float(box.std()))
        if name.startswith("lowdose"):
            kidney = _lps(read_volume(REAL / "lowdose_abdomen_4mm_kidneys.nii.gz")) > 0
            core = ndi.binary_erosion(kidney)
            row["kidney"] = (float(ct[core].mean()), float(ct[core].std()))
        rows[name] = row
    return rows


def phantom_rows(cases: int, seed: int) -> dict[str, dict[str, tuple[float, float]]]:
    from scipy import ndimage as ndi

    from kidneyseg.data.phantom import case_seeds, generate_case
    from kidneyseg.data.phantom.tissue import KIDNEY_TISSUES, Tissue

    groups = {
        "kidney": KIDNEY_TISSUES[:2],
        "liver": (Tissue.LIVER,),
        "spleen": (Tissue.SPLEEN,),
        "fat": (Tissue.SUBCUTANEOUS_FAT,),
        "muscle": (Tissue.MUSCLE,),
        "aorta": (Tissue.AORTA,),
    }
    per_phase: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for s in case_seeds(seed, cases):
        case = generate_case(s, size="small")
        ct, tissue = case.ct.array.astype(np.float32), case.tissue.array
        phase = per_phase.setdefault(case.truth["phase"], {t: [] for t in TISSUES})
        for name, ids in groups.items():
            core = ndi.binary_erosion(np.isin(tissue, ids))
            if core.sum() > 20:
                phase[name].append((float(ct[core].mean()), float(ct[core].std())))
    return {
        f"phantoms, {phase} ({len(stats['fat'])})": {
            t: (statistics.median(m for m, _ in v), statistics.median(sd for _, sd in v))
            for t, v in stats.items()
            if v
        }
        for phase, stats in sorted(per_phase.items())
    }


def table(rows: dict[str, dict[str, tuple[float, float]]]) -> str:
    lines = ["| source | " + " | ".join(TISSUES) + " |", "|---" * (len(TISSUES) + 1) + "|"]
    for name, row in rows.items():
        cells = [f"{row[t][0]:.0f} ± {row[t][1]:.0f}" if t in row else "–" for t in TISSUES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def picture(out: Path, seed: int) -> None:
    """Real CTs (top) beside phantoms of each phase (bottom), window 400/40."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kidneyseg.data.phantom import case_seeds, generate_case
    from kidneyseg.io.volume import read_volume

    reals = []
    for name, rois in ROIS.items():
        ct = _lps(read_volume(REAL / name))
        z = next(iter(rois.values()))[2] if name != "lowdose_abdomen_4mm.nii.gz" else 45
        reals.append((name, ct[:, :, z].T, rois, z))
    phantoms, seen = [], set()
    for s in case_seeds(seed, 40):
        case = generate_case(s, size="small", orientation="LPS")
        phase = case.truth["phase"]
        if phase in seen:
            continue
        seen.add(phase)
        z = int(np.argmax((case.labels.array == 1).sum(axis=(0, 1))))
        phantoms.append((f"phantom: {phase}, {case.truth['dose']} dose", case.ct.array[:, :, z].T))
        if len(seen) == 4:
            break
    fig, axes = plt.subplots(2, 4, figsize=(20, 10))
    for ax, (name, image, rois, z) in zip(axes[0], reals, strict=False):
        ax.imshow(np.clip(image, -160, 240), cmap="gray")
        for tissue, (x, y, rz, h) in rois.items():
            if rz == z:
                ax.add_patch(
                    plt.Rectangle((x - h - 0.5, y - h - 0.5), 2 * h + 1, 2 * h + 1, fill=False, ec="y")
                )
                ax.text(x + h + 1, y, tissue, color="y", fontsize=8)
        ax.set_title(f"real: {name}", fontsize=10)
    for ax, (name, image) in zip(axes[1], phantoms, strict=False):
        ax.imshow(np.clip(image, -160, 240), cmap="gray")
        ax.set_title(name, fontsize=10)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--picture", type=Path)
    args = parser.parse_args()
    print(table({**real_rows(), **phantom_rows(args.cases, args.seed)}))
    if args.picture:
        picture(args.picture, args.seed)


if __name__ == "__main__":
    main()
