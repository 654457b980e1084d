"""Checks that a DICOM series describes one regular grid before SimpleITK reads it.

ITK reads whatever files GDCM lists and derives the slice spacing from the first and last
positions, with at most a console warning: a missing slice, a duplicated position, a spacing
that changes along the scan, a gantry tilt or slices of different orientations all come out
as a volume on a wrong grid, and a damaged file is silently left out. `check_series` reads
the headers with pydicom and refuses each of these with one line naming the folder and the
problem (resample such a series first, e.g. with dcm2niix, which corrects tilt and uneven
spacing). `list_dicom_series` and `choose_series` find a folder's series and the one to read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from kidneyseg.errors import KidneysegError, check_utf8_name, exception_line

SPACING_RTOL = 0.01
"""Largest deviation of one slice gap from the series' median gap, relative to that median."""
ORIENTATION_ATOL = 1e-4
"""Largest difference between two slices' direction cosines (ImageOrientationPatient)."""
ORTHONORMAL_ATOL = 0.01
"""How far ImageOrientationPatient's two vectors may be from unit length and from perpendicular
(headers written with few decimals); beyond it the header is broken."""
PIXEL_RTOL = 1e-4
"""Pixel spacings of one series' slices differ by at most this fraction."""
TILT_VOXELS = 0.5
"""Largest in-plane shift of the last slice off the slice normal, in pixels, before it is a tilt."""
CT_MODALITIES = ("CT", "OT", "")
"""Modality values read as CT: CT, "other" (some derived or exported CT) and none given."""


@contextmanager
def itk_quiet() -> Iterator[None]:
    """Silence ITK/GDCM console warnings: whatever matters is raised as one `KidneysegError`."""
    import SimpleITK as sitk

    before = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(before)


def _is_damaged_image(path: Path) -> bool:
    """True for a DICOM file (by its `DICM` marker) that is unreadable or an image; False for
    other files and for DICOM objects without pixels (DICOMDIR, reports), which no series lists."""
    import pydicom

    try:
        with open(path, "rb") as f:
            if f.read(132)[128:] != b"DICM":
                return False
        return "Rows" in pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # pydicom raises many types for damaged files
        return True


def check_unlisted_files(folder: Path, listed: set[str]) -> None:
    """Refuse a folder holding DICOM images that no series lists: GDCM leaves out files it
    cannot parse, e.g. truncated ones."""
    listed = {str(Path(f).resolve()) for f in listed}
    damaged = sorted(
        p.name
        for p in folder.iterdir()
        if p.is_file() and str(p.resolve()) not in listed and _is_damaged_image(p)
    )
    if damaged:
        more = f" and {len(damaged) - 1} more" if len(damaged) > 1 else ""
        raise KidneysegError(
            f"DICOM file {damaged[0]}{more} cannot be read (damaged or truncated); "
            "remove it or restore the series",
            folder,
        )


def slice_normal(orientation) -> np.ndarray:
    """The normal of the slice plane whose ImageOrientationPatient (row, then column direction
    cosines) is `orientation`: the axis along which slice positions are compared."""
    orientation = np.asarray(orientation, dtype=np.float64)
    return np.cross(orientation[:3], orientation[3:])


def _modality(ds) -> str:
    """A pydicom dataset's Modality ("" when absent)."""
    return str(getattr(ds, "Modality", "") or "").strip()


def _refuse_other_modality(modality: str, name: str, folder: Path) -> None:
    if modality.upper() not in CT_MODALITIES:
        raise KidneysegError(
            f"DICOM file {name} is {modality} (Modality), not CT: kidneyseg segments CT in Hounsfield units",
            folder,
        )


def refuse_multiframe(ds, name: str, folder: Path) -> None:
    """Refuse a file of several frames (an enhanced or legacy multi-frame CT): its slices' places
    lie in per-frame sequences that ITK's series reader does not take."""
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise KidneysegError(
            f"DICOM file {name} holds {frames} frames (a multi-frame image), and kidneyseg reads a "
            "series of one slice per file: convert it to NIfTI first (e.g. with dcm2niix)",
            folder,
        )


