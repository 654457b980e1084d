"""The source CT series a DICOM SEG or RTSTRUCT references: its UIDs, checked before predicting.

A SEG or RTSTRUCT is placed on its CT by the study, series, SOP instance and frame of reference
UIDs of the source slices. Anonymised series often lack some of them; `kidneyseg predict`
refuses them before computing anything, or with `--new-uids` gives them UIDs derived from the
contents of the series' files (the same on every run; another series, even with the same file
names, gets others) and writes the CT again with those UIDs beside the outputs, so that viewers
load the CT and its segmentation together.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from kidneyseg.errors import KidneysegError

REFERENCED_UIDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "FrameOfReferenceUID",
)
"""The UIDs of a source slice that a SEG or RTSTRUCT references."""


def _fill_from_meta(ds) -> None:
    """Take SOP class/instance UIDs from the file meta when the dataset leaves them empty (some
    anonymisers do)."""
    meta = getattr(ds, "file_meta", None)
    for key, meta_key in (
        ("SOPClassUID", "MediaStorageSOPClassUID"),
        ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
    ):
        if not ds.get(key) and meta is not None and meta.get(meta_key):
            setattr(ds, key, meta.get(meta_key))


def missing_uids(files: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The referenced UIDs the series' first file lacks (its header only is read)."""
    import pydicom

    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    _fill_from_meta(ds)
    return [key for key in REFERENCED_UIDS if not ds.get(key)]


def refuse_missing_uids(
    files: Sequence[str | os.PathLike[str]], where: str | os.PathLike[str], what: str
) -> None:
    """Raise, naming `where`, if the series lacks a UID that `what` (e.g. "a DICOM SEG") references."""
    missing = missing_uids(files)
    if missing:
        raise KidneysegError(_missing_message(missing, what), where)


def _missing_message(missing: list[str], what: str) -> str:
    return (
        f"the DICOM series has no {', '.join(missing)} (anonymised?), which {what} must reference; "
        "add --new-uids to give it new UIDs (the CT is then written again with them), or drop the "
        "DICOM output"
    )


EMPTY_WHEN_ABSENT = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
"""Type 2 attributes (required, may be empty) of the Patient and General Study modules, which a
SEG or RTSTRUCT copies from its series: anonymisation often removes them, and the writers then
fail; they are given empty values, as DICOM allows."""


def read_sources(files: Sequence[str | os.PathLike[str]], where: str | None, new_uids: bool = False) -> list:
    """The series' datasets with every referenced UID set, and `EMPTY_WHEN_ABSENT` attributes.

    Args:
        files: the series' files.
        where: named in errors.
        new_uids: give missing UIDs values derived from the files' contents (stable across
            runs, distinct between series: anonymised series often share file names)
            instead of refusing the series.

    Raises:
        KidneysegError: a file cannot be read, or a UID is missing and `new_uids` is off.
    """
    import pydicom
    from pydicom.uid import generate_uid

    try:
        sources = [pydicom.dcmread(f) for f in files]
    except Exception as exc:  # pydicom raises many types for damaged files
        raise KidneysegError(f"cannot read the source DICOM files ({type(exc).__name__})", where) from None
    digests = [hashlib.sha256(Path(f).read_bytes()).hexdigest() if new_uids else "" for f in files]
    shared = {}
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        shared[key] = generate_uid(entropy_srcs=["kidneyseg", key, *digests])
    for digest, ds in zip(digests, sources, strict=True):
        _fill_from_meta(ds)
        for key in EMPTY_WHEN_ABSENT:
            if key not in ds:
                setattr(ds, key, "")
        missing = [key for key in REFERENCED_UIDS if not ds.get(key)]
        if missing and not new_uids:
            raise KidneysegError(_missing_message(missing, "a DICOM SEG or RTSTRUCT"), where)
        for key in missing:
            if key == "SOPClassUID":
                ds.SOPClassUID = pydicom.uid.CTImageStorage
            elif key == "SOPInstanceUID":
                ds.SOPInstanceUID = generate_uid(
                    entropy_srcs=["kidneyseg", shared["SeriesInstanceUID"], digest]
                )
            else:
                setattr(ds, key, shared[key])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    return sources


def write_series(folder: str | os.PathLike[str], sources: list) -> Path:
    """Write the datasets as a DICOM series folder (built under a temporary name, then renamed)."""
    folder = Path(folder)
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        for i, ds in enumerate(sources):
            ds.save_as(partial / f"{i:05d}.dcm")
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return folder
