"""Post-processing's anatomy check: components the CT rules out as kidneys are left out."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kidneyseg.predict.anatomy import AnatomyCheck
from kidneyseg.predict.postprocess import keep_kidneys, keep_largest_components
from kidneyseg.predict.roi import MIN_KIDNEY_ML

SPACING = (1.5, 1.5, 1.5)


def _scene() -> tuple[np.ndarray, np.ndarray, dict[str, tuple[slice, ...]]]:
    """A body (an elliptic cylinder of soft tissue in air, axial slices along the last axis) with
    a small kidney deep inside and five larger components that cannot be kidneys."""
    x, y = np.ogrid[:180, :140]
    body = ((x - 90) / 85.0) ** 2 + ((y - 70) / 65.0) ** 2 <= 1.0
    ct = np.where(body[..., None], 40, -1000).astype(np.int16).repeat(30, axis=2)
    ct[110:140, 55:85, :] = 400  # a contrast-filled blood pool
    places = {
        "kidney": np.s_[70:86, 60:75, 8:22],
        "blood pool": np.s_[115:135, 60:80, 5:25],
        "tumor alone": np.s_[40:60, 60:80, 5:25],
        "under the skin": np.s_[75:105, 126:132, 3:27],
        "table pad": np.s_[70:110, 0:4, 0:30],
        "fat": np.s_[60:75, 85:100, 5:25],
        "mass on a sliver": np.s_[95:110, 85:100, 5:25],
    }
    ct[places["fat"]] = -100  # deep, but fat: an empty renal fossa
    labels = np.zeros(ct.shape, np.uint8)
    for name, place in places.items():
        labels[place] = 2 if name in ("tumor alone", "mass on a sliver") else 1
    labels[95:97, 85:100, 5:25] = 1  # 2 mL of kidney on a 15 mL mass: no kidney
    labels[74:80, 64:70, 12:16] = 2  # a tumor in the kidney
    labels[95:103, 40:48, 10:18] = 1  # a deep fragment under 5 mL
    return ct, labels, places


def test_components_the_ct_rules_out_are_left_out_and_the_kidney_kept():
    ct, labels, places = _scene()
    sizes = {name: labels[place].size for name, place in places.items()}
    assert sizes["kidney"] == min(sizes.values())  # by size alone it would go first
    assert not keep_largest_components(labels)[places["kidney"]].any()
    assert labels[95:103, 40:48, 10:18].size * np.prod(SPACING) < MIN_KIDNEY_ML * 1000

    out, ruled_out = keep_kidneys(labels, check=AnatomyCheck(ct, SPACING, 2, -500.0, kidney=1))
    expected = np.zeros_like(labels)
    expected[places["kidney"]] = labels[places["kidney"]]
    np.testing.assert_array_equal(out, expected)  # the fragment too small for a kidney is gone
    reasons = {}
    for entry in ruled_out:
        box = tuple(slice(a, b) for a, b in entry["box"])
        (name,) = [n for n, p in places.items() if p == box]
        reasons[name] = entry["reason"]
        assert entry["voxels"] == sizes[name]
    assert set(reasons) == set(places) - {"kidney"}
    assert "denser than 300 HU" in reasons["blood pool"]
    assert "no kidney voxel" in reasons["tumor alone"]
    assert "no kidney in it: 2.0 mL of kidney voxels" in reasons["mass on a sliver"]
    assert "air outside the body" in reasons["under the skin"]
    assert "air outside the body" in reasons["table pad"]
    assert "kidney voxels is -100 HU" in reasons["fat"]


def test_depth_counts_only_air_outside_the_body():
    """Bowel gas beside a kidney is not the body's surface; the same kidney at the skin is."""
    ct, labels, places = _scene()
    kidney = labels == 1
    for name in ("under the skin", "blood pool", "table pad"):
        kidney[places[name]] = False
    check = AnatomyCheck(ct, SPACING, 2, -500.0, kidney=1)
    box = places["kidney"]
    assert check.reason(kidney[box], labels[box], box) is None
    ct[60:70, 60:75, :] = -1000  # gas in a bowel loop against the kidney
    assert AnatomyCheck(ct, SPACING, 2, -500.0, kidney=1).reason(kidney[box], labels[box], box) is None
    ct[86:, :, :] = -1000  # the body ends beside the kidney: air outside the body against it
    reason = AnatomyCheck(ct, SPACING, 2, -500.0, kidney=1).reason(kidney[box], labels[box], box)
    assert "air outside the body" in reason


@pytest.mark.parametrize("anatomy_check", [True, False])
def test_bundled_model_labels_no_kidney_on_the_chest_ct(shared_data, tmp_path, anatomy_check):
    """The shared chest CT holds no kidney; the bundled model labels its heart, the check drops it
    and the run record says why."""
    import nibabel as nib
    from typer.testing import CliRunner

    from kidneyseg.cli import app

    out = tmp_path / "out"
    args = ["predict", "-i", str(shared_data / "real-ct" / "chest_ct_1.5mm.nii.gz"), "-o", str(out)]
    result = CliRunner().invoke(app, [*args, "-q"] + ([] if anatomy_check else ["--no-anatomy-check"]))
    assert result.exit_code == 0, result.output
    case = json.loads((out / "predict_run.json").read_text())["cases"][0]
    labels = np.asarray(nib.load(out / "chest_ct_1.5mm.nii.gz").dataobj)
    if anatomy_check:
        assert not labels.any()
        assert case["ruled_out"] and all(r["volume_ml"] > 0 for r in case["ruled_out"])
        assert "left out a" in result.output
        assert case["confidence"] is None and "confidence" not in result.output  # nothing to be sure of
    else:
        assert (labels == 1).sum() > 1000 and case["ruled_out"] == []
        assert 0 < case["confidence"] < 1


def test_a_kidney_with_a_larger_fat_containing_tumor_is_kept():
    """The fat rule reads the kidney voxels only: a renal mass may be fat (an angiomyolipoma)."""
    ct, labels, places = _scene()
    kidney = places["kidney"]
    only = np.zeros_like(labels)
    only[kidney] = labels[kidney]
    fat_tumor = np.s_[86:110, 60:75, 8:22]
    only[fat_tumor], ct[fat_tumor] = 2, -100
    assert np.median(ct[only > 0]) < -50 < np.median(ct[only == 1])
    out, ruled_out = keep_kidneys(only, check=AnatomyCheck(ct, SPACING, 2, -500.0, kidney=1))
    np.testing.assert_array_equal(out, only)
    assert ruled_out == []
