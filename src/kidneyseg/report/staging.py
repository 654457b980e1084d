"""Clinical T category (TNM 8th edition, kidney) from the label map.

Size: the largest tumor's greatest dimension, cut at 4, 7 and 10 cm (T1a ≤ 4 cm, T1b > 4 and
≤ 7 cm, T2a > 7 and ≤ 10 cm, T2b > 10 cm; Brierley, Gospodarowicz & Wittekind, TNM
Classification of Malignant Tumours, 8th ed., UICC/Wiley 2017). Extension: a tumor reaching
medially beyond its kidney's parenchyma, towards the renal vein and the vena cava, by more
than `ReportOptions.extension_mm` raises the cT3 flag. The images cannot show microscopic
invasion of the perinephric or sinus fat (pT3a in most KiTS19 cases), adrenal or Gerota's
fascia involvement (T4) or nodes: docs/validation.md measures what this catches.
"""

from __future__ import annotations

import numpy as np

from kidneyseg.report import geometry

SIZE_CUTS_CM = ((4.0, "T1a"), (7.0, "T1b"), (10.0, "T2a"))
GREATEST_DIMENSION = "max_axial_diameter_cm"
"""The tumor measurement staged: the one radiologists report and the summary names largest."""


def size_category(greatest_dimension_cm: float) -> str:
    """T1a/T1b/T2a/T2b from a tumor's greatest dimension in cm."""
    return next((t for cut, t in SIZE_CUTS_CM if greatest_dimension_cm <= cut), "T2b")


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


def clinical_t(tumors: list[dict], extension_mm: float) -> dict | None:
    """The case's cT category from its measured tumors (report rows with `extension_mm`).

    Returns None without a tumor. The category is cT3 when any tumor is flagged as extending
    beyond its kidney, else the size category of the tumor with the greatest dimension.
    """
    if not tumors:
        return None
    largest = max(tumors, key=lambda r: r[GREATEST_DIMENSION])
    size = largest[GREATEST_DIMENSION]
    extending = [
        r["id"] for r in tumors if r["extension_mm"] is not None and r["extension_mm"] > extension_mm
    ]
    by_size = size_category(size)
    return {
        "category": "cT3" if extending else f"c{by_size}",
        "size_category": f"c{by_size}",
        "tumor_id": largest["id"],
        "greatest_dimension_cm": size,
        "greatest_dimension_is_lower_bound": largest["incomplete"],
        "extension_beyond_kidney": bool(extending),
        "extension_tumor_ids": extending,
        "extension_threshold_mm": extension_mm,
        "basis": "TNM 8th ed.: size of the largest tumor (max axial diameter); cT3 when a tumor reaches "
        f"more than {extension_mm:g} mm medially beyond its kidney (renal vein / sinus direction)",
    }
