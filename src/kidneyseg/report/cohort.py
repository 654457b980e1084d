"""Reports for a cohort: every CT of a folder with its label map, and one `statistics.csv`.

`kidneyseg report --ct CASES --labels LABELS --out DIR` pairs each case of CASES (any layout
`kidneyseg predict` reads) with `LABELS/<case>.nii.gz`, as `kidneyseg predict -o LABELS` names
its label maps (case ids by the one rule of `kidneyseg.io.formats.case_id_of`; the masks and
probabilities predict writes beside them are not cases, told by their headers as `evaluate`
tells them: `predict.outputs.without_side_files`), and writes each case's report and
`DIR/statistics.csv`: a row for each case reported and for each report of an earlier batch still
there as written. `DIR/report_run.json` records the report files it wrote (path, size,
modification time), and keeps the entries of earlier runs' cases it does not report: a later
run removes the files of a case whose CT is among its inputs and whose label map is gone, while
they are still as written. A case that fails, or that is not among a run's CTs, keeps its
earlier report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kidneyseg.errors import KidneysegError
from kidneyseg.io.atomic import write_text_atomic
from kidneyseg.io.stamps import as_stamped, recorded
from kidneyseg.labels import KITS23, LabelMap
from kidneyseg.report.checks import ReportOptions
from kidneyseg.report.statistics import STATISTICS_NAME, statistics_row, write_statistics

RECORD_NAME = "report_run.json"


@dataclass
class CohortResult:
    """What a cohort run wrote: the statistics file, the cases reported and those that failed;
    the cases on one side only (a CT without a label map, a label map without a CT); the files of
    the label folder left out as predict's masks and probabilities (`side_files`: file names);
    and the files of an earlier run it removed, of its CTs whose label map is gone."""

    statistics: Path
    reported: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    cts_without_labels: list[str] = field(default_factory=list)
    labels_without_ct: list[str] = field(default_factory=list)
    side_files: list[str] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)


def report_cohort(
    ct_dir: str | os.PathLike[str],
    labels_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    label_map: LabelMap = KITS23,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    options: ReportOptions | None = None,
    hu_check: bool = True,
) -> CohortResult:
    """Write the report of every case of `ct_dir` that has a label map in `labels_dir`, and
    `out_dir/statistics.csv`; a case that cannot be measured, or whose CT holds no body or (with
    `hu_check`) is clearly not in HU, is listed, the others go on (its earlier report stays);
    doubtful CTs are echoed. The report files an earlier run wrote for CTs of `ct_dir` that have
    no label map now are removed (`_stale_reports`).

    Raises:
        KidneysegError: `ct_dir` holds no CT, or no CT has a label map in `labels_dir`.
    """
    from tqdm import tqdm

    from kidneyseg.io.formats import files_by_case_id
    from kidneyseg.io.volume import read_volume
    from kidneyseg.predict.checks import content_warnings
    from kidneyseg.predict.inputs import find_inputs
    from kidneyseg.predict.label_files import read_label_file
    from kidneyseg.predict.outputs import without_side_files
    from kidneyseg.predict.run_record import output_stamps
    from kidneyseg.report.render import write_report
    from kidneyseg.report.statistics import case_line

    labels_dir, out_dir = Path(labels_dir), Path(out_dir)
    cases, _ = find_inputs(ct_dir)
    labels, side_files = without_side_files(files_by_case_id(labels_dir))
    pairs = [(c, labels[c.case_id]) for c in cases if c.case_id in labels]
    if not pairs:
        raise KidneysegError(
            f"no label map named <case>.nii.gz for any of the {len(cases)} CT(s) of {ct_dir}", labels_dir
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, result, written = [], CohortResult(out_dir / STATISTICS_NAME, side_files=side_files), {}
    paired = {c.case_id for c, _ in pairs}
    result.cts_without_labels = sorted({c.case_id for c in cases} - paired)
    result.labels_without_ct = sorted(labels.keys() - paired)
    for case, label_path in tqdm(pairs, desc="reports", unit="case", disable=not progress):
        try:
            ct = read_volume(case.path, case.series_uid)
            doubts = content_warnings(ct, hu_check)
            paths = write_report(ct, read_label_file(label_path), out_dir, label_map, case.case_id, options)
        except KidneysegError as exc:
            result.failures[case.case_id] = str(exc)
            continue
        written[case.case_id] = output_stamps(_named(paths.json, paths.html, paths.preview))
        rows.append(statistics_row(case.case_id, json.loads(paths.json.read_text(encoding="utf-8"))))
        result.reported.append(case.case_id)
        if echo is not None:
            echo(case_line(rows[-1]))
            for doubt in doubts:
                echo(f"warning: {doubt.message}")
    earlier, gone = _recorded(out_dir), set(result.cts_without_labels)
    others = {
        case_id: stamps for case_id, stamps in earlier.items() if case_id not in {c.case_id for c in cases}
    }
    write_statistics(result.statistics, rows + _rows_of_other_batches(out_dir, others))
    result.removed = _stale_reports(out_dir, earlier, gone)
    for path in result.removed:
        path.unlink()
    cases = {c: stamps for c, stamps in earlier.items() if c not in gone} | written
    write_text_atomic(out_dir / RECORD_NAME, json.dumps({"cases": cases}, indent=2) + "\n")
    return result


def _rows_of_other_batches(out_dir: Path, others: dict[str, dict]) -> list[dict]:
    """The statistics rows of the reports an earlier run wrote for cases that are not among this
    run's CTs (another batch) and that are still as written, so that `statistics.csv` has a row
    for every report the folder holds."""
    from kidneyseg.report.render import report_files

    rows = []
    for case_id, stamps in sorted(others.items()):
        path = report_files(out_dir, case_id)[0]
        if isinstance(stamps.get("json"), dict) and as_stamped(path, stamps["json"]):
            rows.append(statistics_row(case_id, json.loads(path.read_text(encoding="utf-8"))))
    return rows


def _named(*paths: Path) -> dict[str, Path]:
    return dict(zip(("json", "html", "preview"), paths, strict=True))


def _recorded(out_dir: Path) -> dict[str, dict]:
    """The report files' stamps per case in `out_dir/report_run.json` (none if unreadable)."""
    cases = recorded(out_dir / RECORD_NAME, "cases")
    if not isinstance(cases, dict):
        return {}
    return {c: stamps for c, stamps in cases.items() if isinstance(stamps, dict) and c and Path(c).name == c}


def _stale_reports(out_dir: Path, earlier: dict[str, dict], gone: set[str]) -> list[Path]:
    """The report files (`<case>_report.json`, `.html`, `<case>_preview.png`) that `earlier`
    (the record's stamps) lists for the cases in `gone` (CTs of this run without a label map
    now), and that are still as written (path, size, modification time): nothing else is ever
    removed."""
    from kidneyseg.report.render import report_files

    stale = []
    for case_id in sorted(gone & earlier.keys()):
        stamps = earlier[case_id]
        for name, path in _named(*report_files(out_dir, case_id)).items():
            if isinstance(stamps.get(name), dict) and as_stamped(path, stamps[name]):
                stale.append(path)
    return stale
