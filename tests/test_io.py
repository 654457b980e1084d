"""CT I/O on real scanner output (../shared/data/real-ct), checked against independent readers:
pydicom for the DICOM series (positions, orientation, pixel spacing, rescale to HU) and nibabel
for NIfTI; exact NIfTI round trips; DICOM → NIfTI keeps the geometry; refusals."""

from __future__ import annotations

import re

import numpy as np
import pydicom
import pytest

from kidneyseg.errors import KidneysegError
from kidneyseg.io.volume import FORTRAN_TILE, Volume, fortran_ordered, read_volume, write_labels, write_volume


@pytest.fixture(scope="module")
def dicom_dir(shared_data):
    return shared_data / "real-ct" / "dicom_series"


@pytest.fixture(scope="module")
def nifti_path(shared_data):
    return shared_data / "real-ct" / "chest_ct_1.5mm.nii.gz"


def _pydicom_reference(folder):
    """HU array (column, row, slice) and RAS affine computed from the DICOM tags with pydicom."""
    slices = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    orientation = np.array(slices[0].ImageOrientationPatient, dtype=float)
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    slices.sort(key=lambda s: float(np.dot(normal, np.array(s.ImagePositionPatient, dtype=float))))
    positions = np.array([s.ImagePositionPatient for s in slices], dtype=float)
    row_spacing, col_spacing = (float(v) for v in slices[0].PixelSpacing)
    hu = np.stack(
        [s.pixel_array * float(s.RescaleSlope) + float(s.RescaleIntercept) for s in slices], axis=-1
    ).transpose(1, 0, 2)  # pixel_array is (row, column); volumes index (column, row, slice)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing  # moving along a row = next column
    lps[:3, 1] = col_dir * row_spacing
    lps[:3, 2] = (positions[-1] - positions[0]) / (len(slices) - 1)
    lps[:3, 3] = positions[0]
    return hu, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def test_dicom_series_matches_pydicom(dicom_dir):
    volume = read_volume(dicom_dir)
    hu, affine = _pydicom_reference(dicom_dir)
    assert volume.shape == (512, 512, 20)
    np.testing.assert_allclose(volume.spacing, (0.9765625, 0.9765625, 2.0), atol=1e-6)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-4)
    np.testing.assert_array_equal(volume.array, hu)
    assert volume.array.min() >= -1024 and volume.array.dtype == np.int16
    assert len(volume.dicom_files) == 20
    # The files are listed in the order of the array's slices.
    z = [
        float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in volume.dicom_files
    ]
    np.testing.assert_allclose(np.diff(z), 2.0, atol=1e-4)
    assert volume.orientation == "LPS"


def test_nifti_matches_nibabel_and_round_trips_exactly(nifti_path, tmp_path):
    import nibabel as nib

    volume = read_volume(nifti_path)
    image = nib.load(str(nifti_path))
    np.testing.assert_array_equal(volume.array, np.asanyarray(image.dataobj))
    np.testing.assert_array_equal(volume.affine, image.affine)
    np.testing.assert_allclose(volume.spacing, image.header.get_zooms()[:3])
    again = read_volume(write_volume(tmp_path / "copy.nii.gz", volume))
    assert again.array.dtype == volume.array.dtype
    np.testing.assert_array_equal(again.array, volume.array)
    np.testing.assert_array_equal(again.affine, volume.affine)
    plain = read_volume(write_volume(tmp_path / "copy.nii", volume))
    np.testing.assert_array_equal(plain.array, volume.array)


@pytest.mark.parametrize("shape", [(3, 5), (2 * FORTRAN_TILE + 3, 4, FORTRAN_TILE - 1), (11, 6, 19, 4)])
def test_fortran_ordered_copies_any_layout_tile_by_tile(shape):
    array = np.random.default_rng(0).integers(-500, 500, shape).astype(np.int16)
    for view in (array, array[::-1], array[:, ::2], array.T):
        copy = fortran_ordered(view)
        assert copy.flags.f_contiguous
        np.testing.assert_array_equal(copy, view)


def test_dicom_to_nifti_keeps_geometry(dicom_dir, tmp_path):
    volume = read_volume(dicom_dir)
    again = read_volume(write_volume(tmp_path / "ct.nii.gz", volume))
    np.testing.assert_array_equal(again.array, volume.array)
    np.testing.assert_allclose(again.affine, volume.affine, atol=1e-4)  # NIfTI stores float32
    labels = (volume.array > 200).astype(np.uint8)
    written = read_volume(write_labels(tmp_path / "seg.nii.gz", labels, volume))
    assert written.array.dtype == np.uint8 and written.same_grid(volume)


