"""Kidney and lesion measurements from a CT and its label map: what a urologist reads.

Segmentation papers stop at Dice (Gohil & Lad, KiTS21; Rathnayaka et al., KiTS19); the
decision between partial and radical nephrectomy rests on the tumor's size and place
(RENAL nephrometry: radius, exophytic share, nearness to the sinus, position along the
kidney). This module turns a label map into those numbers. The JSON it returns is
documented field by field, with units, in docs/report.md.

Conventions:
- World coordinates are RAS+ mm from the volume's affine; +x is the patient's right, so
  the right kidney is the one with the larger x whatever the array order (RAS, LPS, the
  KiTS19 files with slices on array axis 0, oblique grids).
- "Axial" means across the array axis closest to world z (`geometry.slice_axis`).
- Kidneys: 26-connected components of kidney + masses. The patient's midline is the x
  centroid of the body (CT > -300 HU). A component with at least 15 % of its voxels on
  each side of the midline holds both kidneys (touching kidneys, horseshoe kidney) and is
  split by the midsagittal plane. The kidney on each side is the largest component (or
  part) there; smaller ones are reported as `other_components`.
- Lesions: 26-connected components of each lesion class (tumor, cyst), each assigned to
  the kidney that holds most of its voxels, else to the nearest kidney.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from kidneyseg import __version__
from kidneyseg.errors import KidneysegError
from kidneyseg.io.volume import Volume
from kidneyseg.labels import KITS23, LabelMap
from kidneyseg.report import geometry

SCHEMA_VERSION = 1
BODY_HU = -300.0
SPLIT_SHARE = 0.15
LESION_CLASSES = ("tumor", "cyst")
SIDES = ("right", "left")


@dataclass(frozen=True)
class _Kidney:
    side: str
    mask: np.ndarray  # kidney + masses of this kidney, in the crop
    centroid: np.ndarray  # world RAS+ mm
    z_range: tuple[float, float]  # world z of its parenchyma (or of the whole kidney without any)
    contour: geometry.SliceHulls  # convex hull of its parenchyma on each axial slice


def validate_inputs(ct: Volume, labels: Volume, label_map: LabelMap) -> np.ndarray:
    """Check that `labels` fits `ct` and `label_map`; return the labels as an int array.

    Raises:
        KidneysegError: naming the label file, if the grids differ, the values are not
            integers or not classes of the label map, or lesions are present without kidney.
    """
    where = labels.source
    if labels.shape != ct.shape:
        raise KidneysegError(
            f"label map shape {labels.shape} differs from the CT's {ct.shape} ({ct.source}); "
            "give the segmentation made on this CT",
            where,
        )
    if not ct.same_grid(labels, atol=1e-3):
        raise KidneysegError(
            f"label map geometry (spacing {_fmt(labels.spacing)} mm, origin {_fmt(labels.origin)} mm) "
            f"differs from the CT's (spacing {_fmt(ct.spacing)}, origin {_fmt(ct.origin)}) ({ct.source})",
            where,
        )
    array = np.asarray(labels.array)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise KidneysegError("label map holds non-integer values; is this a CT instead?", where)
        array = array.astype(np.int16)
    elif array.dtype.kind not in "iub":
        raise KidneysegError(f"label map has data type {array.dtype}; expected integer labels", where)
    # min/max and one comparison per class: np.unique on a 512×512×600 map takes seconds.
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= label_map.num_classes:
        outside = array[(array < 0) | (array >= label_map.num_classes)]
        label_map.check_values(np.unique(outside[:1_000_000]), where)
    present = {v for v in range(low, high + 1) if v in (low, high) or bool((array == v).any())}
    masses = {label_map.value(n) for n in LESION_CLASSES if label_map.has(n)}
    if present & masses and label_map.value("kidney") not in present:
        raise KidneysegError(
            "label map holds tumor/cyst voxels but no kidney at all (label "
            f"{label_map.value('kidney')}): lesions cannot be placed in a kidney; check the label map "
            f"({label_map.name})",
            where,
        )
    return array


def measure(ct: Volume, labels: Volume, label_map: LabelMap = KITS23, case_id: str | None = None) -> dict:
    """Measure kidneys and lesions; returns the report as a JSON-ready dict (docs/report.md).

    Args:
        ct: the CT in Hounsfield units.
        labels: its label map on exactly the same grid.
        label_map: the classes of `labels` (KITS23: kidney 1, tumor 2, cyst 3; or KITS19).
        case_id: an identifier written into the report.

    Raises:
        KidneysegError: the inputs do not fit together (see `validate_inputs`).
    """
    array = validate_inputs(ct, labels, label_map)
    voxel_ml = abs(float(np.linalg.det(ct.affine[:3, :3]))) / 1000.0
    report = {
        "schema_version": SCHEMA_VERSION,
        "kidneyseg_version": __version__,
        "created_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "case_id": case_id,
        "inputs": {
            "ct": ct.source,
            "labels": labels.source,
            "label_map": label_map.to_dict(),
            "shape": list(ct.shape),
            "spacing_mm": _round(ct.spacing, 3),
            "orientation": ct.orientation,
            "slice_axis": geometry.slice_axis(ct.affine),
        },
    }
    kidney_and_masses = array > 0
    if not kidney_and_masses.any():
        report.update(
            status="empty",
            message="The segmentation holds no kidney, tumor or cyst: nothing to measure.",
            summary=_summary([], []),
            kidneys=[],
            lesions=[],
            other_components={"count": 0, "volume_ml": 0.0},
        )
        return report

    box = _bounding_box(kidney_and_masses, ct.shape)
    offset = np.array([s.start for s in box], dtype=np.float64)
    affine = ct.affine.copy()
    affine[:3, 3] = geometry.to_world(offset[None], ct.affine)[0]
    crop_labels = array[box]
    crop_ct = np.asarray(ct.array[box], dtype=np.float32)
    parenchyma = crop_labels == label_map.value("kidney")
    kidneys, other_count, other_voxels = _find_kidneys(crop_labels > 0, parenchyma, affine, _midline_x(ct))

    lesions = []
    for class_name in LESION_CLASSES:
        if label_map.has(class_name):
            lesions += _measure_lesions(
                crop_labels == label_map.value(class_name), class_name, kidneys, crop_ct, affine
            )
    kidney_rows = [_measure_kidney(k, parenchyma, affine, voxel_ml, lesions) for k in kidneys]
    report.update(
        status="ok",
        message=_message(kidney_rows, lesions),
        summary=_summary(kidney_rows, lesions),
        kidneys=kidney_rows,
        lesions=lesions,
        other_components={"count": other_count, "volume_ml": round(other_voxels * voxel_ml, 2)},
    )
    return report


def _find_kidneys(
    mask: np.ndarray, parenchyma: np.ndarray, affine: np.ndarray, midline_x: float
) -> tuple[list[_Kidney], int, int]:
    """The kidney on each side, and the number and voxel count of the other components.

    Works on per-component voxel counts, so that a prediction with thousands of stray
    specks costs no more than one with none; only the kidneys become masks.
    """
    labelled, count = geometry.components(mask)
    right_of_midline = _world_x_of_voxels(labelled.shape, affine) > midline_x
    sizes = np.bincount(labelled.ravel(), minlength=count + 1)
    right_sizes = np.bincount(labelled[right_of_midline], minlength=count + 1)
    # Candidates: (side, voxels, component, half) with half = the side kept of a split component.
    candidates = []
    largest = int(np.argmax(sizes[1:])) + 1
    for component in range(1, count + 1):
        share_right = right_sizes[component] / sizes[component]
        if component == largest and SPLIT_SHARE <= share_right <= 1 - SPLIT_SHARE:
            left_size = sizes[component] - right_sizes[component]
            candidates += [("right", right_sizes[component], component, "right")]
            candidates += [("left", left_size, component, "left")]
            continue
        candidates.append(("right" if share_right >= 0.5 else "left", sizes[component], component, None))
    kidneys, other_voxels = [], 0
    for side in SIDES:
        on_side = sorted((c for c in candidates if c[0] == side), key=lambda c: -c[1])
        if on_side:
            _, _, component, half = on_side[0]
            region = labelled == component
            if half is not None:
                region &= right_of_midline if half == "right" else ~right_of_midline
            own = region & parenchyma
            kidneys.append(
                _Kidney(
                    side,
                    region,
                    geometry.to_world(np.argwhere(region).mean(axis=0)[None], affine)[0],
                    geometry.cranio_caudal_range_mm(own if own.any() else region, affine),
                    geometry.SliceHulls(own, geometry.slice_axis(affine)),
                )
            )
            other_voxels += sum(int(c[1]) for c in on_side[1:])
    return kidneys, len(candidates) - len(kidneys), other_voxels


def _world_x_of_voxels(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    grids = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij", sparse=True)
    return sum(float(affine[0, a]) * grids[a] for a in range(3)) + float(affine[0, 3])


def _midline_x(ct: Volume) -> float:
    step = max(1, min(ct.shape) // 64)
    sample = np.asarray(ct.array[::step, ::step, ::step])
    body = np.argwhere(sample > BODY_HU).astype(np.float64) * step
    if len(body) == 0:
        body = (np.asarray(ct.shape, dtype=np.float64) - 1)[None] / 2
    return float(geometry.to_world(body.mean(axis=0)[None], ct.affine)[0, 0])


def _measure_lesions(
    mask: np.ndarray,
    class_name: str,
    kidneys: list[_Kidney],
    ct: np.ndarray,
    affine: np.ndarray,
) -> list[dict]:
    labelled, count = geometry.components(mask)
    if count == 0:
        return []
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    axis = geometry.slice_axis(affine)
    objects = ndimage.find_objects(labelled)
    rows = []
    for number, box in enumerate(objects, start=1):
        box = _bounding_box(labelled[box] == number, labelled.shape, box, pad=1)
        lesion = labelled[box] == number
        local = affine.copy()
        local[:3, 3] = geometry.to_world(np.array([[s.start for s in box]], dtype=np.float64), affine)[0]
        voxels = np.argwhere(lesion)
        centroid = geometry.to_world(voxels.mean(axis=0)[None], local)[0]
        kidney = _assign(lesion, box, centroid, kidneys)
        axial_mm, axial_slice = geometry.max_axial_diameter_mm(lesion, local)
        z_low, z_high = geometry.cranio_caudal_range_mm(lesion, local)
        hu = ct[box][lesion]
        row = {
            "id": "",
            "type": class_name,
            "kidney": kidney.side if kidney else None,
            "volume_ml": round(len(voxels) * voxel_ml, 3),
            "max_axial_diameter_cm": round(axial_mm / 10, 2),
            "max_3d_diameter_cm": round(geometry.max_3d_diameter_mm(lesion, local) / 10, 2),
            "cranio_caudal_extent_cm": round((z_high - z_low) / 10, 2),
            "hu_mean": round(float(hu.mean()), 1),
            "hu_sd": round(float(hu.std()), 1),
            "hu_median": round(float(np.median(hu)), 1),
            "position": None,
            "position_fraction": None,
            "exophytic_fraction": None,
            "centroid_ras_mm": _round(centroid, 1),
            "axial_slice_index": axial_slice + box[axis].start if axial_slice >= 0 else None,
        }
        if kidney is not None:
            row.update(_place_in_kidney(lesion, box, centroid, kidney))
        rows.append(row)
    rows.sort(key=lambda r: -r["volume_ml"])
    for index, row in enumerate(rows, start=1):
        row["id"] = f"{class_name[0].upper()}{index}"
    return rows


def _assign(
    lesion: np.ndarray, box: tuple[slice, ...], centroid: np.ndarray, kidneys: list[_Kidney]
) -> _Kidney | None:
    """The kidney holding most of the lesion's voxels, else the one with the nearest centroid."""
    if not kidneys:
        return None
    overlaps = [int((k.mask[box] & lesion).sum()) for k in kidneys]
    if max(overlaps) > 0:
        return kidneys[int(np.argmax(overlaps))]
    return min(kidneys, key=lambda k: float(np.linalg.norm(k.centroid - centroid)))


