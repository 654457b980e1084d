"""Plausibility and completeness checks: named warnings that say when a number cannot be trusted.

Each warning is a dict `{code, message, ...}` with the fields that locate it (`kidney`,
`lesion`, the measured value and the limit). The codes, their thresholds and the sources of
the thresholds are documented in docs/report.md. The checks read the measured report (a
dict), so they run the same on reference and predicted label maps.
"""

from __future__ import annotations

from dataclasses import dataclass

from kidneyseg.report.laterality import LATERALITY_MESSAGE, MIRRORED_BELOW
from kidneyseg.report.midline import ORIENTATION_MESSAGE, ROLLED_MESSAGE, SPLIT_SHARE

# Hounsfield-unit range of the mean CT value a lesion class can physically have. Below
# -200 HU the "lesion" is mostly air (bowel gas, outside the body); simple and hyperdense
# cysts stay below ~100 HU, enhancing tumors below ~300 HU; above that it is bone, metal or
# dense contrast, not a renal mass.
LESION_HU_RANGE = {"tumor": (-200.0, 400.0), "cyst": (-200.0, 200.0)}


@dataclass(frozen=True)
class ReportOptions:
    """Thresholds of the report's checks (defaults: docs/report.md, "Plausibility checks").

    Attributes:
        min_lesion_diameter_mm: lesions whose maximum 3D diameter is below this are left
            out of the findings (counted in `summary.small_lesions`).
        min_lesion_volume_ml: likewise for the volume.
        kidney_parenchyma_ml: the plausible range of one adult kidney's parenchyma volume.
        min_confidence: a model confidence below this raises `low_confidence`.
        min_sure_fraction: a lesion whose share of network voxels the model was sure of
            (`sure_fraction`, predicted labels only) is below this raises `uncertain_lesions`.
        min_scan_length_mm: a scan covering less than this cranio-caudally raises `short_scan`:
            shorter than an adult kidney (10-12 cm long), it cannot hold one whole.
        unenhanced_below_hu: kidney parenchyma whose median CT is below this in every kidney
            raises `unenhanced_scan` (unenhanced about 30-55 HU, every contrast phase over 100).
        extension_mm: tumor reaching this far medially beyond its kidney's parenchyma
            raises the extension flag, a possible cT3 (`staging.py`).
        max_lesions: at most this many lesions of each class, the largest, are measured; the
            others are counted in `summary.unmeasured_lesions`. Bounds the time and memory of
            a report on a fragmented segmentation.
        nephrometry: False skips R.E.N.A.L./PADUA, the derived sinus and each lesion's place in
            its kidney (`lesions[].nephrometry`, `position`, `position_fraction`,
            `exophytic_fraction`, `kidneys[].sinus_volume_ml` and `polar_lines_z_mm` are null):
            the statistics row of `predict` shows none of them.
    """

    min_lesion_diameter_mm: float = 3.0
    min_lesion_volume_ml: float = 0.05
    kidney_parenchyma_ml: tuple[float, float] = (60.0, 400.0)
    min_confidence: float = 0.85
    min_sure_fraction: float = 0.65
    min_scan_length_mm: float = 100.0
    unenhanced_below_hu: float = 70.0
    extension_mm: float = 10.0
    max_lesions: int = 30
    nephrometry: bool = True


def run_checks(report: dict, options: ReportOptions, confidence: float | None) -> list[dict]:
    """All warnings for a measured report, in a fixed order (orientation and midline, kidneys,
    lesions, fragments, model)."""
    warnings = _anatomy_warnings(report)
    turned = _turned(report["anatomy"])
    length = report["inputs"]["craniocaudal_mm"]
    if length < options.min_scan_length_mm:
        warnings.append(
            {
                "code": "short_scan",
                "message": f"The scan covers only {length:g} mm cranio-caudally, less than an adult kidney's "
                f"length ({options.min_scan_length_mm:g} mm): no kidney can be whole in it, and a model "
                "trained on whole kidneys may miss or cut them, or take another organ for one: what is not "
                "found here may be there, and what is found may not be a kidney.",
                "craniocaudal_mm": length,
                "threshold_mm": options.min_scan_length_mm,
            }
        )
    if not report["kidneys"]:
        warnings.append(
            {
                "code": "no_kidney",
                "message": "No kidney in the segmentation: the field of view may not hold the kidneys, "
                "or the model missed them.",
            }
        )
    for kidney in report["kidneys"]:
        warnings += _kidney_warnings(kidney, options, turned)
    warnings += _unenhanced(report["kidneys"], options)
    for lesion in report["lesions"]:
        warnings += _lesion_warnings(lesion)
    warnings += _uncertain_lesions(report["lesions"], options)
    small = report["summary"]["small_lesions"]
    if small["count"]:
        warnings.append(
            {
                "code": "small_lesions_excluded",
                "message": f"{small['count']} lesion fragment(s) smaller than "
                f"{options.min_lesion_diameter_mm:g} mm or {options.min_lesion_volume_ml:g} mL "
                f"({small['volume_ml']:.2f} mL in all) are left out of the findings.",
                "count": small["count"],
                "volume_ml": small["volume_ml"],
            }
        )
    unmeasured = report["summary"]["unmeasured_lesions"]
    if unmeasured["count"]:
        warnings.append(
            {
                "code": "lesions_not_measured",
                "message": f"More than {options.max_lesions} lesions of a class: {unmeasured['count']} "
                f"smaller one(s) ({unmeasured['volume_ml']:.2f} mL in all) are counted but not measured; "
                "so many usually means a fragmented segmentation.",
                "count": unmeasured["count"],
                "volume_ml": unmeasured["volume_ml"],
            }
        )
    warnings += _absorbed_islands(report["inputs"].get("absorbed_islands", []))
    if confidence is not None and confidence < options.min_confidence:
        warnings.append(
            {
                "code": "low_confidence",
                "message": f"The model's confidence {confidence:.2f} is below {options.min_confidence:.2f}: "
                "check the segmentation before using the numbers.",
                "confidence": confidence,
                "threshold": options.min_confidence,
            }
        )
    return warnings


