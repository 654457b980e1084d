"""Label files that open in the tools users have: a NIfTI label map that names its classes, a
colour table 3D Slicer reads, left/right classes and one binary mask per class.

- The label map is uint8 with the NIfTI intent "label" (1002), the label map's name as intent
  name and `value=class` pairs in the description, so a reader knows what 1, 2, 3 mean.
- The colour table is Slicer's text format (`# Color table file`, then `value name R G B A`
  per line; https://slicer.readthedocs.io/en/latest/developer_guide/modules/colors.html).
- `--split-sides` splits each class at the body's midline (the patient's left is +x in RAS), as
  TotalSegmentator's kidney_left / kidney_right: see `kidneyseg.labels.split_sides`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from kidneyseg.io.atomic import write_atomic, write_text_atomic
from kidneyseg.io.volume import Volume, nifti_image
from kidneyseg.labels import BACKGROUND, LabelMap

NIFTI_INTENT_LABEL = 1002
BODY_HU = -500.0


def label_image(labels: np.ndarray, affine: np.ndarray, label_map: LabelMap):
    """A `nibabel.Nifti1Image` of `labels` (uint8) on `affine`, with its classes in the header."""
    image = nifti_image(np.asarray(labels, dtype=np.uint8), affine)
    header = image.header
    header.set_intent(NIFTI_INTENT_LABEL, name=label_map.name[:15])
    classes = " ".join(f"{c.value}={c.name}" for c in label_map.foreground)
    header["descrip"] = f"kidneyseg {classes}"[:79].encode("ascii")
    return image


def write_label_image(
    path: str | os.PathLike[str], labels: np.ndarray, like: Volume, label_map: LabelMap
) -> Path:
    """Write `labels` (on the grid of `like`) atomically as a NIfTI label map naming its classes."""
    import nibabel as nib

    image = label_image(labels, like.affine, label_map)
    return write_atomic(path, lambda tmp: nib.save(image, str(tmp)))


def color_table_text(label_map: LabelMap) -> str:
    """The label map as a 3D Slicer colour table (`.ctbl`)."""
    lines = [f"# Color table file {label_map.name}_ColorTable.ctbl", f"# {label_map.num_classes} values"]
    for c in label_map.classes:
        alpha = 0 if c.value == 0 else 255
        lines.append(f"{c.value} {c.name.replace(' ', '_')} {c.color[0]} {c.color[1]} {c.color[2]} {alpha}")
    return "\n".join(lines) + "\n"


def write_color_table(folder: Path, label_map: LabelMap) -> Path:
    """Write `<folder>/<label map>_ColorTable.ctbl` (Slicer's name for a label map's colours)."""
    return write_text_atomic(folder / f"{label_map.name}_ColorTable.ctbl", color_table_text(label_map))


def body_midline_x(ct: Volume) -> float:
    """World x (RAS+, mm) of the centre of the body (voxels above -500 HU) of `ct`."""
    step = max(1, min(ct.shape) // 64)
    sample = np.asarray(ct.array[::step, ::step, ::step])
    body = np.argwhere(sample > BODY_HU).astype(np.float64) * step
    centre = body.mean(axis=0) if len(body) else (np.asarray(ct.shape, np.float64) - 1) / 2
    return float(ct.affine[0, :3] @ centre + ct.affine[0, 3])


def split_labels_by_side(labels: np.ndarray, ct: Volume) -> np.ndarray:
    """Labels of `kidneyseg.labels.split_sides(label_map)`: value v becomes 2v - 1 on the
    patient's right of the body's midline and 2v on the left."""
    i, j, k = (np.arange(n, dtype=np.float32) for n in labels.shape)
    a = ct.affine[0]
    x = (a[0] * i)[:, None, None] + (a[1] * j)[None, :, None] + (a[2] * k)[None, None, :] + a[3]
    left = x > body_midline_x(ct)
    out = np.where(labels > 0, 2 * labels.astype(np.int16) - 1 + left, 0)
    return out.astype(np.uint8)


def class_masks(labels: np.ndarray, label_map: LabelMap) -> dict[str, tuple[np.ndarray, LabelMap]]:
    """Per foreground class of `label_map`: its binary uint8 mask and the one-class map naming it."""
    return {
        c.name: ((labels == c.value).astype(np.uint8), LabelMap(c.name, (BACKGROUND, replace(c, value=1))))
        for c in label_map.foreground
    }
