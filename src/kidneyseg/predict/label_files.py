"""Label files that open in the tools users have: a NIfTI label map that names its classes, a
colour table 3D Slicer reads, left/right classes and one binary mask per class.

- The label map is uint8 with the NIfTI intent "label" (1002), the label map's name as intent
  name and `value=class` pairs in the description, so a reader knows what 1, 2, 3 mean
  (`label_description`: within the description's 80 bytes, sides written R and L).
- The colour table is Slicer's text format (`# Color table file`, then `value name R G B A`
  per line; https://slicer.readthedocs.io/en/latest/developer_guide/modules/colors.html).
- `--split-sides` gives each class a side as the report gives its kidneys (the patient's right is
  +x in RAS; the midline from the spine, `kidneyseg.report.midline`), as TotalSegmentator's
  kidney_left / kidney_right: see `kidneyseg.labels.split_sides`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from kidneyseg.errors import KidneysegError
from kidneyseg.io.atomic import write_atomic, write_text_atomic
from kidneyseg.io.volume import NIFTI_SUFFIXES, NiftiFrames, Volume, load_nifti, nifti_image, read_volume
from kidneyseg.labels import BACKGROUND, SIDES, SIDES_SUFFIX, LabelClass, LabelMap

NIFTI_INTENT_LABEL = 1002


def label_image(
    labels: np.ndarray, affine: np.ndarray, label_map: LabelMap, frames: NiftiFrames | None = None
):
    """A `nibabel.Nifti1Image` of `labels` (uint8) on `affine`, with its classes in the header; on
    a NIfTI file's grid, give its `frames` to state the grid as that file does."""
    image = nifti_image(np.asarray(labels, dtype=np.uint8), affine, frames)
    header = image.header
    header.set_intent(NIFTI_INTENT_LABEL, name=_intent_name(label_map.name))
    header["descrip"] = label_description(label_map).encode("ascii")
    return image


DESCRIPTION_BYTES = 79
"""The NIfTI description's 80 bytes, less the NUL that C readers expect at its end."""


def label_description(label_map: LabelMap) -> str:
    """The header description naming every value of `label_map`, in `DESCRIPTION_BYTES`:
    `kidneyseg 1=kidney 2=tumor 3=cyst`. Where the names would not fit (`kits23-sides`: 90
    bytes), the sides are written R and L: `kidneyseg 1=kidney_R 2=kidney_L ... 6=cyst_L`.
    Where even that would not fit (a trained model's own map of many classes), the map's name
    and its values, whose names its colour table (`write_color_table`) gives."""
    for name in (lambda c: c.name, _short_side_name):
        text = "kidneyseg " + " ".join(f"{c.value}={name(c)}" for c in label_map.foreground)
        if len(text) <= DESCRIPTION_BYTES:
            return text
    values = f" values 1-{label_map.num_classes - 1}, named in its .ctbl"
    return f"kidneyseg {label_map.name}"[: DESCRIPTION_BYTES - len(values)] + values


def _short_side_name(label_class: LabelClass) -> str:
    """`kidney_right` -> `kidney_R`, `kidney_left` -> `kidney_L` (the classes of `split_sides`)."""
    for side in SIDES:
        if label_class.name.endswith(f"_{side}"):
            return f"{label_class.name.removesuffix(side)}{side[0].upper()}"
    return label_class.name


def _intent_name(label_map_name: str) -> str:
    """A label map's name as `label_image` writes it in the header (15 characters at most)."""
    return label_map_name[:15]


def written_label_map(path: str | os.PathLike[str]) -> str | None:
    """The label map a NIfTI label file names in its header if kidneyseg wrote it (`label_image`),
    else None (another tool's file, a DICOM folder)."""
    if not str(path).endswith(NIFTI_SUFFIXES) or not Path(path).is_file():
        return None
    header = load_nifti(Path(path)).header
    if int(header["intent_code"]) != NIFTI_INTENT_LABEL or not header["descrip"].tobytes().startswith(
        b"kidneyseg"
    ):
        return None
    return header["intent_name"].tobytes().rstrip(b"\0").decode("ascii", "replace")