def _absorbed_islands(absorbed: list[dict]) -> list[dict]:
    """One warning for the lesion islands post-processing relabelled, if any."""
    if not absorbed:
        return []
    count = sum(a["islands"] for a in absorbed)
    volume = sum(a["volume_ml"] for a in absorbed)
    kinds = " and ".join(sorted({a["class"] for a in absorbed}))
    taken = ", ".join(f"{a['islands']} {a['class']} to {a['to']}" for a in absorbed)
    return [
        {
            "code": "absorbed_islands",
            "message": f"Post-processing gave {count} small {kinds} island(s) ({volume:.2f} mL in all; "
            f"{taken}) the class around them, being smaller than the absorb_islands_ml in force: a small "
            "lesion may be among them (predicting with --absorb-islands-ml 0 keeps every island).",
            "count": count,
            "volume_ml": round(volume, 3),
        }
    ]


def _anatomy_warnings(report: dict) -> list[dict]:
    """Whether the anatomy fits the header's orientation (spine behind, liver on the right), and
    whether the sides rest on a midline."""
    anatomy = report["anatomy"]
    warnings = []
    turned = _turned(anatomy)
    if turned:
        message = ORIENTATION_MESSAGE if anatomy["spine_in_front"] else ROLLED_MESSAGE
        warnings.append(
            {
                "code": "orientation_mismatch",
                "message": message[0].upper() + message[1:] + ".",
                "spine_depth_fraction": anatomy["spine_depth_fraction"],
                "roll_deg": anatomy["roll_deg"],
            }
        )
    share = anatomy["liver_right_share"]
    if (
        report["kidneys"]
        and anatomy["midline_source"] != "none"
        and not turned  # turned about the long axis: orientation_mismatch says it
        and share is not None
        and share < MIRRORED_BELOW
    ):
        warnings.append(
            {
                "code": "laterality_mismatch",
                "message": LATERALITY_MESSAGE,
                "liver_right_share": share,
            }
        )
    if report["kidneys"] and anatomy["midline_source"] == "none":
        warnings.append(
            {
                "code": "midline_unknown",
                "message": "The patient's midline could not be found (no spine in view, the body cut at "
                "the side of the field of view, the scanner's centre outside it): the kidneys' sides "
                f"rest on the centre of the body in view (x = {anatomy['midline_x_mm']:g} mm); check them.",
                "midline_x_mm": anatomy["midline_x_mm"],
            }
        )
    return warnings


def _turned(anatomy: dict) -> bool:
    """Whether the data are turned about the long axis against the header (spine in front of the
    body's centre, or to one side of it): `orientation_mismatch` then stands for the side checks."""
    return anatomy["spine_in_front"] or anatomy["rolled"]


