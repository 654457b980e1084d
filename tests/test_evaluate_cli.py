"""`kidneyseg evaluate` end to end on tiny synthetic label maps written as NIfTI; the run's label
map reaches evaluation (a KiTS19-label run is scored against KiTS23 references with their cysts
counted as kidney)."""

from __future__ import annotations

import json
import math
import shutil

import nibabel as nib
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from kidneyseg.cli import evaluate as evaluate_cli
from kidneyseg.errors import KidneysegError
from kidneyseg.evaluate.folder import evaluate_folders, label_files, read_csv, write_csv
from kidneyseg.evaluate.metrics import case_metrics
from kidneyseg.labels import KITS19, KITS23
from kidneyseg.predict.label_files import class_masks, label_image

AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])
SHAPE = (24, 20, 12)


@pytest.fixture
def cli():
    app = typer.Typer()
    evaluate_cli.register(app)
    app.command("noop")(lambda: None)  # a second command keeps `evaluate` a named sub-command
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["evaluate", *map(str, args)])


def synthetic_labels(rng: np.random.Generator) -> np.ndarray:
    labels = np.zeros(SHAPE, np.uint8)
    x = int(rng.integers(3, 8))
    labels[x : x + 12, 4:16, 2:10] = 1
    labels[x + 2 : x + 6, 6:10, 4:8] = 2
    if rng.random() < 0.5:
        labels[x + 8 : x + 10, 12:14, 3:5] = 3
    return labels


def save(path, labels, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels, affine), str(path))


@pytest.fixture
def folders(tmp_path, rng):
    """References in the KiTS23 layout (3 cases); predictions as a flat folder holding two of
    them and one case without a reference."""
    ref_root, pred_dir = tmp_path / "kits23", tmp_path / "pred"
    refs, preds = {}, {}
    for i in range(3):
        case = f"case_{i:05d}"
        refs[case] = synthetic_labels(rng)
        save(ref_root / "dataset" / case / "segmentation.nii.gz", refs[case])
        save(ref_root / "dataset" / case / "imaging.nii.gz", np.zeros(SHAPE, np.int16))
    for case in ("case_00000", "case_00002"):
        preds[case] = np.roll(refs[case], 1, axis=0)
        save(pred_dir / f"{case}.nii.gz", preds[case])
    save(pred_dir / "case_00099.nii.gz", synthetic_labels(rng))
    return ref_root, pred_dir, refs, preds


def test_evaluate_writes_csv_json_markdown_and_reports_missing_cases(cli, folders, tmp_path):
    ref_root, pred_dir, refs, preds = folders
    out = tmp_path / "eval"
    result = cli("--pred", pred_dir, "--ref", ref_root, "--out", out, "--quiet")
    assert result.exit_code == evaluate_cli.EXIT_MISSING, result.output
    assert "case_00001" in result.output and "case_00099" in result.output

    rows = read_csv(out / "per_case.csv")
    assert [r["case_id"] for r in rows] == ["case_00000", "case_00002"]
    for row in rows:
        expected = case_metrics(preds[row["case_id"]], refs[row["case_id"]], (0.8, 0.8, 2.5))
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, nan_ok=True), key

    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == 2
    assert summary["missing_predictions"] == ["case_00001"]
    assert summary["missing_references"] == ["case_00099"]
    assert summary["metrics"]["dice_kidney"]["mean"] == pytest.approx(
        np.mean([r["dice_kidney"] for r in rows])
    )
    assert summary["lesions"]["tumor"]["ref"] == 2
    tumors = summary["lesions"]["tumor"]
    missed = tumors["missed_as"]
    assert sum(missed.values()) == tumors["ref"] - tumors["detected"]
    assert missed["kidney"] == sum(r["tumor_lesions_missed_as_kidney"] for r in rows)

    markdown = (out / "summary.md").read_text()
    assert f"{summary['metrics']['hec_sd_mean']['mean']:.3f}" in markdown
    assert "case_00001" in markdown


