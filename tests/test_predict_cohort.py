"""Folder runs at scale: statistics.csv, `--shard i/n` jobs that share a folder, and
`kidneyseg report` over a cohort."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kidneyseg.cli import app
from kidneyseg.errors import KidneysegError
from kidneyseg.predict.runner import parse_shard
from kidneyseg.report.statistics import COLUMNS, case_line, statistics_row, write_statistics
from test_predict import TINY_3D, save_tiny
from test_predict_cli import phantom_file
from test_report_measure import build_scene, make_grid

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "tiny3d.pt", TINY_3D, seed=0)


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cases")
    for seed, name in enumerate(("a", "b", "c")):
        phantom_file(folder / f"{name}.nii.gz", 10 + seed)
    return folder


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_rerun_skips_only_what_the_same_input_model_and_settings_made(ckpt, cases, tmp_path):
    """An output already there is re-used only for the very input, model and settings that wrote
    it, while it is still the file they wrote: another CT under the same name, other settings, a
    rewritten label map or a folder in its place are predicted again (or refused), never reported
    as done. Settings that change no label (the batch) and other CTs predicted into the same folder
    in between do not make it redo a case."""
    import nibabel as nib
    import numpy as np

    ct, out = tmp_path / "ct.nii.gz", tmp_path / "out" / "seg.nii.gz"
    ct.write_bytes((cases / "a.nii.gz").read_bytes())
    base = ["predict", "-i", str(ct), "-o", str(out), "-m", str(ckpt), "-q"]
    assert "1 predicted" in runner.invoke(app, base).output
    assert "0 predicted, 1 already done" in runner.invoke(app, [*base, "--batch", "2"]).output
    first = np.asarray(nib.load(out).dataobj)
    # The skipping run's record is its own (batch 2), but the case says what made it (found by a
    # hostile run: it said nothing, and the record named the skipping run's batch and backend).
    record = json.loads((out.parent / "predict_run.json").read_text())
    (case,) = record["cases"]
    assert case["status"] == "skipped" and record["environment"]["backend"] == case["made_with"]["backend"]
    assert (
        record["settings"]["resolved_inference"]["sw_batch_size"] == 2 != case["made_with"]["sw_batch_size"]
    )

    c_into_out = ["predict", "-i", str(cases / "c.nii.gz"), "-o", str(out.parent), "-m", str(ckpt)]
    other = runner.invoke(app, c_into_out)
    assert "1 predicted" in other.output  # another CT into the same folder, then the first again
    assert "0 predicted, 1 already done" in runner.invoke(app, base).output
    record = json.loads((out.parent / "predict_run.json").read_text())
    assert [(c["case_id"], c["status"]) for c in record["cases"]] == [("ct", "skipped"), ("c", "earlier")]

    ct.write_bytes((cases / "b.nii.gz").read_bytes())  # another CT under the same name
    again = runner.invoke(app, base)
    assert again.exit_code == 0 and "1 predicted, 0 already done" in again.output
    assert not np.array_equal(first, np.asarray(nib.load(out).dataobj))
    assert "1 predicted" in runner.invoke(app, [*base, "--overlap", "0.25"]).output
    assert "0 predicted, 1 already done" in runner.invoke(app, [*base, "--overlap", "0.25"]).output
    nib.save(nib.Nifti1Image(first, nib.load(out).affine), out)  # the label map replaced by hand
    assert "1 predicted" in runner.invoke(app, [*base, "--overlap", "0.25"]).output
    assert "1 predicted" in runner.invoke(app, [*base, "--no-postprocess"]).output
    unused = [
        *base,
        "--no-postprocess",
        "--absorb-islands-ml",
        "2",
    ]  # nothing absorbed without post-processing
    assert "0 predicted, 1 already done" in runner.invoke(app, unused).output
    assert "1 predicted" in runner.invoke(app, [*base, "--absorb-islands-ml", "2"]).output

    blocked = tmp_path / "blocked" / "seg.nii.gz"
    blocked.mkdir(parents=True)
    result = runner.invoke(app, ["predict", "-i", str(ct), "-o", str(blocked), "-m", str(ckpt), "-q"])
    assert result.exit_code == 2 and "Is a directory" in result.output


def test_a_rerun_with_report_redoes_a_case_whose_page_or_preview_is_gone_or_changed(ckpt, cases, tmp_path):
    out = tmp_path / "out"
    base = ["predict", "-i", str(cases / "a.nii.gz"), "-o", str(out), "-m", str(ckpt), "--report", "-q"]
    assert "1 predicted" in runner.invoke(app, base).output
    assert "0 predicted, 1 already done" in runner.invoke(app, base).output
    (out / "a_preview.png").unlink()
    assert "1 predicted, 0 already done" in runner.invoke(app, base).output
    assert (out / "a_preview.png").is_file()
    (out / "a_report.html").write_text("edited")
    assert "1 predicted, 0 already done" in runner.invoke(app, base).output
    assert (out / "a_report.html").read_text() != "edited"
    record = json.loads((out / "predict_run.json").read_text())["cases"][0]
    assert {"report", "report_html", "report_preview"} <= set(record["output_stamps"])


def test_a_rerun_after_the_report_schema_changed_predicts_again(ckpt, cases, tmp_path, monkeypatch):
    """A case's statistics row follows the report's schema (schema 8 stopped staging the
    extension flag cT3): a version writing another schema redoes the case rather than keeping
    the row the older one wrote."""
    import importlib

    measure = importlib.import_module("kidneyseg.report.measure")  # the module, not the function
    base = ["predict", "-i", str(cases / "a.nii.gz"), "-o", str(tmp_path / "out"), "-m", str(ckpt), "-q"]
    assert "1 predicted" in runner.invoke(app, base).output
    assert "0 predicted, 1 already done" in runner.invoke(app, base).output
    monkeypatch.setattr(measure, "SCHEMA_VERSION", measure.SCHEMA_VERSION + 1)
    assert "1 predicted, 0 already done" in runner.invoke(app, base).output


def test_a_rerun_with_fewer_outputs_removes_what_belonged_to_the_old_label_map(ckpt, cases, tmp_path):
    """--per-class masks and a report of an earlier run would sit beside a label map they were not
    made from; a file changed since that run wrote it is the user's and stays."""
    import os

    single = tmp_path / "single"  # a folder of one case: a shard of it has its own record
    single.mkdir()
    (single / "a.nii.gz").write_bytes((cases / "a.nii.gz").read_bytes())
    out = tmp_path / "out"
    base = ["predict", "-i", str(single), "-o", str(out), "-m", str(ckpt)]
    first = runner.invoke(app, [*base, "--per-class", "--report", "--shard", "1/1", "-q"])
    assert "1 predicted" in first.output  # a shard's record, then the same run's again: two entries
    assert (
        "0 predicted, 1 already done" in runner.invoke(app, [*base, "--per-class", "--report", "-q"]).output
    )
    made = {
        "a_kidney.nii.gz",
        "a_tumor.nii.gz",
        "a_cyst.nii.gz",
        "a_report.json",
        "a_report.html",
        "a_preview.png",
    }
    assert made <= {p.name for p in out.iterdir()}
    os.utime(out / "a_cyst.nii.gz", (1e9, 1e9))  # touched since: not the file that run wrote
    result = runner.invoke(app, base)
    assert result.exit_code == 0 and "1 predicted" in result.output
    removed = made - {"a_cyst.nii.gz"}
    assert not removed & {p.name for p in out.iterdir()} and (out / "a_cyst.nii.gz").is_file()
    assert "removed what an earlier run wrote beside the old label map" in result.output
    assert result.output.count("a_kidney.nii.gz") == 1
    entry = json.loads((out / "predict_run.json").read_text())["cases"][0]
    assert sorted(Path(p).name for p in entry["removed_stale"]) == sorted(removed)