def _kidney_warnings(kidney: dict, options: ReportOptions, turned: bool) -> list[dict]:
    """`turned`: the orientation check already says the sides cannot be trusted (no
    `midline_kidney` then)."""
    warnings = []
    side = kidney["side"]
    if kidney["incomplete"]:
        warnings.append(
            {
                "code": "incomplete_kidney",
                "message": f"The {side} kidney touches the edge of the scan: it is cut off, its volume "
                "and extent are lower bounds.",
                "kidney": side,
            }
        )
    across = kidney["across_midline_fraction"]
    if across >= SPLIT_SHARE and not turned:
        warnings.append(
            {
                "code": "midline_kidney",
                "message": f"The {side} kidney lies across the patient's midline ({across:.0%} of it on "
                "the other side) with no narrow isthmus there: it is kept whole and given the side "
                "holding most of it; an ectopic, pelvic or malrotated kidney, or two kidneys fused "
                "broadly. Check its side on the images.",
                "kidney": side,
                "across_midline_fraction": across,
            }
        )
    low, high = options.kidney_parenchyma_ml
    volume = kidney["parenchyma_volume_ml"]
    if not low <= volume <= high and not (kidney["incomplete"] and volume < low):
        warnings.append(
            {
                "code": "kidney_volume_out_of_range",
                "message": f"The {side} kidney's parenchyma measures {volume:.0f} mL, outside the "
                f"plausible adult range {low:.0f}–{high:.0f} mL: check the segmentation.",
                "kidney": side,
                "volume_ml": volume,
                "range_ml": [low, high],
            }
        )
    return warnings


def best_enhanced_hu(kidneys: list[dict]) -> float | None:
    """The parenchyma median of the best-enhanced kidney (`kidneys[]` of a report; one enhanced
    kidney is enough: the other may not be perfused); None when no kidney has parenchyma."""
    return max(
        (k["parenchyma_hu_median"] for k in kidneys if k["parenchyma_hu_median"] is not None), default=None
    )


def _unenhanced(kidneys: list[dict], options: ReportOptions) -> list[dict]:
    """`unenhanced_scan` when the best-enhanced kidney's parenchyma stays below the threshold."""
    hu = best_enhanced_hu(kidneys)
    if hu is None or hu >= options.unenhanced_below_hu:
        return []
    return [
        {
            "code": "unenhanced_scan",
            "message": f"The kidney parenchyma measures {hu:.0f} HU (median), under "
            f"{options.unenhanced_below_hu:.0f} HU: the scan looks unenhanced. Without contrast a renal "
            "tumor is often as dense as the kidney: tumors may be missed or labelled kidney, cysts "
            "and tumors are told apart less surely, and no lesion can be shown to enhance.",
            "hu_median": hu,
            "threshold_hu": options.unenhanced_below_hu,
        }
    ]


def _lesion_warnings(lesion: dict) -> list[dict]:
    warnings = []
    name = f"{lesion['type']} {lesion['id']}"
    if lesion["incomplete"]:
        warnings.append(
            {
                "code": "incomplete_lesion",
                "message": f"The {name} touches the edge of the scan: its size and volume are lower bounds.",
                "lesion": lesion["id"],
            }
        )
    if lesion["apart_from_kidney"]:
        warnings.append(
            {
                "code": "lesion_apart_from_kidney",
                "message": f"The {name} lies apart from the kidneys found (in none of their "
                f"components): it is listed with the nearest one ({lesion['kidney']}), but a renal "
                f"{lesion['type']} lies in or on a kidney: a stray label, or a kidney fragment; check the "
                "segmentation.",
                "lesion": lesion["id"],
            }
        )
    low, high = LESION_HU_RANGE[lesion["type"]]
    if not low <= lesion["hu_mean"] <= high:
        what = "air" if lesion["hu_mean"] < low else "bone, metal or dense contrast"
        warnings.append(
            {
                "code": "implausible_hu",
                "message": f"The {name} has mean {lesion['hu_mean']:.0f} HU, outside {low:.0f}…{high:.0f} HU "
                f"for a {lesion['type']}: it looks like {what}, not a renal {lesion['type']}.",
                "lesion": lesion["id"],
                "hu_mean": lesion["hu_mean"],
                "range_hu": [low, high],
            }
        )
    return warnings


def _uncertain_lesions(lesions: list[dict], options: ReportOptions) -> list[dict]:
    """One warning for all the lesions whose `sure_fraction` is below the threshold (a weak model
    on an unfamiliar scan can label dozens)."""
    unsure = [
        r
        for r in lesions
        if r["sure_fraction"] is not None and r["sure_fraction"] < options.min_sure_fraction
    ]
    if not unsure:
        return []
    listed = ", ".join(f"{r['id']} ({r['sure_fraction']:.0%})" for r in unsure)
    return [
        {
            "code": "uncertain_lesions",
            "message": f"For {len(unsure)} lesion(s) the model was sure of less than "
            f"{options.min_sure_fraction:.0%} of the voxels: {listed}. They may be kidney, another lesion "
            "type or nothing: check them on the images before using their size or stage.",
            "lesions": [r["id"] for r in unsure],
            "sure_fractions": [r["sure_fraction"] for r in unsure],
            "threshold": options.min_sure_fraction,
        }
    ]
