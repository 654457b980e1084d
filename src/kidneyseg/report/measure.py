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
- Kidneys: 26-connected components of kidney + masses. The patient's midline is the spine's
  x, else the body's or the scanner's (`kidneyseg.report.midline`). The largest component with
  at least 15 % of its voxels on each side of a spine or body midline and a narrow isthmus there
  holds both kidneys (touching kidneys, horseshoe kidney) and is split by the midsagittal plane;
  any other component goes whole to the side holding most of it. The kidney on each side is the largest
  component (or part) there that holds kidney voxels; the others are reported as `other_components`.
- Lesions: 26-connected components of each lesion class (tumor, cyst), each assigned to
  the kidney that holds most of its voxels, else to the nearest kidney (and flagged as lying
  apart from the kidneys found).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from kidneyseg import __version__
from kidneyseg.errors import KidneysegError
from kidneyseg.io.volume import Volume
from kidneyseg.labels import KITS23, LESION_CLASSES, LabelMap, check_label_values
from kidneyseg.report import geometry, laterality, midline, nephrometry, staging
from kidneyseg.report.checks import ReportOptions, run_checks
from kidneyseg.report.lesions import Kidney, Scan, find_kidneys, measure_lesions, rounded
from kidneyseg.report.provenance import dicom_identifiers

if TYPE_CHECKING:
    from kidneyseg.predict.votes import Votes

SCHEMA_VERSION = 14


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
    difference = labels.grid_difference(ct, atol=1e-3)
    if difference:
        raise KidneysegError(f"label map geometry differs from the CT's ({ct.source}): {difference}", where)
    check_label_values(np.asarray(labels.array), label_map, where)
    array = label_array(labels)
    # min/max and one comparison per class, on every fourth voxel first (a kidney has thousands):
    # np.unique on a 512×512×600 map takes seconds, a comparison over all of it 0.3 s.
    low, high = int(array.min()), int(array.max())
    present = {
        v
        for v in range(low, high + 1)
        if v in (low, high) or bool((array[::4, ::4, ::4] == v).any()) or bool((array == v).any())
    }
    masses = {label_map.value(n) for n in LESION_CLASSES if label_map.has(n)}
    if present & masses and label_map.value("kidney") not in present:
        raise KidneysegError(
            "label map holds tumor/cyst voxels but no kidney at all (label "
            f"{label_map.value('kidney')}): lesions cannot be placed in a kidney; check the label map "
            f"({label_map.name})",
            where,
        )
    return array


def label_array(labels: Volume) -> np.ndarray:
    """The label map as an integer array (labels stored as whole floats are cast)."""
    array = np.asarray(labels.array)
    return array.astype(np.int16) if array.dtype.kind == "f" else array