def test_another_spelling_of_the_same_paths_is_the_same_run(ckpt, cases, tmp_path, monkeypatch):
    """Relative, absolute and `..` spellings of the input and output folders: the case is done,
    and a changed run removes the earlier run's masks (was: every spelling predicted the case
    again, listed it once more in the record, and left masks that contradict the new label map;
    found by a hostile review)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.nii.gz").write_bytes((cases / "a.nii.gz").read_bytes())
    monkeypatch.chdir(tmp_path)
    first = runner.invoke(app, ["predict", "-i", "in", "-o", "out", "-m", str(ckpt), "-q", "--per-class"])
    assert "1 predicted" in first.output
    monkeypatch.chdir(tmp_path / "in")
    again = ["predict", "-i", ".", "-o", str(tmp_path / "out"), "-m", str(ckpt), "-q"]
    assert "0 predicted, 1 already done" in runner.invoke(app, [*again, "--per-class"]).output
    changed = runner.invoke(
        app, ["predict", "-i", ".", "-o", "../out", "-m", str(ckpt), "-q", "--no-postprocess"]
    )
    assert "1 predicted" in changed.output and "removed what an earlier run wrote" in changed.output
    assert not (tmp_path / "out" / "a_kidney.nii.gz").exists()
    record = json.loads((tmp_path / "out" / "predict_run.json").read_text())
    assert [c["case_id"] for c in record["cases"]] == ["a"]
    (tmp_path / "in" / "sub").mkdir()  # `..` after a symbolic link is the link target's parent
    (tmp_path / "link").symlink_to(tmp_path / "in" / "sub", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    linked = ["predict", "-i", "link/..", "-o", "link/../../out", "-m", str(ckpt), "-q", "--no-postprocess"]
    assert "0 predicted, 1 already done" in runner.invoke(app, linked).output


def test_one_ct_predicted_again_into_a_batch_folder_updates_its_statistics_row(ckpt, cases, tmp_path):
    """Another model's label map of one CT, predicted into a batch's folder: the batch's
    statistics.csv gives that label map's row (was: the row of the label map it replaced)."""
    out = tmp_path / "out"
    batch = runner.invoke(app, ["predict", "-i", str(cases), "-o", str(out), "-m", str(ckpt), "-q"])
    assert "3 predicted" in batch.output
    before = {r["case_id"]: r for r in read_csv(out / "statistics.csv")}
    other = save_tiny(tmp_path / "other.pt", TINY_3D, seed=1)
    one = ["predict", "-i", str(cases / "a.nii.gz"), "-o", str(out), "-m", str(other), "-q"]
    assert "1 predicted" in runner.invoke(app, one).output
    after = {r["case_id"]: r for r in read_csv(out / "statistics.csv")}
    (entry,) = [
        c for c in json.loads((out / "predict_run.json").read_text())["cases"] if c["status"] == "done"
    ]
    assert entry["case_id"] == "a" and after["a"] == {k: str(v) for k, v in entry["statistics"].items()}
    assert after["a"]["right_kidney_ml"] != before["a"]["right_kidney_ml"] and after.keys() == before.keys()
    # A folder of `kidneyseg report` over a cohort: its rows stay (was: all dropped for the one CT's)
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    write_statistics(cohort / "statistics.csv", [{**before["b"], "case_id": "reported"}])
    assert "1 predicted" in runner.invoke(app, [*one[:3], "-o", str(cohort), *one[5:]]).output
    assert [r["case_id"] for r in read_csv(cohort / "statistics.csv")] == ["a", "reported"]


