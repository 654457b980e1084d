"""`kidneyseg predict` as a function: find the cases, predict each, write outputs and a run record.

An input is a CT file (NIfTI), a DICOM series folder, or a folder of cases (KiTS19/21/23
layout, `images/` + `labels/`, a flat folder of NIfTI files and/or one DICOM series per
sub-folder). Per case the outputs are, in the output folder:

- `<case>.nii.gz`: the label map, exactly on the CT's grid, its classes named in the header
  (written last); with `split_sides` the classes are kidney_right, kidney_left, tumor_right, ...
  (`kidneyseg.labels.split_sides`). A re-run into the same folder skips a case only if it was
  predicted from the same input file(s), models and settings and its outputs are unchanged
  (`kidneyseg.predict.run_record`);
- `<case>_<class>.nii.gz` (option): one binary mask per class;
- `<case>_probabilities.nii.gz` (option): class probabilities on the network grid, 4D, uint8
  scaled to [0, 1], with that grid's own affine (they overlay the CT in world coordinates);
- `<case>_seg.dcm` / `<case>_rtstruct.dcm` (options, DICOM input): a DICOM SEG / RTSTRUCT
  referencing the source series; with `new_uids` also `<case>_ct/`, the CT with the new UIDs;
- `<case>_report.json` / `.html` (option): the case report.

Once per run: `<label map>_ColorTable.ctbl` (3D Slicer's colour table; an earlier run's table of
another label map goes once no label map in the folder is of it), `predict_run.json`
(versions, device, models, settings, per-case time and statistics; `predict_run.<i>-of-<n>.json`
for a shard) and, for a folder, `statistics.csv` over every finished case of every shard. An
output path ending in `.nii.gz` names the label map of a single CT; the other files go beside it,
named after it. A case's files appear all or none, and a failed re-run leaves an earlier run's
files as they were (`kidneyseg.predict.outputs.write_case`); in folder mode the other cases go on
and the failures are listed at the end. While it writes, a run holds a lock file beside its run
record, so that a second run writing the same record stops at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kidneyseg.errors import KidneysegError, check_utf8_name, exception_line, interrupt_behind, warn_on_stderr
from kidneyseg.io.atomic import exclusive, make_folder
from kidneyseg.io.formats import canonical_path
from kidneyseg.io.volume import NIFTI_SUFFIXES, nifti_stem
from kidneyseg.predict.inputs import CaseInput, find_inputs
from kidneyseg.predict.outputs import (
    OutputOptions,
    case_outputs,
    check_dicom_outputs,
    output_label_map,
    refuse_clashing_outputs,
    refuse_overwriting_inputs,
    write_case,
)
from kidneyseg.predict.predictor import Predictor, PredictSettings
from kidneyseg.predict.run_record import (
    RECORD_NAME,
    RecordWriter,
    RunRecord,
    case_fingerprint,
    earlier_cases,
    earlier_color_tables,
    input_stamp,
    kept_cases,
    made_with,
    new_record,
    output_stamps,
    record_name,
    recorded_color_tables,
    reusable,
    stale_outputs,
    write_color_tables,
    write_record,
)


def parse_shard(text: str) -> tuple[int, int]:
    """`"i/n"` → `(i, n)`: this job's share when a folder of cases is split into n jobs (1 ≤ i ≤ n)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise KidneysegError(f"--shard must look like i/n (e.g. 2/8), got {text!r}") from None
    if not 1 <= i <= n:
        raise KidneysegError(f"--shard i/n needs 1 <= i <= n, got {text!r}")
    return i, n