def test_folder_with_two_series_is_refused_listing_both(dicom_dir, tmp_path):
    folder = tmp_path / "two"
    folder.mkdir()
    for k, path in enumerate(sorted(dicom_dir.iterdir())):
        for series in ("1.2.826.0.1.1", "1.2.826.0.1.2"):
            ds = pydicom.dcmread(path)
            ds.SeriesInstanceUID = series
            ds.SOPInstanceUID = f"{series}.{k}"
            ds.save_as(folder / f"{series}-{k:03d}.dcm")
    with pytest.raises(KidneysegError) as info:
        read_volume(folder)
    message = str(info.value)
    assert str(folder) in message and "2 DICOM series" in message
    assert "1.2.826.0.1.1 (20 files)" in message and "1.2.826.0.1.2 (20 files)" in message
    chosen = read_volume(folder, series_uid="1.2.826.0.1.2")
    assert chosen.shape == (512, 512, 20) and all("1.2.826.0.1.2-" in f for f in chosen.dicom_files)
    with pytest.raises(KidneysegError, match=r"has no DICOM series 9\.9"):
        read_volume(folder, series_uid="9.9")


def test_an_image_without_voxels_is_refused_naming_its_shape(tmp_path):
    """A 3D image with an axis of length 0 was refused as "expected a 3D image, got 1D (0,)"
    (nibabel reads its voxels as shape (0,)); a Volume of one reached numpy's reductions."""
    import nibabel as nib

    path = tmp_path / "zero_slices.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((108, 70, 0), np.int16), np.eye(4)), path)
    message = r"zero_slices\.nii\.gz: the image has no voxels \(shape 108 × 70 × 0\)$"
    with pytest.raises(KidneysegError, match=message):
        read_volume(path)
    with pytest.raises(KidneysegError, match=r"the image has no voxels \(shape 108 × 0 × 70\)"):
        Volume(np.zeros((108, 0, 70), np.int16), np.eye(4))


def test_grid_difference_names_what_differs():
    """A grid that differs only in its axis directions was refused with identical shape, spacing
    and origin in the message; now each difference is named."""
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    base = Volume(np.zeros((4, 5, 6), np.uint8), affine)
    flipped = affine.copy()
    flipped[0, 0] = 0.8
    assert base.grid_difference(base) is None
    flip = base.grid_difference(Volume(base.array, flipped))
    assert flip == "axis directions LPS vs RPS (up to 180° apart)"
    moved = affine.copy()
    moved[:3, 3] = (1.0, 0.0, 0.0)
    assert base.grid_difference(Volume(base.array, moved)) == "origin (0, 0, 0) vs (1, 0, 0) mm"
    moved[:3, 3] = (0.0015, 0.0, 0.0)  # beyond the tolerance, hidden by 2 decimals
    assert base.grid_difference(Volume(base.array, moved)) == "origin (0, 0, 0) vs (0.0015, 0, 0) mm"
    other = Volume(np.zeros((4, 5, 7), np.uint8), np.diag([-0.8, -0.8, 2.0, 1.0]))
    expected = "shape (4, 5, 6) vs (4, 5, 7); spacing (0.8, 0.8, 2.5) vs (0.8, 0.8, 2) mm"
    assert base.grid_difference(other) == expected


def test_a_header_nibabel_would_repair_is_refused_without_stray_lines(tmp_path, capfd):
    """An invalid sform code (nibabel drops it and uses another affine, e.g. 1 mm voxels) and a
    zero pixdim (nibabel makes it 1 mm) are refused naming the file, and nibabel's own unnamed
    lines are not printed, however often such a file is read."""
    import nibabel as nib

    stored = bytearray(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.diag([0.8, 0.8, 2.5, 1])).to_bytes())
    bad_code, zero = bytearray(stored), bytearray(stored)
    bad_code[254:256] = np.int16(7).tobytes()  # sform_code
    zero[252:256] = np.zeros(2, np.int16).tobytes()  # qform and sform codes 0: pixdim is the geometry
    zero[80:84] = np.float32(0).tobytes()  # pixdim[1]
    for name, data, message in (
        ("code.nii", bad_code, "the header is not valid NIfTI: sform_code 7 not valid"),
        ("zero.nii", zero, "voxel sizes (pixdim) 0, 0.8, 2.5 must be positive and finite"),
    ):
        (tmp_path / name).write_bytes(bytes(data))
        for _ in range(2):
            with pytest.raises(KidneysegError, match=re.escape(f"{tmp_path / name}: {message}")):
                read_volume(tmp_path / name)
    assert capfd.readouterr().err == ""


