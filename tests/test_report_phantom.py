"""Report measurements on phantom CT cases against the generator's own ground truth (phantom.json).

The phantom's truth measures each lesion on its instance map with voxel-centre Feret
diameters; the report measures connected components edge to edge, so the diameters may
differ by up to one voxel (plus 0.1 mm of rounding in the JSON).
"""

from __future__ import annotations

import numpy as np
import pytest

from kidneyseg.data.phantom import generate_case
from kidneyseg.report import measure

ROUNDING_MM = 0.1


@pytest.mark.parametrize(("seed", "orientation"), [(4, "IPL"), (4, "LPS"), (6, "RAS"), (7, "IPL")])
def test_phantom_lesions_match_the_truth(seed, orientation):
    case = generate_case(seed, size="small", orientation=orientation)
    report = measure(case.ct, case.labels)
    truth = case.truth
    assert truth["lesions"], "the chosen seeds have lesions"
    assert len(report["lesions"]) == len(truth["lesions"])
    in_plane = max(truth["spacing_mm"][a] for a in range(3) if a != _slice_axis(orientation))
    for expected in truth["lesions"]:
        row = min(
            report["lesions"],
            key=lambda r: np.linalg.norm(np.subtract(r["centroid_ras_mm"], expected["centre_mm"])),
        )
        assert row["type"] == expected["kind"]
        assert row["kidney"] == expected["side"]
        assert row["volume_ml"] == pytest.approx(expected["volume_ml"], rel=0.05)
        axial_error = row["max_axial_diameter_cm"] * 10 - expected["axial_diameter_mm"]
        assert abs(axial_error) <= in_plane + ROUNDING_MM
        error_3d = row["max_3d_diameter_cm"] * 10 - expected["diameter_mm"]
        assert abs(error_3d) <= max(truth["spacing_mm"]) + ROUNDING_MM
    kidneys = {k["side"]: k for k in report["kidneys"]}
    for expected in truth["kidneys"]:
        measured = kidneys[expected["side"]]["parenchyma_volume_ml"]
        assert measured == pytest.approx(expected["volume_ml"], rel=0.05)


def _slice_axis(orientation: str) -> int:
    return next(i for i, code in enumerate(orientation) if code in "SI")


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_only_unenhanced_phantoms_are_flagged_unenhanced(seed):
    case = generate_case(seed, size="small")
    report = measure(case.ct, case.labels)
    unenhanced = case.truth["phase"] == "noncontrast"
    assert ("unenhanced_scan" in [w["code"] for w in report["warnings"]]) == unenhanced
    assert seed not in (2, 3) or unenhanced, "seeds 2 and 3 draw unenhanced phantoms"
    hu = case.truth["hu"]
    for kidney in report["kidneys"]:  # between the phantom's cortex and medulla values
        low, high = sorted((hu["kidney_cortex"], hu["kidney_medulla"]))
        assert low - 10 <= kidney["parenchyma_hu_median"] <= high + 10
