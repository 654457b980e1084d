"""Where the report's inputs come from: the identifiers of a DICOM series, when present."""

from __future__ import annotations

DICOM_FIELDS = (
    ("PatientID", "patient_id"),
    ("StudyDate", "study_date"),
    ("StudyDescription", "study_description"),
    ("SeriesDescription", "series_description"),
    ("StudyInstanceUID", "study_instance_uid"),
    ("SeriesInstanceUID", "series_instance_uid"),
)


def dicom_identifiers(files: tuple[str, ...]) -> dict | None:
    """Patient ID, study date, study/series description and UIDs of a DICOM series, read from
    its first file's header; the attributes it lacks (anonymised series) are left out.
    None when the input is not DICOM."""
    if not files:
        return None
    import pydicom

    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    found = {}
    for keyword, key in DICOM_FIELDS:
        value = getattr(header, keyword, None)
        if value not in (None, ""):
            found[key] = str(value)
    return found
