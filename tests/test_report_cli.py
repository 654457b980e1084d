"""`kidneyseg report` end to end on NIfTI files, including bad input."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from kidneyseg.cli import report as report_cli
from kidneyseg.io.volume import Volume, write_volume
from test_report_measure import build_scene, make_grid


@pytest.fixture
def cli():
    app = typer.Typer()
    report_cli.register(app)
    app.command("noop")(lambda: None)  # a second command keeps `report` a named sub-command
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["report", *map(str, args)])


@pytest.fixture(scope="module")
def case_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("case")
    affine, shape = make_grid(np.diag([-1.0, -1.0, 1.0]), spacing=(2.5, 2.5, 4.0))
    ct, labels = build_scene(affine, shape)
    write_volume(folder / "ct.nii.gz", ct)
    write_volume(folder / "seg.nii.gz", labels)
    return folder, ct, labels


def test_report_writes_json_and_html(cli, case_files, tmp_path):
    folder, _, _ = case_files
    out = tmp_path / "out"
    args = ("--ct", folder / "ct.nii.gz", "--labels", folder / "seg.nii.gz", "--out", out)
    result = cli(*args, "--case-id", "p1")
    assert result.exit_code == 0, result.output
    assert "2 tumor(s) and 1 cyst(s)" in result.output
    report = json.loads((out / "p1_report.json").read_text())
    assert report["case_id"] == "p1"
    assert report["summary"]["kidneys_found"] == ["right", "left"]
    assert report["inputs"]["orientation"] == "LPS"
    assert (out / "p1_report.html").read_text().startswith("<!DOCTYPE html>")


def test_mismatched_grid_is_one_line_and_writes_nothing(cli, case_files, tmp_path):
    folder, _, labels = case_files
    moved = labels.affine.copy()
    moved[:3, 3] += 7.5
    write_volume(tmp_path / "other.nii.gz", Volume(labels.array, moved))
    out = tmp_path / "out"
    result = cli("--ct", folder / "ct.nii.gz", "--labels", tmp_path / "other.nii.gz", "--out", out)
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "other.nii.gz" in result.output
    assert "differs from the CT" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_labels_outside_the_label_map(cli, case_files, tmp_path):
    folder, _, _ = case_files
    args = ("--ct", folder / "ct.nii.gz", "--labels", folder / "seg.nii.gz", "--out", tmp_path / "out")
    result = cli(*args, "--label-map", "kits19")
    assert result.exit_code == 2 and "label values [3] are not in the kits19 label map" in result.output
    result = cli(*args, "--label-map", "kits99")
    assert result.exit_code == 2 and "unknown label map 'kits99'" in result.output


def test_empty_segmentation_is_reported(cli, case_files, tmp_path):
    folder, _, labels = case_files
    write_volume(tmp_path / "empty.nii.gz", labels.with_array(np.zeros_like(labels.array)))
    out = tmp_path / "out"
    result = cli("--ct", folder / "ct.nii.gz", "--labels", tmp_path / "empty.nii.gz", "--out", out)
    assert result.exit_code == 0, result.output
    assert "segmentation is empty" in result.output
    assert json.loads((out / "report.json").read_text())["status"] == "empty"


def test_missing_file(cli, tmp_path):
    result = cli("--ct", tmp_path / "nope.nii.gz", "--labels", tmp_path / "seg.nii.gz", "--out", tmp_path)
    assert result.exit_code == 2 and "nope.nii.gz: no such file" in result.output


def test_singular_affine_is_one_line_naming_the_file(cli, case_files, tmp_path):
    import nibabel as nib

    folder, ct, _ = case_files
    singular = ct.affine.copy()
    singular[:3, 2] = singular[:3, 0]
    nib.save(nib.Nifti1Image(ct.array, singular), tmp_path / "flat.nii.gz")
    out = tmp_path / "out"
    result = cli("--ct", tmp_path / "flat.nii.gz", "--labels", folder / "seg.nii.gz", "--out", out)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {tmp_path / 'flat.nii.gz'}: the image affine is singular")
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_a_ct_that_is_not_in_hu_is_refused_as_predict_refuses_it(cli, case_files, tmp_path):
    """The report's HU figures need CT in HU: a blank or shifted CT is one line (was: "ok" with
    every lesion at 0 HU), `--no-hu-check` goes on, inverted values are warned about."""
    folder, ct, _ = case_files
    labels = folder / "seg.nii.gz"
    for name, values, message in (
        ("blank", np.zeros(ct.shape, np.int16), "the image looks already normalised"),
        ("shifted", (ct.array + 1024).clip(0).astype(np.uint16), "no value below 0"),
    ):
        write_volume(tmp_path / f"{name}.nii.gz", Volume(values, ct.affine))
        out = tmp_path / name
        result = cli("--ct", tmp_path / f"{name}.nii.gz", "--labels", labels, "--out", out)
        assert result.exit_code == 2 and message in result.output
        assert len(result.output.strip().splitlines()) == 1 and not out.exists()
    shifted = ("--ct", tmp_path / "shifted.nii.gz", "--labels", labels, "--out", tmp_path / "x")
    result = cli(*shifted, "--no-hu-check")
    assert result.exit_code == 0 and (tmp_path / "x" / "report.json").is_file()
    write_volume(tmp_path / "inverted.nii.gz", Volume(-ct.array.astype(np.int16), ct.affine))
    result = cli("--ct", tmp_path / "inverted.nii.gz", "--labels", labels, "--out", tmp_path / "inv")
    assert result.exit_code == 0 and "check that it is CT in Hounsfield units" in result.output


def test_a_folder_of_cts_with_one_label_file_says_what_to_give(cli, case_files, tmp_path):
    """It said "no DICOM series found in this folder", of a folder that holds NIfTI CTs; and so,
    found by a hostile run, of a dataset in the KiTS layout, and with an empty --labels folder."""
    folder, ct, _ = case_files
    cts, kits, empty = tmp_path / "cts", tmp_path / "kits", tmp_path / "empty"
    write_volume(cts / "p1.nii.gz", ct)
    write_volume(kits / "case_00000" / "imaging.nii.gz", ct)
    empty.mkdir()
    for ct_folder, labels, given in (
        (cts, folder / "seg.nii.gz", "is one label map"),
        (kits, folder / "seg.nii.gz", "is one label map"),
        (kits, empty, "holds no <case>.nii.gz label map"),
    ):
        result = cli("--ct", ct_folder, "--labels", labels, "--out", tmp_path / "out")
        expected = f"{labels}: --ct is a folder of CTs ({ct_folder}) but --labels {given}"
        assert result.exit_code == 2 and expected in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def _strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path}: {constant} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_values_far_below_air_are_refused_and_never_make_invalid_json(cli, case_files, tmp_path):
    """Was: -3e38 inside a tumor gave `"hu_median": -Infinity` (not JSON) and a numpy overflow
    warning; now refused as values above 50000 HU are, and with --no-hu-check measured. A figure
    that overflows (the SD of +-1e200) is written as null."""
    folder, ct, labels = case_files
    tumor = labels.array == 2
    values = np.where(tumor, np.float32(-3e38), ct.array.astype(np.float32))
    write_volume(tmp_path / "low.nii.gz", Volume(values, ct.affine))
    args = ("--ct", tmp_path / "low.nii.gz", "--labels", folder / "seg.nii.gz")
    result = cli(*args, "--out", tmp_path / "refused")
    assert result.exit_code == 2 and not (tmp_path / "refused").exists()
    assert result.output.startswith(f"error: {tmp_path / 'low.nii.gz'}: values down to -3e+38: no CT")
    assert len(result.output.splitlines()) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = cli(*args, "--out", tmp_path / "out", "--no-hu-check")
    assert result.exit_code == 0, result.output
    tumors = [
        row for row in _strict_json(tmp_path / "out" / "report.json")["lesions"] if row["type"] == "tumor"
    ]
    assert tumors and all(row["hu_median"] == pytest.approx(-3e38, rel=1e-6) for row in tumors)
    huge = np.where(tumor, 1e200, ct.array.astype(np.float64))
    huge[tuple(np.argwhere(tumor)[0])] = -1e200
    write_volume(tmp_path / "huge.nii.gz", Volume(huge, ct.affine))
    args = ("--ct", tmp_path / "huge.nii.gz", "--labels", folder / "seg.nii.gz", "--no-hu-check")
    with warnings.catch_warnings():  # the overflow is expected, and said in the JSON, not on stderr
        warnings.simplefilter("error")
        assert cli(*args, "--out", tmp_path / "huge").exit_code == 0
    sds = [row["hu_sd"] for row in _strict_json(tmp_path / "huge" / "report.json")["lesions"]]
    assert None in sds and all(sd is None or sd < 1000 for sd in sds)


def _batch(folder, case_files, names):
    """A folder of CTs and one of label maps, for the cases `names`."""
    source, _, _ = case_files
    for sub, file in (("ct", "ct.nii.gz"), ("lab", "seg.nii.gz")):
        (folder / sub).mkdir(parents=True)
        for name in names:
            (folder / sub / f"{name}.nii.gz").write_bytes((source / file).read_bytes())
    return ("--ct", folder / "ct", "--labels", folder / "lab")


def _reports(out, names):
    return {f"{n}_{kind}" for n in names for kind in ("report.json", "report.html", "preview.png")}


def _statistics_cases(out: Path) -> list[str]:
    with (out / "statistics.csv").open() as f:
        return [row["case_id"] for row in csv.DictReader(f)]


def test_a_second_batch_or_a_failing_rerun_keeps_the_earlier_reports(cli, case_files, tmp_path):
    """Was: a second batch into the same --out removed the first batch's reports, and a re-run
    where every case fails (a wrong --label-map) removed every earlier report."""
    out = tmp_path / "R"
    first = _batch(tmp_path / "b1", case_files, ["p1", "p2"])
    second = _batch(tmp_path / "b2", case_files, ["p3"])
    assert cli(*first, "--out", out, "-q").exit_code == 0
    result = cli(*second, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert "removed" not in result.output
    everything = _reports(out, ["p1", "p2", "p3"])
    assert everything <= {p.name for p in out.iterdir()}
    assert _statistics_cases(out) == ["p1", "p2", "p3"]  # a row for every report in the folder
    result = cli(*second, "--out", out, "-q", "--label-map", "kits19")
    assert result.exit_code == 1 and "p3: " in result.output and "removed" not in result.output
    assert everything <= {p.name for p in out.iterdir()}
    assert _statistics_cases(out) == ["p1", "p2"]  # the failed case has no row
    (tmp_path / "b1" / "lab" / "p2.nii.gz").unlink()  # the record still knows batch 1's files
    result = cli(*first, "--out", out, "-q")
    assert "removed 3 report file(s)" in result.output
    assert {p.name for p in out.glob("p*")} == _reports(out, ["p1", "p3"])
    assert _statistics_cases(out) == ["p1", "p3"]
    (out / "p1_report.json").write_text("{}")  # edited since: no longer the report it recorded
    assert cli(*second, "--out", out, "-q").exit_code == 0
    assert _statistics_cases(out) == ["p3"]


def test_predicts_masks_and_probabilities_beside_the_label_maps_are_not_cases(cli, case_files, tmp_path):
    """`report --labels` on a folder that `predict --per-class --probabilities` wrote (was: "4
    label map(s) in LABELS have no CT: p1_cyst, p1_kidney, ..."): the side files are told by
    their headers, as `evaluate` tells them, and named in one warning; a file only named like one
    (another tool's `p2_kidney`) is still a label map."""
    import nibabel as nib

    from kidneyseg.labels import KITS23
    from kidneyseg.predict.label_files import class_masks, write_label_image

    _, _, labels = case_files
    args = _batch(tmp_path, case_files, ["p1"])
    lab = tmp_path / "lab"
    write_label_image(lab / "p1.nii.gz", labels.array, labels, KITS23)  # as predict writes it
    for name, (mask, mask_map) in class_masks(np.asarray(labels.array), KITS23).items():
        write_label_image(lab / f"p1_{name}.nii.gz", mask, labels, mask_map)
    nib.save(
        nib.Nifti1Image(np.zeros((*labels.shape, 4), np.uint8), labels.affine),
        lab / "p1_probabilities.nii.gz",
    )
    write_volume(lab / "p2_kidney.nii.gz", labels)
    result = cli(*args, "--out", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    assert result.output.count("warning:") == 2, result.output
    assert (
        f"warning: {lab}: 4 mask/probability file(s) predict wrote left out: p1_cyst.nii.gz, "
        "p1_kidney.nii.gz, p1_probabilities.nii.gz, p1_tumor.nii.gz"
    ) in result.output
    assert f"warning: 1 label map(s) in {lab} have no CT in {tmp_path / 'ct'}: p2_kidney\n" in result.output
    assert {p.name for p in (tmp_path / "out").glob("p*")} == _reports(None, ["p1"])
