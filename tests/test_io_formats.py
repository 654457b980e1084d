"""The format seam (issue 18): one reader table, one case-id rule used by every stage, one
KiTS-layout walker, one label-value check, one grid-size formula."""

from __future__ import annotations

import numpy as np
import pytest

from kidneyseg.data.cases import discover, walk_kits
from kidneyseg.errors import KidneysegError
from kidneyseg.evaluate.folder import label_files
from kidneyseg.io.formats import DICOM, NIFTI, case_id_of, files_by_case_id, format_of, read_header
from kidneyseg.io.volume import Volume, read_volume, write_volume
from kidneyseg.labels import KITS19, KITS23, check_label_values
from kidneyseg.predict.inputs import find_inputs
from kidneyseg.preprocess.spatial import resampled_grid, resampled_shape

AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def _nifti(path, value: int = 0, dtype=np.int16):
    write_volume(path, Volume(np.full((4, 5, 3), value, dtype), AFFINE))
    return path


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.nii.gz", "a"),
        ("a.nii", "a"),
        ("a_0000.nii.gz", "a"),  # nnU-Net's channel suffix is not part of the case id
        ("a_0001.nii.gz", "a_0001"),  # only the first (CT's only) channel is
        ("case_00000.nii.gz", "case_00000"),
        ("a.b_0000.nii", "a.b"),
        ("_0000.nii.gz", "_0000"),  # never an empty id
    ],
)
def test_one_case_id_rule(tmp_path, name, expected):
    assert case_id_of(_nifti(tmp_path / name)) == expected


def test_a_dicom_folder_is_named_by_the_same_rule(tmp_path):
    (tmp_path / "scan_0000").mkdir()
    assert format_of(tmp_path / "scan_0000") is DICOM
    assert case_id_of(tmp_path / "scan_0000") == "scan"


def test_every_stage_gives_the_same_case_ids(tmp_path):
    """predict, dataset discovery, evaluate and report read the same ids off the same files."""
    flat = tmp_path / "flat"
    for name in ("kid_001_0000.nii.gz", "kid_002.nii", "kid_003_0001.nii.gz"):
        _nifti(flat / name, 1, np.uint8)
    (flat / ".kid_004.nii.gz").write_bytes(b"")  # hidden (e.g. a macOS resource fork): skipped
    (flat / "notes.txt").write_text("not an image")
    expected = ["kid_001", "kid_002", "kid_003_0001"]
    assert sorted(files_by_case_id(flat)) == expected
    cases, folder_mode = find_inputs(flat)
    assert folder_mode and sorted(c.case_id for c in cases) == expected
    assert sorted(c.case_id for c in discover(flat, layout="plain").cases) == expected
    assert sorted(label_files(flat)) == expected
    assert find_inputs(flat / "kid_001_0000.nii.gz")[0][0].case_id == "kid_001"


def test_two_files_of_one_case_are_refused(tmp_path):
    _nifti(tmp_path / "a.nii.gz")
    _nifti(tmp_path / "a_0000.nii.gz")
    for reader in (files_by_case_id, find_inputs, label_files):
        with pytest.raises(KidneysegError, match=r"a.nii.gz and a_0000.nii.gz both name case 'a'"):
            reader(tmp_path)


def test_the_reader_table_reads_and_refuses(tmp_path, shared_data):
    path = _nifti(tmp_path / "x.nii.gz", 5)
    assert format_of(path) is NIFTI
    header, volume = read_header(path), read_volume(path)
    assert header.shape == volume.shape and header.spacing == pytest.approx(volume.spacing)
    assert header.itemsize == 2
    series = shared_data / "real-ct" / "dicom_series"
    header, volume = read_header(series), read_volume(series)
    assert header.shape == volume.shape and header.spacing == pytest.approx(volume.spacing, abs=1e-3)
    (tmp_path / "x.mha").write_bytes(b"")
    with pytest.raises(KidneysegError, match=r"not a NIfTI file \(.nii, .nii.gz\) or a DICOM folder"):
        read_volume(tmp_path / "x.mha")
    with pytest.raises(KidneysegError, match="no such file or folder"):
        read_header(tmp_path / "missing.nii.gz")
    with pytest.raises(KidneysegError, match="no DICOM series found"):
        read_header(tmp_path)


def test_one_kits_walker_finds_segmentation_only_cases(tmp_path):
    for k in range(2):
        _nifti(tmp_path / "kits21" / "data" / f"case_{k:05d}" / "aggregated_AND_seg.nii.gz", 1, np.uint8)
        _nifti(tmp_path / "kits21" / "data" / f"case_{k:05d}" / "aggregated_MAJ_seg.nii.gz", 2, np.uint8)
    _nifti(tmp_path / "kits21" / "data" / "case_00001" / "imaging.nii.gz", -1000)
    cases = walk_kits(tmp_path, annotation="MAJ")
    assert [(c.case_id, c.image.exists(), c.label.name) for c in cases] == [
        ("case_00000", False, "aggregated_MAJ_seg.nii.gz"),
        ("case_00001", True, "aggregated_MAJ_seg.nii.gz"),
    ]
    assert [c.case_id for c in discover(tmp_path).cases] == ["case_00001"]  # cases need their CT
    with pytest.raises(KidneysegError, match="no case_XXXXX folders"):
        walk_kits(tmp_path / "kits21" / "data" / "case_00000")


def test_one_label_value_check():
    check_label_values(np.array([0, 1, 2, 3], np.uint8), KITS23)
    check_label_values(np.array([0.0, 2.0]), KITS19)
    check_label_values(np.array([0, 200], np.int16))  # without a label map: 0..255
    with pytest.raises(KidneysegError, match=r"label values \[3\] are not in the kits19"):
        check_label_values(np.array([0, 3], np.uint8), KITS19, "seg.nii.gz")
    with pytest.raises(KidneysegError, match="non-integer"):
        check_label_values(np.array([0.0, 0.5]), KITS23)
    with pytest.raises(KidneysegError, match="non-integer"):
        check_label_values(np.array([0.0, np.nan]))
    with pytest.raises(KidneysegError, match=r"label values \[-1, 300\] are not in 0..255"):
        check_label_values(np.array([-1, 0, 300], np.int16))
    with pytest.raises(KidneysegError, match="data type complex"):
        check_label_values(np.zeros(2, np.complex64))


def test_the_grid_size_is_stated_once():
    shape, spacing, target = (512, 512, 97), (0.7, 0.7, 5.0), (1.62, 1.62, 2.0)
    assert (
        resampled_shape(shape, spacing, target)
        == resampled_grid(shape, spacing, target)[0]
        == (221, 221, 242)
    )
    assert resampled_shape((1, 3, 2), (0.1, 1.0, 1.0), (10.0, 1.0, 1.0)) == (1, 3, 2)
