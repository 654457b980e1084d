"""DICOM outputs on the real (anonymised) CT series: UIDs checked first, SEG colours and regions,
RTSTRUCT contours read back with pydicom and compared with the label map."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from kidneyseg.cli import app
from kidneyseg.errors import KidneysegError
from kidneyseg.io.volume import LPS_TO_RAS, read_volume
from kidneyseg.labels import KITS23
from kidneyseg.predict.dicom_rtstruct import write_rtstruct
from kidneyseg.predict.dicom_source import EMPTY_WHEN_ABSENT, read_sources
from test_predict import TINY_3D, _dicom_copy, save_tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


@pytest.fixture(scope="module")
def series(shared_data) -> Path:
    return shared_data / "real-ct" / "dicom_series"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "tiny3d.pt", TINY_3D, seed=0)


def scene(shape: tuple[int, int, int]) -> np.ndarray:
    """A kidney with a hole, a tumor inside it and a cyst: contours of every kind."""
    labels = np.zeros(shape, np.uint8)
    labels[100:200, 150:260, 4:12] = 1
    labels[130:160, 180:210, 5:9] = 0
    labels[170:190, 170:190, 6:9] = 2
    labels[300:320, 300:330, 10:11] = 3
    return labels


def test_anonymised_series_is_refused_before_anything_is_computed(series, tmp_path):
    out = tmp_path / "out"
    for flag in ("--dicom-seg", "--dicom-rtstruct"):
        # A model that does not exist: the UID check comes first, so nothing is loaded or computed.
        result = runner.invoke(app, ["predict", "-i", str(series), "-o", str(out), "-m", "no_model", flag])
        assert result.exit_code == 2, result.output
        assert "StudyInstanceUID, SeriesInstanceUID" in result.output and "--new-uids" in result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not out.exists()
    with pytest.raises(KidneysegError, match="StudyInstanceUID"):
        read_sources(read_volume(series).dicom_files, str(series))


def test_rtstruct_without_rt_utils_says_how_to_install_it(series, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rt_utils", None)  # import rt_utils now raises ImportError
    args = ["predict", "-i", str(series), "-o", str(tmp_path / "out"), "-m", "no_model"]
    result = runner.invoke(app, [*args, "--dicom-rtstruct", "--new-uids"])
    assert result.exit_code == 2 and "pip install rt-utils" in result.output
    assert not (tmp_path / "out").exists()


def _voxels_of_contour(points: np.ndarray, affine_ras: np.ndarray) -> np.ndarray:
    """Contour points (DICOM patient LPS mm) as continuous voxel indices (i, j, k)."""
    ras = (LPS_TO_RAS[:3, :3] @ points.T).T
    return (np.linalg.inv(affine_ras) @ np.c_[ras, np.ones(len(ras))].T).T[:, :3]


def _assert_contours_follow(rt: pydicom.Dataset, labels: np.ndarray, affine_ras: np.ndarray) -> None:
    """Each ROI of `rt` has its class's colour, and its contours lie on the slices of that class
    in `labels`, every point within one voxel of it."""
    names = {r.ROINumber: r.ROIName for r in rt.StructureSetROISequence}
    for roi in rt.ROIContourSequence:
        cls = KITS23.value(names[roi.ReferencedROINumber])
        assert list(roi.ROIDisplayColor) == list(KITS23.classes[cls].color)
        mask = labels == cls
        near = ndimage.binary_dilation(mask, np.ones((3, 3, 1), bool))  # within one voxel in-plane
        slices_seen = set()
        for contour in roi.ContourSequence:
            ijk = _voxels_of_contour(np.asarray(contour.ContourData, float).reshape(-1, 3), affine_ras)
            k = np.rint(ijk[:, 2]).astype(int)
            assert np.allclose(ijk[:, 2], k, atol=1e-3) and len(set(k)) == 1  # planar, on a slice
            slices_seen.add(int(k[0]))
            i, j = np.rint(ijk[:, 0]).astype(int), np.rint(ijk[:, 1]).astype(int)
            assert np.abs(ijk[:, :2] - np.c_[i, j]).max() < 1e-3  # through voxel centres
            assert near[i, j, k].all()
        assert slices_seen == set(np.flatnonzero(mask.any(axis=(0, 1))))


def test_new_uids_are_the_same_on_every_run_and_differ_between_series_of_the_same_file_names(
    series, tmp_path
):
    """Anonymised exports often share file names (000.dcm, ...): two patients' series got the same
    study, series, frame of reference and SOP instance UIDs (found by a hostile review), so a PACS
    would merge them. The UIDs come from the files' contents."""
    for patient in ("a", "b"):
        (tmp_path / patient).mkdir()
        for path in sorted(series.iterdir()):
            ds = pydicom.dcmread(path)
            for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID"):
                ds.pop(key, None)
            ds.file_meta.MediaStorageSOPInstanceUID = ""
            ds.PatientID = patient
            ds.save_as(tmp_path / patient / path.name)
    files = read_volume(tmp_path / "a").dicom_files
    twin = [str(tmp_path / "b" / Path(f).name) for f in files]
    first, again, second = (read_sources(f, "x", new_uids=True) for f in (files, files, twin))
    keys = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
    for key in keys:
        assert first[0].get(key) == again[0].get(key) and first[0].get(key) != second[0].get(key), key
    uids = [ds.SOPInstanceUID for ds in first]
    assert uids == [ds.SOPInstanceUID for ds in again] and len(set(uids)) == len(uids)
    assert not set(uids) & {ds.SOPInstanceUID for ds in second}