def folder_holds_label_map(folder: Path, label_map_name: str) -> bool:
    """Whether a NIfTI file in `folder` is a label file kidneyseg wrote of the label map called
    `label_map_name` (its header names it: `written_label_map`), e.g. a case's `--split-sides`
    map that a later run into the folder did not replace. Only headers are read."""
    return any(_is_label_file_of(path, label_map_name) for path in folder.iterdir())


def _is_label_file_of(path: str | os.PathLike[str], label_map_name: str) -> bool:
    """Whether kidneyseg wrote `path` as a label file of the label map called `label_map_name`
    (its header names it: `written_label_map`); an unreadable file names no label map."""
    try:
        return written_label_map(path) == _intent_name(label_map_name)
    except KidneysegError:
        return False


def read_label_file(path: str | os.PathLike[str]) -> Volume:
    """Read a label map for `evaluate` or `report`, which take the classes of an unsplit label map,
    refusing a file that `predict --split-sides` wrote: its values mean other classes (1 right
    kidney, 2 left kidney, 3 right tumor, ...), and one without a value above 3 would pass any
    check of values.

    Raises:
        KidneysegError: the file's header names a label map split into sides, or `read_volume`'s.
    """
    name = written_label_map(path)
    if name is not None and name.endswith(SIDES_SUFFIX):
        raise KidneysegError(
            f"this label map was written by `kidneyseg predict --split-sides` ({name}: 1 = right kidney, "
            "2 = left kidney, 3 = right tumor, ...); evaluate and report take the classes of "
            "the unsplit map: predict without --split-sides",
            path,
        )
    return read_volume(path)


def write_label_image(
    path: str | os.PathLike[str], labels: np.ndarray, like: Volume, label_map: LabelMap
) -> Path:
    """Write `labels` (on the grid of `like`) atomically as a NIfTI label map naming its classes."""
    import nibabel as nib

    image = label_image(labels, like.affine, label_map, like.frames)
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


def split_labels_by_side(labels: np.ndarray, ct: Volume) -> np.ndarray:
    """Labels of `kidneyseg.labels.split_sides(label_map)`: value v becomes 2v - 1 on the
    patient's right (world x above the midline) and 2v on the left. Each component of the
    foreground takes one side as the report's kidneys do (`kidneyseg.report.midline.component_sides`)."""
    from kidneyseg.report import geometry, midline

    line = midline.find_midline(midline.survey(ct))
    out = np.zeros(labels.shape, np.uint8)
    if not labels.any():
        return out
    box = geometry.bounding_box(labels > 0, labels.shape, pad=0)
    crop = labels[box]
    left = midline.component_sides(crop > 0, geometry.crop_affine(ct.affine, box), line).left()
    out[box] = np.where(crop > 0, 2 * crop.astype(np.uint8) - 1 + left, 0)
    return out


def mask_label_map(label_class: LabelClass) -> LabelMap:
    """The one-class map of a `--per-class` mask of `label_class` (its value 1)."""
    return LabelMap(label_class.name, (BACKGROUND, replace(label_class, value=1)))


def class_masks(labels: np.ndarray, label_map: LabelMap) -> dict[str, tuple[np.ndarray, LabelMap]]:
    """Per foreground class of `label_map`: its binary uint8 mask and the one-class map naming it."""
    return {c.name: ((labels == c.value).astype(np.uint8), mask_label_map(c)) for c in label_map.foreground}


def is_class_mask(path: str | os.PathLike[str], label_class: LabelClass) -> bool:
    """Whether kidneyseg wrote `path` as the mask of `label_class` (`class_masks`, `label_image`):
    its header names the mask's one-class map. A file only named like one is not."""
    return _is_label_file_of(path, mask_label_map(label_class).name)
