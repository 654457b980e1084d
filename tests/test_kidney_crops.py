"""scripts/kidney_crops.py: cases cut to the box around their kidneys, in place in the world."""

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "kidney_crops.py"
SPACING = (2.0, 2.5, 4.0)


def _case(root: Path, name: str, labelled: tuple[slice, ...] | None) -> Path:
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-40.0, 10.0, 100.0)
    rng = np.random.default_rng(0)
    shape = (40, 36, 20)
    seg = np.zeros(shape, np.uint8)
    if labelled is not None:
        seg[labelled] = 1
        seg[labelled[0].start, labelled[1].start, labelled[2].start] = 2
    folder = root / name
    folder.mkdir(parents=True)
    ct = rng.integers(-1000, 1000, shape).astype(np.int16)
    nib.save(nib.Nifti1Image(ct, affine), folder / "imaging.nii.gz")
    nib.save(nib.Nifti1Image(seg, affine), folder / "segmentation.nii.gz")
    nib.save(nib.Nifti1Image(rng.integers(0, 20, shape).astype(np.uint8), affine), folder / "tissue.nii.gz")
    (folder / "phantom.json").write_text(json.dumps({"phase": "venous"}))
    return folder


def _cut(root: Path, margin_mm: float) -> subprocess.CompletedProcess:
    args = ["--data", str(root / "data"), "--out", str(root / "crops"), "--margin-mm", str(margin_mm)]
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_each_file_is_cut_to_the_kidney_box_plus_margin_and_keeps_its_world_position(tmp_path):
    kidney = (slice(10, 20), slice(5, 30), slice(8, 10))
    source = _case(tmp_path / "data", "case_00000", kidney)
    _case(tmp_path / "data", "case_00001", None)
    out = tmp_path / "crops"
    run = _cut(tmp_path, 10)
    assert run.returncode == 0, run.stderr
    assert "left out (no kidney label): case_00001" in run.stdout
    assert sorted(p.name for p in out.iterdir()) == ["case_00000"]
    # 10 mm is 5, 4 and 3 voxels per side; the last axis is clipped at the scan's end (20 slices)
    box = (slice(5, 25), slice(1, 34), slice(5, 13))
    for name in ("imaging.nii.gz", "segmentation.nii.gz", "tissue.nii.gz"):
        original, cut = nib.load(source / name), nib.load(out / "case_00000" / name)
        np.testing.assert_array_equal(np.asarray(cut.dataobj), np.asarray(original.dataobj)[box])
        corner = original.affine @ [*(s.start for s in box), 1]
        np.testing.assert_allclose(cut.affine[:, 3], corner)
        np.testing.assert_allclose(cut.affine[:3, :3], original.affine[:3, :3])
    assert json.loads((out / "case_00000" / "phantom.json").read_text()) == {"phase": "venous"}
    seg = np.asarray(nib.load(out / "case_00000" / "segmentation.nii.gz").dataobj)
    assert int((seg > 0).sum()) == 10 * 25 * 2


def test_the_box_is_clipped_to_the_scan(tmp_path):
    _case(tmp_path / "data", "case_00000", (slice(0, 40), slice(0, 36), slice(19, 20)))
    assert _cut(tmp_path, 8).returncode == 0
    assert nib.load(tmp_path / "crops" / "case_00000" / "imaging.nii.gz").shape == (40, 36, 3)


def test_a_case_that_cannot_be_read_stops_the_run_in_one_line_naming_it(tmp_path):
    _case(tmp_path / "data", "case_00000", (slice(10, 20), slice(5, 30), slice(8, 10)))
    broken = _case(tmp_path / "data", "case_00001", (slice(10, 20), slice(5, 30), slice(8, 10)))
    (broken / "imaging.nii.gz").write_bytes(b"not a nifti file")
    run = _cut(tmp_path, 10)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [run.stderr.strip()] and str(broken) in run.stderr