def test_a_row_an_older_version_made_says_so_in_the_statistics(ckpt, cases, tmp_path):
    """An earlier batch's cases, predicted by a version before the report schema was recorded, keep
    their rows when another batch goes into the folder, marked (found in review: free-text
    warnings and older staging shown as today's)."""
    out, first, second = tmp_path / "out", tmp_path / "first", tmp_path / "second"
    for folder, name in ((first, "a"), (second, "b")):
        folder.mkdir()
        (folder / f"{name}.nii.gz").write_bytes((cases / f"{name}.nii.gz").read_bytes())
    assert (
        "1 predicted"
        in runner.invoke(app, ["predict", "-i", str(first), "-o", str(out), "-m", str(ckpt)]).output
    )
    path = out / "predict_run.json"
    record = json.loads(path.read_text())
    del record["cases"][0]["report_schema"]  # as a version before it was recorded wrote it
    path.write_text(json.dumps(record))
    assert (
        "1 predicted"
        in runner.invoke(app, ["predict", "-i", str(second), "-o", str(out), "-m", str(ckpt)]).output
    )
    rows = {r["case_id"]: r["status"] for r in read_csv(out / "statistics.csv")}
    assert rows["b"] in ("ok", "empty")  # today's row: the random network may label no kidney on it
    assert (
        rows["a"].startswith("report schema before 10, this version writes")
        and "predict the case" in rows["a"]
    )


