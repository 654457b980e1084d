"""Checks made before and after reading a CT, so that bad input fails early with one clear line.

- `estimate_memory`: the peak memory a prediction will need, from the image header alone
  (shape, data type, spacing), checked against the memory available before any voxel is read.
- `check_spacing`: voxel sizes outside 0.05-50 mm are a broken header, not a CT.
- `check_orientation_given`: a NIfTI header without orientation is flagged.
- `check_body`: an image with nothing above -500 HU holds no body and is refused.
- `check_hounsfield` (in `check_hu`, which `content_warnings` applies for `predict` and `report`,
  and preprocessing, so training, for its refusals): a CT must
  be in Hounsfield units; images already normalised to [0, 1]
  or [-1, 1], or stored without the rescale intercept (no value below 0), are refused, and
  images without any air, or with a substantial share above +500 HU and less below -500 HU
  (inverted values), are flagged;
- `check_air_level` (also in `check_hu`): a CT whose air lies far below -1000 HU (values in
  tenths of HU) is refused;
- `content_warnings` also flags a CT whose spine lies in front of the body's centre: data rotated
  against the header's orientation (`kidneyseg.report.midline`).
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import numpy as np

from kidneyseg.config import PreprocessConfig
from kidneyseg.errors import KidneysegError
from kidneyseg.io.formats import ImageHeader
from kidneyseg.io.volume import Volume, check_finite
from kidneyseg.preprocess.spatial import resampled_shape

GIB = 1024**3

# Bytes per voxel, calibrated on the peak resident memory of `kidneyseg predict` measured by
# benchmarks/predict_speed.py and benchmarks/predict_memory.py (see docs/prediction.md): per
# original voxel, besides the CT as read, the peak is the statistics row's measurement of a random
# network's labels (the labels and 15.6 bytes measured: masks, int32 component numbers, outline
# points; tests/test_report_measure.py) plus a margin, above post-processing's 10 bytes; per
# preprocessed voxel the image, the blended scores and MONAI's weight map, their division and the
# inverse's chunks.
PER_ORIGINAL_VOXEL = 17.0
PER_PREPROCESSED_VOXEL_AND_CLASS = 12.0
PER_PREPROCESSED_VOXEL = 16.0
FIXED_OVERHEAD = 2.0 * GIB  # interpreter, torch, MONAI (0.4 GB) and a 2-window pass of SCA-UNet (1.6 GB)


class Doubt(NamedTuple):
    """A warning about a CT as read: a code (as in `statistics.csv`'s warnings column and the
    report's warnings) and a message for people, naming the image."""

    code: str
    message: str


SPACING_MM = (0.05, 50.0)
"""Voxel sizes a CT can have; beyond them the header's units are wrong (metres, microns) or broken."""


def check_spacing(spacing: tuple[float, float, float], path: str | os.PathLike[str] | None = None) -> None:
    """Refuse voxel sizes no CT has: resampled to the network's grid, the image would be a few
    voxels (silent nonsense) or billions (an out-of-memory refusal that hides the cause).

    Raises:
        KidneysegError: a voxel size is outside `SPACING_MM`.
    """
    low, high = SPACING_MM
    if not all(low <= s <= high for s in spacing):
        shown = ", ".join(f"{s:g}" for s in spacing)
        raise KidneysegError(
            f"voxel spacing ({shown}) mm is not that of a CT (each between {low:g} and {high:g} mm); "
            "the header's units or voxel sizes are wrong: fix the pixdim (or the DICOM spacing)",
            path,
        )


def estimate_memory(header: ImageHeader, cfg: PreprocessConfig, num_classes: int) -> int:
    """Peak bytes a prediction of this image will need (an upper bound: the body crop, which
    usually removes a third of the grid, is not assumed)."""
    original = math.prod(header.shape)
    preprocessed = math.prod(resampled_shape(header.shape, header.spacing, cfg.spacing))
    return int(
        original * (header.itemsize + PER_ORIGINAL_VOXEL)
        + preprocessed * (PER_PREPROCESSED_VOXEL + PER_PREPROCESSED_VOXEL_AND_CLASS * num_classes)
        + FIXED_OVERHEAD
    )


def available_memory() -> int:
    """Bytes of memory the system can still give this process (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def check_memory(path: str | os.PathLike[str], needed: int, available: int | None = None) -> None:
    """Raise before reading the image if the estimated need exceeds the available memory."""
    available = available_memory() if available is None else available
    if needed > available:
        raise KidneysegError(
            f"predicting this image needs about {needed / GIB:.1f} GB of memory but only "
            f"{available / GIB:.1f} GB is available; crop the CT or run on a larger machine",
            path,
        )


def check_orientation_given(ct: Volume) -> Doubt | None:
    """A warning when the NIfTI header `ct` was read from gives no orientation (qform and sform
    codes both 0, `Volume.frames`): readers then assume one, so right and left may be swapped."""
    if ct.frames is None or ct.frames.qform_code or ct.frames.sform_code:
        return None
    return Doubt(
        "no_orientation",
        f"{ct.source}: the header gives no orientation (qform and sform codes 0); it was read as "
        "nibabel's default, so right and left may be swapped: check the labels' sides",
    )


def check_frames_agree(ct: Volume) -> Doubt | None:
    """A warning when the NIfTI header `ct` was read from states two grids: a qform and an sform
    (both codes set) that place some corner of the image more than half its smallest voxel
    apart. kidneyseg, as nibabel, reads the sform; other tools may read the qform (ITK 5.4 does
    unless the sform's code is 1, scanner)."""
    frames = ct.frames
    if frames is None or frames.qform is None or frames.sform is None:
        return None
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in ct.shape], [1], indexing="ij")).reshape(4, -1)
    apart = float(np.linalg.norm((frames.qform - frames.sform)[:3] @ corners, axis=0).max())
    if apart <= min(ct.spacing) / 2:
        return None
    return Doubt(
        "frames_disagree",
        f"{ct.source}: the header's qform and sform place the image up to {apart:.1f} mm apart; "
        "kidneyseg (as nibabel) reads the sform, other tools may read the qform (ITK-based ones, e.g. "
        "SimpleITK, 3D Slicer, nnU-Net, unless the sform's code is 1); the label map keeps both, the "
        "report's sides and coordinates follow the sform: check which of the two is right",
    )