def measure(
    ct: Volume,
    labels: Volume,
    label_map: LabelMap = KITS23,
    case_id: str | None = None,
    options: ReportOptions | None = None,
    confidence: float | None = None,
    votes: Votes | None = None,
    absorbed: Sequence[dict] = (),
) -> dict:
    """Measure kidneys and lesions, check them and stage; returns the report as a JSON-ready
    dict (docs/report.md).

    Args:
        ct: the CT in Hounsfield units.
        labels: its label map on exactly the same grid.
        label_map: the classes of `labels` (KITS23: kidney 1, tumor 2, cyst 3; or KITS19).
        case_id: an identifier written into the report.
        options: thresholds of the checks (default `ReportOptions()`).
        confidence: the model's confidence in `labels` (0-1) when they were predicted;
            below `options.min_confidence` it raises a `low_confidence` warning.
        votes: the network's foreground voxels when `labels` were predicted: each lesion's
            `sure_fraction` comes from them, and below `options.min_sure_fraction` it raises an
            `uncertain_lesions` warning (None: no lesion has one).
        absorbed: the lesion islands post-processing gave the class around them when `labels`
            were predicted (`Prediction.absorbed`); any raises an `absorbed_islands` warning.

    Raises:
        KidneysegError: the inputs do not fit together (see `validate_inputs`).
    """
    options = options or ReportOptions()
    array = validate_inputs(ct, labels, label_map)
    axial = geometry.slice_axis(ct.affine)
    imaged = geometry.imaged_slices(ct.array, axial)
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
            "spacing_mm": rounded(ct.spacing, 3),
            "orientation": ct.orientation,
            "slice_axis": axial,
            "craniocaudal_mm": geometry.craniocaudal_mm(imaged, ct.affine),
            "dicom": dicom_identifiers(ct.dicom_files),
            "model_confidence": confidence,
            "absorbed_islands": list(absorbed),
        },
        "status": "empty",
        "message": "The segmentation holds no kidney, tumor or cyst: nothing to measure.",
        "kidneys": [],
        "lesions": [],
        "other_components": {"count": 0, "volume_ml": 0.0},
        "staging": None,
    }
    found = midline.survey(ct)
    line = midline.find_midline(found)
    fraction = found.spine_depth_fraction
    report["anatomy"] = {
        "midline_x_mm": round(line.x, 1),
        "midline_source": line.source,
        "spine_ras_mm": None if found.spine_xy is None else rounded(found.spine_xy, 1),
        "spine_depth_fraction": None if fraction is None else round(fraction, 2),
        "spine_in_front": midline.spine_in_front(found),
        "roll_deg": None if found.roll_deg is None else round(found.roll_deg, 1),
        "rolled": midline.rolled(found),
        "liver_right_share": None,
    }
    if (array > 0).any():
        report.update(_measure_case(ct, imaged, array, label_map, options, votes, line, report["anatomy"]))
    report["summary"] = _summary(report, options)
    report["warnings"] = run_checks(report, options, confidence)
    return report


def _measure_case(
    ct: Volume,
    imaged: tuple[int, int],
    array: np.ndarray,
    label_map: LabelMap,
    options: ReportOptions,
    votes: Votes | None,
    line: midline.Midline,
    anatomy_record: dict,
) -> dict:
    """The measured part of the report (kidneys, lesions, staging) and `anatomy_record` with the
    liver's side, which rests on the kidneys found; `imaged`: the scan's slices
    (`geometry.imaged_slices`), whose edges cut what touches them."""
    voxel_ml = abs(float(np.linalg.det(ct.affine[:3, :3]))) / 1000.0
    box = geometry.bounding_box(array > 0, ct.shape)
    scan = Scan.of(np.array([s.start for s in box]), ct.shape, geometry.slice_axis(ct.affine), imaged)
    affine = geometry.crop_affine(ct.affine, box)
    crop_labels = array[box]
    crop_ct = np.asarray(ct.array[box])
    kidneys, other_count, other_voxels = find_kidneys(crop_labels, label_map.value("kidney"), affine, line)
    # Each kidney's anatomy is derived on a second thread while this one measures the lesions
    # (scipy and numpy release the GIL); a tumor's scoring waits for its kidney's.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = {
            k.side: pool.submit(
                nephrometry.kidney_anatomy,
                k.mask,
                k.parenchyma,
                crop_ct[k.box],
                k.contour,
                geometry.crop_affine(affine, k.box),
                k.centroid,
                k.z_range,
                line.x,
                derive_sinus=options.nephrometry,
            )
            for k in kidneys
        }
        try:
            share = laterality.right_share(ct, array, _axial_profile(kidneys, scan, ct.affine), line)
            lesions, small, unmeasured = _all_lesions(
                crop_labels, crop_ct, affine, label_map, kidneys, scan, options, votes, pending
            )
            anatomy = {side: future.result() for side, future in pending.items()}
        except BaseException:  # an error or an interrupt: no waiting for the kidneys not begun
            for future in pending.values():
                future.cancel()
            raise
    kidney_rows = [
        _measure_kidney(
            k, crop_ct[k.box], affine, voxel_ml, lesions, scan, anatomy[k.side], options.nephrometry
        )
        for k in kidneys
    ]
    tumors = [r for r in lesions if r["type"] == "tumor"]
    return {
        "anatomy": {**anatomy_record, "liver_right_share": None if share is None else round(share, 2)},
        "status": "ok",
        "message": _message(kidney_rows, lesions + unmeasured),
        "kidneys": kidney_rows,
        "lesions": lesions,
        "small_lesions": small,
        "unmeasured_lesions": unmeasured,
        "other_components": {"count": other_count, "volume_ml": round(other_voxels * voxel_ml, 2)},
        "staging": staging.clinical_t(tumors, options.extension_mm),
    }