def test_lengths_in_another_unit_than_mm_are_refused(tmp_path):
    """Found by a hostile run: a header stating metres (ITK readers: 3906 mm voxels) was read as
    mm and its label map written in mm, 1000 times smaller in an ITK viewer; one in microns was
    refused as "not the spacing of a CT". Only mm, or no unit, is read (as mm)."""
    import nibabel as nib

    for unit, refused in (("mm", False), ("unknown", False), ("meter", True), ("micron", True)):
        image = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.diag([0.8, 0.8, 2.5, 1]))
        image.header.set_xyzt_units(unit)
        path = tmp_path / f"{unit}.nii.gz"
        nib.save(image, str(path))
        if refused:
            with pytest.raises(
                KidneysegError, match=re.escape(f"{path}: the header states lengths in {unit}s")
            ):
                read_volume(path)
        else:
            assert read_volume(path).spacing == pytest.approx((0.8, 0.8, 2.5))
    for code in (4, 7, 66):  # no unit nibabel knows (found by a review: a KeyError traceback)
        image = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.diag([0.8, 0.8, 2.5, 1]))
        image.header["xyzt_units"] = code
        nib.save(image, str(tmp_path / "odd.nii.gz"))
        assert read_volume(tmp_path / "odd.nii.gz").spacing == pytest.approx((0.8, 0.8, 2.5))


def test_a_4d_file_of_one_volume_gets_labels_of_the_same_shape(tmp_path):
    """Found by a hostile run: a CT stored as (x, y, z, 1) got a label map of (x, y, z); now the
    label map has the CT's exact shape and geometry, and reads back as the same 3D grid."""
    import nibabel as nib

    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    affine[:3, 3] = (-10, 20, 30)
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 7, 1), np.int16), affine), str(tmp_path / "ct.nii.gz"))
    ct = read_volume(tmp_path / "ct.nii.gz")
    assert ct.shape == (5, 6, 7)
    labels = np.zeros(ct.shape, np.uint8)
    labels[1:3, 2:4, 3:5] = 2
    write_labels(tmp_path / "seg.nii.gz", labels, ct)
    written = nib.load(str(tmp_path / "seg.nii.gz"))
    assert written.shape == (5, 6, 7, 1) and np.allclose(written.affine, affine)
    back = read_volume(tmp_path / "seg.nii.gz")
    assert back.same_grid(ct) and np.array_equal(back.array, labels)
    plain = read_volume(tmp_path / "seg.nii.gz").with_array(labels)
    assert nib.load(str(write_labels(tmp_path / "again.nii.gz", labels, plain))).shape == (5, 6, 7, 1)
    three_d = Volume(labels, affine)
    assert nib.load(str(write_labels(tmp_path / "three.nii.gz", labels, three_d))).shape == (5, 6, 7)


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(KidneysegError, match="no such file"):
        read_volume(tmp_path / "absent.nii.gz")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(KidneysegError, match=r"notes\.txt: not a NIfTI file"):
        read_volume(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KidneysegError, match="no DICOM series"):
        read_volume(tmp_path / "empty")
    (tmp_path / "junk.nii.gz").write_bytes(b"\x1f\x8b" + b"junk" * 50)
    with pytest.raises(KidneysegError, match=r"junk\.nii\.gz: cannot read NIfTI"):
        read_volume(tmp_path / "junk.nii.gz")


def test_write_refusals_leave_nothing(tmp_path):
    volume = Volume(np.zeros((4, 5, 6), np.int16), np.diag([0.8, 0.8, 2.5, 1.0]))
    with pytest.raises(KidneysegError, match=r"must end in \.nii"):
        write_volume(tmp_path / "ct.mha", volume)
    with pytest.raises(KidneysegError, match="differs from the CT"):
        write_labels(tmp_path / "seg.nii.gz", np.zeros((4, 5, 7), np.uint8), volume)
    assert list(tmp_path.iterdir()) == []


