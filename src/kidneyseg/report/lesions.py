"""Kidneys and lesions as found in the label map, and the measurement of each lesion.

Conventions (diameters, position, exophytic fraction): docs/report.md, "Definitions".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from kidneyseg.report import geometry
from kidneyseg.report.checks import ReportOptions


@dataclass(frozen=True)
class Scan:
    """Where the measured crop lies in the scan: its start index and the scan's shape."""

    offset: np.ndarray
    shape: tuple[int, int, int]


@dataclass(frozen=True)
class Kidney:
    side: str
    mask: np.ndarray  # kidney + masses of this kidney, in the crop
    centroid: np.ndarray  # world RAS+ mm
    z_range: tuple[float, float]  # world z of its parenchyma (or of the whole kidney without any)
    contour: geometry.SliceHulls  # convex hull of its parenchyma on each axial slice


def measure_lesions(
    mask: np.ndarray,
    class_name: str,
    kidneys: list[Kidney],
    ct: np.ndarray,
    affine: np.ndarray,
    scan: Scan,
    options: ReportOptions,
) -> tuple[list[tuple[dict, np.ndarray, np.ndarray]], list[dict], list[dict]]:
    """The lesions of one class as (row, mask, affine of the mask) by decreasing volume; the
    fragments below the minimum size (`{type, volume_ml, max_3d_diameter_cm}`), left out; and
    the lesions beyond the `options.max_lesions` largest (`{type, volume_ml}`), not measured.

    Fragments below the minimum volume and lesions beyond the largest are counted from their
    voxel counts alone, so that a prediction with thousands of specks costs little more than
    one without.
    """
    labelled, count = geometry.components(mask)
    if count == 0:
        return [], [], []
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    sizes = geometry.voxel_counts(labelled, count)
    large = np.flatnonzero(sizes * voxel_ml >= options.min_lesion_volume_ml)
    large = large[large > 0]
    large = large[np.argsort(-sizes[large], kind="stable")]
    small = [
        {"type": class_name, "volume_ml": round(float(n) * voxel_ml, 4), "max_3d_diameter_cm": None}
        for n in sizes[1:]
        if n * voxel_ml < options.min_lesion_volume_ml
    ]
    unmeasured = [
        {"type": class_name, "volume_ml": round(float(sizes[n]) * voxel_ml, 4)}
        for n in large[options.max_lesions :]
    ]
    boxes = ndimage.find_objects(labelled)
    rows = []
    for number in large[: options.max_lesions]:
        found = boxes[number - 1]
        box = geometry.bounding_box(labelled[found] == number, labelled.shape, found, pad=1)
        lesion = labelled[box] == number
        local = affine.copy()
        local[:3, 3] = geometry.to_world(np.array([[s.start for s in box]], dtype=np.float64), affine)[0]
        row = _measure_lesion(lesion, local, class_name, ct[box][lesion], box, kidneys, options.nephrometry)
        if row["axial_slice_index"] is not None:
            row["axial_slice_index"] += int(scan.offset[geometry.slice_axis(affine)])
        row["incomplete"] = geometry.touches_edge(lesion, scan.offset + [s.start for s in box], scan.shape)
        if row["max_3d_diameter_cm"] * 10 < options.min_lesion_diameter_mm:
            small.append({k: row[k] for k in ("type", "volume_ml", "max_3d_diameter_cm")})
            continue
        rows.append((row, lesion, local))
    rows.sort(key=lambda r: -r[0]["volume_ml"])
    for index, (row, _, _) in enumerate(rows, start=1):
        row["id"] = f"{class_name[0].upper()}{index}"
    return rows, small, unmeasured


def _measure_lesion(
    lesion: np.ndarray,
    local: np.ndarray,
    class_name: str,
    hu: np.ndarray,
    box: tuple[slice, ...],
    kidneys: list[Kidney],
    place: bool,
) -> dict:
    """One lesion's row; its position along its kidney and exophytic fraction only if `place`."""
    voxel_ml = abs(float(np.linalg.det(local[:3, :3]))) / 1000.0
    axis = geometry.slice_axis(local)
    centroid = geometry.to_world(geometry.centroid_index(lesion)[None], local)[0]
    kidney = _assign(lesion, box, centroid, kidneys)
    axial_mm, axial_slice, diameter_mm, (z_low, z_high) = geometry.lesion_outline_mm(lesion, local)
    row = {
        "id": "",
        "type": class_name,
        "kidney": kidney.side if kidney else None,
        "volume_ml": round(int(np.count_nonzero(lesion)) * voxel_ml, 3),
        "max_axial_diameter_cm": round(axial_mm / 10, 2),
        "max_3d_diameter_cm": round(diameter_mm / 10, 2),
        "cranio_caudal_extent_cm": round((z_high - z_low) / 10, 2),
        "hu_mean": round(float(hu.mean(dtype=np.float64)), 1),
        "hu_sd": round(float(hu.std(dtype=np.float64)), 1),
        "hu_median": round(float(np.median(hu)), 1),
        "position": None,
        "position_fraction": None,
        "exophytic_fraction": None,
        "centroid_ras_mm": rounded(centroid, 1),
        "axial_slice_index": axial_slice + box[axis].start if axial_slice >= 0 else None,
    }
    if kidney is not None and place:
        row.update(_place_in_kidney(lesion, box, centroid, kidney))
    return row


def _assign(
    lesion: np.ndarray, box: tuple[slice, ...], centroid: np.ndarray, kidneys: list[Kidney]
) -> Kidney | None:
    """The kidney holding most of the lesion's voxels, else the one with the nearest centroid."""
    if not kidneys:
        return None
    overlaps = [int((k.mask[box] & lesion).sum()) for k in kidneys]
    if max(overlaps) > 0:
        return kidneys[int(np.argmax(overlaps))]
    return min(kidneys, key=lambda k: float(np.linalg.norm(k.centroid - centroid)))


def _place_in_kidney(
    lesion: np.ndarray, box: tuple[slice, ...], centroid: np.ndarray, kidney: Kidney
) -> dict:
    """Position along the kidney by thirds of its cranio-caudal extent, and the exophytic
    fraction: the share of lesion voxels outside the convex hull of the kidney's parenchyma
    on their own axial slice."""
    z_low, z_high = kidney.z_range
    fraction = float(np.clip((z_high - centroid[2]) / max(z_high - z_low, 1e-6), 0.0, 1.0))
    position = "upper pole" if fraction < 1 / 3 else "lower pole" if fraction > 2 / 3 else "interpolar"
    offset = np.array([s.start for s in box])
    inside = sum(int(kidney.contour.contains(p + offset).sum()) for p in geometry.voxel_slabs(lesion))
    return {
        "position": position,
        "position_fraction": round(fraction, 3),
        "exophytic_fraction": round(1.0 - inside / int(np.count_nonzero(lesion)), 3),
    }


def rounded(values, digits: int) -> list[float]:
    return [round(float(v), digits) for v in values]