def test_an_interrupted_folder_run_goes_on_where_it_stopped(ckpt, cases, tmp_path, monkeypatch):
    """The record is written after every case, so a run stopped at its third case (Ctrl-C, a
    scheduler's time limit) skips the two it finished when it is started again."""
    from kidneyseg.predict import runner as predict_runner

    out, real = tmp_path / "out", predict_runner.predict_case

    def stop_at_c(predictor, case, *args, **kwargs):
        if case.case_id == "c":
            raise KeyboardInterrupt
        return real(predictor, case, *args, **kwargs)

    monkeypatch.setattr(predict_runner, "predict_case", stop_at_c)
    base = ["predict", "-i", str(cases), "-o", str(out), "-m", str(ckpt), "-q"]
    assert runner.invoke(app, base).exit_code != 0
    assert sorted(p.name for p in out.glob("?.nii.gz")) == ["a.nii.gz", "b.nii.gz"]
    monkeypatch.setattr(predict_runner, "predict_case", real)
    assert "1 predicted, 2 already done, 0 failed" in runner.invoke(app, base).output

    # Stopped between cases while the record's rewrite was put off (`WRITE_SHARE`): it is written
    # on the way out, so the re-run skips both finished cases.
    from kidneyseg.predict import run_record

    again, after_case = tmp_path / "again", run_record.RecordWriter.after_case

    def stop_after_b(writer):
        after_case(writer)
        if len(writer.record.cases) == 2:
            assert writer.pending  # b is not written yet
            raise KeyboardInterrupt

    monkeypatch.setattr(run_record, "WRITE_SHARE", 0.0)
    monkeypatch.setattr(run_record.RecordWriter, "after_case", stop_after_b)
    assert runner.invoke(app, [*base[:4], str(again), *base[5:]]).exit_code != 0
    monkeypatch.undo()
    assert (
        "1 predicted, 2 already done, 0 failed"
        in runner.invoke(app, [*base[:4], str(again), *base[5:]]).output
    )


def test_shards_split_a_folder_and_statistics_cover_every_case(ckpt, cases, tmp_path):
    out = tmp_path / "out"
    base = ["predict", "-i", str(cases), "-o", str(out), "-m", str(ckpt), "--overlap", "0"]
    first = runner.invoke(app, [*base, "--shard", "1/2"])
    assert first.exit_code == 0, first.output
    assert "2 predicted" in first.output and "a: " in first.output and "c: " in first.output
    assert [r["case_id"] for r in read_csv(out / "statistics.csv")] == ["a", "c"]
    second = runner.invoke(app, [*base, "--shard", "2/2", "-q"])
    assert "1 predicted, 0 already done" in second.output
    rows = read_csv(out / "statistics.csv")
    assert [r["case_id"] for r in rows] == ["a", "b", "c"] and list(rows[0]) == list(COLUMNS)
    assert json.loads((out / "predict_run.2-of-2.json").read_text())["command"]["shard"] == [2, 2]

    again = runner.invoke(app, [*base, "--shard", "1/2", "-q"])
    assert "0 predicted, 2 already done" in again.output
    assert [r["case_id"] for r in read_csv(out / "statistics.csv")] == ["a", "b", "c"]


def test_the_record_is_rewritten_after_every_case_unless_that_takes_too_long(tmp_path, monkeypatch):
    """A re-run that skips thousands of cases spent most of its time rewriting the record (600
    tiny cases: 91 s); the writes now take at most `WRITE_SHARE` of the run, and `flush` catches up."""
    import kidneyseg.predict.run_record as run_record

    now, written = [0.0], []

    class Clock:
        @staticmethod
        def perf_counter() -> float:
            return now[0]

    def write(path, record, kept, seconds):
        written.append(len(record.cases))
        now[0] += seconds

    monkeypatch.setattr(run_record, "time", Clock)
    for seconds, cases in ((0.001, 50), (1.0, 500)):  # cheap writes, then a record slow to write
        written.clear()
        monkeypatch.setattr(run_record, "write_record", lambda p, r, k, s=seconds: write(p, r, k, s))
        record = run_record.RunRecord("now", {}, {}, [], {})
        writer = run_record.RecordWriter(tmp_path / "r.json", record, [])
        start = now[0]
        record.cases.append({"status": "failed"})
        writer.after_case()
        assert written == []  # only failures: nothing a re-run could go on from
        for _ in range(cases - 1):
            now[0] += 0.1  # a case skipped or predicted
            record.cases.append({"status": "skipped"})
            writer.after_case()
        writer.flush()
        assert written[-1] == cases  # the whole run recorded at the end
        if seconds < 0.1:
            assert written == list(range(2, cases + 1))  # after every case
        else:
            assert len(written) * seconds <= run_record.WRITE_SHARE * (now[0] - start) + 2 * seconds
            assert 1 < len(written) < cases / 10
    writes = len(written)
    writer.flush()
    assert len(written) == writes  # nothing pending: no second write of the same record