def predict_case(
    predictor: Predictor,
    case: CaseInput,
    out_dir: Path,
    options: OutputOptions,
    progress: bool = False,
    warn: Callable[[str], None] = warn_on_stderr,
    name: str | None = None,
    suffix: str = ".nii.gz",
) -> dict[str, Any]:
    """Predict one case and write its outputs, named after `name` (default: the case id);
    returns its run-record entry, with its statistics row.

    Raises:
        KidneysegError: the case cannot be read, holds no body, is not CT in HU, gives non-finite
            network scores, needs more memory than is
            available, or its outputs cannot be written; nothing of it is left on disk.
    """
    from kidneyseg.predict.api import read_checked
    from kidneyseg.report.measure import SCHEMA_VERSION
    from kidneyseg.report.statistics import statistics_row

    start = time.perf_counter()
    ct, doubts = read_checked(case.path, predictor, case.series_uid, case.dicom_files, options.hu_check)
    warnings = [doubt.message for doubt in doubts]
    for message in warnings:
        warn(f"warning: {message}")
    seconds_read = time.perf_counter() - start
    prediction = predictor.predict(ct, progress=progress)
    out_map = output_label_map(predictor.label_map, options)
    outputs = case_outputs(out_dir, name or case.case_id, predictor.settings, options, out_map, suffix)
    t = time.perf_counter()
    report = write_case(outputs, ct, prediction, predictor.label_map, options)
    for dropped in prediction.ruled_out:
        warn(
            f"warning: {case.case_id}: left out a {dropped['volume_ml']:g} mL component labelled as kidney: "
            f"{dropped['reason']}"
        )
    # The statistics row carries the report's codes, and those of the reading it does not hold.
    codes = {w["code"] for w in report.get("warnings", [])}
    read_only = [doubt.code for doubt in doubts if doubt.code not in codes]
    for check in report.get("warnings", []):  # the report's checks of what the model was sure of
        if check["code"] == "low_confidence":
            warn(f"warning: {case.case_id}: {check['message']}")
        elif check["code"] == "uncertain_lesions":
            warn(f"warning: {case.case_id}: the model was unsure of lesion(s) {', '.join(check['lesions'])}")
        elif check["code"] in ("laterality_mismatch", "not_measured", "short_scan", "unenhanced_scan"):
            warn(f"warning: {case.case_id}: {check['message']}")
            warnings.append(check["message"])
    seconds = {"read": seconds_read, **prediction.seconds, "write": time.perf_counter() - t}
    total = time.perf_counter() - start
    return {
        "case_id": case.case_id,
        "input": str(case.path),
        "status": "done",
        "outputs": {k: str(v) for k, v in outputs.items()},
        "shape": list(ct.shape),
        "spacing": list(ct.spacing),
        "windows": prediction.windows,
        "roi": prediction.roi,
        "ruled_out": list(prediction.ruled_out),
        "absorbed_islands": list(prediction.absorbed),
        "confidence": None if prediction.confidence is None else round(prediction.confidence, 4),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "total_seconds": round(total, 3),
        "warnings": warnings,
        "report_schema": SCHEMA_VERSION,
        "statistics": statistics_row(case.case_id, report, read_only, total),
    }


def _output_target(given: str | os.PathLike[str], folder_mode: bool) -> tuple[Path, str | None, str]:
    """The output folder, and for `-o name.nii.gz` the label map's name and suffix. `given` is
    the output as written: a trailing separator, which a `Path` drops, says "a folder"."""
    out = canonical_path(given)
    if out.name.endswith(NIFTI_SUFFIXES) and str(given).replace(os.sep, "/").endswith(("/", "/.")):
        raise KidneysegError(
            "the output names a folder (a trailing separator) but its name ends in .nii or .nii.gz (a label "
            "map): without the separator it names the label map, or name the folder otherwise",
            given,
        )
    if not out.name.endswith(NIFTI_SUFFIXES):
        if out.name.lower().endswith(NIFTI_SUFFIXES):
            raise KidneysegError("write the label map's suffix in lower case (.nii or .nii.gz)", out)
        return out, None, ".nii.gz"
    if folder_mode:
        raise KidneysegError(
            "an output ending in .nii or .nii.gz names the label map of one CT, but the input is a "
            "folder of cases: give an output folder",
            out,
        )
    name = nifti_stem(out)
    if not name.strip("."):
        raise KidneysegError(
            "the output file has no name before its .nii or .nii.gz: name the label map", out
        )
    return out.parent, name, out.name[len(name) :]


@dataclass(frozen=True)
class Destination:
    """Where `predict_cases` writes: the output folder, the run record's file name, the label
    map's name and suffix for a single CT (None: each case's id), and whether the cases are a
    folder's (then a failed case does not stop the others)."""

    out_dir: Path
    record_file: str = RECORD_NAME
    name: str | None = None
    suffix: str = ".nii.gz"
    folder_mode: bool = True


