"""Where the CTs of a prediction come from: a CT file (NIfTI), a DICOM series folder, or a folder
of cases (KiTS19/21/23 layout, `images/` + `labels/`, a flat folder of NIfTI files and/or one
DICOM series per sub-folder), each a `CaseInput`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kidneyseg.errors import KidneysegError, check_utf8_name
from kidneyseg.io.dicom import choose_series, list_dicom_series
from kidneyseg.io.formats import case_id_of, files_by_case_id


@dataclass(frozen=True)
class CaseInput:
    """One CT to predict: an id (names its outputs), its file or DICOM folder, a series UID; or,
    for a case of a folder that cannot be read as one CT, `problem` (the case fails with it, and
    the other cases go on)."""

    case_id: str
    path: Path
    series_uid: str | None = None
    dicom_files: tuple[str, ...] = ()
    problem: str | None = None


def _failing(case_id: str, path: Path, problem: str) -> CaseInput:
    """A case that fails with `problem`; its id shows the bytes of a name that is not UTF-8 escaped."""
    return CaseInput(os.fsencode(case_id).decode("utf-8", "backslashreplace"), path, problem=problem)


def _named(case: CaseInput) -> CaseInput:
    """The case, or one failing with its `problem` when its file's name is not valid UTF-8."""
    try:
        check_utf8_name(case.path)
    except KidneysegError as exc:
        return _failing(case.case_id, case.path, str(exc))
    return case


def _dicom_case(folder: Path, series_uid: str | None, among: bool = False) -> CaseInput | None:
    """The case of a DICOM folder: its only series, or the one `series_uid` names (`among`: if
    the folder holds it, else its only series); None if the folder holds no series.

    Raises:
        KidneysegError: the folder holds several series and none is named (`choose_series`).
    """
    series = list_dicom_series(folder)
    if not series:
        return None
    uid = choose_series(series, None if among and series_uid not in series else series_uid, folder)
    return CaseInput(case_id_of(folder), folder, uid, series[uid])


def _dicom_subfolders(folder: Path, series_uid: str | None) -> list[CaseInput]:
    """One case per sub-folder of `folder` holding DICOM series: its only series, or the one
    `series_uid` names; a sub-folder of several series none of which is named is a case with its
    `problem` (the series listed).

    Raises:
        KidneysegError: `series_uid` is given and no sub-folder holds it.
    """
    cases = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        try:
            case = _dicom_case(sub, series_uid, among=True)
        except KidneysegError as exc:
            case = _failing(case_id_of(sub), sub, str(exc))
        if case is not None:
            cases.append(case)
    if series_uid is not None and not any(c.series_uid == series_uid for c in cases):
        raise KidneysegError(f"no sub-folder holds the DICOM series {series_uid}", folder)
    return cases


def refuse_series_of_a_file(path: str | os.PathLike[str], series_uid: str | None, option: str) -> None:
    """A series UID chooses among the series of a DICOM folder: refuse one given for a file
    rather than ignore it (`option` is how the caller names it: `--series`, `series_uid`).

    Raises:
        KidneysegError: `series_uid` is given and `path` is a file.
    """
    if series_uid is not None and Path(path).is_file():
        raise KidneysegError(f"{option} chooses a series of a DICOM folder, but the input is a file", path)


def find_inputs(path: str | os.PathLike[str], series_uid: str | None = None) -> tuple[list[CaseInput], bool]:
    """The cases an input path holds, and whether it is a folder of cases (folder mode).

    Raises:
        KidneysegError: the path does not exist, holds no CT, holds two files of one case or
            cases in two dataset layouts, is a DICOM folder of several series and `series_uid`
            does not choose one, or is a folder of cases none of which holds `series_uid`
            (a case folder of several series, none chosen, is a case with its `problem`).
    """
    from kidneyseg.data.cases import TwoLayoutsError, discover

    path = Path(path)
    if not path.exists():
        raise KidneysegError("no such file or folder", path)
    check_utf8_name(path)
    if path.is_file():
        return [CaseInput(case_id_of(path), path)], False
    try:
        return [_named(CaseInput(c.case_id, c.image)) for c in discover(path).cases], True
    except TwoLayoutsError:
        raise
    except KidneysegError:  # not a dataset layout: a folder of files or DICOM series, tried below
        pass
    flat = files_by_case_id(path)  # refuses two files of one case
    if flat:
        series = _dicom_subfolders(path, series_uid)
        both = sorted(set(flat) & {c.case_id for c in series})
        if both:
            raise KidneysegError(f"holds both a NIfTI file and a DICOM folder of case(s) {both}", path)
        return [_named(CaseInput(name, image)) for name, image in flat.items()] + series, True
    single = _dicom_case(path, series_uid)
    if single is not None:
        return [single], False
    cases = _dicom_subfolders(path, series_uid)
    if cases:
        return cases, True
    raise KidneysegError(
        "no CT found: expected a NIfTI file, a DICOM series folder, or a folder of cases "
        "(KiTS layout, images/, NIfTI files, or DICOM series sub-folders)",
        path,
    )