def _place_in_kidney(
    lesion: np.ndarray, box: tuple[slice, ...], centroid: np.ndarray, kidney: _Kidney
) -> dict:
    """Position along the kidney by thirds of its cranio-caudal extent, and the exophytic
    fraction: the share of lesion voxels outside the convex hull of the kidney's parenchyma
    on their own axial slice."""
    z_low, z_high = kidney.z_range
    fraction = float(np.clip((z_high - centroid[2]) / max(z_high - z_low, 1e-6), 0.0, 1.0))
    position = "upper pole" if fraction < 1 / 3 else "lower pole" if fraction > 2 / 3 else "interpolar"
    inside = kidney.contour.contains(np.argwhere(lesion) + np.array([s.start for s in box]))
    return {
        "position": position,
        "position_fraction": round(fraction, 3),
        "exophytic_fraction": round(float(1.0 - inside.mean()), 3),
    }


def _measure_kidney(
    kidney: _Kidney, parenchyma: np.ndarray, affine: np.ndarray, voxel_ml: float, lesions: list[dict]
) -> dict:
    own = [row for row in lesions if row["kidney"] == kidney.side]
    z_low, z_high = geometry.cranio_caudal_range_mm(kidney.mask, affine)
    return {
        "side": kidney.side,
        "volume_ml": round(int(kidney.mask.sum()) * voxel_ml, 2),
        "parenchyma_volume_ml": round(int((kidney.mask & parenchyma).sum()) * voxel_ml, 2),
        "cranio_caudal_extent_cm": round((z_high - z_low) / 10, 2),
        "centroid_ras_mm": _round(kidney.centroid, 1),
        "has_lesions": bool(own),
        "num_tumors": sum(row["type"] == "tumor" for row in own),
        "num_cysts": sum(row["type"] == "cyst" for row in own),
    }