# --- DICOM series that are not one regular grid (issue 19) --------------------------------------


def _edited_series(source, target, edit=None, drop=()):
    """A copy of the shared series (slices sorted by position) in `target`; `edit(k, ds)` may
    change slice k before it is saved; slices whose index is in `drop` are left out."""
    target.mkdir()
    slices = sorted(
        (pydicom.dcmread(p) for p in source.iterdir()), key=lambda ds: float(ds.ImagePositionPatient[2])
    )
    for k, ds in enumerate(slices):
        if k in drop:
            continue
        if edit is not None:
            edit(k, ds)
        ds.save_as(target / f"slice{k:03d}.dcm")
    return target


def _moved(k, ds, dx=0.0, dy=0.0, dz=0.0):
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x + dx, y + dy, z + dz]


DICOM_FAULTS = {
    "missing": (dict(drop=(10,)), r"1 slice\(s\) missing between slice009\.dcm and slice011\.dcm"),
    "uneven": (dict(edit=lambda k, ds: _moved(k, ds, dz=3.0 * max(0, k - 10))), "spacing is not uniform"),
    "tilt": (
        dict(edit=lambda k, ds: _moved(k, ds, dy=k * 2.0 * np.tan(np.radians(15)))),
        "gantry tilt of 15.0°",
    ),
    "orientations": (
        dict(edit=lambda k, ds: k == 7 and setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 0.98, 0.199])),
        "different orientations",
    ),
    "pixel-spacing": (
        dict(edit=lambda k, ds: k == 10 and setattr(ds, "PixelSpacing", [0.5, 0.5])),
        r"different pixel spacings \(slice000\.dcm: 0\.976562 × 0\.976562 mm, slice010\.dcm: 0\.5 × 0\.5",
    ),
    "no-position": (
        dict(edit=lambda k, ds: k == 0 and delattr(ds, "ImagePositionPatient")),
        "DICOM file slice000.dcm has no valid slice position or orientation",
    ),
    "mr": (
        dict(edit=lambda k, ds: setattr(ds, "Modality", "MR")),
        "DICOM file slice000.dcm is MR \\(Modality\\), not CT",
    ),
    "sizes": (  # was: "cannot read the DICOM series (  Size: [100, 60, 1])"
        dict(edit=lambda k, ds: k == 4 and _cropped(ds, 60, 100)),
        r"different sizes \(slice000\.dcm: 512 × 512 pixels, slice004\.dcm: 60 × 100\)",
    ),
    "not-unit": (  # was: "gantry tilt of 75.1°"
        dict(edit=lambda k, ds: setattr(ds, "ImageOrientationPatient", [2, 0, 0, 0, 1, 0])),
        r"slice000\.dcm has an ImageOrientationPatient that is not two perpendicular unit vectors",
    ),
    "skewed": (  # was: "gantry tilt of 2.3°"
        dict(edit=lambda k, ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0.2, 0.98, 0])),
        r"not two perpendicular unit vectors \(lengths 1 and 1, 78\.5° apart\)",
    ),
}


def _cropped(ds, rows, columns):
    ds.decompress()
    ds.PixelData = ds.pixel_array[:rows, :columns].copy().tobytes()
    ds.Rows, ds.Columns = rows, columns


@pytest.mark.parametrize("fault", DICOM_FAULTS)
def test_dicom_series_off_a_regular_grid_is_refused(dicom_dir, tmp_path, fault):
    kwargs, message = DICOM_FAULTS[fault]
    folder = _edited_series(dicom_dir, tmp_path / fault, **kwargs)
    with pytest.raises(KidneysegError, match=message) as info:
        read_volume(folder)
    assert str(info.value).startswith(f"{folder}: ") and "\n" not in str(info.value)


def test_dicom_header_takes_the_slice_spacing_from_the_positions(dicom_dir, tmp_path):
    """The memory check's header reads the spacing between slices, not SliceThickness."""
    from kidneyseg.io.formats import read_header

    volume = read_volume(dicom_dir)
    folder = _edited_series(
        dicom_dir, tmp_path / "thick", edit=lambda k, ds: setattr(ds, "SliceThickness", 9.0)
    )
    header = read_header(folder)
    assert header.shape == volume.shape
    assert header.spacing == pytest.approx(volume.spacing, abs=1e-3) and volume.spacing[2] != pytest.approx(
        9.0
    )


