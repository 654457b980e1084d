"""Whether left and right fit the header: the liver's side (`kidneyseg.report.laterality`), on
constructed trunks whose liver side is known, the real low-dose CT and its mirror image, and
through `kidneyseg predict`."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from kidneyseg.cli import app
from kidneyseg.io.volume import Volume, read_volume
from kidneyseg.report import measure
from kidneyseg.report.laterality import LATERALITY_MESSAGE, MIRRORED_BELOW, right_share
from kidneyseg.report.midline import ORIENTATION_MESSAGE, find_midline, survey

LOWDOSE = "real-ct/lowdose_abdomen_4mm"
SPACING = 3.0


def _trunk(liver_right: bool | None) -> tuple[Volume, np.ndarray]:
    """A 300 × 200 mm trunk of fat (RAS axes, 3 mm voxels, z up) with a spine, two kidneys and,
    above them, a 60 HU liver on the patient's right (+x), on the left, or none (`None`: the
    trunk is soft tissue on both sides alike)."""
    shape = (120, 90, 60)
    x, y, z = (np.arange(n) * SPACING - n * SPACING / 2 for n in shape)
    x, y, z = np.meshgrid(x, y, z, indexing="ij", sparse=True)
    array = np.full(shape, -1000, dtype=np.int16)
    body = (x / 150) ** 2 + (y / 100) ** 2 < 1
    array[np.broadcast_to(body, shape)] = -100 if liver_right is not None else 40
    array[np.broadcast_to((x**2 + (y + 60) ** 2 < 15**2), shape)] = 700  # the spine
    kidneys = ((np.abs(x) - 60) ** 2 / 25**2 + (y + 40) ** 2 / 25**2 + (z + 20) ** 2 / 50**2) < 1
    array[kidneys] = 150
    if liver_right is not None:
        side = 1 if liver_right else -1
        liver = ((x - side * 75) ** 2 / 60**2 + y**2 / 70**2 + (z - 40) ** 2 / 50**2) < 1
        array[liver & ~kidneys] = 60
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    affine[:3, 3] = [-n * SPACING / 2 for n in shape]
    return Volume(array, affine, "trunk"), kidneys


def _share(ct: Volume, kidneys: np.ndarray) -> float | None:
    return right_share(ct, kidneys, np.count_nonzero(kidneys, axis=(0, 1)), find_midline(survey(ct)))


@pytest.mark.parametrize(("liver_right", "expected"), [(True, (0.9, 1.0)), (False, (0.0, 0.1))])
def test_the_share_follows_the_liver(liver_right, expected):
    ct, kidneys = _trunk(liver_right)
    share = _share(ct, kidneys)
    assert expected[0] <= share <= expected[1]


def test_soft_tissue_alike_on_both_sides_is_not_called_mirrored():
    ct, kidneys = _trunk(None)
    share = _share(ct, kidneys)
    assert share == pytest.approx(0.5, abs=0.05)
    assert share > MIRRORED_BELOW


@pytest.fixture(scope="module")
def lowdose(shared_data) -> tuple[Volume, Volume]:
    """The CT (L, A, I: array axis 0 runs from the patient's right to the left) and its kidneys."""
    return read_volume(shared_data / f"{LOWDOSE}.nii.gz"), read_volume(
        shared_data / f"{LOWDOSE}_kidneys.nii.gz"
    )


def _mirrored(volume: Volume) -> Volume:
    return Volume(np.flip(np.asarray(volume.array), 0).copy(), volume.affine, "mirrored.nii.gz")


def test_a_left_right_mirror_under_an_unchanged_header_is_flagged(lowdose):
    """Was: the mirrored scan reported its left kidney (138 mL) as the right one, no warning."""
    ct, labels = lowdose
    report = measure(ct, labels)
    assert report["anatomy"]["liver_right_share"] > 0.65
    assert "laterality_mismatch" not in {w["code"] for w in report["warnings"]}
    mirrored = measure(_mirrored(ct), _mirrored(labels))
    assert mirrored["anatomy"]["liver_right_share"] < MIRRORED_BELOW
    warning = next(w for w in mirrored["warnings"] if w["code"] == "laterality_mismatch")
    assert warning["message"] == LATERALITY_MESSAGE
    sides = {k["side"]: k["volume_ml"] for k in report["kidneys"]}
    mirrored_sides = {k["side"]: k["volume_ml"] for k in mirrored["kidneys"]}
    assert mirrored_sides == {"right": sides["left"], "left": sides["right"]}


def test_a_feet_first_scan_registered_head_first_is_flagged(lowdose):
    """A feet-first scan under a head-first header is the image turned 180 degrees about the
    front-back axis: left-right and head-foot both swapped, the spine in place. Was: the slab
    "above" the kidneys (by the header) lay in the pelvis, share 0.48, and the report's sides were
    swapped without a warning."""
    ct, labels = lowdose
    turned = [Volume(np.flip(np.asarray(v.array), (0, 2)).copy(), v.affine) for v in (ct, labels)]
    report = measure(*turned)
    assert report["anatomy"]["liver_right_share"] < MIRRORED_BELOW
    codes = {w["code"] for w in report["warnings"]}
    assert "laterality_mismatch" in codes
    assert "orientation_mismatch" not in codes  # the spine stays behind: only the liver tells


@pytest.mark.parametrize(
    "box",
    [
        (slice(0, 62), slice(None), slice(None)),
        (slice(46, None), slice(None), slice(None)),
        (slice(55, 90), slice(None), slice(None)),
    ],
    ids=["right half", "left half", "around the left kidney"],
)
def test_a_scan_of_one_side_cannot_tell(lowdose, box):
    """Only tissue whose mirror image is in view counts: a scan of one side, without the liver's
    counterpart, is undecided rather than mirrored."""
    ct, labels = lowdose
    affine = ct.affine.copy()
    affine[:3, 3] = nib.affines.apply_affine(ct.affine, [s.start or 0 for s in box])
    cropped = Volume(np.asarray(ct.array)[box], affine)
    report = measure(cropped, Volume(np.asarray(labels.array)[box], affine))
    assert report["kidneys"]
    assert report["anatomy"]["liver_right_share"] is None
    assert "laterality_mismatch" not in {w["code"] for w in report["warnings"]}


def test_predict_says_so_on_stderr_and_in_the_run_record(lowdose, tmp_path):
    ct, _ = lowdose
    path = tmp_path / "mirrored.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(_mirrored(ct).array), ct.affine), path)
    result = CliRunner().invoke(app, ["predict", "-i", str(path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert f"warning: mirrored: {LATERALITY_MESSAGE}" in result.output
    record = json.loads((tmp_path / "out" / "predict_run.json").read_text())
    assert LATERALITY_MESSAGE in record["cases"][0]["warnings"]
    row = record["cases"][0]["statistics"]["warnings"]
    assert row.split("; ").count("laterality_mismatch") == 1 and LATERALITY_MESSAGE[:40] not in row


def test_predict_states_a_turned_orientation_once_in_the_statistics(lowdose, tmp_path):
    """Turned 180 degrees about the long axis: the reading warns (before the model runs) and the
    report's `orientation_mismatch` says the same; the statistics row names it once (was: its
    code and the reading's message side by side)."""
    ct, _ = lowdose
    path = tmp_path / "turned.nii.gz"
    nib.save(nib.Nifti1Image(np.flip(np.asarray(ct.array), (0, 1)).copy(), ct.affine), path)
    result = CliRunner().invoke(app, ["predict", "-i", str(path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert ORIENTATION_MESSAGE in result.output
    case = json.loads((tmp_path / "out" / "predict_run.json").read_text())["cases"][0]
    assert any(ORIENTATION_MESSAGE in w for w in case["warnings"])
    row = case["statistics"]["warnings"]
    assert row.split("; ").count("orientation_mismatch") == 1 and ORIENTATION_MESSAGE[:40] not in row


def test_the_orientation_warning_stays_in_the_statistics_when_the_labels_cannot_be_measured(
    lowdose, tmp_path, monkeypatch
):
    """Without a report's `orientation_mismatch` (the labels could not be measured) the row keeps
    the reading's own orientation warning, by its code (a message holds "; ", the column's
    separator); why the labels were not measured is on the console and in the run record."""
    import kidneyseg.report as report_package
    from kidneyseg.errors import KidneysegError

    def unmeasurable(*args, **kwargs):
        raise KidneysegError("a tumor without any kidney")

    monkeypatch.setattr(report_package, "measure", unmeasurable)
    ct, _ = lowdose
    path = tmp_path / "turned.nii.gz"
    nib.save(nib.Nifti1Image(np.flip(np.asarray(ct.array), (0, 1)).copy(), ct.affine), path)
    result = CliRunner().invoke(app, ["predict", "-i", str(path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    case = json.loads((tmp_path / "out" / "predict_run.json").read_text())["cases"][0]
    row = case["statistics"]
    assert row["status"] == "not measured" and row["warnings"] == "not_measured; orientation_mismatch"
    assert "turned: a tumor without any kidney" in result.output
    assert "a tumor without any kidney" in case["warnings"]


def test_stray_labels_far_from_the_kidneys_do_not_move_the_slab(lowdose):
    """The slab rests on the two kidneys the report keeps: a false "kidney" on the heart (top
    slices, patient's left) counts as another component and changes nothing."""
    ct, labels = lowdose
    array = np.asarray(labels.array).copy()
    array[60:75, 30:45, 2:8] = 1  # axis 2 runs inferior: slices 2-7 are the chest's
    stray = measure(ct, Volume(array, labels.affine))
    assert stray["other_components"]["count"] == 1
    assert stray["anatomy"]["liver_right_share"] == measure(ct, labels)["anatomy"]["liver_right_share"]


def test_slices_too_thick_to_tell_are_not_judged(lowdose):
    """Every second slice of the low-dose CT (8.8 mm): the liver's depth is too coarse to weigh,
    so the share is null rather than a guess, mirrored or not."""
    ct, labels = lowdose
    affine = ct.affine.copy()
    affine[:3, 2] *= 2
    for volume in (ct, _mirrored(ct)):
        thick = Volume(np.asarray(volume.array)[:, :, ::2], affine)
        report = measure(thick, Volume(np.asarray(labels.array)[:, :, ::2], affine))
        assert report["kidneys"] and report["anatomy"]["liver_right_share"] is None


def test_a_turn_about_the_long_axis_gets_one_warning_not_two(lowdose):
    """A prone scan stored as supine swaps left and right too, but the spine in front already
    says the orientation is wrong: `orientation_mismatch` alone."""
    ct, labels = lowdose
    turned = [Volume(np.flip(np.asarray(v.array), (0, 1)).copy(), v.affine) for v in (ct, labels)]
    report = measure(*turned)
    assert report["anatomy"]["liver_right_share"] < MIRRORED_BELOW
    codes = [w["code"] for w in report["warnings"]]
    assert "orientation_mismatch" in codes and "laterality_mismatch" not in codes
