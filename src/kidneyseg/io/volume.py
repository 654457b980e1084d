"""The `Volume` type (voxels + geometry) and reading/writing NIfTI files and DICOM series.

Geometry follows NIfTI/nibabel: `affine` maps voxel indices (i, j, k) of `array` to world
coordinates in millimetres in RAS+ (+x towards the patient's right, +y anterior,
+z superior). DICOM's LPS coordinates are converted to RAS+ on reading, so one affine
describes every volume whatever its source.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kidneyseg.errors import KidneysegError
from kidneyseg.io.atomic import write_atomic

NIFTI_SUFFIXES = (".nii", ".nii.gz")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
MAX_AXIS_COSINE = 1e-3
"""Largest |cos| of the angle between two voxel axes of a usable grid (0.06° from square)."""


def nifti_stem(path: Path) -> str:
    """A NIfTI file's name without `.nii` / `.nii.gz`."""
    for suffix in NIFTI_SUFFIXES[::-1]:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


def affine_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along i, j, k of a voxel-to-world affine: its columns' lengths."""
    return tuple(float(s) for s in np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0))  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class NiftiFrames:
    """How a NIfTI header states its grid: its qform and sform with their codes (a matrix only
    where its code is set: a qform of code 0 may hold any numbers). Files written on that grid
    with them (`nifti_image`) state it the same way, so every reader places them as it places the
    source: a header without orientation (both codes 0, which readers resolve in their own ways)
    stays one, and a scanner-based sform keeps its code."""

    qform: np.ndarray | None
    qform_code: int
    sform: np.ndarray | None
    sform_code: int
    one_volume_4d: bool = False  # stored as 4D with one volume (x, y, z, 1): written so too

    @classmethod
    def of(cls, header) -> NiftiFrames:
        """The frames of a nibabel NIfTI-1 or NIfTI-2 header."""
        q, s, four_d = int(header["qform_code"]), int(header["sform_code"]), len(header.get_data_shape()) == 4
        return cls(header.get_qform() if q else None, q, header.get_sform() if s else None, s, four_d)


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image or label map with its geometry.

    Attributes:
        array: voxel values indexed (i, j, k); CT in Hounsfield units.
        affine: 4×4 voxel-to-world (RAS+, mm) matrix.
        source: where it was read from, for messages.
        dicom_files: for a DICOM series, its files ordered as the slices of `array`.
        frames: for a NIfTI file, how its header stated the grid (files written on it state it
            the same way); None: `affine` as qform and sform, scanner-based.
    """

    array: np.ndarray
    affine: np.ndarray
    source: str | None = None
    dicom_files: tuple[str, ...] = field(default=())
    frames: NiftiFrames | None = None

    def __post_init__(self) -> None:
        affine = np.asarray(self.affine, dtype=np.float64)
        object.__setattr__(self, "affine", affine)
        where = self.source
        if self.array.ndim != 3:
            raise KidneysegError(f"expected a 3D image, got {self.array.ndim}D {self.array.shape}", where)
        check_has_voxels(self.array.shape, where)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise KidneysegError("the image affine is missing or not finite", where)
        spacing = self.spacing
        if not all(np.isfinite(s) and s > 0 for s in spacing):
            raise KidneysegError(f"voxel spacing {spacing} must be positive and finite", where)
        cosines = np.abs(self.direction.T @ self.direction - np.eye(3))
        if cosines.max() > MAX_AXIS_COSINE:  # volumes and distances assume square axes
            degrees = float(np.degrees(np.arccos(min(1.0, cosines.max()))))
            problem = "singular: two voxel axes point the same way" if degrees < 1 else "sheared"
            raise KidneysegError(
                f"the image affine is {problem} (voxel axes at {degrees:.1f}° instead of 90°); fix the "
                "header (sform/qform) or resample the image onto a grid of square axes",
                where,
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k."""
        return affine_spacing(self.affine)

    @property
    def origin(self) -> tuple[float, float, float]:
        """World (RAS+) position of voxel (0, 0, 0) in mm."""
        return tuple(float(x) for x in self.affine[:3, 3])  # type: ignore[return-value]

    @property
    def direction(self) -> np.ndarray:
        """3×3 matrix whose columns are the unit world directions of the i, j, k axes."""
        return self.affine[:3, :3] / np.asarray(self.spacing)

    @property
    def orientation(self) -> str:
        """Axis codes such as 'RAS' or 'LPI' (nibabel's convention: where each axis points)."""
        import nibabel as nib

        return "".join(nib.orientations.aff2axcodes(self.affine))

    def with_array(self, array: np.ndarray) -> Volume:
        """The same geometry with other voxels (same shape)."""
        if array.shape != self.array.shape:
            raise ValueError(f"shape {array.shape} differs from {self.array.shape}")
        return Volume(array, self.affine, self.source, self.dicom_files, self.frames)

    def same_grid(self, other: Volume, atol: float = 1e-4) -> bool:
        """True if `other` has the same shape and (to `atol` mm) the same affine."""
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=atol))

    def grid_difference(self, other: Volume, atol: float = 1e-4) -> str | None:
        """What differs between this grid and `other`'s (this one first): shape, spacing, origin
        or axis directions; None when `same_grid`."""
        if self.same_grid(other, atol):
            return None

        def pair(mine, theirs, digits: int) -> str:
            """The two as rounded to `digits`, with more digits where that hides the difference."""
            for fmt in (lambda v: f"{round(float(v), digits):g}", lambda v: f"{float(v):.9g}"):
                a, b = ("(" + ", ".join(fmt(v) for v in values) + ")" for values in (mine, theirs))
                if a != b:
                    break
            return f"{a} vs {b} mm"

        parts = []
        if self.shape != other.shape:
            parts.append(f"shape {self.shape} vs {other.shape}")
        if not np.allclose(self.spacing, other.spacing, atol=atol):
            parts.append(f"spacing {pair(self.spacing, other.spacing, 4)}")
        if not np.allclose(self.origin, other.origin, atol=atol):
            parts.append(f"origin {pair(self.origin, other.origin, 2)}")
        mine, theirs = (v.affine[:3, :3] / np.asarray(v.spacing) for v in (self, other))
        if not np.allclose(mine, theirs, atol=atol):
            import nibabel as nib

            codes = ["".join(nib.aff2axcodes(v.affine)) for v in (self, other)]
            cosines = np.clip(np.sum(mine * theirs, axis=0), -1.0, 1.0)
            angle = float(np.degrees(np.arccos(cosines)).max())
            parts.append(f"axis directions {codes[0]} vs {codes[1]} (up to {angle:.3g}° apart)")
        return "; ".join(parts) or f"affines differ by more than {atol:g} mm"


