"""The report on real data beside the repository: a KiTS19 reference mask (slices on array axis 0)
and a real DICOM series (LPS on disk)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from kidneyseg.io.volume import Volume, read_volume
from kidneyseg.labels import KITS19
from kidneyseg.report import geometry, measure
from test_report_measure import ellipsoid, world_coordinates

KITS_CASE = "case_00061"  # 29 slices of 5 mm: the smallest KiTS19 mask


def test_kits19_mask_in_its_own_and_in_ras_orientation(shared_data):
    path = shared_data / "kits19" / KITS_CASE / "segmentation.nii.gz"
    labels = read_volume(path)
    assert labels.orientation == "IPL"
    ct = Volume(np.full(labels.shape, 40, np.int16), labels.affine, "flat CT")
    report = measure(ct, labels, KITS19)
    clinical = {c["case_id"]: c for c in json.loads((shared_data / "kits19" / "kits.json").read_text())}
    stated = clinical[KITS_CASE]["radiographic_size"]
    assert report["summary"]["num_tumors"] >= 1
    assert abs(report["summary"]["largest_tumor_axial_diameter_cm"] - stated) < 0.5

    canonical = nib.as_closest_canonical(nib.load(str(path)))
    ras = Volume(np.asarray(canonical.dataobj), canonical.affine, "ras")
    assert ras.orientation == "RAS"
    again = measure(Volume(np.full(ras.shape, 40, np.int16), ras.affine), ras, KITS19)
    assert [k["side"] for k in again["kidneys"]] == [k["side"] for k in report["kidneys"]]
    for key in ("volume_ml", "parenchyma_volume_ml", "cranio_caudal_extent_cm", "centroid_ras_mm"):
        assert [k[key] for k in again["kidneys"]] == [k[key] for k in report["kidneys"]]
    for key in (
        "kidney",
        "volume_ml",
        "max_axial_diameter_cm",
        "max_3d_diameter_cm",
        "position",
        "exophytic_fraction",
    ):
        assert [r[key] for r in again["lesions"]] == [r[key] for r in report["lesions"]]


def test_real_dicom_series_sides_and_hounsfield_units(shared_data):
    """A kidney with a tumor painted on the patient's right of a real LPS DICOM series."""
    ct = read_volume(shared_data / "real-ct" / "dicom_series")
    centre = geometry.to_world((np.asarray(ct.shape, dtype=np.float64)[None] - 1) / 2, ct.affine)[0]
    kidney_centre = centre + np.array([60.0, 0.0, 0.0])
    # Paint inside a block around the kidney only: the series is 512 × 512 × 20.
    i, j, _ = np.linalg.solve(ct.affine[:3, :3], kidney_centre - ct.affine[:3, 3]).astype(int)
    block = (slice(i - 40, i + 40), slice(j - 40, j + 40), slice(0, ct.shape[2]))
    local = ct.affine.copy()
    local[:3, 3] = geometry.to_world(np.array([[i - 40, j - 40, 0]], dtype=np.float64), ct.affine)[0]
    world = world_coordinates(local, (80, 80, ct.shape[2]))
    labels = np.zeros(ct.shape, np.uint8)
    painted = labels[block]
    painted[ellipsoid(world, kidney_centre, (25.0, 30.0, 15.0))] = 1
    painted[ellipsoid(world, kidney_centre + np.array([15.0, 0.0, 0.0]), (8.0, 8.0, 8.0))] = 2
    report = measure(ct, Volume(labels, ct.affine, "painted"))
    assert report["summary"]["kidneys_found"] == ["right"]
    (tumor,) = report["lesions"]
    assert tumor["kidney"] == "right"
    inside = labels == 2
    assert tumor["hu_mean"] == pytest.approx(float(ct.array[inside].mean()), abs=0.1)
    assert tumor["hu_sd"] == pytest.approx(float(ct.array[inside].std()), abs=0.1)
    assert abs(tumor["max_axial_diameter_cm"] * 10 - 16.0) <= max(ct.spacing[:2])