def _all_lesions(
    crop_labels: np.ndarray,
    crop_ct: np.ndarray,
    affine: np.ndarray,
    label_map: LabelMap,
    kidneys: list[Kidney],
    scan: Scan,
    options: ReportOptions,
    votes: Votes | None,
    anatomy: dict[str, Future[nephrometry.KidneyAnatomy]],
) -> tuple[list[dict], list[dict], list[dict]]:
    """`measure_lesions` for each lesion class of the map, tumors first: the rows, the lesions too
    small to report and those left unmeasured; a tumor is scored once its kidney's anatomy is in."""
    lesions, small, unmeasured = [], [], []
    for class_name in LESION_CLASSES:
        if label_map.has(class_name):
            value = label_map.value(class_name)
            finish = partial(
                _finish_lesion,
                value=value,
                votes=votes,
                anatomy=anatomy if class_name == "tumor" else None,
                scored=options.nephrometry,
            )
            rows, dropped, beyond = measure_lesions(
                crop_labels, value, class_name, kidneys, crop_ct, affine, scan, options, finish
            )
            lesions += rows
            small += dropped
            unmeasured += beyond
    return lesions, small, unmeasured


def _axial_profile(kidneys: list[Kidney], scan: Scan, affine: np.ndarray) -> np.ndarray:
    """Voxels of the kidneys found (kidney + masses) on each axial slice of the CT."""
    axial = geometry.slice_axis(affine)
    profile = np.zeros(scan.shape[axial], dtype=np.int64)
    for kidney in kidneys:
        first = int(scan.offset[axial]) + kidney.box[axial].start
        counts = np.count_nonzero(kidney.mask, axis=tuple(a for a in range(3) if a != axial))
        profile[first : first + counts.size] += counts
    return profile


def _finish_lesion(
    row: dict,
    lesion: np.ndarray,
    local: np.ndarray,
    value: int,
    votes: Votes | None,
    anatomy: dict[str, Future[nephrometry.KidneyAnatomy]] | None,
    scored: bool,
) -> None:
    """Add the model's sure fraction to a lesion's row (None without `votes`), and to a tumor's
    (`anatomy` given: each kidney's, on its way) its medial extension and (if `scored`)
    nephrometry; `lesion` is its mask on the array `local` maps."""
    sure = None if votes is None else votes.sure_fraction(lesion, local, value)
    row["sure_fraction"] = None if sure is None else round(sure, 3)
    if anatomy is not None:
        _score_tumor(row, lesion, local, anatomy, scored)


def _score_tumor(
    row: dict, lesion: np.ndarray, local: np.ndarray, anatomy: dict[str, Future], scored: bool
) -> None:
    """Add the medial extension and (if `scored`) nephrometry to a tumor's row (None for both when
    it is assigned to no kidney)."""
    row["extension_mm"] = None
    row["nephrometry"] = None
    if row["kidney"] not in anatomy:
        return
    kidney = anatomy[row["kidney"]].result()
    row["extension_mm"] = round(
        staging.medial_extension_mm(lesion, local, kidney.medial_edge_mm, kidney.midline_x), 1
    )
    if scored:
        row["nephrometry"] = nephrometry.score(
            lesion, local, kidney, row[staging.GREATEST_DIMENSION], row["exophytic_fraction"]
        )