def read_volume(path: str | os.PathLike[str], series_uid: str | None = None) -> Volume:
    """Read a CT or label map in any format of the reader table (`kidneyseg.io.formats`): a
    `.nii`/`.nii.gz` file or a folder holding one DICOM series.

    Args:
        path: the file or folder.
        series_uid: which series to read when a DICOM folder holds several.

    Raises:
        KidneysegError: the file is missing, unreadable, not 3D or has invalid geometry.
    """
    from kidneyseg.io.formats import format_of  # the table, whose readers are below

    return format_of(path).read(Path(path), series_uid)


class _Collected(logging.Handler):
    """The log records of a block, kept instead of printed."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


OTHER_LENGTH_UNITS = {1: "meters", 3: "microns"}  # NIfTI's other than mm (2); 0 and 4-7 read as mm


def load_nifti(path: Path, what: str = "NIfTI"):
    """`nibabel.load` of a NIfTI file whose geometry is checked: the voxel sizes of the affine in
    use (sform, else qform or pixdim) must be positive and finite. nibabel repairs some headers
    while it reads them, logging a line without the file's name: a zero pixdim becomes 1 mm, a
    negative one positive, an invalid sform or qform code 0 (another affine). Those change the
    geometry and are refused here; its other repair notes are logged again with the file named.

    Raises:
        KidneysegError: the file cannot be read (`what` names it in the message), its voxel
            sizes are not positive and finite, or its sform or qform code is not valid.
    """
    import nibabel as nib

    log, collected = logging.getLogger("nibabel.global"), _Collected()  # nibabel's header logger
    handlers, propagate = log.handlers[:], log.propagate
    log.handlers, log.propagate = [collected], False
    try:
        image = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for corrupt/truncated files
        raise KidneysegError(f"cannot read {what} ({_one_line(exc)})", path) from None
    finally:
        log.handlers, log.propagate = handlers, propagate
    if int(image.header["sform_code"]) == 0:
        from nibabel.openers import ImageOpener

        with ImageOpener(str(path)) as raw:  # the header as stored, before nibabel's repairs
            stored = type(image.header).from_fileobj(raw, check=False)
        pixdim = [float(v) for v in stored["pixdim"][1:4]]
        if not all(math.isfinite(v) and v > 0 for v in pixdim):
            shown = ", ".join(f"{v:g}" for v in pixdim)
            raise KidneysegError(f"voxel sizes (pixdim) {shown} must be positive and finite", path)
    unit = OTHER_LENGTH_UNITS.get(int(image.header["xyzt_units"]) & 7)  # the spatial bits
    if unit is not None:
        raise KidneysegError(
            f"the header states lengths in {unit} (xyzt_units); kidneyseg reads NIfTI in mm (or "
            "without a unit, as mm): convert the file to mm",
            path,
        )
    for message in collected.messages:
        if "form_code" in message:
            raise KidneysegError(f"the header is not valid NIfTI: {message}; fix the header", path)
        log.warning("%s: %s", path, message)
    spacing = affine_spacing(image.affine)
    if not all(math.isfinite(v) and v > 0 for v in spacing):
        raise KidneysegError(f"voxel spacing {spacing} must be positive and finite", path)
    return image


def check_finite(array: np.ndarray, path: str | os.PathLike[str] | None) -> None:
    """Refuse an image holding NaN or infinite values (a `KidneysegError`)."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise KidneysegError("the image holds NaN or infinite values", path)