def _check_single_file(file: str, folder: Path) -> None:
    """The modality and frame count of a one-file series; the rest of it is left to ITK's reader."""
    import pydicom

    try:
        ds = pydicom.dcmread(file, stop_before_pixels=True)
        modality = _modality(ds)
    except Exception:  # damaged: ITK's reader says so
        return
    _refuse_other_modality(modality, Path(file).name, folder)
    refuse_multiframe(ds, Path(file).name, folder)


def _refuse_broken_orientation(orientation: np.ndarray, name: str, folder: Path) -> None:
    """Refuse ImageOrientationPatient that is not two perpendicular unit vectors (a broken header,
    which the tilt check would otherwise read as a gantry tilt)."""
    row, column = orientation[:3], orientation[3:]
    lengths = np.linalg.norm(row), np.linalg.norm(column)
    if max(abs(n - 1.0) for n in lengths) > ORTHONORMAL_ATOL or abs(float(row @ column)) > ORTHONORMAL_ATOL:
        angle = float(np.degrees(np.arccos(np.clip(row @ column / (lengths[0] * lengths[1]), -1, 1))))
        raise KidneysegError(
            f"DICOM file {name} has an ImageOrientationPatient that is not two perpendicular unit "
            f"vectors (lengths {lengths[0]:.3g} and {lengths[1]:.3g}, {angle:.1f}° apart): the header "
            "is broken",
            folder,
        )


def _read_headers(files: tuple[str, ...], folder: Path) -> list:
    import pydicom

    headers = []
    for f in files:
        name = Path(f).name
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            orientation = np.array(getattr(ds, "ImageOrientationPatient", ()), dtype=np.float64)
            position = np.array(getattr(ds, "ImagePositionPatient", ()), dtype=np.float64)
            rows, columns, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
            samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
            pixel = tuple(float(v) for v in ds.PixelSpacing)
            syntax = ds.file_meta.TransferSyntaxUID
            compressed = syntax.is_compressed or syntax.is_deflated
            modality = _modality(ds)
        except Exception as exc:  # pydicom raises many types for damaged files
            raise KidneysegError(
                f"DICOM file {name} cannot be read ({exception_line(exc)})", folder
            ) from None
        if orientation.shape != (6,) or position.shape != (3,):
            raise KidneysegError(f"DICOM file {name} has no valid slice position or orientation", folder)
        _refuse_broken_orientation(orientation, name, folder)
        refuse_multiframe(ds, name, folder)
        if not compressed and Path(f).stat().st_size < rows * columns * samples * bits // 8:
            raise KidneysegError(
                f"DICOM file {name} is truncated: it is smaller than its {rows} × {columns} pixels", folder
            )
        _refuse_other_modality(modality, name, folder)
        if headers and (rows, columns) != headers[0][4]:
            first, size = headers[0][0], headers[0][4]
            raise KidneysegError(
                f"slices have different sizes ({first}: {size[0]} × {size[1]} pixels, {name}: "
                f"{rows} × {columns}): not one volume",
                folder,
            )
        headers.append((name, orientation, position, pixel, (rows, columns)))
    return headers