def test_shard_argument_is_checked():
    assert parse_shard("3/8") == (3, 8)
    for bad in ("0/2", "3/2", "a/b", "2"):
        with pytest.raises(KidneysegError, match="--shard"):
            parse_shard(bad)


def test_statistics_row_from_a_report():
    report = {
        "status": "ok",
        "summary": {"kidneys_found": ["right", "left"], "num_tumors": 2, "num_cysts": 0},
        "kidneys": [
            {"side": "right", "volume_ml": 150.0, "parenchyma_volume_ml": 140.0},
            {"side": "left", "volume_ml": 148.5, "parenchyma_volume_ml": 148.5},
        ],
        "lesions": [
            {"type": "tumor", "max_axial_diameter_cm": 1.5},
            {"type": "tumor", "max_axial_diameter_cm": 4.25},
        ],
        "staging": {
            "category": "cT1a",
            "specimen_size_is_lower_bound": False,
            "extension_tumor_ids": ["T2", "T1"],
        },
        "warnings": [{"code": "incomplete_kidney"}],
        "inputs": {"model_confidence": 0.91},
    }
    row = statistics_row("p1", report, ["no_air"], seconds=12.34)
    assert row["tumor_diameters_cm"] == "4.25;1.50" and row["ct_category"] == "cT1a"
    assert row["extension_tumors"] == "T2;T1" and row["status"] == "ok"
    older = statistics_row("p1", {**report, "schema_version": 7})  # an earlier batch's report
    assert older["status"].startswith("report schema 7, this version writes")
    assert older["ct_category"] == "cT1a"  # its figures are kept, the status says whose they are
    assert row["warnings"] == "incomplete_kidney; no_air" and row["confidence"] == 0.91
    assert case_line(row) == (
        "p1: 12.3 s; kidneys right 150 mL, left 148 mL; 2 tumors (largest 4.25 cm); "
        "warnings: incomplete_kidney; no_air"
    )


