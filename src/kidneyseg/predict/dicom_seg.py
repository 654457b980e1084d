"""DICOM Segmentation (SEG) output referencing the source CT series, written with highdicom.

A predicted label map on the grid of a DICOM CT series becomes one SEG instance with a
segment per foreground class (kidney, tumor, cyst, coded with SNOMED CT), one frame per
source slice that holds any foreground, and references to the source series, so PACS and
viewers (3D Slicer, OHIF) place it on the CT.
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

# SNOMED CT codes for the KiTS classes: (category code, category meaning, type code, type meaning).
_CODES = {
    "kidney": ("91723000", "Anatomical Structure", "64033007", "Kidney"),
    "tumor": ("49755003", "Morphologically Altered Structure", "108369006", "Neoplasm"),
    "cyst": ("49755003", "Morphologically Altered Structure", "367643001", "Cyst"),
}


def _segment_descriptions(label_map: LabelMap) -> list:
    import highdicom as hd

    algorithm = hd.AlgorithmIdentificationSequence(
        name="kidneyseg",
        version=__version__,
        family=hd.sr.CodedConcept("123109", "DCM", "Artificial Intelligence"),
    )
    out = []
    for cls in label_map.foreground:
        category, category_meaning, code, meaning = _CODES.get(
            cls.name, ("91723000", "Anatomical Structure", "85756007", "Tissue")
        )
        out.append(
            hd.seg.SegmentDescription(
                segment_number=cls.value,
                segment_label=cls.name,
                segmented_property_category=hd.sr.CodedConcept(category, "SCT", category_meaning),
                segmented_property_type=hd.sr.CodedConcept(code, "SCT", meaning),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
            )
        )
    return out


def _complete_uids(ds, where: str | None) -> None:
    """Take SOP class/instance UIDs from the file meta when the dataset leaves them empty (some
    anonymisers do); refuse a series without study/series UIDs, which a SEG must reference."""
    meta = getattr(ds, "file_meta", None)
    for key, meta_key in (
        ("SOPClassUID", "MediaStorageSOPClassUID"),
        ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
    ):
        if not ds.get(key) and meta is not None and meta.get(meta_key):
            setattr(ds, key, meta.get(meta_key))
    for key in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not ds.get(key):
            raise KidneysegError(
                f"the source DICOM files have no {key} (anonymised?), which a DICOM SEG must reference; "
                "write NIfTI output instead",
                where,
            )


def write_dicom_seg(
    path: str | os.PathLike[str], labels: Volume, label_map: LabelMap, series_description: str = "kidneyseg"
) -> Path:
    """Write `labels` (on the grid of a CT read from a DICOM series) as a DICOM SEG file.

    Args:
        path: the `.dcm` file to write (atomically).
        labels: the predicted label map; its `dicom_files` are the source series' slices in
            array order (as `read_volume` returns them for a DICOM folder).
        label_map: classes of the label map; each foreground class becomes one segment.
        series_description: SeriesDescription of the new SEG series.

    Raises:
        KidneysegError: the labels do not come from a DICOM series, or the source files
            cannot be read.
    """
    import highdicom as hd
    import pydicom

    path = Path(path)
    if not labels.dicom_files:
        raise KidneysegError("DICOM SEG output needs a DICOM CT series as input", labels.source)
    if len(labels.dicom_files) != labels.shape[2]:
        raise KidneysegError(
            f"{len(labels.dicom_files)} DICOM files for {labels.shape[2]} slices", labels.source
        )
    try:
        sources = [pydicom.dcmread(f) for f in labels.dicom_files]
    except Exception as exc:  # pydicom raises many types for damaged files
        raise KidneysegError(
            f"cannot read the source DICOM files ({type(exc).__name__})", labels.source
        ) from None
    for ds in sources:
        _complete_uids(ds, labels.source)
    # read_volume gives array[i, j, k] = column i, row j of slice k; SEG frames are (rows, columns).
    frames = np.ascontiguousarray(np.transpose(labels.array, (2, 1, 0)).astype(np.uint8))
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segment_descriptions(label_map),
        series_instance_uid=hd.UID(),
        series_number=int(getattr(sources[0], "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="kidneyseg",
        manufacturer_model_name=label_map.name,
        software_versions=__version__,
        device_serial_number="none",
        series_description=series_description,
    )
    return write_atomic(path, lambda tmp: seg.save_as(str(tmp)))