def check_has_voxels(shape: tuple[int, ...], where: str | os.PathLike[str] | None) -> None:
    """Raise if an image of `shape` has no voxels (an axis of length 0).

    Raises:
        KidneysegError: it has none.
    """
    if 0 in shape:
        raise KidneysegError(f"the image has no voxels (shape {' × '.join(str(n) for n in shape)})", where)


def read_nifti(path: Path) -> Volume:
    """A NIfTI file as a `Volume` (use `read_volume`, which checks the path first)."""
    image = load_nifti(path)
    check_has_voxels(image.shape, path)  # before nibabel reads such an image as shape (0,)
    dtype = image.get_data_dtype()
    if dtype.kind == "c":
        raise KidneysegError(f"the image holds complex values ({dtype}); CT must be real-valued", path)
    if not path.name.endswith(".gz"):
        promised = int(image.header.get_data_offset()) + math.prod(image.shape) * dtype.itemsize
        if path.stat().st_size < promised:
            raise KidneysegError(
                f"truncated: the header promises {promised} bytes but the file holds {path.stat().st_size}",
                path,
            )
    try:
        array = np.asanyarray(image.dataobj)
    except Exception as exc:
        raise KidneysegError(f"cannot read NIfTI ({_one_line(exc)})", path) from None
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise KidneysegError(f"expected a 3D image, got {array.ndim}D {array.shape}", path)
    check_finite(array, path)
    return Volume(np.asarray(array), image.affine, source=str(path), frames=NiftiFrames.of(image.header))