def _run_case(
    predictor: Predictor,
    case: CaseInput,
    where: Destination,
    options: OutputOptions,
    previous: tuple[list[dict[str, Any]], str],
    quiet_case: bool,
    warn: Callable[[str], None],
) -> dict[str, Any]:
    """One case of a run: skipped when `previous` (the earlier runs' finished cases and this
    run's fingerprint) says it is done, predicted, or failed with its reason (raised outside
    folder mode)."""
    out_dir, name, suffix = where.out_dir, where.name or case.case_id, where.suffix
    if not case.dicom_files:
        options = replace(options, dicom_seg=False, dicom_rtstruct=False)
    out_map = output_label_map(predictor.label_map, options)
    outputs = case_outputs(out_dir, name, predictor.settings, options, out_map, suffix)
    earlier, fingerprint = previous
    try:
        if case.problem is not None:
            raise KidneysegError(case.problem)
        stamp = input_stamp(case.path, case.dicom_files, case.series_uid)
        before = None if options.overwrite else reusable(earlier, case.case_id, fingerprint, stamp, outputs)
        if before is not None:
            return {**{k: v for k, v in before.items() if k != "removed_stale"}, "status": "skipped"}
        entry = predict_case(predictor, case, out_dir, options, not quiet_case, warn, name, suffix)
        stale = stale_outputs(earlier, outputs)
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            names = ", ".join(p.name for p in stale)
            warn(
                f"warning: {case.case_id}: removed what an earlier run wrote beside the old label map: "
                + names
            )
        made = {
            "fingerprint": fingerprint,
            "input_stamp": stamp,
            "output_stamps": output_stamps(outputs),
            "made_with": made_with(predictor),
        }
        return {**entry, **made, "removed_stale": [str(p) for p in stale]}
    except KidneysegError as exc:
        if not where.folder_mode:
            raise
        reason = str(exc)
    except Exception as exc:  # one bad case must not stop the others in folder mode
        if not where.folder_mode or interrupt_behind(exc) is not None:
            raise
        reason = exception_line(exc)
    return {"case_id": case.case_id, "input": str(case.path), "status": "failed", "reason": reason}


def run_prediction(
    input_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    models: list[str | os.PathLike[str]],
    settings: PredictSettings | None = None,
    options: OutputOptions | None = None,
    series_uid: str | None = None,
    device: str = "cpu",
    progress: bool = True,
    warn: Callable[[str], None] = warn_on_stderr,
    shard: tuple[int, int] | None = None,
    echo: Callable[[str], None] | None = None,
) -> RunRecord:
    """Predict every case of `input_path` into `out` (see the module docstring).

    Args:
        out: the output folder, or for a single CT the label map's file name (`.nii.gz`).
        shard: `(i, n)`: predict only the i-th of n shares of a folder's cases (1 ≤ i ≤ n).
        echo: prints one line per predicted case (kidneys, lesions, warnings); None: silent.

    Returns:
        The run record (also written as `predict_run.json`); failed cases are in
        `record.failures` with their reason.

    Raises:
        KidneysegError: bad models, input or output; DICOM output the input cannot give
            (checked before predicting); or the only case failed.
    """
    start = time.perf_counter()
    settings, options = settings or PredictSettings(), options or OutputOptions()
    # One spelling of the same paths, so that another finds the earlier run's record and outputs.
    check_utf8_name(out)
    cases, folder_mode = find_inputs(canonical_path(input_path), series_uid)
    out_dir, *target = _output_target(out, folder_mode)
    if shard is not None and not folder_mode:
        raise KidneysegError("--shard shares out the cases of a folder, and this is one CT", input_path)
    refuse_overwriting_inputs([(c.case_id, c.path) for c in cases], out_dir, *target)
    check_dicom_outputs(cases, options, input_path)
    predictor = Predictor(models, settings, device=device)
    if folder_mode:  # every case, also those of other shards
        out_map = output_label_map(predictor.label_map, options)
        refuse_clashing_outputs(
            {c.case_id: case_outputs(out_dir, c.case_id, predictor.settings, options, out_map) for c in cases}
        )
    if shard is not None:
        cases = sorted(cases, key=lambda c: c.case_id)[shard[0] - 1 :: shard[1]]
    if predictor.backend_fallback:
        warn(f"warning: {predictor.backend_fallback}")
    command = {"input": str(input_path), "output": str(out), "series_uid": series_uid, "shard": shard}
    where = Destination(out_dir, record_name(shard), *target, folder_mode)
    return predict_cases(
        predictor, cases, where, options, command, time.perf_counter() - start, progress, warn, echo
    )


