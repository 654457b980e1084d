"""Clinical T category (TNM 8th edition, kidney) from the label map.

Size: the greatest dimension the pathologist would measure on the specimen, estimated from the
volume of the largest tumor (`specimen_size_cm`), cut at 4, 7 and 10 cm (T1a ≤ 4 cm, T1b > 4 and
≤ 7 cm, T2a > 7 and ≤ 10 cm, T2b > 10 cm; Brierley, Gospodarowicz & Wittekind, TNM Classification
of Malignant Tumours, 8th ed., UICC/Wiley 2017). The mask's own maximum axial diameter, which
reads larger than the specimen (docs/validation.md), is kept beside it with its category.
Extension: a tumor reaching medially beyond its kidney's parenchyma, towards the renal vein and
the vena cava, by more than `ReportOptions.extension_mm` raises the extension flag, a possible cT3
for a reader to check on the images; it does not change the category. On the KiTS19 reference
masks no threshold makes a flagged tumor more often pT3 than not (docs/validation.md), so staging
it cT3 would lower agreement with pathology. The images cannot show microscopic invasion of the
perinephric or sinus fat (pT3a in most KiTS19 cases), adrenal or Gerota's fascia involvement (T4)
or nodes.
"""

from __future__ import annotations

import numpy as np

from kidneyseg.report import geometry

SIZE_CUTS_CM = ((4.0, "T1a"), (7.0, "T1b"), (10.0, "T2a"))
GREATEST_DIMENSION = "max_axial_diameter_cm"
"""The tumor's measured greatest dimension: the one radiologists report and the summary names largest."""
SPECIMEN_SIZE_FIT = (-0.230, 1.092)
"""cm = a + c × the diameter of the sphere of the tumor's volume (cm): least squares against the
KiTS19 `pathologic_size` (each case's largest tumor by volume). Increasing in the volume, so a
tumor that grows never goes down a category and a cut-off tumor's estimate is a lower bound.
`python benchmarks/validate_staging.py` refits it and measures the staging out of fold
(docs/validation.md)."""


def size_category(greatest_dimension_cm: float) -> str:
    """T1a/T1b/T2a/T2b from a tumor's greatest dimension in cm."""
    return next((t for cut, t in SIZE_CUTS_CM if greatest_dimension_cm <= cut), "T2b")


def sphere_diameter_cm(volume_ml: float) -> float:
    """The diameter (cm) of the sphere of volume `volume_ml`."""
    return float((6 * volume_ml / np.pi) ** (1 / 3))


def specimen_size_cm(volume_ml: float, fit: tuple[float, float] = SPECIMEN_SIZE_FIT) -> float:
    """The specimen's greatest dimension (cm) estimated from a tumor mask's volume, with the
    coefficients `fit` (a, c of `SPECIMEN_SIZE_FIT`); never below 0 (a negative intercept meets
    volumes of a few voxels)."""
    a, c = fit
    return max(0.0, float(a + c * sphere_diameter_cm(volume_ml)))


def medial_extension_mm(
    tumor: np.ndarray, affine: np.ndarray, medial_edge_mm: float, midline_x: float
) -> float:
    """How far (mm) the tumor reaches closer to the patient's midline than its kidney's
    parenchyma does; negative when it stays lateral of it.

    Args:
        tumor: the tumor's voxels, in the array `affine` maps.
        affine: voxel-to-world of `tumor`.
        medial_edge_mm: the distance from the midline of the parenchyma's most medial point.
        midline_x: the patient's midline (world x, mm).
    """
    return float(medial_edge_mm - geometry.sagittal_gap_mm(tumor, affine, midline_x))


def shown_category(staging: dict | None) -> str | None:
    """The case's cT category as the page, the summary and the statistics show it: `≥ cT1b` when
    the size is a lower bound (a tumor cut by the scan's edge), None without a tumor."""
    if staging is None:
        return None
    return f"{'≥ ' if staging['specimen_size_is_lower_bound'] else ''}{staging['category']}"


def clinical_t(tumors: list[dict], extension_mm: float) -> dict | None:
    """The case's cT category from its measured tumors (report rows with `extension_mm`).

    Returns None without a tumor. The category is the size category of the estimated specimen
    size of the largest tumor by volume; tumors reaching beyond their kidney are flagged beside
    it (a possible cT3, not a category). That size is a lower bound when any tumor is cut by the
    scan's edge (a cut tumor may be larger than the one staged); the greatest dimension, when the
    staged one is.
    """
    if not tumors:
        return None
    largest = max(tumors, key=lambda r: r["volume_ml"])
    size = round(specimen_size_cm(largest["volume_ml"]), 2)
    extending = [
        r["id"] for r in tumors if r["extension_mm"] is not None and r["extension_mm"] > extension_mm
    ]
    return {
        "category": f"c{size_category(size)}",
        "tumor_id": largest["id"],
        "specimen_size_cm": size,
        "greatest_dimension_cm": largest[GREATEST_DIMENSION],
        "measured_size_category": f"c{size_category(largest[GREATEST_DIMENSION])}",
        "specimen_size_is_lower_bound": any(r["incomplete"] for r in tumors),
        "greatest_dimension_is_lower_bound": largest["incomplete"],
        "extension_beyond_kidney": bool(extending),
        "extension_tumor_ids": extending,
        "extension_threshold_mm": extension_mm,
        "basis": "TNM 8th ed.: the specimen size of the largest tumor by volume, estimated from its "
        "volume (fit to KiTS19 pathology); a tumor reaching more than"
        f" {extension_mm:g} mm medially beyond its kidney (renal vein / sinus direction) is flagged as a"
        " possible cT3 to check, without changing the category",
    }