def test_summary_gives_the_mean_of_the_class_means_where_a_case_lacks_a_class(cli, tmp_path, rng):
    """One case holds a cyst the prediction misses, one holds none: each case's own mean (the
    table's Mean column) then differs from the average of the class columns, which compare and
    the papers call the Mean; the summary gives both (was: one number under two meanings)."""
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    for case, cyst in (("a", True), ("b", False)):
        labels = synthetic_labels(rng)
        labels[labels == 3] = 1
        if cyst:
            labels[1:3, 1:3, 1:3] = 3
        save(ref_dir / f"{case}.nii.gz", labels)
        save(pred_dir / f"{case}.nii.gz", np.where(labels == 3, 0, labels).astype(np.uint8))
    out = tmp_path / "eval"
    assert cli("--pred", pred_dir, "--ref", ref_dir, "--out", out, "-q").exit_code == 0
    rows = read_csv(out / "per_case.csv")
    case_means = np.mean([r["dice_mean"] for r in rows])
    class_means = np.mean([np.nanmean([r[f"dice_{c}"] for r in rows]) for c in ("kidney", "tumor", "cyst")])
    assert abs(case_means - class_means) > 0.1
    markdown = (out / "summary.md").read_text()
    assert f"| mean | 1.000 | 1.000 | 0.000 | {case_means:.3f} |" in markdown
    assert f"the Mean of `kidneyseg compare` and of the papers' tables: {class_means:.3f}." in markdown
    assert markdown.count("the Mean of `kidneyseg compare`") == 1  # the KiTS regions: no case lacks one


def test_allow_missing_exits_zero(cli, folders, tmp_path):
    ref_root, pred_dir, _, _ = folders
    result = cli("--pred", pred_dir, "--ref", ref_root, "--out", tmp_path / "e", "-q", "--allow-missing")
    assert result.exit_code == 0, result.output


def test_parallel_equals_serial(folders):
    ref_root, pred_dir, _, _ = folders
    serial = evaluate_folders(pred_dir, ref_root, jobs=1, progress=False)
    parallel = evaluate_folders(pred_dir, ref_root, jobs=2, progress=False)
    assert len(serial.rows) == 2
    for a, b in zip(serial.rows, parallel.rows, strict=True):
        assert a.keys() == b.keys()
        assert all(
            a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])) for k in a
        )


def test_grid_mismatch_is_one_clear_line_and_writes_nothing(cli, folders, tmp_path):
    ref_root, pred_dir, refs, _ = folders
    shifted = AFFINE.copy()
    shifted[0, 3] = 5.0
    save(pred_dir / "case_00002.nii.gz", refs["case_00002"], shifted)
    out = tmp_path / "eval"
    result = cli("--pred", pred_dir, "--ref", ref_root, "--out", out, "-q", "--jobs", "2")
    assert result.exit_code == 2
    assert "case_00002.nii.gz" in result.output and "grid differs" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_unknown_label_values_are_rejected(cli, folders, tmp_path):
    ref_root, pred_dir, refs, _ = folders
    bad = refs["case_00000"].copy()
    bad[0, 0, 0] = 7
    save(pred_dir / "case_00000.nii.gz", bad)
    result = cli("--pred", pred_dir, "--ref", ref_root, "--out", tmp_path / "e", "-q")
    assert result.exit_code == 2
    assert "[7]" in result.output and "case_00000.nii.gz" in result.output


def test_no_common_cases_is_an_error(cli, folders, tmp_path):
    ref_root, _, refs, _ = folders
    other = tmp_path / "other"
    save(other / "patient_a.nii.gz", refs["case_00000"])
    result = cli("--pred", other, "--ref", ref_root, "--out", tmp_path / "e", "-q")
    assert result.exit_code == 2 and "no case ids in common" in result.output


def test_a_prediction_that_is_a_broken_link_is_named(cli, folders, tmp_path):
    """Found by a hostile run: a symbolic link to a file that is gone was "1 reference cases have no
    prediction: case_00001", as if never predicted; now the link is named."""
    ref_root, pred_dir, _, _ = folders
    (pred_dir / "case_00001.nii.gz").symlink_to(tmp_path / "gone.nii.gz")
    result = cli("--pred", pred_dir, "--ref", ref_root, "--out", tmp_path / "e", "-q")
    expected = f"{pred_dir / 'case_00001.nii.gz'}: a symbolic link to a file that is not there"
    assert result.exit_code == 2 and expected in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "e").exists()


