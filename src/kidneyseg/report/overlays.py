"""Overlay pictures for the report: axial, coronal and sagittal CT slices with the label map.

Slices are shown in the radiological convention (patient's right on the image's left,
anterior or superior at the top) after reorienting the arrays to the closest canonical RAS
axes, with the pixel aspect ratio taken from the voxel spacing, a soft-tissue window
(W 400 / L 40 HU), label colors and names from `kidneyseg.labels`, and the patient
orientation letters on the image edges. A view longer than `MAX_ASPECT` times its width (or
wider than `MAX_ASPECT` times its height), which only strongly anisotropic voxels give, is
stretched to that shape and says so in its title, so that every picture has bounded pixels.
"""

from __future__ import annotations

import io

import numpy as np

from kidneyseg.evaluate.surface import bounding_box
from kidneyseg.io.volume import Volume
from kidneyseg.labels import LabelMap

WINDOW_HU = (40.0, 400.0)  # level, width: soft tissue
FIELD_MARGIN_MM = 30.0
FILL_ALPHA = 0.35
DPI = 110
WIDTH_INCH = 5.0
LEGEND_INCH = 0.45  # band at the bottom of each picture holding the legend
TITLE_INCH = 0.3  # band at the top holding the title
SCALE_BARS_MM = (10.0, 20.0, 50.0, 100.0)
MAX_ASPECT = 4.0  # height : width of a picture's image, and width : height

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
    ct: Volume,
    labels: np.ndarray,
    label_map: LabelMap,
    focus_ras_mm: np.ndarray | None,
    title: str,
    medial_edge_x_mm: float | None = None,
) -> dict[str, bytes]:
    """PNG pictures (bytes) of the three views through the world point `focus_ras_mm`
    (default: the centre of the segmentation, or of the image if it is empty)."""
    return Scene(ct, labels, label_map).views(focus_ras_mm, title, medial_edge_x_mm)


class Scene:
    """A CT and its label map reoriented once to the closest RAS axes, for drawing any number
    of views: axial, coronal and sagittal cuts through a point, with a scale bar."""

    def __init__(self, ct: Volume, labels: np.ndarray, label_map: LabelMap):
        self.image, self.affine = canonical(ct)
        self.seg, _ = canonical(ct, labels)
        self.label_map = label_map
        self.spacing = np.linalg.norm(self.affine[:3, :3], axis=0)
        box = bounding_box(self.seg)
        self.box = None
        if box is not None:
            self.box = (np.array([s.start for s in box]), np.array([s.stop - 1 for s in box]))
        self.colors = np.zeros((label_map.num_classes, 4))
        for c in label_map.foreground:
            self.colors[c.value, :3] = np.asarray(c.color) / 255
            self.colors[c.value, 3] = 1.0

    def views(
        self, focus_ras_mm: np.ndarray | None, title: str, medial_edge_x_mm: float | None = None
    ) -> dict[str, bytes]:
        """PNG pictures of the three views through `focus_ras_mm` (default: the segmentation's
        centre). `medial_edge_x_mm`, a world x, is drawn as a dashed line on the axial and
        coronal views (the kidney's medial edge, for the extension flag)."""
        shape = np.asarray(self.seg.shape)
        if focus_ras_mm is None:
            centre = (self.box[0] + self.box[1]) / 2 if self.box else (shape - 1) / 2
        else:
            centre = np.linalg.solve(
                self.affine[:3, :3], np.asarray(focus_ras_mm, float) - self.affine[:3, 3]
            )
        centre = np.clip(np.round(centre).astype(int), 0, shape - 1)
        if self.box:
            margin = np.ceil(FIELD_MARGIN_MM / self.spacing).astype(int)
            low = np.maximum(np.minimum(self.box[0], centre) - margin, 0)
            high = np.minimum(np.maximum(self.box[1], centre) + margin + 1, shape)
        else:
            low, high = np.zeros(3, dtype=int), shape
        line = None
        if medial_edge_x_mm is not None:
            index = (medial_edge_x_mm - self.affine[0, 3]) / self.affine[0, 0]
            line = (high[0] - 1 - index + 0.5) * self.spacing[0]
        return {name: self._view(name, centre, low, high, title, line) for name in VIEWS}

    def _view(self, name, centre, low, high, title, line_mm) -> bytes:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cut, (row_axis, col_axis), letters = VIEWS[name]
        index = [slice(lo, hi) for lo, hi in zip(low, high, strict=True)]
        index[cut] = int(centre[cut])
        with np.errstate(over="ignore"):  # values beyond float32 (+-1e200) become +-inf: shown clipped
            ct2d = np.asarray(self.image[tuple(index)], dtype=np.float32)
        seg2d = np.asarray(self.seg[tuple(index)])
        if row_axis > col_axis:
            ct2d, seg2d = ct2d.T, seg2d.T
        ct2d, seg2d = ct2d[::-1, ::-1], seg2d[::-1, ::-1]
        height_mm = seg2d.shape[0] * self.spacing[row_axis]
        width_mm = seg2d.shape[1] * self.spacing[col_axis]
        aspect = float(np.clip(height_mm / width_mm, 1 / MAX_ASPECT, MAX_ASPECT))
        fig_h = WIDTH_INCH * aspect + LEGEND_INCH + TITLE_INCH
        fig, ax = plt.subplots(figsize=(WIDTH_INCH, fig_h), dpi=DPI)
        extent = (0, width_mm, height_mm, 0)
        level, width = WINDOW_HU
        ax.imshow(
            ct2d,
            cmap="gray",
            vmin=level - width / 2,
            vmax=level + width / 2,
            extent=extent,
            interpolation="bilinear",
        )
        ax.imshow(self._overlay(seg2d), extent=extent, interpolation="nearest")
        stretched = aspect != height_mm / width_mm
        if stretched:
            ax.set_aspect(aspect * width_mm / height_mm)
        marker = (
            (high[col_axis] - 1 - centre[col_axis] + 0.5) * self.spacing[col_axis],
            (high[row_axis] - 1 - centre[row_axis] + 0.5) * self.spacing[row_axis],
        )
        ax.plot(*marker, marker="+", color="white", markersize=14, markeredgewidth=1.2)
        if line_mm is not None and col_axis == 0:
            ax.axvline(line_mm, color="cyan", linestyle="--", linewidth=1.2)
        _letters(ax, letters)
        _scale_bar(ax, width_mm, height_mm)
        position_mm = (self.affine[:3, :3] @ centre + self.affine[:3, 3])[cut]
        note = ", stretched" if stretched else ""
        ax.set_title(
            f"{name.capitalize()} through {title} ({'xyz'[cut]} = {position_mm:.0f} mm{note})", fontsize=10
        )
        ax.set_axis_off()
        from matplotlib.patches import Patch

        handles = [Patch(color=np.asarray(c.color) / 255, label=c.name) for c in self.label_map.foreground]
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9)
        # Fixed bands rather than tight_layout, which draws the figure once more to measure it.
        fig.subplots_adjust(left=0.01, right=0.99, bottom=LEGEND_INCH / fig_h, top=1 - TITLE_INCH / fig_h)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        return buffer.getvalue()

    def _overlay(self, seg2d: np.ndarray) -> np.ndarray:
        from scipy import ndimage

        rgba = self.colors[seg2d]
        outline = np.zeros(seg2d.shape, dtype=bool)
        for c in self.label_map.foreground:
            region = seg2d == c.value
            outline |= region & ~ndimage.binary_erosion(region)
        rgba[..., 3] = np.where(outline, 1.0, rgba[..., 3] * FILL_ALPHA)
        return rgba


