"""Overlay pictures for the report: axial, coronal and sagittal CT slices with the label map.

Slices are shown in the radiological convention (patient's right on the image's left,
anterior or superior at the top) after reorienting the arrays to the closest canonical RAS
axes, with the pixel aspect ratio taken from the voxel spacing, a soft-tissue window
(W 400 / L 40 HU), label colors and names from `kidneyseg.labels`, and the patient
orientation letters on the image edges.
"""

from __future__ import annotations

import io

import numpy as np

from kidneyseg.io.volume import Volume
from kidneyseg.labels import LabelMap

WINDOW_HU = (40.0, 400.0)  # level, width: soft tissue
FIELD_MARGIN_MM = 30.0
FILL_ALPHA = 0.35
DPI = 110
WIDTH_INCH = 5.0
LEGEND_INCH = 0.45  # band at the bottom of each picture holding the legend

# For each view: the canonical axis it cuts, and how its 2D picture is read from the
# (x: right, y: anterior, z: superior) array: which axes run down the rows and across the
# columns (both reversed, so that right/anterior/superior come first), and the letters on
# the (left, right, top, bottom) edges.
VIEWS = {
    "axial": (2, (1, 0), ("R", "L", "A", "P")),
    "coronal": (1, (2, 0), ("R", "L", "S", "I")),
    "sagittal": (0, (2, 1), ("A", "P", "S", "I")),
}


def canonical(volume: Volume, array: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`array` (default the volume's) reoriented to the closest RAS axes, with its affine."""
    import nibabel as nib

    data = volume.array if array is None else array
    ornt = nib.orientations.io_orientation(volume.affine)
    ras = nib.orientations.apply_orientation(data, ornt)
    affine = volume.affine @ nib.orientations.inv_ornt_aff(ornt, data.shape)
    return ras, affine


def render_views(
    ct: Volume, labels: np.ndarray, label_map: LabelMap, focus_ras_mm: np.ndarray | None, title: str
) -> dict[str, bytes]:
    """PNG pictures (bytes) of the three views through the world point `focus_ras_mm`
    (default: the centre of the segmentation, or of the image if it is empty)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from scipy import ndimage

    image, affine = canonical(ct)
    seg, _ = canonical(ct, labels)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    foreground = np.argwhere(seg > 0)
    if focus_ras_mm is None:
        centre = foreground.mean(axis=0) if len(foreground) else (np.asarray(seg.shape) - 1) / 2
    else:
        centre = np.linalg.solve(affine[:3, :3], np.asarray(focus_ras_mm, dtype=np.float64) - affine[:3, 3])
    centre = np.clip(np.round(centre).astype(int), 0, np.asarray(seg.shape) - 1)
    if len(foreground):
        margin = np.ceil(FIELD_MARGIN_MM / spacing).astype(int)
        low = np.maximum(np.minimum(foreground.min(axis=0), centre) - margin, 0)
        high = np.minimum(np.maximum(foreground.max(axis=0), centre) + margin + 1, seg.shape)
    else:
        low, high = np.zeros(3, dtype=int), np.asarray(seg.shape)
    colors = np.zeros((label_map.num_classes, 4))
    for c in label_map.foreground:
        colors[c.value, :3] = np.asarray(c.color) / 255
        colors[c.value, 3] = 1.0
    level, width = WINDOW_HU
    pictures = {}
    for name, (cut, (row_axis, col_axis), letters) in VIEWS.items():
        index = [slice(lo, hi) for lo, hi in zip(low, high, strict=True)]
        index[cut] = int(centre[cut])
        order = (row_axis, col_axis) if row_axis < col_axis else (col_axis, row_axis)
        ct2d = np.asarray(image[tuple(index)], dtype=np.float32)
        seg2d = np.asarray(seg[tuple(index)])
        if order != (row_axis, col_axis):
            ct2d, seg2d = ct2d.T, seg2d.T
        ct2d, seg2d = ct2d[::-1, ::-1], seg2d[::-1, ::-1]
        rgba = colors[seg2d]
        outline = np.zeros(seg2d.shape, dtype=bool)
        for c in label_map.foreground:
            region = seg2d == c.value
            outline |= region & ~ndimage.binary_erosion(region)
        rgba[..., 3] = np.where(outline, 1.0, rgba[..., 3] * FILL_ALPHA)
        height_mm = seg2d.shape[0] * spacing[row_axis]
        width_mm = seg2d.shape[1] * spacing[col_axis]
        fig_h = WIDTH_INCH * height_mm / width_mm + LEGEND_INCH + 0.3
        fig, ax = plt.subplots(figsize=(WIDTH_INCH, fig_h), dpi=DPI)
        extent = (0, width_mm, height_mm, 0)
        ax.imshow(
            ct2d,
            cmap="gray",
            vmin=level - width / 2,
            vmax=level + width / 2,
            extent=extent,
            interpolation="bilinear",
        )
        ax.imshow(rgba, extent=extent, interpolation="nearest")
        marker = (
            (high[col_axis] - 1 - centre[col_axis] + 0.5) * spacing[col_axis],
            (high[row_axis] - 1 - centre[row_axis] + 0.5) * spacing[row_axis],
        )
        ax.plot(*marker, marker="+", color="white", markersize=14, markeredgewidth=1.2)
        style = {"color": "yellow", "fontsize": 13, "fontweight": "bold"}
        ax.text(0.01, 0.5, letters[0], transform=ax.transAxes, ha="left", va="center", **style)
        ax.text(0.99, 0.5, letters[1], transform=ax.transAxes, ha="right", va="center", **style)
        ax.text(0.5, 0.99, letters[2], transform=ax.transAxes, ha="center", va="top", **style)
        ax.text(0.5, 0.01, letters[3], transform=ax.transAxes, ha="center", va="bottom", **style)
        position_mm = (affine[:3, :3] @ centre + affine[:3, 3])[cut]
        ax.set_title(
            f"{name.capitalize()} through {title} ({'xyz'[cut]} = {position_mm:.0f} mm)", fontsize=10
        )
        ax.set_axis_off()
        handles = [Patch(color=np.asarray(c.color) / 255, label=c.name) for c in label_map.foreground]
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9)
        fig.tight_layout(rect=(0, LEGEND_INCH / fig_h, 1, 1))
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        pictures[name] = buffer.getvalue()
    return pictures