@pytest.mark.parametrize("given", ["dataset", "root"])
def test_predictions_written_into_the_dataset_are_refused_not_scored_as_the_references(
    cli, folders, tmp_path, given
):
    """`predict -i DATASET -o DATASET` puts <case>.nii.gz beside the case folders (was: evaluate
    took the case folders' segmentations as the predictions: Dice 1.000 everywhere)."""
    ref_root, pred_dir, _, _ = folders
    copy, data = tmp_path / "copy", tmp_path / "copy" / "dataset"
    shutil.copytree(ref_root, copy)
    for path in pred_dir.glob("case_0000*.nii.gz"):
        shutil.copy(path, data)
    out = tmp_path / "eval"
    result = cli("--pred", data if given == "dataset" else copy, "--ref", ref_root, "--out", out, "-q")
    assert result.exit_code == 2, result.output
    assert result.output.startswith(
        f"error: {data}: holds case(s) case_00000, case_00002 both in a dataset layout"
    )
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_per_class_masks_and_probabilities_beside_a_label_map_are_not_cases(cli, folders, tmp_path, caplog):
    """`predict --per-class --probabilities` writes <case>_kidney/_tumor/_cyst/_probabilities.nii.gz
    beside <case>.nii.gz (was: listed as predictions without a reference, or scored as cases
    when the references held them too); they are told by their headers and named in a warning."""
    ref_root, pred_dir, _, preds = folders
    for case, labels in preds.items():
        for name, (mask, mask_map) in class_masks(labels, KITS23).items():
            nib.save(label_image(mask, AFFINE, mask_map), str(pred_dir / f"{case}_{name}.nii.gz"))
        save(pred_dir / f"{case}_probabilities.nii.gz", np.zeros((*SHAPE, 4), np.uint8))
    result = cli("--pred", pred_dir, "--ref", ref_root, "--out", tmp_path / "e", "-q")
    assert result.exit_code == evaluate_cli.EXIT_MISSING, result.output
    assert caplog.messages == [
        f"{pred_dir}: 8 mask/probability file(s) predict wrote left out: case_00000_cyst.nii.gz, "
        "case_00000_kidney.nii.gz, case_00000_probabilities.nii.gz, case_00000_tumor.nii.gz, "
        "case_00002_cyst.nii.gz, case_00002_kidney.nii.gz, case_00002_probabilities.nii.gz, "
        "case_00002_tumor.nii.gz"
    ]
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert summary["n_cases"] == 2 and summary["missing_references"] == ["case_00099"]
    flat_refs = tmp_path / "flat_refs"
    shutil.copytree(pred_dir, flat_refs)
    result = cli("--pred", pred_dir, "--ref", flat_refs, "--out", tmp_path / "e2", "-q")
    assert result.exit_code == 0, result.output
    rows = read_csv(tmp_path / "e2" / "per_case.csv")
    assert [r["case_id"] for r in rows] == ["case_00000", "case_00002", "case_00099"]


def test_cases_only_named_like_predicts_masks_are_cases(cli, tmp_path, caplog):
    """CTs `c0` and `c0_kidney` predicted without --per-class give two label maps (was: c0_kidney
    taken for c0's mask and left out on both sides: "1 cases", exit 0, no warning); a 3D
    `c0_probabilities` is a case too."""
    labels = synthetic_labels(np.random.default_rng(0))
    for side in ("pred", "ref"):
        save(tmp_path / side / "c1_kidney.nii.gz", labels)  # another tool's file of that name
        save(tmp_path / side / "c1.nii.gz", labels)
        for name in ("c0", "c0_kidney", "c0_probabilities"):
            nib.save(label_image(labels, AFFINE, KITS23), str(tmp_path / side / f"{name}.nii.gz"))
    result = cli("--pred", tmp_path / "pred", "--ref", tmp_path / "ref", "--out", tmp_path / "e", "-q")
    assert result.exit_code == 0, result.output
    assert "\n5 cases: Dice kidney 1.000" in result.output and not caplog.messages
    assert (
        result.output.startswith("warning: ") and "3 reference(s) were written by kidneyseg" in result.output
    )
    rows = read_csv(tmp_path / "e" / "per_case.csv")
    assert [r["case_id"] for r in rows] == ["c0", "c0_kidney", "c0_probabilities", "c1", "c1_kidney"]


def test_segmentation_only_kits_folder_is_a_reference(tmp_path, rng):
    root = tmp_path / "kits19"
    for i in range(2):
        save(root / "data" / f"case_{i:05d}" / "segmentation.nii.gz", synthetic_labels(rng))
    (root / "data" / "case_00005").mkdir()
    found = label_files(root)
    assert sorted(found) == ["case_00000", "case_00001"]
    assert found["case_00001"].name == "segmentation.nii.gz"