def test_report_over_a_cohort(tmp_path):
    from kidneyseg.io.volume import write_volume

    affine, shape = make_grid([[-1, 0, 0], [0, -1, 0], [0, 0, 1]], spacing=(2.5, 2.5, 4.0))
    ct, labels = build_scene(affine, shape)
    (tmp_path / "cts").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ("p1", "p2"):
        write_volume(tmp_path / "cts" / f"{name}.nii.gz", ct)
    write_volume(tmp_path / "cts" / "unlabelled.nii.gz", ct)
    write_volume(tmp_path / "labels" / "p1.nii.gz", labels)
    write_volume(tmp_path / "labels" / "p2.nii.gz", labels.with_array(labels.array * 0 + 2))
    out = tmp_path / "out"
    args = ["report", "--ct", str(tmp_path / "cts"), "--labels", str(tmp_path / "labels"), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "1 case(s) reported, 1 failed" in result.output and "p2:" in result.output
    rows = read_csv(out / "statistics.csv")
    assert [r["case_id"] for r in rows] == ["p1"] and rows[0]["num_tumors"] == "2"
    assert (out / "p1_report.html").is_file()


def test_records_keep_what_is_on_disk_across_models_interrupts_and_output_names(
    ckpt, cases, tmp_path, monkeypatch
):
    """Another model's run stopped at b keeps the first model's entries of b and c, whose files it
    never touched; a failure after the last success is in the record; statistics.csv takes each
    case's row from the run whose files are on disk; two label maps of one CT under two names
    do not push each other out of the record."""
    from kidneyseg.predict import runner as predict_runner

    other = save_tiny(tmp_path / "other.pt", TINY_3D, seed=1)
    out, real = tmp_path / "out", predict_runner.predict_case
    base = ["predict", "-i", str(cases), "-o", str(out), "-q", "--roi", "body"]
    assert "3 predicted" in runner.invoke(app, [*base, "-m", str(ckpt)]).output

    def stop_at_b(predictor, case, *args, **kwargs):
        if case.case_id == "b":
            raise KeyboardInterrupt
        return real(predictor, case, *args, **kwargs)

    monkeypatch.setattr(predict_runner, "predict_case", stop_at_b)
    assert runner.invoke(app, [*base, "-m", str(other)]).exit_code != 0
    monkeypatch.setattr(predict_runner, "predict_case", real)
    assert "1 predicted, 2 already done" in runner.invoke(app, [*base, "-m", str(ckpt)]).output

    assert "1 predicted" in runner.invoke(app, [*base, "-m", str(other), "--shard", "1/3"]).output  # a
    keys = ("right_kidney_ml", "left_kidney_ml", "num_tumors", "num_cysts", "total_tumor_ml")
    own = json.loads((out / "predict_run.1-of-3.json").read_text())["cases"][0]["statistics"]
    stale = json.loads((out / "predict_run.json").read_text())["cases"][0]["statistics"]
    assert [own[k] for k in keys] != [stale[k] for k in keys]  # the two models' rows differ
    row = next(r for r in read_csv(out / "statistics.csv") if r["case_id"] == "a")
    assert [row[k] for k in keys] == [str(own[k]) for k in keys]

    mixed = tmp_path / "junk"
    mixed.mkdir()
    (mixed / "a.nii.gz").write_bytes((cases / "a.nii.gz").read_bytes())
    (mixed / "zz.nii.gz").write_text("not a CT")
    result = runner.invoke(
        app, ["predict", "-i", str(mixed), "-o", str(tmp_path / "o4"), "-m", str(ckpt), "-q"]
    )
    assert result.exit_code == 1
    record = json.loads((tmp_path / "o4" / "predict_run.json").read_text())
    assert [(c["case_id"], c["status"]) for c in record["cases"]] == [("a", "done"), ("zz", "failed")]

    one = ["predict", "-i", str(cases / "a.nii.gz"), "-m", str(ckpt), "-q"]
    for name in ("plain", "wide", "plain", "wide"):
        extra = ["--overlap", "0.25"] if name == "wide" else []
        runner.invoke(app, [*one, "-o", str(tmp_path / "o2" / f"{name}.nii.gz"), *extra])
    record = json.loads((tmp_path / "o2" / "predict_run.json").read_text())
    assert [c["status"] for c in record["cases"]] == ["skipped", "earlier"]


def test_a_rerun_without_sides_removes_the_sided_colour_table_once_no_label_map_is_sided(
    ckpt, cases, tmp_path
):
    """Was: after `--split-sides` and a re-run without it, `kits23-sides_ColorTable.ctbl` stayed
    beside the new kits23 label maps. It is removed, as a case's stale files are, when no label
    map in the folder is sided any more (not while another shard's case still is) and it is
    still as the earlier run wrote it (a table changed since is the user's)."""
    import os

    two = tmp_path / "two"
    two.mkdir()
    for name in ("a", "b"):
        (two / f"{name}.nii.gz").write_bytes((cases / f"{name}.nii.gz").read_bytes())
    out = tmp_path / "out"
    base = ["predict", "-i", str(two), "-o", str(out), "-m", str(ckpt), "-q"]
    sided, plain = out / "kits23-sides_ColorTable.ctbl", out / "kits23_ColorTable.ctbl"
    assert runner.invoke(app, [*base, "--split-sides"]).exit_code == 0
    assert sided.is_file() and not plain.exists()
    first = runner.invoke(app, [*base, "--shard", "1/2"])  # b's label map is still sided
    assert first.exit_code == 0 and "removed" not in first.output, first.output
    assert sided.is_file() and plain.is_file()
    second = runner.invoke(app, [*base, "--shard", "2/2"])
    assert second.exit_code == 0, second.output
    assert f"warning: removed what an earlier run wrote for label maps no longer in {out}: {sided.name}" in (
        second.output
    )
    assert not sided.exists() and plain.is_file()
    record = json.loads((out / "predict_run.2-of-2.json").read_text())
    assert record["removed_stale"] == [str(sided.resolve())]
    assert [t["label_map"] for t in record["color_tables"]] == ["kits23"]
    assert runner.invoke(app, [*base, "--split-sides"]).exit_code == 0
    os.utime(sided, (1e9, 1e9))  # touched since: not the table that run wrote
    assert runner.invoke(app, base).exit_code == 0
    assert sided.is_file() and plain.is_file()