def test_rtstruct_contours_lie_within_one_voxel_of_the_labels(series, tmp_path):
    ct = read_volume(series)
    labels = scene(ct.shape)
    sources = read_sources(ct.dicom_files, str(series), new_uids=True)
    path = write_rtstruct(tmp_path / "rt.dcm", ct.with_array(labels), KITS23, sources)
    rt = pydicom.dcmread(path)
    assert rt.Modality == "RTSTRUCT"
    assert rt.StudyInstanceUID == sources[0].StudyInstanceUID
    assert sorted(r.ROIName for r in rt.StructureSetROISequence) == ["cyst", "kidney", "tumor"]
    _assert_contours_follow(rt, labels, ct.affine)


def _assert_dicom_outputs_hold_the_labels(out: Path, name: str) -> None:
    """The SEG's pixels are the label map `kidneyseg predict` wrote beside it, and the RTSTRUCT
    has one ROI per class present, its contours along that class."""
    import highdicom as hd

    labels = np.asarray(nib.load(out / f"{name}.nii.gz").dataobj)
    # Without the anatomy check the untrained network labels all three classes on this slab.
    present = {c.name for c in KITS23.foreground if (labels == c.value).any()}
    assert present == {"kidney", "tumor", "cyst"}
    ct_copy = read_volume(out / f"{name}_ct")
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in ct_copy.dicom_files]
    seg = hd.seg.segread(out / f"{name}_seg.dcm")
    back = seg.get_pixels_by_source_instance(uids, combine_segments=True, skip_overlap_checks=True)
    np.testing.assert_array_equal(np.transpose(back, (2, 1, 0)), labels)
    rt = pydicom.dcmread(out / f"{name}_rtstruct.dcm")
    assert {r.ROIName for r in rt.StructureSetROISequence} == present
    _assert_contours_follow(rt, labels, ct_copy.affine)


def test_seg_and_rtstruct_of_an_anonymised_series_with_new_uids(series, ckpt, tmp_path):
    import highdicom as hd

    out = tmp_path / "out"
    args = ["predict", "-i", str(series), "-o", str(out), "-m", str(ckpt), "--new-uids", "--overlap", "0"]
    args.append("--no-anatomy-check")  # with it, nothing is labelled on this slab
    result = runner.invoke(app, [*args, "--dicom-seg", "--dicom-rtstruct", "-q"])
    assert result.exit_code == 0, result.output
    name = series.name
    ct_copy = read_volume(out / f"{name}_ct")
    original = read_volume(series)
    np.testing.assert_array_equal(ct_copy.array, original.array)
    np.testing.assert_allclose(ct_copy.affine, original.affine, atol=1e-4)
    copy = [pydicom.dcmread(f, stop_before_pixels=True) for f in ct_copy.dicom_files]
    assert len({ds.StudyInstanceUID for ds in copy}) == 1 and copy[0].StudyInstanceUID

    seg = hd.seg.segread(out / f"{name}_seg.dcm")
    assert seg.StudyInstanceUID == copy[0].StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == copy[0].SeriesInstanceUID
    for segment, cls in zip(seg.SegmentSequence, KITS23.foreground, strict=True):
        assert segment.SegmentLabel == cls.name
        rgb = hd.color.CIELabColor.from_dicom_value(segment.RecommendedDisplayCIELabValue).to_rgb()
        assert np.abs(np.subtract(rgb, cls.color)).max() <= 1
        assert segment.AnatomicRegionSequence[0].CodeValue == "64033007"
    rt = pydicom.dcmread(out / f"{name}_rtstruct.dcm")
    referenced = rt.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    assert referenced.RTReferencedSeriesSequence[0].SeriesInstanceUID == copy[0].SeriesInstanceUID
    _assert_dicom_outputs_hold_the_labels(out, name)

    again = runner.invoke(app, [*args, "--dicom-seg", "--dicom-rtstruct", "-q"])
    assert "0 predicted, 1 already done" in again.output