def test_dicom_duplicate_and_truncated_slices_are_refused(dicom_dir, tmp_path):
    folder = _edited_series(dicom_dir, tmp_path / "dup")
    (folder / "slice005-copy.dcm").write_bytes((folder / "slice005.dcm").read_bytes())
    with pytest.raises(KidneysegError, match=r"two slices share the position .* slice005"):
        read_volume(folder)
    folder = _edited_series(dicom_dir, tmp_path / "cut")
    whole = (folder / "slice012.dcm").read_bytes()
    (folder / "slice012.dcm").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(KidneysegError, match=r"slice012\.dcm .*(cannot be read|truncated)"):
        read_volume(folder)


def test_deflated_and_multiframe_dicom(dicom_dir, tmp_path):
    """Was: a valid deflated series was refused as "truncated"; a multi-frame CT got "expected a 3D
    series of several slices, got size (...)" or "cannot read the DICOM header (AttributeError...)"."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    plain = read_volume(dicom_dir)

    def deflate(k, ds):
        ds.decompress()  # the shared series is JPEG 2000
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian

    deflated = read_volume(_edited_series(dicom_dir, tmp_path / "deflated", edit=deflate))
    np.testing.assert_array_equal(deflated.array, plain.array)
    single = tmp_path / "multiframe"
    single.mkdir()
    ds = pydicom.dcmread(sorted(dicom_dir.iterdir())[0])
    ds.decompress()
    frames = np.stack([ds.pixel_array] * 5)
    ds.NumberOfFrames, ds.PixelData = 5, frames.tobytes()
    ds.save_as(single / "mf.dcm")
    message = r"mf\.dcm holds 5 frames \(a multi-frame image\), and kidneyseg reads a series of one slice per"
    with pytest.raises(KidneysegError, match=message):
        read_volume(single)
    from kidneyseg.io.formats import read_header

    with pytest.raises(KidneysegError, match=message):
        read_header(single)


def test_an_unreadable_dicom_header_is_one_line_with_its_reason(dicom_dir, monkeypatch):
    real, name = pydicom.dcmread, sorted(p.name for p in dicom_dir.iterdir())[3]

    def dcmread(path, *args, **kwargs):
        if str(path).endswith(name):
            raise ValueError("tag (0028,0030) damaged\nsecond line of the reader's message")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", dcmread)
    with pytest.raises(KidneysegError) as error:
        read_volume(dicom_dir)
    assert (
        str(error.value)
        == f"{dicom_dir}: DICOM file {name} cannot be read (ValueError: tag (0028,0030) damaged)"
    )


def test_dicom_objects_without_pixels_beside_the_series_are_ignored(dicom_dir, tmp_path):
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder = _edited_series(dicom_dir, tmp_path / "with_report")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report = pydicom.Dataset()
    report.file_meta = meta
    report.SOPClassUID, report.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    report.Modality = "SR"
    report.save_as(folder / "report.dcm", enforce_file_format=True)
    assert read_volume(folder).shape == (512, 512, 20)


def test_empty_or_junk_dicom_folder_prints_nothing_but_the_error(tmp_path, capfd):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.dcm").write_text("junk")
    for name in ("empty", "junk"):
        with pytest.raises(KidneysegError, match="no DICOM series"):
            read_volume(tmp_path / name)
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_a_series_without_uid_is_listed_with_how_to_choose_it(tmp_path):
    from kidneyseg.io.dicom import choose_series

    series = {"": ("a.dcm", "b.dcm"), "1.2.3": ("c.dcm", "d.dcm", "e.dcm")}
    with pytest.raises(KidneysegError) as info:
        choose_series(series, None, tmp_path)
    assert str(info.value) == (
        f"{tmp_path}: holds 2 DICOM series, choose one with --series UID: "
        "a series without UID, chosen with --series '' (2 files); 1.2.3 (3 files)"
    )
    assert choose_series(series, "", tmp_path) == ""


def test_a_one_file_series_of_another_modality_is_refused(dicom_dir, tmp_path):
    """The slice-by-slice checks need two files; the modality is checked for one as well."""
    folder = _edited_series(dicom_dir, tmp_path / "one", edit=lambda k, ds: setattr(ds, "Modality", "MR"))
    for extra in sorted(folder.iterdir())[1:]:
        extra.unlink()
    with pytest.raises(KidneysegError, match=r"DICOM file slice000\.dcm is MR \(Modality\), not CT"):
        read_volume(folder)