def predict_cases(
    predictor: Predictor,
    cases: list[CaseInput],
    where: Destination,
    options: OutputOptions,
    command: dict[str, Any],
    startup: float = 0.0,
    progress: bool = True,
    warn: Callable[[str], None] = warn_on_stderr,
    echo: Callable[[str], None] | None = None,
) -> RunRecord:
    """Predict `cases` with `predictor` into `where.out_dir`, recording the run in its run record
    (`command`: what asked for it; `startup`: seconds spent before predicting). A case is skipped
    when a run record there says it was made from the same input, models and settings and its
    outputs are unchanged (`kidneyseg.predict.run_record`); otherwise it is predicted again.

    Raises:
        KidneysegError: the output folder cannot be written, or another run writes its run record
            there now; outside folder mode, the case's error.
    """
    out_dir = where.out_dir
    created = make_folder(out_dir)
    busy = (
        f"another kidneyseg predict is writing into this folder (its run record {where.record_file}): "
        "wait for it to finish, or predict into another --out (--shard shares a folder's cases "
        "out between jobs)"
    )
    try:
        with exclusive(out_dir / f".{where.record_file}.lock", busy):
            return _predict_locked(predictor, cases, where, options, command, startup, progress, warn, echo)
    finally:  # a folder this run made and wrote nothing into (a single CT's error, all cases failed)
        _remove_if_empty(out_dir, created)


def _predict_locked(
    predictor: Predictor,
    cases: list[CaseInput],
    where: Destination,
    options: OutputOptions,
    command: dict[str, Any],
    startup: float,
    progress: bool,
    warn: Callable[[str], None],
    echo: Callable[[str], None] | None,
) -> RunRecord:
    """`predict_cases` while it holds its run record's lock."""
    from tqdm import tqdm

    from kidneyseg.report.statistics import (
        STATISTICS_NAME,
        case_line,
        update_statistics,
        write_cohort_statistics,
    )

    start = time.perf_counter() - startup
    out_dir, folder_mode = where.out_dir, where.folder_mode
    record_path = out_dir / where.record_file
    record = new_record(command, predictor, options, startup)
    record.color_tables = recorded_color_tables(record_path)  # kept, should the run be interrupted
    previous = (earlier_cases(out_dir), case_fingerprint(predictor, options))
    tables = earlier_color_tables(out_dir)
    writer = RecordWriter(record_path, record, kept_cases(record_path))
    bar = tqdm(cases, desc="cases", unit="case", disable=not (progress and folder_mode), dynamic_ncols=True)
    try:
        for case in bar:
            bar.set_postfix_str(case.case_id)
            entry = _run_case(predictor, case, where, options, previous, folder_mode or not progress, warn)
            record.cases.append(entry)
            record.seconds = round(time.perf_counter() - start, 3)
            writer.after_case()  # an interrupted run goes on from here
            if echo is not None and entry["status"] == "done":
                (bar.write if not bar.disable else echo)(case_line(entry["statistics"]))
    finally:  # also on an interrupt, wherever it lands: the record holds every finished case
        writer.flush()
    bar.close()
    if all(c["status"] == "failed" for c in record.cases):
        return record
    write_color_tables(out_dir, output_label_map(predictor.label_map, options), record, tables, warn)
    write_record(record_path, record, writer.kept)  # with the colour tables
    if folder_mode:
        write_cohort_statistics(out_dir)
    elif (out_dir / STATISTICS_NAME).is_file():  # one CT into a batch's folder: its row there
        update_statistics(
            out_dir / STATISTICS_NAME, [c["statistics"] for c in record.cases if c["status"] == "done"]
        )
    return record


def _remove_if_empty(out_dir: Path, created: bool) -> None:
    if created and out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