def test_seg_and_rtstruct_of_a_series_without_birth_date_or_study_time(series, ckpt, tmp_path):
    """Anonymisation may remove type 2 attributes the writers copy (was: AttributeError tracebacks
    from highdicom and rt-utils)."""
    stripped = tmp_path / "stripped"
    stripped.mkdir()
    for path in sorted(series.iterdir()):
        ds = pydicom.dcmread(path)
        for key in EMPTY_WHEN_ABSENT:
            delattr(ds, key)
        ds.save_as(stripped / path.name)
    out = tmp_path / "out"
    args = ["predict", "-i", str(stripped), "-o", str(out), "-m", str(ckpt), "--new-uids", "--overlap", "0"]
    args.append("--no-anatomy-check")  # with it, nothing is labelled on this slab
    result = runner.invoke(app, [*args, "--dicom-seg", "--dicom-rtstruct", "-q"])
    assert result.exit_code == 0, result.output
    for name in ("seg", "rtstruct"):
        written = pydicom.dcmread(out / f"stripped_{name}.dcm", stop_before_pixels=True)
        assert written.PatientBirthDate == "" and written.StudyTime == "" and written.PatientID == ""
    _assert_dicom_outputs_hold_the_labels(out, "stripped")


def test_a_folder_of_nifti_files_and_dicom_series_folders_finds_both(series, tmp_path):
    """A DICOM series sub-folder beside NIfTI files is a case too (it was silently left out); a
    NIfTI file and a DICOM folder of one case id are refused."""
    from kidneyseg.predict.inputs import find_inputs

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    volume = read_volume(series)
    nib.save(nib.Nifti1Image(volume.array, volume.affine), mixed / "b.nii.gz")
    (mixed / "a").symlink_to(series, target_is_directory=True)
    cases, folder_mode = find_inputs(mixed)
    assert folder_mode and sorted(c.case_id for c in cases) == ["a", "b"]
    assert next(c for c in cases if c.case_id == "a").dicom_files
    nib.save(nib.Nifti1Image(volume.array, volume.affine), mixed / "a.nii.gz")
    with pytest.raises(KidneysegError, match=r"both a NIfTI file and a DICOM folder of case\(s\) \['a'\]"):
        find_inputs(mixed)


def test_python_callers_are_told_the_argument_that_chooses_a_series(series, ckpt, tmp_path):
    """(was: "choose one with --series UID" for segment(), and the same rewritten advice for
    Predictor.predict(), which takes no series: found by a review)"""
    from pydicom.uid import generate_uid

    import kidneyseg
    from kidneyseg.predict import Predictor

    both = tmp_path / "both"
    both.mkdir()
    second = generate_uid()
    for path in sorted(series.iterdir()):
        ds = pydicom.dcmread(path)
        ds.save_as(both / path.name)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = second, generate_uid()
        ds.save_as(both / f"b_{path.name}")
    with pytest.raises(KidneysegError, match=r"holds 2 DICOM series, choose one with series_uid=UID: "):
        kidneyseg.segment(both, model=ckpt)
    with pytest.raises(KidneysegError) as refused:
        Predictor(ckpt).predict(both)
    assert "choose one with kidneyseg.segment(ct, model=predictor, series_uid=UID): " in str(refused.value)
    assert "--series" not in str(refused.value)


