"""The reader table: every input format kidneyseg reads, stated once.

Each `Format` in `FORMATS` has a predicate on the path (does this format read it?), a reader
(voxels and geometry, `Volume`), a header reader (shape, spacing and voxel size without reading
voxels, `ImageHeader`) and a stem (the part of the path that names the case). Every stage goes
through this table: `read_volume` (`kidneyseg.io.volume`), `read_header` before a prediction's
memory check, `case_id_of` and `files_by_case_id` for the case ids of `kidneyseg predict`, dataset
discovery (`kidneyseg.data.cases`), `kidneyseg evaluate` and `kidneyseg report`. A new input
format is one more entry here.

Case ids follow one rule, `case_id_of`: the format's stem without nnU-Net's channel suffix `_0000`
(`imagesTr/NAME_0000.nii.gz` is the CT of case NAME, whose labels are `labelsTr/NAME.nii.gz`
and whose prediction is `NAME.nii.gz`), for CTs, label maps and predictions alike, so that every
stage pairs the same files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kidneyseg.errors import KidneysegError
from kidneyseg.io.dicom import choose_series, list_dicom_series, refuse_multiframe, slice_normal
from kidneyseg.io.volume import (
    NIFTI_SUFFIXES,
    Volume,
    affine_spacing,
    load_nifti,
    nifti_stem,
    read_dicom_series,
    read_nifti,
)

CHANNEL_SUFFIX = "_0000"
"""nnU-Net's suffix of an image's first (for CT: only) channel; not part of the case id."""


@dataclass(frozen=True)
class ImageHeader:
    """What a prediction's memory depends on, read without loading voxels."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    itemsize: int


@dataclass(frozen=True)
class Format:
    """One input format: which paths it reads, how, and which part of the path names the case."""

    description: str
    """For messages, e.g. 'a NIfTI file (.nii, .nii.gz)'."""
    reads: Callable[[Path], bool]
    read: Callable[[Path, str | None], Volume]
    """(path, DICOM series UID or None) → the volume."""
    read_header: Callable[[Path, tuple[str, ...]], ImageHeader]
    """(path, the DICOM series' files or ()) → the header, voxels unread."""
    stem: Callable[[Path], str]


def _nifti_header(path: Path, _series_files: tuple[str, ...]) -> ImageHeader:
    image = load_nifti(path, "the NIfTI header")
    try:
        shape = tuple(int(n) for n in image.shape[:3])
        zooms = affine_spacing(image.affine)
        dtype = image.get_data_dtype()
        slope, _ = image.header.get_slope_inter()
    except Exception as exc:  # nibabel raises many types for corrupt headers
        raise KidneysegError(f"cannot read the NIfTI header ({type(exc).__name__}: {exc})", path) from None
    if len(shape) < 3:
        raise KidneysegError(f"expected a 3D image, got shape {image.shape}", path)
    scaled = slope is not None and not (np.isnan(slope) or slope == 1.0)
    return ImageHeader(shape, zooms, 8 if scaled else int(dtype.itemsize))  # type: ignore[arg-type]


