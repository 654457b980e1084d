"""DICOM RT Structure Set (RTSTRUCT) output, the format treatment planning systems import,
written with rt-utils (https://github.com/qurit/rt-utils; highdicom writes no RTSTRUCT).

Each foreground class with any voxel becomes one ROI named after the class, in its display
colour, with one closed planar contour per connected region and slice: the outlines through the
centres of the boundary voxels (OpenCV's `findContours`), so a contour lies within one voxel of
the label map's edge.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kidneyseg import __version__
from kidneyseg.errors import KidneysegError
from kidneyseg.io.atomic import write_atomic
from kidneyseg.io.volume import Volume
from kidneyseg.labels import LabelMap

INSTALL_HINT = "RTSTRUCT output needs rt-utils: pip install rt-utils"


def check_rtstruct_available() -> None:
    """Raise a one-line error if rt-utils (and its OpenCV) cannot be imported."""
    try:
        import rt_utils  # noqa: F401
    except ImportError as exc:
        raise KidneysegError(f"{INSTALL_HINT} ({exc})") from None


def write_rtstruct(path: str | os.PathLike[str], labels: Volume, label_map: LabelMap, sources: list) -> Path:
    """Write `labels` (on the grid of the DICOM series `sources`) as an RTSTRUCT file.

    Args:
        path: the `.dcm` file to write (atomically).
        labels: the label map, its slices in the order of `sources`.
        label_map: its classes; each foreground class present becomes one ROI.
        sources: the series' datasets in array order, with their UIDs set
            (`dicom_source.read_sources`).

    Raises:
        KidneysegError: rt-utils is not installed, or `sources` does not match `labels`.
    """
    check_rtstruct_available()
    from rt_utils import RTStruct, ds_helper, image_helper

    if len(sources) != labels.shape[2]:
        raise KidneysegError(f"{len(sources)} DICOM files for {labels.shape[2]} slices", labels.source)
    # rt-utils numbers slices by position along the slice normal; its masks are (row, column, slice).
    order = sorted(range(len(sources)), key=lambda i: float(image_helper.get_slice_position(sources[i])))
    series = [sources[i] for i in order]
    rtstruct = RTStruct(series, ds_helper.create_rtstruct_dataset(series))
    rtstruct.ds.Manufacturer = "kidneyseg"
    rtstruct.ds.ManufacturerModelName = label_map.name
    rtstruct.ds.SoftwareVersions = __version__
    rtstruct.ds.InstitutionName = ""
    rtstruct.ds.StructureSetLabel = "kidneyseg"
    rtstruct.set_series_description("kidneyseg")
    array = np.transpose(labels.array, (1, 0, 2))[:, :, order]
    for cls in label_map.foreground:
        mask = array == cls.value
        if mask.any():
            rtstruct.add_roi(mask=mask, color=list(cls.color), name=cls.name, approximate_contours=False)
    return write_atomic(path, lambda tmp: rtstruct.ds.save_as(str(tmp)))