def test_a_case_folder_of_two_series_fails_alone_and_series_chooses_within_it(series, ckpt, tmp_path):
    """In a folder of patients, one holding two DICOM series failed the whole batch, and --series
    (the UID of one of them) failed the patients without it (found by a hostile review). Now that
    patient alone fails, with the series listed; --series chooses within the folder holding it; a
    --series no folder holds is one line."""
    from pydicom.uid import generate_uid

    cases = tmp_path / "cases"
    (cases / "p3").mkdir(parents=True)
    (cases / "p1").symlink_to(series, target_is_directory=True)
    second = generate_uid()
    for path in sorted(series.iterdir()):
        ds = pydicom.dcmread(path)
        ds.save_as(cases / "p3" / path.name)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = second, generate_uid()
        ds.save_as(cases / "p3" / f"b_{path.name}")
    base = ["predict", "-i", str(cases), "-m", str(ckpt), "--overlap", "0", "-q"]
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "p3: " in result.output and "holds 2 DICOM series, choose one with --series UID" in result.output
    record = json.loads((tmp_path / "out" / "predict_run.json").read_text())
    assert {c["case_id"]: c["status"] for c in record["cases"]} == {"p1": "done", "p3": "failed"}
    chosen = runner.invoke(app, [*base, "-o", str(tmp_path / "chosen"), "--series", second])
    assert chosen.exit_code == 0, chosen.output
    record = json.loads((tmp_path / "chosen" / "predict_run.json").read_text())
    assert {c["case_id"]: c["status"] for c in record["cases"]} == {"p1": "done", "p3": "done"}
    unknown = runner.invoke(app, [*base, "-o", str(tmp_path / "none"), "--series", "1.2.3"])
    assert unknown.exit_code == 2 and "no sub-folder holds the DICOM series 1.2.3" in unknown.output
    assert not (tmp_path / "none").exists()


def test_names_that_are_not_utf8_fail_their_case_in_one_line(series, ckpt, tmp_path):
    """Was: a DICOM folder named in Latin-1 (`dcm\\xe9`) aborted the whole process in ITK's C++
    (exit 134, the folder's other cases lost); DICOM files so named raised a TypeError, and a
    NIfTI file so named a UnicodeEncodeError in the report."""
    import os

    from kidneyseg.predict.inputs import find_inputs

    batch = tmp_path / "batch"
    latin = os.fsdecode(bytes(batch) + b"/dcm\xe9")
    os.makedirs(latin)
    for file in sorted(series.iterdir()):
        os.symlink(file, os.path.join(latin, file.name))
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for k, file in enumerate(sorted(series.iterdir())):
        os.symlink(file, os.path.join(renamed, os.fsdecode(b"Bild\xe4%03d.dcm" % k)))
    volume = read_volume(series)
    nib.save(nib.Nifti1Image(volume.array, volume.affine), batch / "good.nii.gz")
    cases, _ = find_inputs(batch)
    bad = next(c for c in cases if c.case_id != "good")
    assert bad.case_id == "dcm\\xe9" and "the name is not valid UTF-8" in bad.problem
    assert next(c for c in cases if c.case_id == "good").problem is None
    result = runner.invoke(app, ["predict", "-i", str(batch), "-o", str(tmp_path / "out"), "-m", str(ckpt)])
    assert result.exit_code == 1 and "1 predicted, 0 already done, 1 failed" in result.output
    assert (tmp_path / "out" / "good.nii.gz").is_file()
    nifti = os.fsdecode(bytes(tmp_path) + b"/CT\xe9.nii.gz")
    os.symlink(batch / "good.nii.gz", nifti)
    two = tmp_path / "two"  # --series chooses a series named in UTF-8 beside one that is not
    study, clean = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    _dicom_copy(series, two, study, clean)
    for file in _dicom_copy(series, tmp_path / "other", study, pydicom.uid.generate_uid()).iterdir():
        os.rename(file, os.path.join(two, os.fsdecode(b"\xe4" + file.name.encode())))
    chosen = runner.invoke(
        app, ["predict", "-i", str(two), "-o", str(tmp_path / "two-out"), "-m", str(ckpt), "--series", clean]
    )
    assert chosen.exit_code == 0, chosen.output
    latin_out = os.fsdecode(bytes(tmp_path) + b"/out\xe9")
    for given, out in ((renamed, str(tmp_path / "one")), (nifti, str(tmp_path / "one")), (batch, latin_out)):
        single = runner.invoke(app, ["predict", "-i", given, "-o", out, "-m", str(ckpt)])
        assert single.exit_code == 2 and len(single.output.splitlines()) == 1, single.output
        assert "the name is not valid UTF-8" in single.output
