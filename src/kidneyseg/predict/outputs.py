"""What `kidneyseg predict` writes for one case, and how (see `kidneyseg.predict.runner`).

A case's files appear all or none (`write_case`): they are written into a hidden folder beside
them, then moved into place, the label map last (it marks the case as finished); a file of an
earlier run is moved aside first and put back should any move fail, so a failed re-run leaves the
earlier run's outputs as they were, consistent with each other.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg.errors import KidneysegError, some_names
from kidneyseg.io.atomic import write_atomic
from kidneyseg.io.volume import NIFTI_SUFFIXES, Volume, load_nifti, nifti_image, nifti_stem
from kidneyseg.labels import LABEL_MAPS, LabelMap, split_sides
from kidneyseg.predict.inputs import CaseInput
from kidneyseg.predict.predictor import Prediction, PredictSettings


@dataclass(frozen=True)
class OutputOptions:
    """What to write besides the label map, and how to treat finished cases and odd images."""

    dicom_seg: bool = False
    dicom_rtstruct: bool = False
    new_uids: bool = False
    report: bool = False
    split_sides: bool = False
    per_class: bool = False
    overwrite: bool = False
    hu_check: bool = True

    @property
    def dicom(self) -> bool:
        return self.dicom_seg or self.dicom_rtstruct


PROBABILITIES = "probabilities"


def side_name(name: str, kind: str) -> str:
    """The name of a file written beside the label map `name`: `<name>_<class>` (a `--per-class`
    mask) or `<name>_probabilities`."""
    return f"{name}_{kind}"


def side_files(files: dict[str, Path]) -> set[str]:
    """The names among `files` (name -> file) of files predict wrote beside another name's label
    map, not cases: a `--per-class` mask of any class of any label map with or without sides
    (`is_class_mask`), or the probabilities (`is_probabilities`). Each is told by its header, so
    a case only named like one (`a_kidney` beside `a`) stays a case."""
    from kidneyseg.predict.label_files import is_class_mask

    maps = [m for base in LABEL_MAPS.values() for m in (base, split_sides(base))]
    classes = {c.name: c for m in maps for c in m.foreground}
    written = {PROBABILITIES: is_probabilities} | {
        k: partial(is_class_mask, label_class=c) for k, c in classes.items()
    }
    return {
        side_name(n, kind)
        for n in files
        for kind, wrote in written.items()
        if side_name(n, kind) in files and wrote(files[side_name(n, kind)])
    }


def without_side_files(files: dict[str, Path]) -> tuple[dict[str, Path], list[str]]:
    """The cases of a flat folder of label maps (`files`: name -> file), as `evaluate` and
    `report` read `predict`'s output folder: every file but predict's side files (`side_files`);
    and the file names of those left out, sorted, for `side_files_note`."""
    sides = side_files(files)
    return {n: path for n, path in files.items() if n not in sides}, sorted(files[n].name for n in sides)


def side_files_note(folder: Path, left_out: list[str]) -> str:
    """The line naming the side files `without_side_files` left out of `folder`'s cases."""
    return (
        f"{folder}: {len(left_out)} mask/probability file(s) predict wrote left out: {some_names(left_out)}"
    )


def output_label_map(label_map: LabelMap, options: OutputOptions) -> LabelMap:
    """The classes of the written label files (split into sides with `split_sides`)."""
    return split_sides(label_map) if options.split_sides else label_map


def case_outputs(
    out_dir: Path,
    name: str,
    settings: PredictSettings,
    options: OutputOptions,
    label_map: LabelMap,
    suffix: str = ".nii.gz",
) -> dict[str, Path]:
    """The files a case writes, named after `name`; `label_map` is the written one
    (`output_label_map`)."""
    outputs = {"labels": out_dir / f"{name}{suffix}"}
    if options.per_class:
        outputs |= {
            f"mask_{c.name}": out_dir / f"{side_name(name, c.name)}{suffix}" for c in label_map.foreground
        }
    if settings.probabilities:
        outputs[PROBABILITIES] = out_dir / f"{side_name(name, PROBABILITIES)}.nii.gz"
    if options.dicom_seg:
        outputs["dicom_seg"] = out_dir / f"{name}_seg.dcm"
    if options.dicom_rtstruct:
        outputs["dicom_rtstruct"] = out_dir / f"{name}_rtstruct.dcm"
    if options.dicom and options.new_uids:
        outputs["dicom_ct"] = out_dir / f"{name}_ct"
    if options.report:
        from kidneyseg.report.render import report_files

        names = ("report", "report_html", "report_preview")
        outputs |= dict(zip(names, report_files(out_dir, name), strict=True))
    return outputs


