"""Draw the phantom pictures of docs/phantom.md: axial and coronal slices of one case with its labels.

Run:
    python scripts/phantom_pictures.py [--size full] [--seed 2] [--anatomy DIR] [--out FILE.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from kidneyseg.data.phantom import generate_case
from kidneyseg.data.phantom.tissue import HEART_TISSUES
from kidneyseg.labels import KITS23


def draw(size: str, seed: int, anatomy: Path | None, out: Path, chest: float = 0.0) -> None:
    case = generate_case(seed, size=size, anatomy=anatomy, orientation="RAS", chest=chest)
    ct, labels = case.ct.array, case.labels.array
    sx, sy, sz = case.ct.spacing
    # radiological display: patient's right on the image's left, anterior up, superior up
    axial_k = int(np.argmax((labels > 1).sum(axis=(0, 1)) * 10 + (labels == 1).sum(axis=(0, 1))))
    coronal_j = int(np.argmax((labels == 1).sum(axis=(0, 2))))
    views = [
        ("axial", ct[:, :, axial_k].T[::-1, ::-1], labels[:, :, axial_k].T[::-1, ::-1], sy / sx),
        ("coronal", ct[:, coronal_j, :].T[::-1, ::-1], labels[:, coronal_j, :].T[::-1, ::-1], sz / sx),
    ]
    if case.truth["chest_mm"]:  # a chest-abdomen scan shows the heart instead of the spine
        heart_k = int(np.argmax(np.isin(case.tissue.array, HEART_TISSUES).sum(axis=(0, 1))))
        views.append(
            ("axial, heart", ct[:, :, heart_k].T[::-1, ::-1], labels[:, :, heart_k].T[::-1, ::-1], sy / sx)
        )
    else:
        bone_j = int(np.argmax((ct > 300).sum(axis=(0, 2))))  # through the spine (and sacrum, iliac wings)
        views.append(
            ("coronal, spine", ct[:, bone_j, :].T[::-1, ::-1], labels[:, bone_j, :].T[::-1, ::-1], sz / sx)
        )
    colors = [tuple(c / 255 for c in cls.color) for cls in KITS23.foreground]
    height = max(1.0, 0.5 + 0.5 * ct.shape[2] * sz / (ct.shape[0] * sx))
    fig, axes = plt.subplots(2, 3, figsize=(18, 12 * height))
    for col, (name, image, label, aspect) in enumerate(views):
        for row in range(2):
            ax = axes[row, col]
            ax.imshow(image, cmap="gray", vmin=-160, vmax=240, aspect=aspect, interpolation="nearest")
            if row == 1:
                ax.contour(label, levels=[0.5, 1.5, 2.5], colors=colors, linewidths=0.8)
            ax.set_axis_off()
        axes[0, col].set_title(f"{name} (W 400 / L 40)")
    axes[1, 0].set_title("labels: kidney green, tumor red, cyst yellow")
    info = case.truth
    fig.suptitle(
        f"phantom seed {seed}, size {size}, {info['phase']} phase, {ct.shape} voxels of "
        f"{sx:.2f}×{sy:.2f}×{sz:.2f} mm\n{info['counts']['tumor']} tumor(s), {info['counts']['cyst']} cyst(s)"
        + (f", kidneys and tumors from {info['anatomy']}" if info["anatomy"] else "")
        + (f", chest-abdomen scan (+{info['chest_mm']:.0f} mm cranially)" if info["chest_mm"] else "")
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="full")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--anatomy", type=Path)
    parser.add_argument("--chest", type=float, default=0.0, help="share of chest-abdomen scans")
    parser.add_argument("--out", type=Path, default=Path("docs/images/phantom_full.png"))
    args = parser.parse_args()
    draw(args.size, args.seed, args.anatomy, args.out, args.chest)


if __name__ == "__main__":
    main()