BODY_HU = -500.0
"""A CT with nothing denser than this holds no body: only air (or nothing at all) to segment."""


def check_body(array: np.ndarray, path: str | None = None) -> None:
    """Refuse an image without a body: with nothing above -500 HU any label would be nonsense.

    Raises:
        KidneysegError: the image holds values that are not real numbers, NaN or infinite
            values, or its maximum is at most -500 HU (e.g. all air, or constant).
    """
    if array.dtype.kind not in "biuf":
        raise KidneysegError(f"the image holds {array.dtype} values; a CT holds real numbers", path)
    check_finite(array, path)
    high = float(array.max())
    if high <= BODY_HU:
        raise KidneysegError(
            f"no body in the image: nothing above {BODY_HU:g} HU (maximum {high:g}); nothing to segment",
            path,
        )


GO_ON = "pass --no-hu-check to go on anyway"
"""How a refusal of `check_hounsfield` and `check_air_level` ends for `predict` and `report`."""
MAX_HU = 50000.0
"""Above this no CT is in Hounsfield units: 12-bit CT ends at 3071 HU, extended-range metal
reconstructions at about 30000 HU."""
MIN_HU = -50000.0
"""Below this no CT is in Hounsfield units: air is -1000 HU, and padding outside the field of
view is at most -32768 (the lowest 16-bit value)."""


SWAPPED_SHARE = 0.05
"""Share of an image above +500 HU that, with less of it below -500 HU, suggests inverted values.
Inverted, the real and phantom CTs here have 37-65 % of their voxels above +500 HU (the air);
as they are, 0.3-7 % (bone, with more air), and a crop around a kidney without air 0.5 %."""