def _measure_kidney(
    kidney: Kidney,
    hu: np.ndarray,
    affine: np.ndarray,
    voxel_ml: float,
    lesions: list[dict],
    scan: Scan,
    anatomy: nephrometry.KidneyAnatomy,
    with_sinus: bool,
) -> dict:
    own = [row for row in lesions if row["kidney"] == kidney.side]
    z_low, z_high = geometry.cranio_caudal_range_mm(kidney.mask, geometry.crop_affine(affine, kidney.box))
    return {
        "side": kidney.side,
        "volume_ml": round(int(kidney.mask.sum()) * voxel_ml, 2),
        "parenchyma_volume_ml": round(int(kidney.parenchyma.sum()) * voxel_ml, 2),
        "parenchyma_hu_median": kidney.parenchyma_hu_median(hu),
        "cranio_caudal_extent_cm": round((z_high - z_low) / 10, 2),
        "incomplete": scan.cuts(kidney.mask, kidney.box),
        "across_midline_fraction": round(kidney.across_midline, 3),
        "sinus_volume_ml": anatomy.sinus_ml if with_sinus else None,
        "polar_lines_z_mm": rounded(anatomy.polar_lines, 1) if with_sinus else None,
        "medial_edge_x_mm": round(_medial_edge_x(anatomy), 1),
        "centroid_ras_mm": rounded(kidney.centroid, 1),
        "has_lesions": bool(own),
        "num_tumors": sum(row["type"] == "tumor" for row in own),
        "num_cysts": sum(row["type"] == "cyst" for row in own),
    }


def _medial_edge_x(anatomy: nephrometry.KidneyAnatomy) -> float:
    side = 1.0 if anatomy.centroid[0] > anatomy.midline_x else -1.0
    return anatomy.midline_x + side * anatomy.medial_edge_mm


def _summary(report: dict, options: ReportOptions) -> dict:
    kidneys, lesions = report["kidneys"], report["lesions"]
    measured_tumors = [row for row in lesions if row["type"] == "tumor"]
    largest = max(measured_tumors, key=lambda r: r["max_axial_diameter_cm"], default=None)
    small = report.pop("small_lesions", [])
    unmeasured = report.pop("unmeasured_lesions", [])
    # Counts and volumes hold the lesions beyond the measured ones of a class too.
    tumors, cysts = ([r for r in lesions + unmeasured if r["type"] == kind] for kind in ("tumor", "cyst"))
    return {
        "kidneys_found": [k["side"] for k in kidneys],
        "num_tumors": len(tumors),
        "num_cysts": len(cysts),
        "largest_tumor_id": largest["id"] if largest else None,
        "largest_tumor_axial_diameter_cm": largest["max_axial_diameter_cm"] if largest else None,
        "largest_tumor_is_lower_bound": bool(largest["incomplete"]) if largest else None,
        "total_tumor_volume_ml": round(sum(r["volume_ml"] for r in tumors), 2),
        "total_cyst_volume_ml": round(sum(r["volume_ml"] for r in cysts), 2),
        "clinical_t": staging.shown_category(report["staging"]),
        "small_lesions": {
            "count": len(small),
            "volume_ml": round(sum(r["volume_ml"] for r in small), 3),
            "min_diameter_mm": options.min_lesion_diameter_mm,
            "min_volume_ml": options.min_lesion_volume_ml,
        },
        "unmeasured_lesions": {
            "count": len(unmeasured),
            "volume_ml": round(sum(r["volume_ml"] for r in unmeasured), 3),
            "max_per_class": options.max_lesions,
        },
    }


def _message(kidneys: list[dict], lesions: list[dict]) -> str:
    sides = " and ".join(k["side"] for k in kidneys)
    tumors = sum(r["type"] == "tumor" for r in lesions)
    cysts = sum(r["type"] == "cyst" for r in lesions)
    found = f"{tumors} tumor(s) and {cysts} cyst(s)" if lesions else "no tumor or cyst"
    return f"Kidney(s) found: {sides}; {found}."