def _dicom_header(folder: Path, series_files: tuple[str, ...]) -> ImageHeader:
    import pydicom

    if not series_files:
        series = list_dicom_series(folder)
        if not series:
            raise KidneysegError("no DICOM series found in this folder", folder)
        series_files = series[choose_series(series, None, folder)]
    try:
        first = pydicom.dcmread(series_files[0], stop_before_pixels=True)
        refuse_multiframe(first, Path(series_files[0]).name, folder)
        second = pydicom.dcmread(series_files[1], stop_before_pixels=True) if len(series_files) > 1 else first
        rows, cols = int(first.Rows), int(first.Columns)
        pixel = [float(v) for v in first.PixelSpacing]
        spacing = _slice_spacing(first, second) or float(getattr(first, "SliceThickness", 0) or 0) or 1.0
        bits = int(first.BitsAllocated)
    except KidneysegError:
        raise
    except Exception as exc:  # pydicom raises many types for damaged files
        raise KidneysegError(f"cannot read the DICOM header ({type(exc).__name__}: {exc})", folder) from None
    return ImageHeader((cols, rows, len(series_files)), (pixel[1], pixel[0], spacing), max(2, bits // 8))


def _slice_spacing(first, second) -> float | None:
    """The distance (mm) between two slices along the normal of their plane, from their
    positions (SliceThickness can differ: thin slices reconstructed further apart, or thick
    ones overlapping); None without positions and orientation, or for the same slice twice."""
    if not hasattr(first, "ImageOrientationPatient") or not all(
        hasattr(ds, "ImagePositionPatient") for ds in (first, second)
    ):
        return None
    normal = slice_normal(first.ImageOrientationPatient)
    step = np.asarray(second.ImagePositionPatient, dtype=float) - np.asarray(
        first.ImagePositionPatient, dtype=float
    )
    distance = abs(float(step @ normal))
    return distance if distance > 0 else None


NIFTI = Format(
    "a NIfTI file (.nii, .nii.gz)",
    lambda path: path.is_file() and path.name.endswith(NIFTI_SUFFIXES),
    lambda path, _series_uid: read_nifti(path),
    _nifti_header,
    nifti_stem,
)
DICOM = Format("a DICOM folder", Path.is_dir, read_dicom_series, _dicom_header, lambda path: path.name)
FORMATS: tuple[Format, ...] = (NIFTI, DICOM)
"""The formats kidneyseg reads, tried in this order."""


def format_of(path: str | os.PathLike[str]) -> Format:
    """The format that reads `path`.

    Raises:
        KidneysegError: the path does not exist or no format reads it.
    """
    path = Path(path)
    if not path.exists():
        raise KidneysegError("no such file or folder", path)
    for fmt in FORMATS:
        if fmt.reads(path):
            return fmt
    raise KidneysegError(f"not {' or '.join(f.description for f in FORMATS)}", path)


def read_header(path: str | os.PathLike[str], series_files: tuple[str, ...] = ()) -> ImageHeader:
    """Shape, spacing and voxel size in bytes of the image at `path`, voxels unread; for a
    DICOM folder, of the series whose files are `series_files` (default: its only series).

    Raises:
        KidneysegError: no format reads the path, or the header cannot be read.
    """
    return format_of(path).read_header(Path(path), series_files)


def canonical_path(path: str | os.PathLike[str]) -> Path:
    """`path` absolute, the folders above it with their symbolic links and `..` resolved as the
    system resolves them, its own name kept (a linked CT or case folder is named by its link)."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        return Path(os.path.realpath(path))
    return Path(os.path.realpath(path.parent)) / path.name


def is_plain_name(text: str) -> bool:
    """Whether `text` can name a file or folder inside an output folder: not empty, `.` or `..`,
    and without a path separator (so nothing is written outside it)."""
    return bool(text.strip(". ")) and not any(c in text for c in "/\\")


def case_id_of(path: str | os.PathLike[str]) -> str:
    """The case a CT, label map or prediction belongs to: its format's stem without nnU-Net's
    channel suffix `_0000` (see the module docstring).

    Raises:
        KidneysegError: no format reads the path.
    """
    stem = format_of(path).stem(Path(path))
    return stem.removesuffix(CHANNEL_SUFFIX) or stem


def files_by_case_id(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Case id → file, for the files of `folder` that a format reads (hidden files skipped);
    empty when `folder` is not a folder.

    Raises:
        KidneysegError: two files name the same case (e.g. `a.nii` and `a.nii.gz`, or
            `a.nii.gz` and `a_0000.nii.gz`), or a NIfTI name is a link to nothing (a case that
            would otherwise be missing without a word about why).
    """
    folder = Path(folder)
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for path in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if path.is_symlink() and not path.exists() and path.name.endswith(NIFTI_SUFFIXES):
            raise KidneysegError("a symbolic link to a file that is not there", path)
        if not path.is_file() or not any(f.reads(path) for f in FORMATS):
            continue
        name = case_id_of(path)
        if name in found:
            raise KidneysegError(f"{found[name].name} and {path.name} both name case {name!r}", folder)
        found[name] = path
    return found
