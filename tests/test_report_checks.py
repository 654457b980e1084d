"""Plausibility and completeness checks: each implausible finding carries its named warning."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from kidneyseg.io.volume import Volume, read_volume
from kidneyseg.labels import KITS19
from kidneyseg.report import ReportOptions, measure
from test_report_measure import build_scene, ellipsoid, make_grid, world_coordinates

KITS_CASE = "case_00061"  # 29 slices of 5 mm: the smallest KiTS19 mask


def codes(report: dict) -> list[str]:
    return [w["code"] for w in report["warnings"]]


@pytest.fixture(scope="module")
def grid():
    return make_grid(np.eye(3), spacing=(2.0, 2.0, 3.0))


def test_plausible_scene_has_no_warning(grid):
    report = measure(*build_scene(*grid))
    assert report["warnings"] == []
    assert not any(k["incomplete"] for k in report["kidneys"])
    assert not any(r["incomplete"] for r in report["lesions"])


def test_kits19_mask_cropped_through_a_kidney_is_incomplete(shared_data):
    labels = read_volume(shared_data / "kits19" / KITS_CASE / "segmentation.nii.gz")
    ct = Volume(np.full(labels.shape, 40, np.int16), labels.affine, "flat CT")
    whole = measure(ct, labels, KITS19)
    assert "incomplete_kidney" not in codes(whole)
    assert not any(k["incomplete"] for k in whole["kidneys"])
    # Slices run along array axis 0 (IPL): keep the slices up to the middle of the tumor's kidney.
    kidney_slices = np.flatnonzero((np.asarray(labels.array) > 0).any(axis=(1, 2)))
    cut = int(np.median(kidney_slices))
    cropped = measure(
        Volume(np.asarray(ct.array)[:cut], ct.affine, "ct"),
        Volume(np.asarray(labels.array)[:cut], labels.affine, "cropped"),
        KITS19,
    )
    cut_sides = {w["kidney"] for w in cropped["warnings"] if w["code"] == "incomplete_kidney"}
    assert cut_sides and cut_sides == {k["side"] for k in cropped["kidneys"] if k["incomplete"]}
    for kidney in cropped["kidneys"]:
        if kidney["incomplete"]:
            whole_kidney = next(k for k in whole["kidneys"] if k["side"] == kidney["side"])
            assert kidney["volume_ml"] < whole_kidney["volume_ml"]  # a lower bound indeed
    # the cut scan padded back to its size with air slices (was: "complete", the array's edge being
    # far away); the same number of padding slices before the first one changes nothing either
    for before, after in ((0, 6), (4, 6), (4, 0)):
        ct_pad = np.pad(np.asarray(ct.array)[:cut], ((before, after), (0, 0), (0, 0)), constant_values=-1024)
        labels_pad = np.pad(np.asarray(labels.array)[:cut], ((before, after), (0, 0), (0, 0)))
        padded = measure(Volume(ct_pad, ct.affine, "ct"), Volume(labels_pad, labels.affine, "padded"), KITS19)
        assert [k["incomplete"] for k in padded["kidneys"]] == [k["incomplete"] for k in cropped["kidneys"]]
        assert codes(padded) == codes(cropped), (before, after)
    # cut from the other end, padded before the cut
    top = measure(
        Volume(np.asarray(ct.array)[cut:], ct.affine, "ct"),
        Volume(np.asarray(labels.array)[cut:], labels.affine, "top"),
        KITS19,
    )
    ct_pad = np.pad(np.asarray(ct.array)[cut:], ((5, 0), (0, 0), (0, 0)), constant_values=-1024)
    labels_pad = np.pad(np.asarray(labels.array)[cut:], ((5, 0), (0, 0), (0, 0)))
    padded = measure(Volume(ct_pad, ct.affine, "ct"), Volume(labels_pad, labels.affine, "padded"), KITS19)
    assert "incomplete_kidney" in codes(top) and codes(padded) == codes(top)
    assert padded["inputs"]["craniocaudal_mm"] == top["inputs"]["craniocaudal_mm"]


def test_the_scans_slices_are_found_without_copying_the_ct():
    """Air padding is told from the end slices, read as views: a NIfTI's CT is Fortran-ordered,
    where one `np.take` copied the whole CT (a review measured 146 s for 150 padding slices)."""
    import tracemalloc

    from kidneyseg.report.geometry import imaged_slices

    ct = np.full((160, 160, 120), -1000, np.int16, order="F")
    ct[:, :, 7:100] = 40
    imaged_slices(ct[:4, :4], 2)  # whatever a first call loads is not the CT copied
    tracemalloc.start()
    found = [imaged_slices(ct, 2), imaged_slices(ct[:, :, ::-1], 2), imaged_slices(np.swapaxes(ct, 0, 2), 0)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert found == [(7, 100), (20, 113), (7, 100)]
    assert peak < ct.nbytes / 20
    assert imaged_slices(np.full((4, 4, 6), -1000, np.int16), 2) == (0, 6)  # no body: all scan


def test_kits19_mask_cut_through_its_tumor_stages_a_lower_bound(shared_data):
    """Cut through the middle of its tumor, a KiTS19 mask's cT category is a lower bound in the
    summary and the statistics row, as on the page (the whole mask's is not)."""
    from kidneyseg.report.statistics import statistics_row

    labels = read_volume(shared_data / "kits19" / KITS_CASE / "segmentation.nii.gz")
    array = np.asarray(labels.array)
    ct = Volume(np.full(labels.shape, 40, np.int16), labels.affine, "flat CT")
    whole = measure(ct, labels, KITS19)
    tumor_slices = np.flatnonzero((array == 2).any(axis=(1, 2)))
    cut = int(np.median(tumor_slices)) + 1
    cropped = measure(
        Volume(np.asarray(ct.array)[:cut], ct.affine, "ct"), Volume(array[:cut], labels.affine, "cut"), KITS19
    )
    assert "incomplete_lesion" in codes(cropped) and cropped["staging"]["specimen_size_is_lower_bound"]
    for report, shown in (
        (whole, whole["staging"]["category"]),
        (cropped, f"≥ {cropped['staging']['category']}"),
    ):
        assert report["summary"]["clinical_t"] == shown
        assert statistics_row("case", report)["ct_category"] == shown
    assert not whole["summary"]["clinical_t"].startswith("≥")
    # Its diameter too (found by a hostile run: the page's summary and the statistics row showed a
    # plain "4.1 cm" for the cut tumor, the lesion table "≥ 4.1").
    from kidneyseg.report.render import _summary_rows

    for report, bound in ((whole, ""), (cropped, "≥")):
        largest = report["summary"]["largest_tumor_axial_diameter_cm"]
        assert report["summary"]["largest_tumor_is_lower_bound"] is (bound == "≥")
        assert (
            dict(_summary_rows(report))["Largest tumor, max axial diameter"]
            == f"{bound + ' ' if bound else ''}{largest:.1f} cm"
        )
        assert statistics_row("case", report)["tumor_diameters_cm"].split(";")[0] == f"{bound}{largest:.2f}"


def test_air_in_a_cyst_is_implausible(grid):
    ct, labels = build_scene(*grid)
    hu = np.asarray(ct.array).copy()
    hu[np.asarray(labels.array) == 3] = -900
    report = measure(ct.with_array(hu), labels)
    (warning,) = [w for w in report["warnings"] if w["code"] == "implausible_hu"]
    cyst = next(r for r in report["lesions"] if r["type"] == "cyst")
    assert warning["lesion"] == cyst["id"] and warning["hu_mean"] == pytest.approx(-900, abs=1)


def test_tiny_fragments_are_counted_but_not_listed(grid):
    affine, shape = grid
    ct, labels = build_scene(affine, shape)
    array = np.asarray(labels.array).copy()
    # Five single tumor voxels inside the kidneys, far from each other and from the real lesions.
    points = np.array([[45, 0, -20], [45, 0, -40], [40, 10, 0], [-40, -15, 30], [-50, 10, 30]], float)
    specks = np.round(np.linalg.solve(affine[:3, :3], (points - affine[:3, 3]).T).T).astype(int)
    assert (array[tuple(specks.T)] == 1).all()
    array[tuple(specks.T)] = 2
    report = measure(ct, labels.with_array(array))
    small = report["summary"]["small_lesions"]
    assert small["count"] == 5
    assert small["volume_ml"] == pytest.approx(5 * abs(np.linalg.det(affine[:3, :3])) / 1000, rel=1e-3)
    assert report["summary"]["num_tumors"] == 2  # the two real tumors only
    assert all(r["volume_ml"] > 1 for r in report["lesions"])
    assert "small_lesions_excluded" in codes(report)
    # The diameter threshold: the 14 mm cyst is left out with a 20 mm minimum.
    big = measure(ct, labels, options=ReportOptions(min_lesion_diameter_mm=20.0))
    assert big["summary"]["num_cysts"] == 0 and big["summary"]["small_lesions"]["count"] == 1


def test_a_lesion_apart_from_every_kidney_is_no_kidney_and_is_flagged(grid):
    """Found by a hostile run: a tumor alone on the left, touching no kidney, was reported as
    the left kidney (0 mL of parenchyma, made-up polar lines, a possible cT3). A component without
    kidney voxels is never a kidney; its lesion is listed with the nearest kidney and flagged."""
    from test_report_measure import RIGHT_KIDNEY

    lesions = {"apart": (2, "left", (-45.0, 0.0, 0.0), (12.0, 12.0, 12.0))}
    report = measure(*build_scene(*grid, kidneys=(RIGHT_KIDNEY,), lesions=lesions))
    assert [k["side"] for k in report["kidneys"]] == ["right"]
    (tumor,) = report["lesions"]
    assert tumor["apart_from_kidney"] and tumor["kidney"] == "right"
    assert tumor["centroid_ras_mm"][0] == pytest.approx(-45.0, abs=1.0)
    (warning,) = [w for w in report["warnings"] if w["code"] == "lesion_apart_from_kidney"]
    assert warning["lesion"] == tumor["id"]
    assert report["other_components"]["count"] == 1
    assert report["other_components"]["volume_ml"] == pytest.approx(tumor["volume_ml"], rel=1e-6)
    assert not any(r["apart_from_kidney"] for r in measure(*build_scene(*grid))["lesions"])


def test_lesions_of_equal_volume_are_numbered_by_place_not_array_order(grid):
    """Found by a hostile run: two lesions of the same volume swapped ids (T1/T2) when the same
    CT was stored with an axis flipped; ties now go by world position."""
    affine, shape = grid
    ct, labels = build_scene(affine, shape, lesions={})
    array = np.asarray(labels.array).copy()
    for centre in ((45.0, 0.0, -30.0), (45.0, 0.0, 30.0), (-45.0, 0.0, 0.0)):  # three 3x3x3 tumors
        index = np.round(np.linalg.solve(affine[:3, :3], np.subtract(centre, affine[:3, 3]))).astype(int)
        array[tuple(slice(i - 1, i + 2) for i in index)] = 2
    labels = labels.with_array(array)
    flipped = affine.copy()
    flipped[:3, 0] = -affine[:3, 0]
    flipped[:3, 3] = affine[:3, 3] + affine[:3, 0] * (shape[0] - 1)

    def ids(ct, labels):
        return {r["id"]: r["centroid_ras_mm"] for r in measure(ct, labels)["lesions"]}

    first = ids(ct, labels)
    assert len(first) == 3 and len({tuple(c) for c in first.values()}) == 3
    again = ids(
        Volume(np.asarray(ct.array)[::-1].copy(), flipped, "ct"),
        Volume(array[::-1].copy(), flipped, "flipped"),
    )
    assert again == first


def test_kidney_volume_out_of_range(grid):
    report = measure(*build_scene(*grid), options=ReportOptions(kidney_parenchyma_ml=(20.0, 80.0)))
    flagged = [w for w in report["warnings"] if w["code"] == "kidney_volume_out_of_range"]
    assert [w["kidney"] for w in flagged] == ["right", "left"]
    # 4/3 π · 20 · 25 · 50 mm³ ≈ 105 mL of kidney, less the lesions painted over it.
    assert all(80 < w["volume_ml"] < 105 for w in flagged)
    # With the default range: a 4/3 π · 15 · 15 · 30 mm³ ≈ 28 mL kidney is too small for an adult.
    small = measure(*build_scene(*grid, kidneys=(((45.0, 0.0, 0.0), (15.0, 15.0, 30.0)),), lesions={}))
    assert codes(small) == ["kidney_volume_out_of_range"]
    assert small["warnings"][0]["volume_ml"] == pytest.approx(28.3, abs=2.0)


def test_no_kidney_and_low_confidence(grid):
    ct, labels = build_scene(*grid)
    empty = measure(ct, labels.with_array(np.zeros_like(labels.array)))
    assert codes(empty) == ["no_kidney"]
    assert codes(measure(ct, labels, confidence=0.3)) == ["low_confidence"]
    confident = measure(ct, labels, confidence=0.9)
    assert confident["warnings"] == [] and confident["inputs"]["model_confidence"] == 0.9


def test_unenhanced_kidneys_are_flagged_and_one_enhanced_kidney_is_enough(grid):
    ct, labels = build_scene(*grid)
    enhanced = measure(ct, labels)
    assert [k["parenchyma_hu_median"] for k in enhanced["kidneys"]] == [pytest.approx(150, abs=2)] * 2
    hu = np.asarray(ct.array).copy()
    parenchyma = np.asarray(labels.array) == 1
    hu[parenchyma] -= 115  # 35 HU: kidney without contrast
    rim = parenchyma & ~ndimage.binary_erosion(parenchyma)
    hu[rim] = 400  # the outline, where partial volumes fall, is not read
    report = measure(ct.with_array(hu), labels)
    (warning,) = report["warnings"]
    assert warning["code"] == "unenhanced_scan" and warning["threshold_hu"] == 70
    assert warning["hu_median"] == pytest.approx(35, abs=1) and "35 HU" in warning["message"]
    left = world_coordinates(*grid)[..., 0] < 0  # RAS: the left kidney has negative x
    one = np.where(parenchyma & left, hu, np.asarray(ct.array))  # the right kidney still enhances
    assert "unenhanced_scan" not in codes(measure(ct.with_array(one), labels))


def test_lesion_islands_post_processing_absorbed_are_one_warning(grid):
    ct, labels = build_scene(*grid)
    absorbed = [
        {"class": "cyst", "to": "kidney", "islands": 3, "volume_ml": 0.9},
        {"class": "tumor", "to": "cyst", "islands": 1, "volume_ml": 0.25},
    ]
    report = measure(ct, labels, absorbed=absorbed)
    (warning,) = report["warnings"]
    assert warning["code"] == "absorbed_islands" and warning["count"] == 4
    assert (
        warning["volume_ml"] == pytest.approx(1.15)
        and "3 cyst to kidney, 1 tumor to cyst" in warning["message"]
    )
    assert report["inputs"]["absorbed_islands"] == absorbed
    assert measure(ct, labels)["inputs"]["absorbed_islands"] == []


def test_real_dicom_slab_kidney_is_incomplete_and_air_cyst_flagged(shared_data):
    """On the 20-slice real DICOM slab: a kidney taller than the slab is cut off by its edges,
    a "cyst" painted outside the body holds air; the series' identifiers are read."""
    ct = read_volume(shared_data / "real-ct" / "dicom_series")
    centre = (np.asarray(ct.shape, dtype=np.float64) - 1) / 2
    world = world_coordinates(ct.affine, ct.shape)
    kidney_centre = ct.affine[:3, :3] @ centre + ct.affine[:3, 3] + np.array([60.0, 0.0, 0.0])
    labels = np.zeros(ct.shape, np.uint8)
    labels[ellipsoid(world, kidney_centre, (25.0, 30.0, 60.0))] = 1
    labels[2:12, 2:12, 8:12] = 3  # the image corner: air around the patient
    report = measure(ct, Volume(labels, ct.affine, "painted"))
    assert "incomplete_kidney" in codes(report)
    air = [w for w in report["warnings"] if w["code"] == "implausible_hu"]
    assert len(air) == 1 and air[0]["hu_mean"] < -500
    assert isinstance(report["inputs"]["dicom"], dict)


def test_real_chest_ct_with_a_weak_models_findings(shared_data):
    """What a weak model labelled on the real chest CT (issue 16): two "kidneys" of over 500 mL
    in the chest, one-voxel "cysts" and a "cyst" in the lung; each finding carries its warning."""
    from scipy import ndimage

    ct = read_volume(shared_data / "real-ct" / "chest_ct_1.5mm.nii.gz")
    hu = np.asarray(ct.array)
    world = world_coordinates(ct.affine, ct.shape)
    centre = ct.affine[:3, :3] @ ((np.asarray(ct.shape) - 1) / 2) + ct.affine[:3, 3]
    labels = np.zeros(ct.shape, np.uint8)
    for side in (-1, 1):
        labels[ellipsoid(world, centre + np.array([side * 42.0, 0.0, 0.0]), (38.0, 45.0, 72.0))] = 1
    kidney = np.argwhere(labels == 1)
    specks = kidney[np.random.default_rng(0).choice(len(kidney), 10, replace=False)]
    labels[tuple(specks.T)] = 3
    lung = ndimage.binary_erosion(hu < -700, iterations=3) & (labels == 0)
    inner = np.zeros_like(lung)
    inner[tuple(slice(s // 4, 3 * s // 4) for s in ct.shape)] = True
    seed = np.argwhere(lung & inner)[0]
    labels[tuple(slice(c - 2, c + 3) for c in seed)] = 3
    report = measure(ct, Volume(labels, ct.affine, "weak model"))
    too_big = [w for w in report["warnings"] if w["code"] == "kidney_volume_out_of_range"]
    assert sorted(w["kidney"] for w in too_big) == ["left", "right"]
    assert all(w["volume_ml"] > 400 for w in too_big)
    assert report["summary"]["small_lesions"]["count"] == 10
    assert "small_lesions_excluded" in codes(report)
    (cyst,) = report["lesions"]
    (air,) = [w for w in report["warnings"] if w["code"] == "implausible_hu"]
    assert air["lesion"] == cyst["id"] and air["hu_mean"] < -700


def test_a_lesion_the_model_was_unsure_of_is_flagged(grid):
    from kidneyseg.predict.votes import Votes

    ct, labels = build_scene(*grid)
    array = np.asarray(labels.array)
    points = np.argwhere(array > 0)
    winner = array[tuple(points.T)]
    top = np.full(len(points), 0.95, np.float32)
    cyst = next(r for r in measure(ct, labels)["lesions"] if r["type"] == "cyst")
    # torn on the cyst: kidney at 0.5 on its first 70 % of voxels, cyst at 0.95 on the rest
    in_cyst = np.flatnonzero(winner == 3)
    torn = in_cyst[: int(0.7 * len(in_cyst))]
    winner[torn], top[torn] = 1, 0.5
    votes = Votes(points.astype(np.uint16), winner.astype(np.uint8), top, labels.affine)
    report = measure(ct, labels, votes=votes)
    sure = {r["id"]: r["sure_fraction"] for r in report["lesions"]}
    assert sure[cyst["id"]] == pytest.approx(0.3, abs=0.01)
    assert all(value == 1.0 for key, value in sure.items() if key != cyst["id"])
    (warning,) = report["warnings"]
    assert (warning["code"], warning["lesions"]) == ("uncertain_lesions", [cyst["id"]])
    assert warning["sure_fractions"] == [sure[cyst["id"]]]
    assert warning["threshold"] == ReportOptions().min_sure_fraction
    assert f"{cyst['id']} ({sure[cyst['id']]:.0%})" in warning["message"]
    at_threshold = ReportOptions(min_sure_fraction=sure[cyst["id"]])  # flagged only below it
    assert codes(measure(ct, labels, votes=votes, options=at_threshold)) == []
    assert all(r["sure_fraction"] is None for r in measure(ct, labels)["lesions"])  # labels alone


def test_a_scan_shorter_than_a_kidney_says_so(shared_data, tmp_path):
    """Was: 8 slices (35 mm) through both kidneys of the real low-dose CT, as a perfusion scan
    covers them, gave "kidneys none found" (the bundled model, trained on scans of whole
    kidneys, labels almost nothing there) and only `no_kidney`, as if there were none."""
    import json

    import nibabel as nib
    from typer.testing import CliRunner

    from kidneyseg.cli import app

    real = shared_data / "real-ct"
    whole = nib.load(real / "lowdose_abdomen_4mm.nii.gz")
    slab = tmp_path / "slab.nii.gz"
    nib.save(whole.slicer[:, :, 37:45], slab)
    length = round(8 * float(whole.header.get_zooms()[2]), 1)
    result = CliRunner().invoke(app, ["predict", "-i", str(slab), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert f"covers only {length:g} mm cranio-caudally" in result.output
    record = json.loads((tmp_path / "out" / "predict_run.json").read_text())
    assert "short_scan" in record["cases"][0]["statistics"]["warnings"]
    labels = read_volume(real / "lowdose_abdomen_4mm_kidneys.nii.gz")
    full = measure(read_volume(real / "lowdose_abdomen_4mm.nii.gz"), labels)
    assert full["inputs"]["craniocaudal_mm"] > 300 and "short_scan" not in codes(full)
    cut = read_volume(slab)
    assert "short_scan" in codes(measure(cut, Volume(labels.array[:, :, 37:45], cut.affine, "cut labels")))


def test_unenhanced_ct_is_flagged_by_the_report_and_by_predict(shared_data, tmp_path):
    import json

    from typer.testing import CliRunner

    from kidneyseg.cli import app
    from kidneyseg.data.phantom import generate_case
    from kidneyseg.io.volume import write_volume

    real = shared_data / "real-ct"  # the low-dose CT of a SPECT/CT: no contrast (its README)
    labels = read_volume(real / "lowdose_abdomen_4mm_kidneys.nii.gz")
    report = measure(read_volume(real / "lowdose_abdomen_4mm.nii.gz"), labels)
    (warning,) = [w for w in report["warnings"] if w["code"] == "unenhanced_scan"]
    assert 20 <= warning["hu_median"] <= 60
    case = generate_case(2, size="small")  # an unenhanced phantom, predicted by the bundled model
    assert case.truth["phase"] == "noncontrast"
    write_volume(tmp_path / "ct.nii.gz", case.ct)
    result = CliRunner().invoke(
        app, ["predict", "-i", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    assert "the scan looks unenhanced" in result.output
    (row,) = json.loads((tmp_path / "out" / "predict_run.json").read_text())["cases"]
    assert "unenhanced_scan" in row["statistics"]["warnings"]
    assert any("looks unenhanced" in message for message in row["warnings"])