def _letters(ax, letters: tuple[str, str, str, str]) -> None:
    style = {"color": "yellow", "fontsize": 13, "fontweight": "bold"}
    ax.text(0.01, 0.5, letters[0], transform=ax.transAxes, ha="left", va="center", **style)
    ax.text(0.99, 0.5, letters[1], transform=ax.transAxes, ha="right", va="center", **style)
    ax.text(0.5, 0.99, letters[2], transform=ax.transAxes, ha="center", va="top", **style)
    ax.text(0.5, 0.01, letters[3], transform=ax.transAxes, ha="center", va="bottom", **style)


def _scale_bar(ax, width_mm: float, height_mm: float) -> None:
    """A white bar of 1, 2, 5 or 10 cm (the longest under a quarter of the width), lower right,
    bar and label edged in black so that they stay readable on bone or contrast."""
    from matplotlib import patheffects

    edge = [patheffects.withStroke(linewidth=2.5, foreground="black")]
    length = max((mm for mm in SCALE_BARS_MM if mm <= width_mm / 4), default=SCALE_BARS_MM[0])
    x1 = width_mm * 0.96
    y = height_mm * 0.93
    ax.plot([x1 - length, x1], [y, y], color="white", linewidth=3, solid_capstyle="butt", path_effects=edge)
    ax.text(
        x1 - length / 2,
        y - height_mm * 0.015,
        f"{length / 10:g} cm",
        color="white",
        ha="center",
        va="bottom",
        fontsize=9,
        path_effects=edge,
    )


def compose(pictures: list[bytes]) -> bytes:
    """One PNG holding `pictures` side by side (top-aligned on white)."""
    import matplotlib.image

    images = [matplotlib.image.imread(io.BytesIO(p), format="png")[..., :3] for p in pictures]
    height = max(i.shape[0] for i in images)
    padded = [np.pad(i, ((0, height - i.shape[0]), (0, 0), (0, 0)), constant_values=1.0) for i in images]
    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, np.concatenate(padded, axis=1), format="png")
    return buffer.getvalue()