def test_references_count_with_or_without_their_ct(tmp_path, rng):
    """A partial KiTS download (some case folders hold the CT, some only the segmentation) and a
    plain layout with a label map whose CT is missing: every reference is scored (was: the ones
    without a CT were dropped, and their predictions said to have no reference)."""
    kits = tmp_path / "kits23" / "dataset"
    for i in range(3):
        save(kits / f"case_{i:05d}" / "segmentation.nii.gz", synthetic_labels(rng))
    save(kits / "case_00001" / "imaging.nii.gz", rng.normal(size=(8, 8, 8)).astype(np.float32))
    assert sorted(label_files(tmp_path / "kits23")) == ["case_00000", "case_00001", "case_00002"]
    plain = tmp_path / "plain"
    for name in ("a", "b"):
        save(plain / "labels" / f"{name}.nii.gz", synthetic_labels(rng))
    save(plain / "images" / "a.nii.gz", rng.normal(size=(8, 8, 8)).astype(np.float32))
    found = label_files(plain)
    assert sorted(found) == ["a", "b"] and found["b"].parent.name == "labels"


def test_csv_round_trip_keeps_nan(tmp_path):
    rows = [
        {"case_id": "a", "dice_cyst": float("nan"), "dice_kidney": 0.5},
        {"case_id": "b", "dice_cyst": 1.0, "dice_kidney": 0.25},
    ]
    back = read_csv(write_csv(tmp_path / "x.csv", rows))
    assert math.isnan(back[0]["dice_cyst"]) and back[1]["dice_cyst"] == 1.0
    assert back[1]["dice_kidney"] == 0.25 and back[0]["case_id"] == "a"


def test_a_csv_with_a_case_twice_or_a_score_outside_0_1_is_refused(tmp_path):
    """`compare` reads these rows: a repeated case silently replaced the first, and a Dice of 5
    gave a row "1.000 [-3.000, 5.000]"."""
    good = {"case_id": "a", "dice_kidney": 0.5, "hec_sd_masses": 0.25, "tumor_lesions_ref": 3.0}
    for rows, message in (
        ([good, {**good}], "line 3: case a appears twice"),
        ([good, {**good, "case_id": ""}], "line 3: the case_id is empty"),
        ([good, {**good, "case_id": "b", "dice_kidney": 5.0}], r"line 3: dice_kidney = 5 is not in \[0, 1\]"),
        ([{**good, "hec_sd_masses": -3.0}], r"line 2: hec_sd_masses = -3 is not in \[0, 1\]"),
    ):
        with pytest.raises(KidneysegError, match=message):
            read_csv(write_csv(tmp_path / "x.csv", rows))
    assert read_csv(write_csv(tmp_path / "x.csv", [good]))[0]["tumor_lesions_ref"] == 3.0


def with_cyst(rng: np.random.Generator) -> np.ndarray:
    labels = synthetic_labels(rng)
    labels[1:3, 1:3, 1:3] = 3  # a cyst outside the kidney: scored as kidney by a KiTS19 run
    return labels


def kits19_run(tmp_path, data_dir, case_ids):
    """A run folder of the 2D KiTS19 recipe (untrained weights, its split in run.json)."""
    from kidneyseg import checkpoint as ck
    from kidneyseg.recipes import load_recipe
    from kidneyseg.train.build import resolve_model_config

    config = load_recipe("attention-unet-2d", overrides=["model.kwargs.channels=[4, 8]"])
    assert config.labels == "kits19" and config.data.label_mapping == {3: 1}
    config = resolve_model_config(config)
    run = tmp_path / "run"
    run.mkdir()
    state = ck.build_model_from_config(config).state_dict()
    ck.save_checkpoint(run / ck.BEST_NAME, model_state=state, config=config)
    record = {"data_dir": str(data_dir), "val_cases": case_ids, "train_cases": []}
    (run / "run.json").write_text(json.dumps(record))
    return run