def _one_line(exc: Exception) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def read_dicom_series(folder: Path, series_uid: str | None) -> Volume:
    """A DICOM series of `folder` as a `Volume` (use `read_volume`, which checks the path first)."""
    import SimpleITK as sitk

    from kidneyseg.io.dicom import (
        check_series,
        check_unlisted_files,
        choose_series,
        itk_quiet,
        list_dicom_series,
    )

    series = list_dicom_series(folder)
    if not series:
        raise KidneysegError("no DICOM series found in this folder", folder)
    check_unlisted_files(folder, {f for files in series.values() for f in files})
    files = series[choose_series(series, series_uid, folder)]
    check_series(files, folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(files))
    try:
        with itk_quiet():
            image = reader.Execute()
    except RuntimeError as exc:
        raise KidneysegError(
            f"cannot read the DICOM series ({str(exc).strip().splitlines()[-1]})", folder
        ) from None
    if image.GetDimension() != 3 or image.GetSize()[2] < 2:
        raise KidneysegError(f"expected a 3D series of several slices, got size {image.GetSize()}", folder)
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (z, y, x) -> (i, j, k)
    if array.dtype.kind == "f" and np.all(array == np.round(array)) and np.abs(array).max() < 32768:
        array = array.astype(np.int16)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)
    affine_lps[:3, 3] = image.GetOrigin()
    return Volume(np.ascontiguousarray(array), LPS_TO_RAS @ affine_lps, source=str(folder), dicom_files=files)


def write_volume(path: str | os.PathLike[str], volume: Volume, dtype: np.dtype | type | None = None) -> Path:
    """Write `volume` as NIfTI (atomically) with its exact affine; returns the path."""
    import nibabel as nib

    path = Path(path)
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise KidneysegError("output must end in .nii or .nii.gz", path)
    image = nifti_image(
        volume.array if dtype is None else volume.array.astype(dtype, copy=False),
        volume.affine,
        volume.frames,
    )
    return write_atomic(path, lambda tmp: nib.save(image, str(tmp)))


def nifti_image(array: np.ndarray, affine: np.ndarray, frames: NiftiFrames | None = None):
    """A `nibabel.Nifti1Image` of `array` with `affine` as qform and sform (code 1, scanner), in
    mm; with the `frames` of the NIfTI file whose grid it is on, with its qform and sform and their
    codes instead, as long as they state `affine` (not for a crop or another grid), and 4D with
    one volume where that file is.

    The image holds a Fortran-ordered copy (`fortran_ordered`): NIfTI stores voxels in that order,
    so nibabel writes it slice by slice instead of gathering each slice across the whole array
    (docs/prediction.md, "What keeps the memory down").
    """
    import nibabel as nib

    data = fortran_ordered(array)
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm", "sec")
    if frames is not None:
        image.set_qform(frames.qform, code=frames.qform_code)
        image.set_sform(frames.sform, code=frames.sform_code)
        if np.allclose(image.header.get_best_affine(), affine, atol=1e-4):
            return nib.Nifti1Image(data[..., None], None, image.header) if frames.one_volume_4d else image
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return image


FORTRAN_TILE = 8
"""Edge of the tiles `fortran_ordered` copies: each tile's rows lie on few memory pages."""


def fortran_ordered(array: np.ndarray) -> np.ndarray:
    """`array` in Fortran order, copied tile by tile over its first and last axes.

    `np.asfortranarray` of a C-ordered array reads each output column across the whole array, a
    memory page per voxel; in tiles the pages are reused (benchmarks/nifti_write.py).
    """
    if array.ndim < 2 or array.flags.f_contiguous:
        return np.asfortranarray(array)
    reverse = tuple(range(array.ndim))[::-1]
    out = np.empty(array.shape[::-1], array.dtype)
    for i in range(0, array.shape[0], FORTRAN_TILE):
        for k in range(0, array.shape[-1], FORTRAN_TILE):
            tile = array[i : i + FORTRAN_TILE, ..., k : k + FORTRAN_TILE]
            out[k : k + FORTRAN_TILE, ..., i : i + FORTRAN_TILE] = tile.transpose(reverse)
    return out.transpose(reverse)


def write_labels(path: str | os.PathLike[str], labels: np.ndarray, like: Volume) -> Path:
    """Write a label map as uint8 NIfTI with exactly the geometry of the CT `like`."""
    if labels.shape != like.shape:
        raise KidneysegError(f"label map shape {labels.shape} differs from the CT's {like.shape}", path)
    return write_volume(path, like.with_array(labels.astype(np.uint8, copy=False)))