def check_series(files: tuple[str, ...], folder: Path) -> None:
    """Refuse a series whose slices do not form one regular grid.

    Raises:
        KidneysegError: a file's name is not valid UTF-8; a file cannot be read, is truncated,
            is not CT (MR, PET, ...), holds several frames or a broken orientation; the slices
            have different orientations, sizes or pixel spacings; their positions are sheared
            off the slice normal (gantry tilt); two share a position; a slice is missing; or the
            spacing is not uniform.
    """
    for file in files:  # ITK's reader takes no other names
        check_utf8_name(file)
    if len(files) < 2:
        for file in files:
            _check_single_file(file, folder)
        return
    headers = _read_headers(files, folder)
    names = [h[0] for h in headers]
    orientations = np.stack([h[1] for h in headers])
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_ATOL:
        odd = int(np.flatnonzero(np.abs(orientations - orientations[0]).max(axis=1) > ORIENTATION_ATOL)[0])
        raise KidneysegError(
            f"slices have different orientations ({names[0]} and {names[odd]}): not one volume; "
            "split the series by orientation",
            folder,
        )
    pixels = np.array([h[3] for h in headers])
    odd_pixels = np.flatnonzero(np.abs(pixels - pixels[0]).max(axis=1) > PIXEL_RTOL * pixels[0].max())
    if odd_pixels.size:
        odd = int(odd_pixels[0])
        first, other = (" × ".join(f"{v:g}" for v in pixels[k]) for k in (0, odd))
        raise KidneysegError(
            f"slices have different pixel spacings ({names[0]}: {first} mm, {names[odd]}: {other} mm): "
            "not one volume",
            folder,
        )
    normal = slice_normal(orientations[0])
    positions = np.stack([h[2] for h in headers])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along, positions = along[order], positions[order]
    names = [names[i] for i in order]
    gaps = np.diff(along)
    duplicates = np.flatnonzero(gaps <= 1e-3 * max(float(np.median(np.abs(gaps))), 1e-3))
    if duplicates.size:
        k = int(duplicates[0])
        raise KidneysegError(
            f"two slices share the position {along[k]:g} mm along the slice normal "
            f"({names[k]} and {names[k + 1]}): remove the duplicate",
            folder,
        )
    offset = positions[-1] - positions[0]
    shear = float(np.linalg.norm(offset - (offset @ normal) * normal))
    if shear > TILT_VOXELS * min(headers[0][3]):
        angle = float(np.degrees(np.arctan2(shear, abs(offset @ normal))))
        raise KidneysegError(
            f"gantry tilt of {angle:.1f}°: the slices are shifted {shear:.1f} mm off the slice normal; "
            "resample the series onto an untilted grid first (e.g. dcm2niix corrects tilt)",
            folder,
        )
    step = float(np.median(gaps))
    uneven = np.flatnonzero(np.abs(gaps - step) > SPACING_RTOL * step)
    if uneven.size:
        k = int(uneven[0])
        ratio = gaps[k] / step
        if round(ratio) >= 2 and abs(ratio - round(ratio)) <= SPACING_RTOL * round(ratio):
            problem = f"{round(ratio) - 1} slice(s) missing between {names[k]} and {names[k + 1]}"
        else:
            problem = f"slice spacing is not uniform ({gaps.min():g} to {gaps.max():g} mm)"
        raise KidneysegError(
            f"{problem}: positions {along[k]:g} and {along[k + 1]:g} mm are {gaps[k]:g} mm apart "
            f"where the series' slices are {step:g} mm apart; resample it onto a uniform grid first "
            "(e.g. with dcm2niix)",
            folder,
        )


def list_dicom_series(folder: str | os.PathLike[str]) -> dict[str, tuple[str, ...]]:
    """The DICOM series in `folder`: series instance UID → its files in slice order.

    Raises:
        KidneysegError: the folder's name is not valid UTF-8 (`check_utf8_name`: ITK aborts on
            it); a file's name is checked where its series is read (`check_series`).
    """
    import SimpleITK as sitk

    check_utf8_name(folder)
    folder = str(folder)
    reader = sitk.ImageSeriesReader()
    with itk_quiet():
        return {
            uid: tuple(reader.GetGDCMSeriesFileNames(folder, uid)) for uid in reader.GetGDCMSeriesIDs(folder)
        }


EMPTY_UID = "a series without UID, chosen with --series ''"
"""How the listing of a folder's series shows one whose SeriesInstanceUID is empty (anonymised)."""


def choose_series(series: dict[str, tuple[str, ...]], series_uid: str | None, folder: Path) -> str:
    """The UID to read from `series` (as `list_dicom_series` returns it): `series_uid` if given,
    else the only one; several series without a choice is an error that lists them."""
    if series_uid is None:
        if len(series) > 1:
            listing = "; ".join(
                f"{uid or EMPTY_UID} ({len(files)} files)" for uid, files in sorted(series.items())
            )
            raise KidneysegError(
                f"holds {len(series)} DICOM series, choose one with --series UID: {listing}", folder
            )
        return next(iter(series))
    if series_uid not in series:
        raise KidneysegError(f"has no DICOM series {series_uid}; it has {sorted(series)}", folder)
    return series_uid