def check_dicom_outputs(cases: list[CaseInput], options: OutputOptions, where: Any) -> None:
    """Refuse DICOM outputs the input cannot give, before anything is computed."""
    if options.new_uids and not options.dicom:
        raise KidneysegError("--new-uids is for DICOM outputs: add --dicom-seg or --dicom-rtstruct")
    if not options.dicom:
        return
    from kidneyseg.predict.dicom_rtstruct import check_rtstruct_available
    from kidneyseg.predict.dicom_source import refuse_missing_uids

    if not any(c.dicom_files for c in cases):
        raise KidneysegError("--dicom-seg and --dicom-rtstruct need DICOM input", where)
    if options.dicom_rtstruct:
        check_rtstruct_available()
    if not options.new_uids:
        what = "a DICOM SEG" if options.dicom_seg else "an RTSTRUCT"
        for case in cases:
            if case.dicom_files:
                refuse_missing_uids(case.dicom_files, case.path, what)


def write_probabilities(path: Path, prediction: Prediction) -> Path:
    """Class probabilities as a 4D NIfTI (x, y, z, class), uint8 scaled by 1/255, network grid."""
    import nibabel as nib

    probs = np.moveaxis(prediction.probabilities, 0, -1)
    quantised = np.rint(np.clip(probs, 0.0, 1.0) * 255.0).astype(np.uint8)
    image = nifti_image(quantised, prediction.probabilities_affine)
    image.header.set_slope_inter(1.0 / 255.0, 0.0)
    return write_atomic(path, lambda tmp: nib.save(image, str(tmp)))


def is_probabilities(path: Path) -> bool:
    """Whether `path` holds probabilities as `write_probabilities` writes them: a 4D NIfTI of a
    volume per class (a case's label map is 3D, or 4D with one volume), told by its header."""
    if not str(path).endswith(NIFTI_SUFFIXES):
        return False
    try:
        shape = load_nifti(path).header.get_data_shape()
        return len(shape) == 4 and shape[3] > 1
    except KidneysegError:  # an unreadable header: not provably the probabilities
        return False


def refuse_overwriting_inputs(
    inputs: list[tuple[str, Path]], out_dir: Path, name: str | None, suffix: str
) -> None:
    """Refuse a run whose label map for a case (`name`, else the case id, + `suffix` in `out_dir`)
    is one of the input CTs: `-o` naming the CT itself, or a folder of NIfTI cases as its own
    output. Such a case would count as done, or be overwritten with `--overwrite`.

    Raises:
        KidneysegError: naming the CT that would be replaced.
    """
    cts = {path.resolve() for _, path in inputs}
    for case_id, _ in inputs:
        target = out_dir / f"{name or case_id}{suffix}"
        if target.resolve() in cts:
            raise KidneysegError(
                "the label map would replace this input CT; choose an --out outside the input", target
            )


def refuse_clashing_outputs(case_files: dict[str, dict[str, Path]]) -> None:
    """Refuse a run in which two cases would write the same file: with `--per-class`, a CT named
    `a_kidney` beside one named `a` (each run would overwrite the other's file).

    Args:
        case_files: each case id's outputs (`case_outputs`).

    Raises:
        KidneysegError: naming the file and both cases.
    """
    writer: dict[Path, str] = {}
    for case_id, outputs in case_files.items():
        for path in outputs.values():
            other = writer.setdefault(path, case_id)
            if other != case_id:
                raise KidneysegError(
                    f"cases {other} and {case_id} would both write this file; rename one of the inputs", path
                )


def _write_dicom(
    outputs: dict[str, Path], labels: Volume, label_map: LabelMap, options: OutputOptions
) -> None:
    from kidneyseg.predict.dicom_source import read_sources, write_series

    sources = read_sources(labels.dicom_files, labels.source, options.new_uids)
    if "dicom_ct" in outputs:
        write_series(outputs["dicom_ct"], sources)
    if "dicom_seg" in outputs:
        from kidneyseg.predict.dicom_seg import write_dicom_seg

        write_dicom_seg(outputs["dicom_seg"], labels, label_map, sources)
    if "dicom_rtstruct" in outputs:
        from kidneyseg.predict.dicom_rtstruct import write_rtstruct

        write_rtstruct(outputs["dicom_rtstruct"], labels, label_map, sources)


