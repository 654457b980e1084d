"""DICOM Segmentation (SEG) output referencing the source CT series, written with highdicom.

A predicted label map on the grid of a DICOM CT series becomes one SEG instance with a
segment per foreground class (kidney, tumor, cyst, coded with SNOMED CT, each with the kidney as
its anatomic region and the class colour of `kidneyseg.labels` as its display colour), one frame per
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
from kidneyseg.predict.dicom_source import read_sources

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
    kidney = hd.sr.CodedConcept("64033007", "SCT", "Kidney")
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
                anatomic_regions=[kidney],
                display_color=hd.color.CIELabColor.from_rgb(*cls.color),
            )
        )
    return out


def write_dicom_seg(
    path: str | os.PathLike[str],
    labels: Volume,
    label_map: LabelMap,
    sources: list | None = None,
    series_description: str = "kidneyseg",
) -> Path:
    """Write `labels` (on the grid of a CT read from a DICOM series) as a DICOM SEG file.

    Args:
        path: the `.dcm` file to write (atomically).
        labels: the predicted label map; its `dicom_files` are the source series' slices in
            array order (as `read_volume` returns them for a DICOM folder).
        label_map: classes of the label map; each foreground class becomes one segment.
        sources: the source series' datasets in array order with their UIDs set (see
            `dicom_source.read_sources`); default: read from `labels.dicom_files`.
        series_description: SeriesDescription of the new SEG series.

    Raises:
        KidneysegError: the labels do not come from a DICOM series, or the source files
            cannot be read or lack a UID the SEG references.
    """
    import highdicom as hd

    path = Path(path)
    if not labels.dicom_files:
        raise KidneysegError("DICOM SEG output needs a DICOM CT series as input", labels.source)
    if len(labels.dicom_files) != labels.shape[2]:
        raise KidneysegError(
            f"{len(labels.dicom_files)} DICOM files for {labels.shape[2]} slices", labels.source
        )
    if sources is None:
        sources = read_sources(labels.dicom_files, labels.source)
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
        omit_empty_frames=bool(frames.any()),  # an empty map: all frames, without highdicom's notice
    )
    return write_atomic(path, lambda tmp: seg.save_as(str(tmp)))