def test_kits19_run_is_scored_correctly_on_kits23_references(tmp_path, rng, monkeypatch):
    """The run predicts every case perfectly in its own classes (cyst as kidney): every score is
    1, and there is no cyst class to score."""
    from kidneyseg.evaluate.compare import compare_models
    from kidneyseg.evaluate.runs import evaluate_run
    from kidneyseg.predict import runner

    data = tmp_path / "kits23"
    refs = {}
    for i in range(2):
        case = f"case_{i:05d}"
        refs[case] = with_cyst(rng)
        save(data / "dataset" / case / "segmentation.nii.gz", refs[case])
        save(data / "dataset" / case / "imaging.nii.gz", np.zeros(SHAPE, np.int16))
    run = kits19_run(tmp_path, data, sorted(refs))

    def perfect_kits19_prediction(predictor, case, folder, *args):
        assert predictor.label_map == KITS19
        save(folder / f"{case.case_id}.nii.gz", np.where(refs[case.case_id] == 3, 1, refs[case.case_id]))
        return {"case_id": case.case_id, "status": "done"}

    monkeypatch.setattr(runner, "predict_case", perfect_kits19_prediction)
    rows = evaluate_run(run, tmp_path / "eval", data_sets=("validation",), progress=False)["validation"]
    for row in rows:
        assert "dice_cyst" not in row and "cyst_lesions_ref" not in row
        scores = {k: v for k, v in row.items() if k.startswith(("dice_", "hec_", "kits19_"))}
        assert scores and all(v == pytest.approx(1.0) for v in scores.values()), scores
        assert row["masses_lesions_fp"] == 0 and row["tumor_lesions_detected"] == row["tumor_lesions_ref"]
    compared = compare_models({"validation": {"run": list(rows)}}, n_boot=100)
    assert compared["sets"]["validation"]["metrics"]["dice"]["columns"] == ["Kidney", "Tumor", "Mean"]


def test_evaluate_label_map_kits19_scores_kits19_references(cli, tmp_path, rng):
    """KiTS19-layout references (cysts annotated as kidney) against a KiTS23 model's predictions:
    with --label-map kits19 the predicted cyst counts as kidney and the case scores 1."""
    ref_root, pred_dir = tmp_path / "kits19", tmp_path / "pred"
    pred = with_cyst(rng)
    save(ref_root / "data" / "case_00000" / "segmentation.nii.gz", np.where(pred == 3, 1, pred))
    save(ref_root / "data" / "case_00000" / "imaging.nii.gz", np.zeros(SHAPE, np.int16))
    save(pred_dir / "case_00000.nii.gz", pred)
    out = tmp_path / "e"
    result = cli("--pred", pred_dir, "--ref", ref_root, "--out", out, "--label-map", "kits19", "-q")
    assert result.exit_code == 0, result.output
    assert "Dice kidney 1.000, tumor 1.000; KiTS Dice 1.000" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["label_map"] == "kits19" and set(summary["lesions"]) == {"tumor", "masses"}
    assert "dice_cyst" not in summary["metrics"]
    assert "Cyst" not in (out / "summary.md").read_text()
    assert "no reference holds a cyst" not in result.output
    default = cli("--pred", pred_dir, "--ref", ref_root, "--out", tmp_path / "d", "-q")
    assert default.exit_code == 0 and "tumor 1.000, cyst 0.000" in default.output
    assert "warning: " in default.output and "no reference holds a cyst, but the" in default.output


def test_headers_that_speak_against_the_evaluation_are_warned_about(cli, tmp_path, rng):
    """Predictions whose headers name the kits19 label map scored as kits23 (was: cyst 0.000
    without a word), and references that kidneyseg predict wrote (--pred and --ref swapped?
    was: lesion detection counted the wrong way round without a word); found by a hostile run.
    Plain references and kits23 predictions draw neither warning."""
    refs = tmp_path / "refs"
    for i in range(2):
        labels = with_cyst(rng)
        save(refs / f"case_{i:05d}.nii.gz", labels)
        for name, label_map in (("k19", KITS19), ("k23", KITS23)):
            folded = np.where(labels == 3, 1, labels) if label_map is KITS19 else labels
            path = tmp_path / name / f"case_{i:05d}.nii.gz"
            path.parent.mkdir(exist_ok=True)
            nib.save(label_image(folded, AFFINE, label_map), str(path))
    k19 = cli("--pred", tmp_path / "k19", "--ref", refs, "--out", tmp_path / "e1", "-q")
    assert k19.exit_code == 0, k19.output
    assert "predictions of the kits19 label map, as their headers say, which has no cyst class" in k19.output
    assert "--label-map kits19" in k19.output
    swapped = cli("--pred", refs, "--ref", tmp_path / "k23", "--out", tmp_path / "e2", "-q")
    assert swapped.exit_code == 0, swapped.output
    assert "2 reference(s) were written by kidneyseg predict" in swapped.output
    plain = cli("--pred", tmp_path / "k23", "--ref", refs, "--out", tmp_path / "e3", "-q")
    assert plain.exit_code == 0 and "warning" not in plain.output, plain.output