def write_case_files(
    outputs: dict[str, Path],
    ct: Volume,
    prediction: Prediction,
    label_map: LabelMap,
    options: OutputOptions,
    labels_path: Path,
) -> dict:
    """Write a case's outputs, the label map last; returns the case report (the one written with
    `--report`, naming `labels_path` as its labels, else measured for the statistics, or why not)."""
    from kidneyseg.predict.label_files import class_masks, split_labels_by_side, write_label_image
    from kidneyseg.report import measure, write_report
    from kidneyseg.report.checks import ReportOptions

    labels = prediction.labels
    name = nifti_stem(outputs["labels"])
    if PROBABILITIES in outputs:
        write_probabilities(outputs[PROBABILITIES], prediction)
    if options.dicom:
        _write_dicom(outputs, labels, label_map, options)
    facts = prediction.report_facts
    if "report" in outputs:
        # The report names the label file this case writes, not the CT the labels came from.
        named = replace(labels, source=str(labels_path), dicom_files=())
        paths = write_report(ct, named, outputs["report"].parent, label_map, name, **facts)
        report = json.loads(paths.json.read_text(encoding="utf-8"))
    else:
        try:
            # The statistics row shows no nephrometry and no lesion position, so none is derived
            # (the write stage of the KiTS-size case: docs/prediction.md).
            bare = ReportOptions(nephrometry=False)
            report = measure(ct, labels, label_map, name, bare, **facts)
        except KidneysegError as exc:  # the statistics say why; the labels are still written
            report = {"status": "not measured", "warnings": [{"code": "not_measured", "message": f"{exc}"}]}
    out_map = output_label_map(label_map, options)
    array = split_labels_by_side(labels.array, ct) if options.split_sides else labels.array
    if options.per_class:
        for class_name, (mask, mask_map) in class_masks(array, out_map).items():
            write_label_image(outputs[f"mask_{class_name}"], mask, ct, mask_map)
    write_label_image(outputs["labels"], array, ct, out_map)
    return report


STAGING = ".kidneyseg-staging-"
"""In a case's staging folder's name, `.<case><STAGING><random>`: the folder a run writes the
case's files into before it moves them into place (`write_case`)."""


def write_case(
    outputs: dict[str, Path], ct: Volume, prediction: Prediction, label_map: LabelMap, options: OutputOptions
) -> dict:
    """Write a case's `outputs` (all in one folder) all or none; returns its report
    (`write_case_files`). The files go into a staging folder beside them first; one that a killed
    run left for this case is removed (a run holds its run record's lock while it writes, and
    shards write other cases).

    Raises:
        KidneysegError: a file could not be written or moved into place (named by its output
            path); the folder then holds what it held before.
    """
    final = outputs["labels"]
    prefix = f".{nifti_stem(final)}{STAGING}"
    for left in (p for p in final.parent.iterdir() if p.name.startswith(prefix) and p.is_dir()):
        shutil.rmtree(left, ignore_errors=True)
    try:
        stage = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    except OSError as exc:
        raise KidneysegError(f"could not write ({exc.strerror or exc})", final.parent) from None
    staged = {key: stage / path.name for key, path in outputs.items()}
    try:
        report = write_case_files(staged, ct, prediction, label_map, options, final)
    except KidneysegError as exc:  # named by where the file goes, not by the staging folder
        shutil.rmtree(stage, ignore_errors=True)
        if exc.path is None or Path(exc.path).parent != stage:
            raise
        raise KidneysegError(exc.message, final.parent / Path(exc.path).name) from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    aside = stage / ".earlier"
    try:
        _move_into_place(staged, outputs, aside)
    except BaseException:
        if not (aside.is_dir() and any(aside.iterdir())):  # no earlier output left there
            shutil.rmtree(stage, ignore_errors=True)
        raise
    shutil.rmtree(stage, ignore_errors=True)
    return report


def _move_into_place(staged: dict[str, Path], outputs: dict[str, Path], aside: Path) -> None:
    """Move each staged file to its output path, the label map last; an earlier file there goes
    to `aside` first. Should a move fail or the run be interrupted, the files moved in are removed
    and the earlier ones put back; those that cannot be are left in `aside`, named in the error.

    Raises:
        KidneysegError: naming the file that could not be moved.
    """
    for key, target in outputs.items():
        if target.is_dir() != staged[key].is_dir() and (target.exists() or target.is_symlink()):
            reason = os.strerror(errno.EISDIR if target.is_dir() else errno.ENOTDIR)
            raise KidneysegError(f"could not write ({reason})", target)
    aside.mkdir()
    earlier: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    target = outputs["labels"]
    try:
        for key in sorted(outputs, key=lambda k: k == "labels"):
            target = outputs[key]
            if target.exists() or target.is_symlink():
                os.replace(target, aside / target.name)
                earlier.append((aside / target.name, target))
            os.replace(staged[key], target)
            placed.append(target)
    except BaseException as exc:
        kept = _put_back(placed, earlier)
        if not isinstance(exc, OSError):
            raise
        where = "kept" if kept else f"in {aside}"
        reason = exc.strerror or exc
        raise KidneysegError(
            f"could not write ({reason}); the case's earlier outputs are {where}", target
        ) from None


def _put_back(placed: list[Path], earlier: list[tuple[Path, Path]]) -> bool:
    """Remove the files moved in and move the earlier ones back; whether all went back."""
    for path in placed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    kept = True
    for backup, path in earlier:
        try:
            os.replace(backup, path)
        except OSError:
            kept = False
    return kept