def check_hounsfield(array: np.ndarray, path: str | None = None, remedy: str = GO_ON) -> Doubt | None:
    """Refuse images that are clearly not CT in Hounsfield units, each refusal ending in `remedy`;
    return a warning for doubtful ones.

    Raises:
        KidneysegError: the values lie within [-10, 10] (already normalised), none is below
            0 (no air or fat: raw stored values without the rescale intercept, or not CT), or
            some exceed `MAX_HU` or lie below `MIN_HU` (scaled values, or a padding value far
            below any CT's).

    Returns:
        A warning when the image holds no air (`no_air`: nothing below -500 HU) or when at least
        `SWAPPED_SHARE` of it is above +500 HU and more of it than below -500 HU (`inverted_hu`:
        air and bone swapped), else None.
    """
    low, high = float(array.min()), float(array.max())
    if high > MAX_HU:
        raise KidneysegError(
            f"values up to {high:g}: no CT in Hounsfield units goes above {MAX_HU:g} (scaled or not "
            f"CT); {remedy}",
            path,
        )
    if low < MIN_HU:
        raise KidneysegError(
            f"values down to {low:g}: no CT in Hounsfield units goes below {MIN_HU:g} (scaled, not CT, "
            "or padding outside the field of view stored as a huge negative number); "
            f"{remedy}",
            path,
        )
    if low >= -10.0 and high <= 10.0:
        raise KidneysegError(
            f"values lie in [{low:g}, {high:g}]: the image looks already normalised, but kidneyseg "
            f"expects CT in Hounsfield units (air -1000, water 0); {remedy}",
            path,
        )
    if low >= 0.0:
        raise KidneysegError(
            f"no value below 0 (range [{low:g}, {high:g}]): this is not CT in Hounsfield units "
            f"(raw stored values without the rescale intercept, or another modality); {remedy}",
            path,
        )
    if low > -500.0:
        return Doubt(
            "no_air",
            f"{path or 'image'}: no air in the image (minimum {low:g} HU); check that it is CT in "
            "Hounsfield units",
        )
    dense, air = (float(np.count_nonzero(m)) / array.size for m in (array > 500.0, array < -500.0))
    if dense >= SWAPPED_SHARE and dense > air:
        return Doubt(
            "inverted_hu",
            f"{path or 'image'}: more of the image is above +500 HU ({dense:.0%}) than below -500 HU "
            f"({air:.0%}), as if air and bone were swapped; check that it is CT in Hounsfield units",
        )
    return None


AIR_BELOW_HU = -1500.0
"""Air reads -1000 HU (lungs -900 to -800); a CT whose air lies below this is scaled (tenths of
HU read as HU: air at -10240). Pixel padding (-2000, -3024, -32768) can lie lower and is left out."""


def check_air_level(array: np.ndarray, path: str | None = None, remedy: str = GO_ON) -> None:
    """Refuse a CT whose air lies far below -1000 HU, the refusal ending in `remedy`: scaled values
    (HU x 10) put every tissue at the wrong density. Air is the median of every 8th voxel below
    -500 HU, leaving out pixel padding (one value below `AIR_BELOW_HU` holding more than 5 % of
    them) and the two sampled voxels next to it (a resampled CT smears the padding into the body
    over a few voxels); fewer than 1000 such voxels decide nothing.

    Raises:
        KidneysegError: the air lies below `AIR_BELOW_HU`.
    """
    from scipy import ndimage

    sample = array[::2, ::2, ::2]
    below = sample < -500.0
    values, counts = np.unique(sample[below], return_counts=True)
    padding = values[(values < AIR_BELOW_HU) & (counts > 0.05 * np.count_nonzero(below))]
    if padding.size:  # one or two values: a comparison each is far faster than np.isin
        padded = np.logical_or.reduce([sample == value for value in padding])
        below &= ~ndimage.binary_dilation(padded, iterations=2)
    air = sample[below]
    if air.size < 1000 or (level := float(np.median(air))) >= AIR_BELOW_HU:
        return
    raise KidneysegError(
        f"the air in the image lies at about {level:.0f}, where CT in Hounsfield units has -1000: the "
        f"values look scaled (e.g. tenths of HU); {remedy}",
        path,
    )


def check_hu(array: np.ndarray, path: str | None = None, remedy: str = GO_ON) -> Doubt | None:
    """Every refusal of an image as not CT in Hounsfield units, each ending in `remedy`
    (`check_hounsfield`, then `check_air_level`); returns `check_hounsfield`'s warning."""
    doubt = check_hounsfield(array, path, remedy)
    check_air_level(array, path, remedy)
    return doubt


def content_warnings(ct: Volume, hu_check: bool = True) -> list[Doubt]:
    """Refuse an image without a body or (with `hu_check`) clearly not CT in HU; return the
    warnings when it looks doubtful (`check_body`, `check_hu`) or its anatomy does not fit the
    header's orientation (`orientation_mismatch`, `kidneyseg.report.midline.orientation_warning`)."""
    from kidneyseg.report.midline import orientation_warning

    check_body(ct.array, ct.source)
    doubt = check_hu(ct.array, ct.source) if hu_check else None
    misfit = orientation_warning(ct)
    return [d for d in (doubt, misfit and Doubt("orientation_mismatch", misfit)) if d]