def _summary(kidneys: list[dict], lesions: list[dict]) -> dict:
    tumors = [row for row in lesions if row["type"] == "tumor"]
    cysts = [row for row in lesions if row["type"] == "cyst"]
    largest = max(tumors, key=lambda r: r["max_axial_diameter_cm"], default=None)
    return {
        "kidneys_found": [k["side"] for k in kidneys],
        "num_tumors": len(tumors),
        "num_cysts": len(cysts),
        "largest_tumor_id": largest["id"] if largest else None,
        "largest_tumor_axial_diameter_cm": largest["max_axial_diameter_cm"] if largest else None,
        "total_tumor_volume_ml": round(sum(r["volume_ml"] for r in tumors), 2),
        "total_cyst_volume_ml": round(sum(r["volume_ml"] for r in cysts), 2),
    }


def _message(kidneys: list[dict], lesions: list[dict]) -> str:
    sides = " and ".join(k["side"] for k in kidneys)
    tumors = sum(r["type"] == "tumor" for r in lesions)
    cysts = sum(r["type"] == "cyst" for r in lesions)
    found = f"{tumors} tumor(s) and {cysts} cyst(s)" if lesions else "no tumor or cyst"
    return f"Kidney(s) found: {sides}; {found}."


def _bounding_box(
    mask: np.ndarray, shape: tuple[int, ...], within: tuple[slice, ...] | None = None, pad: int = 1
) -> tuple[slice, ...]:
    """The bounding box of `mask` (itself a crop starting at `within`), padded by `pad` voxels
    and clipped to `shape`."""
    starts = [0, 0, 0] if within is None else [s.start for s in within]
    box = []
    for axis, (start, n) in enumerate(zip(starts, shape, strict=True)):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(0, start + int(hits[0]) - pad), min(n, start + int(hits[-1]) + 1 + pad)))
    return tuple(box)


def _round(values, digits: int) -> list[float]:
    return [round(float(v), digits) for v in values]


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in values) + ")"
