"""Comparison statistics, tables and the `kidneyseg compare` CLI on synthetic per-case scores."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import typer
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from kidneyseg.cli import compare as compare_cli
from kidneyseg.errors import KidneysegError
from kidneyseg.evaluate.compare import compare_models, paper_table
from kidneyseg.evaluate.folder import read_csv, write_csv
from kidneyseg.evaluate.stats import bootstrap_mean_of_means, bootstrap_means, paired_test
from kidneyseg.evaluate.tables import METRIC_SETS

ALL_COLUMNS = [column for _, columns in METRIC_SETS.values() for _, column in columns]


def synthetic_rows(rng, n_cases: int, quality: float, cyst_every: int = 3) -> list[dict]:
    """Per-case scores of a model: better models have higher `quality`; cysts exist in a third
    of the cases (NaN Dice otherwise), as in KiTS23."""
    rows = []
    for i in range(n_cases):
        row = {"case_id": f"case_{i:05d}"}
        for column in ALL_COLUMNS:
            row[column] = float(np.clip(quality + rng.normal(0, 0.05), 0, 1))
        if i % cyst_every:
            row["dice_cyst"] = float("nan")
        defined = [row[c] for c in ("dice_kidney", "dice_tumor", "dice_cyst") if not np.isnan(row[c])]
        row["dice_mean"] = float(np.mean(defined))
        rows.append(row)
    return rows


def test_bootstrap_interval_agrees_with_scipy(rng):
    values = rng.normal(0.8, 0.1, size=60)
    ours = bootstrap_means(values, n_boot=5000, seed=1)[0]
    theirs = scipy_stats.bootstrap(
        (values,), np.mean, n_resamples=5000, method="percentile", random_state=np.random.default_rng(2)
    ).confidence_interval
    assert ours.mean == pytest.approx(values.mean())
    assert ours.low == pytest.approx(theirs.low, abs=0.006)
    assert ours.high == pytest.approx(theirs.high, abs=0.006)
    assert ours.low < ours.mean < ours.high
    assert bootstrap_means(values, n_boot=5000, seed=1)[0] == ours


def test_bootstrap_ignores_undefined_cases_and_averages_class_means(rng):
    values = rng.uniform(0.5, 1.0, size=(30, 3))
    values[::2, 2] = np.nan
    intervals = bootstrap_means(values, n_boot=2000)
    assert [i.n for i in intervals] == [30, 30, 15]
    assert intervals[2].mean == pytest.approx(np.nanmean(values[:, 2]))
    mean = bootstrap_mean_of_means(values, n_boot=2000)
    assert mean.mean == pytest.approx(np.mean([i.mean for i in intervals]))
    assert mean.low < mean.mean < mean.high
    single = bootstrap_means(np.array([0.5, np.nan]), n_boot=200)[0]
    assert single.mean == 0.5 and np.isnan(single.low) and single.n == 1


def test_paired_test_detects_a_consistent_difference(rng):
    a = rng.uniform(0.6, 0.9, size=40)
    b = a - 0.03 + rng.normal(0, 0.01, size=40)
    test = paired_test(a, b, n_boot=4000)
    assert test.n == 40
    assert test.mean_difference == pytest.approx(np.mean(a - b))
    assert 0 < test.low < test.mean_difference < test.high
    assert test.wilcoxon_p < 1e-6 and test.bootstrap_p < 1e-3

    noise = a + rng.normal(0, 0.02, size=40)
    assert paired_test(a, noise, n_boot=4000).wilcoxon_p > 0.01

    same = paired_test(a, a.copy())
    assert same.mean_difference == 0 and same.wilcoxon_p == 1.0

    b_nan = b.copy()
    b_nan[:10] = np.nan
    assert paired_test(a, b_nan).n == 30


def test_compare_models_ranks_models_and_pairs_them(rng):
    models = {
        "sca_unet": synthetic_rows(rng, 24, 0.85),
        "residual_unet": synthetic_rows(rng, 24, 0.78),
    }
    result = compare_models({"validation": models}, n_boot=1000)
    dice = result["sets"]["validation"]["metrics"]["dice"]
    assert dice["columns"] == ["Kidney", "Tumor", "Cyst", "Mean"]
    better, worse = dice["models"]["sca_unet"], dice["models"]["residual_unet"]
    assert better["Kidney"]["mean"] == pytest.approx(np.mean([r["dice_kidney"] for r in models["sca_unet"]]))
    assert better["Cyst"]["n"] == 8
    assert better["Mean"]["mean"] > worse["Mean"]["mean"]
    paired = dice["paired"]["sca_unet vs residual_unet"]
    assert paired["Kidney"]["mean_difference"] > 0 and paired["Kidney"]["wilcoxon_p"] < 0.01
    assert paired["Cyst"]["n"] == 8
    table = paper_table(result)
    assert table.splitlines()[0] == "| Model | Kidney | Tumor | Cyst | Mean |"
    assert (
        f"{better['Tumor']['mean']:.3f} [{better['Tumor']['low']:.3f}, {better['Tumor']['high']:.3f}]"
        in table
    )


def test_models_must_share_their_cases(rng):
    models = {"a": synthetic_rows(rng, 10, 0.8), "b": synthetic_rows(rng, 9, 0.8)}
    only_a = models["a"][-1]["case_id"]
    with pytest.raises(KidneysegError, match=f"different cases \\(only a: {only_a}; only b: none\\)"):
        compare_models({"validation": models}, n_boot=200)


@pytest.fixture
def cli():
    app = typer.Typer()
    compare_cli.register(app)
    app.command("noop")(lambda: None)  # a second command keeps `compare` a named sub-command
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["compare", *map(str, args)])


def test_compare_cli_writes_tables_json_and_box_plots(cli, tmp_path, rng):
    import matplotlib.image

    args = []
    for name, quality in (("attention_unet_2d", 0.9), ("unet_2d", 0.85)):
        val = write_csv(tmp_path / name / "val" / "per_case.csv", synthetic_rows(rng, 12, quality))
        write_csv(tmp_path / name / "train" / "per_case.csv", synthetic_rows(rng, 30, quality + 0.05))
        args += ["--eval", f"{name}={val.parent}", "--train-eval", f"{name}={tmp_path / name / 'train'}"]
    out = tmp_path / "cmp"
    result = cli(*args, "--out", out, "--bootstrap", 500)
    assert result.exit_code == 0, result.output
    assert "| attention_unet_2d |" in result.output
    summary = json.loads((out / "comparison.json").read_text())
    assert set(summary["sets"]) == {"validation", "training"}
    assert len(summary["sets"]["training"]["cases"]) == 30
    markdown = (out / "comparison.md").read_text()
    assert "## Validation set (12 cases)" in markdown and "## Training set (30 cases)" in markdown
    plots = sorted(out.glob("boxplot_*.png"))
    assert len(plots) == 8
    image = matplotlib.image.imread(plots[0])
    assert image.ndim == 3 and image.shape[0] > 100


def test_a_rerun_into_the_same_out_removes_its_own_earlier_box_plots_only(cli, tmp_path, rng):
    """A comparison without a training set, re-run into the folder of one with (was: the
    training set's box plots stayed beside a comparison.md without that set)."""
    val = write_csv(tmp_path / "a" / "val" / "per_case.csv", synthetic_rows(rng, 12, 0.9))
    train = write_csv(tmp_path / "a" / "train" / "per_case.csv", synthetic_rows(rng, 20, 0.9))
    out = tmp_path / "cmp"
    args = ("--eval", f"a={val}", "--out", out, "--bootstrap", 100)
    assert cli(*args, "--train-eval", f"a={train}").exit_code == 0
    (out / "boxplot_training_notes.png").write_bytes(b"not compare's")
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert "removed the box plots of an earlier comparison" in result.output
    assert "boxplot_training_kidney.png" in result.output
    plots = sorted(p.name for p in out.glob("boxplot_*.png"))
    assert plots == [
        "boxplot_training_notes.png",
        *(f"boxplot_validation_{c}.png" for c in ("cyst", "kidney", "mean", "tumor")),
    ]
    assert "Training set" not in (out / "comparison.md").read_text()


def test_compare_cli_bad_input_is_one_line(cli, tmp_path, rng):
    result = cli("--eval", "no-equals-sign", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "NAME=PATH" in result.output
    result = cli("--eval", f"a={tmp_path / 'missing'}", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "no such per-case evaluation CSV" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    rows = synthetic_rows(rng, 3, 0.9)
    rows[1]["case_id"] = ""  # was: "models 'a' and 'b' were evaluated on different cases"
    a, b = (write_csv(tmp_path / f"{m}.csv", rows if m == "a" else synthetic_rows(rng, 3, 0.9)) for m in "ab")
    result = cli("--eval", f"a={a}", "--eval", f"b={b}", "--out", tmp_path / "o")
    assert result.exit_code == 2 and result.output == f"error: {a}: line 3: the case_id is empty\n"
    assert not (tmp_path / "o").exists()


def test_compare_run_that_is_not_a_training_run_is_one_line(cli, tmp_path):
    (tmp_path / "not_a_run").mkdir()
    result = cli("--run", f"a={tmp_path / 'not_a_run'}", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "no run.json" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_run_name_that_is_not_a_plain_name_or_given_twice_is_refused_before_any_prediction(cli, tmp_path):
    """A run's name names its folder OUT/runs/NAME: `../x` or an absolute path wrote its
    predictions outside OUT (found by a hostile review). A name given twice is refused before
    the first run is predicted."""
    run = tmp_path / "run"
    run.mkdir()
    tiny_checkpoint(run / "best.pt", 0)
    for names in (["../escaped"], [str(tmp_path / "absolute")], ["..", "a"], ["a", "a"]):
        specs = [arg for name in names for arg in ("--run", f"{name}={run}")]
        result = cli(*specs, "--data", tmp_path / "no-data", "--out", tmp_path / "o")
        expected = "is given twice" if names == ["a", "a"] else "must be a plain name"
        assert result.exit_code == 2 and expected in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def tiny_checkpoint(path, seed: int, layout: str = "auto"):
    """An untrained tiny SCA-UNet checkpoint: another seed, another network's predictions."""
    import torch

    from kidneyseg import checkpoint as ck
    from kidneyseg.config import DataConfig, InferenceConfig, ModelConfig, PreprocessConfig, RunConfig

    config = RunConfig(
        labels="kits23",
        preprocess=PreprocessConfig(spacing=(6.0, 6.0, 6.0)),
        model=ModelConfig("sca_unet_3d", {"channels": [4, 8, 16, 16]}),
        inference=InferenceConfig(roi_size=(32, 32, 16)),
        data=DataConfig(layout=layout, patch_size=(32, 32, 16)),
    )
    torch.manual_seed(seed)
    return ck.save_checkpoint(
        path, model_state=ck.build_model_from_config(config).state_dict(), config=config
    )


def test_a_run_is_predicted_again_when_its_checkpoint_or_data_change(cli, tmp_path, one_torch_thread):
    """`--run` reuses a case's prediction only when predict's run record says it was made from
    the same checkpoint and CT (was: any `<case>.nii.gz` in the folder was reused): after best.pt
    is replaced, or with another --data, the scores are those of a fresh comparison."""
    from kidneyseg.data.phantom import generate_dataset

    data, other_data, run = tmp_path / "data", tmp_path / "other_data", tmp_path / "run"
    generate_dataset(data, 2, seed=0, size="tiny", progress=False)
    generate_dataset(other_data, 2, seed=1, size="tiny", progress=False)
    run.mkdir()
    split = {"data_dir": str(data), "val_cases": ["case_00000", "case_00001"], "train_cases": []}
    (run / "run.json").write_text(json.dumps(split))

    def kidney_dice(out, *more):
        result = cli("--run", f"m={run}", "--no-train-set", "--bootstrap", 100, "--out", out, *more)
        assert result.exit_code == 0, result.output
        return [row["dice_kidney"] for row in read_csv(out / "runs" / "m" / "validation" / "per_case.csv")]

    tiny_checkpoint(run / "best.pt", seed=0)
    first = kidney_dice(tmp_path / "cmp")
    tiny_checkpoint(run / "best.pt", seed=1)
    again = kidney_dice(tmp_path / "cmp")
    assert again != first and again == kidney_dice(tmp_path / "fresh")
    assert kidney_dice(tmp_path / "cmp") == again  # unchanged: reused, not predicted
    record = json.loads((tmp_path / "cmp" / "runs" / "m" / "validation" / "predict_run.json").read_text())
    assert [c["status"] for c in record["cases"]] == ["skipped", "skipped"]
    spelled = tmp_path / "data" / ".." / "cmp"  # another spelling of the same folder: reused too
    assert kidney_dice(spelled) == again
    record = json.loads((tmp_path / "cmp" / "runs" / "m" / "validation" / "predict_run.json").read_text())
    assert [c["status"] for c in record["cases"]] == ["skipped", "skipped"]
    other = kidney_dice(tmp_path / "cmp", "--data", other_data)
    assert other == kidney_dice(tmp_path / "fresh_other", "--data", other_data) and other != again


def test_a_test_set_is_every_case_of_another_dataset_and_never_the_runs_own(tmp_path, one_torch_thread):
    """`evaluate_test_set` (the demo's held-out figures): every case of another labelled dataset,
    predicted and scored as a run's own sets are; the run's own dataset, under any spelling, is
    refused before anything is predicted, and so is a test set linking to one of its cases or
    holding a copy of one."""
    from kidneyseg.data.phantom import generate_dataset
    from kidneyseg.errors import KidneysegError
    from kidneyseg.evaluate.runs import evaluate_test_set

    data, test, run = tmp_path / "data", tmp_path / "test", tmp_path / "run"
    generate_dataset(data, 1, seed=0, size="tiny", progress=False)
    generate_dataset(test, 2, seed=1, size="tiny", progress=False)
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"data_dir": str(data), "val_cases": [], "train_cases": []}))
    tiny_checkpoint(run / "best.pt", seed=0)
    for own in (data, tmp_path / "test" / ".." / "data"):
        with pytest.raises(KidneysegError, match="is the dataset the run trained on, not a test set"):
            evaluate_test_set(run, own, tmp_path / "eval", progress=False)
    linked = tmp_path / "linked"
    generate_dataset(linked, 2, seed=1, size="tiny", progress=False)
    shutil.rmtree(linked / "dataset" / "case_00001")
    (linked / "dataset" / "case_00001").symlink_to(data / "dataset" / "case_00000", target_is_directory=True)
    own_case = r"holds 1 CT file\(s\) of the dataset the run trained on \(case_00001\)"
    with pytest.raises(KidneysegError, match=own_case):
        evaluate_test_set(run, linked, tmp_path / "eval", progress=False)
    (linked / "dataset" / "case_00001").unlink()
    shutil.copytree(data / "dataset" / "case_00000", linked / "dataset" / "case_00001")  # a copy
    with pytest.raises(KidneysegError, match=own_case):
        evaluate_test_set(run, linked, tmp_path / "eval", progress=False)
    assert not (tmp_path / "eval").exists()
    rows = evaluate_test_set(run, test, tmp_path / "eval", progress=False)
    assert [r["case_id"] for r in rows] == ["case_00000", "case_00001"]
    written = read_csv(tmp_path / "eval" / "test" / "per_case.csv")
    assert [float(r["dice_kidney"]) for r in written] == pytest.approx([r["dice_kidney"] for r in rows])
    assert all((tmp_path / "eval" / "test" / f"{r['case_id']}.nii.gz").is_file() for r in rows)


def test_other_data_jobs_or_device_are_refused_before_any_prediction(cli, tmp_path, monkeypatch):
    """Found by a hostile run: `--data` holding other files under the run's case ids was scored as
    the run's own validation set; `--jobs 0` was refused only after predicting (leaving its
    predictions); `--device cuda` without CUDA ended in a traceback. Each is now one line, exit
    2, before anything is written; the run's own data is still scored."""
    import torch

    from kidneyseg.data.cases import discover
    from kidneyseg.data.phantom import generate_dataset

    data, other_data, run = tmp_path / "data", tmp_path / "other_data", tmp_path / "run"
    generate_dataset(data, 2, seed=0, size="tiny", progress=False)
    generate_dataset(other_data, 2, seed=1, size="tiny", progress=False)
    run.mkdir()
    sizes = {c.case_id: c.file_sizes() for c in discover(data).cases}
    assert sizes != {c.case_id: c.file_sizes() for c in discover(other_data).cases}
    split = {"data_dir": str(data), "val_cases": sorted(sizes), "train_cases": [], "case_file_sizes": sizes}
    (run / "run.json").write_text(json.dumps(split))
    tiny_checkpoint(run / "best.pt", seed=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    base = ("--run", f"m={run}", "--no-train-set", "--bootstrap", 100, "--out", tmp_path / "cmp")
    for more, expected in (
        (("--data", other_data), "holds other files under the run's validation case ids"),
        (("--jobs", 0), "--jobs must be at least 1"),
        (("--device", "cuda"), "torch sees no CUDA device"),
    ):
        result = cli(*base, *more)
        assert result.exit_code == 2 and expected in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not (tmp_path / "cmp").exists()
    result = cli(*base, "--data", data)
    assert result.exit_code == 0, result.output
    assert len(read_csv(tmp_path / "cmp" / "runs" / "m" / "validation" / "per_case.csv")) == 2
    # Found by a review: with the training set, its cases were checked only after the validation
    # set was predicted and written.
    split.update(val_cases=["case_00000"], train_cases=["case_00001"])
    (run / "run.json").write_text(json.dumps(split))
    both = ("--run", f"m={run}", "--bootstrap", 100, "--out", tmp_path / "cmp2", "--data", other_data)
    result = cli(*both)
    assert result.exit_code == 2 and "under the run's validation case ids" in result.output, result.output
    sizes["case_00000"] = (
        discover(other_data).subset(["case_00000"])[0].file_sizes()
    )  # validation: as if its own
    (run / "run.json").write_text(json.dumps(split))
    result = cli(*both)
    assert result.exit_code == 2 and "under the run's training case ids" in result.output, result.output
    assert not (tmp_path / "cmp2").exists()


def test_a_run_is_scored_on_its_data_read_with_its_own_layout(cli, tmp_path, one_torch_thread):
    """Was: `--run` read the run's dataset with layout auto, so a run trained with
    `data.layout=kits23` on a folder that also holds images/ + labels/ was refused."""
    import shutil

    from kidneyseg.data.phantom import generate_dataset

    data, run = tmp_path / "data", tmp_path / "run"
    generate_dataset(data, 2, seed=0, size="tiny", progress=False)
    for case in ("case_00000", "case_00001"):  # the same cases again in the plain layout
        for folder, name in (("images", "imaging"), ("labels", "segmentation")):
            (data / folder).mkdir(exist_ok=True)
            shutil.copy(data / "dataset" / case / f"{name}.nii.gz", data / folder / f"{case}.nii.gz")
    run.mkdir()
    split = {"data_dir": str(data), "val_cases": ["case_00000", "case_00001"], "train_cases": []}
    (run / "run.json").write_text(json.dumps(split))
    tiny_checkpoint(run / "best.pt", seed=0, layout="kits23")
    result = cli("--run", f"m={run}", "--no-train-set", "--bootstrap", 100, "--out", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    rows = read_csv(tmp_path / "cmp" / "runs" / "m" / "validation" / "per_case.csv")
    assert [row["case_id"] for row in rows] == ["case_00000", "case_00001"]


@pytest.mark.slow
def test_compare_trained_runs_end_to_end(cli, tmp_path):
    """Train one tiny SCA-UNet on phantoms, then compare it with itself through `--run`:
    its held-out cases are predicted and evaluated, and the paired difference is exactly 0."""
    import torch

    from kidneyseg.data.phantom import generate_dataset
    from kidneyseg.recipes import load_recipe
    from kidneyseg.train import engine

    torch.set_num_threads(1)
    data = tmp_path / "phantoms"
    generate_dataset(data, cases=4, seed=0, size="tiny", progress=False)
    overrides = [
        "preprocess.spacing=[6.0, 6.0, 6.0]",
        "data.num_workers=0",
        "train.val_max_cases=0",
        "data.patch_size=[32, 32, 16]",
        "inference.roi_size=[32, 32, 16]",
        "data.samples_per_case=1",
        "data.batch_size=2",
        "model.kwargs.channels=[4, 8, 8, 8]",
        "train.epochs=1",
    ]
    run = tmp_path / "run"
    engine.train(load_recipe("sca-unet-3d:cpu", overrides=overrides), data, run, progress=False)
    split = json.loads((run / "run.json").read_text())
    out = tmp_path / "cmp"
    result = cli("--run", f"a={run}", "--run", f"b={run}", "--out", out, "--bootstrap", 200)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["sets"]["validation"]["cases"] == sorted(split["val_cases"])
    assert summary["sets"]["training"]["cases"] == sorted(split["train_cases"])
    for case in split["val_cases"]:
        assert (out / "runs" / "a" / "validation" / f"{case}.nii.gz").is_file()
    paired = summary["sets"]["validation"]["metrics"]["hec_dice"]["paired"]["a vs b"]
    assert paired["Mean"]["mean_difference"] == 0.0


def test_compare_leaves_a_box_plot_it_did_not_write(cli, tmp_path, rng):
    """Was: any `boxplot_<set>_<class>.png` in --out that the run did not write was removed by
    its name alone. Now only plots an earlier comparison recorded, still as it wrote them, go."""
    val = write_csv(tmp_path / "a" / "val" / "per_case.csv", synthetic_rows(rng, 12, 0.9))
    train = write_csv(tmp_path / "a" / "train" / "per_case.csv", synthetic_rows(rng, 20, 0.9))
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "boxplot_training_kidney.png").write_bytes(b"the user's own plot")
    args = ("--eval", f"a={val}", "--out", out, "--bootstrap", 100)
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert "removed" not in result.output
    assert (out / "boxplot_training_kidney.png").read_bytes() == b"the user's own plot"
    assert cli(*args, "--train-eval", f"a={train}").exit_code == 0
    with (out / "boxplot_training_tumor.png").open("ab") as plot:
        plot.write(b"edited")
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert "that this one lacks: boxplot_training_kidney.png, boxplot_training_cyst.png, " in result.output
    assert sorted(p.name for p in out.glob("boxplot_training_*")) == ["boxplot_training_tumor.png"]


def test_a_training_evaluation_without_its_held_out_one_or_one_folder_under_two_names_is_refused(
    cli, tmp_path, rng
):
    """`--train-eval b=DIR` without `--eval b=...` (was: a training set of model b alone), and
    one evaluation under two names (was: a model compared with itself, p = 1), are refused
    before anything is written."""
    val = write_csv(tmp_path / "a" / "val" / "per_case.csv", synthetic_rows(rng, 12, 0.9))
    train = write_csv(tmp_path / "a" / "train" / "per_case.csv", synthetic_rows(rng, 20, 0.9))
    out = tmp_path / "cmp"
    result = cli("--eval", f"a={val.parent}", "--train-eval", f"b={train}", "--out", out)
    assert result.exit_code == 2, result.output
    assert "--train-eval: model 'b' has no --eval b=DIR" in result.output
    result = cli("--eval", f"a={val.parent}", "--eval", f"b={val}", "--out", out)
    assert result.exit_code == 2, result.output
    assert result.output == f"error: --eval: {val.resolve()} is given as both --eval a and --eval b\n"
    result = cli("--eval", f"a={val.parent}", "--train-eval", f"a={val}", "--out", out)
    assert result.exit_code == 2 and "is given as both --eval a and --train-eval a" in result.output
    run = tmp_path / "run"  # its training set: compare's own unless --no-train-set
    result = cli("--run", f"r={run}", "--train-eval", f"r={train}", "--out", out)
    assert result.exit_code == 2 and "model 'r' is a --run, whose training cases" in result.output
    result = cli("--run", f"r={run}", "--train-eval", f"r={train}", "--no-train-set", "--out", out)
    assert "--train-eval" not in result.output and "not a kidneyseg training run" in result.output
    assert not out.exists()
    result = cli(
        "--eval", f"a={val.parent}", "--train-eval", f"a={train.parent}", "--out", out, "--bootstrap", 100
    )
    assert result.exit_code == 0, result.output


def test_the_mean_columns_ci_averages_the_same_classes_in_every_resample():
    """Constant class columns, a cyst in 2 of 20 cases: the mean of means is the same in every
    resample (was: [0.567, 0.800], the resamples without a cyst averaging two classes only;
    found by a hostile run)."""
    values = np.column_stack([np.full(20, 0.9), np.full(20, 0.7), np.full(20, np.nan)])
    values[[3, 11], 2] = 0.1
    mean = bootstrap_mean_of_means(values, n_boot=2000)
    assert mean.mean == pytest.approx(0.5667, abs=1e-4)
    assert mean.low == pytest.approx(mean.mean) and mean.high == pytest.approx(mean.mean)


def test_the_mean_averages_the_classes_every_model_has(cli, tmp_path, rng):
    """Model a is perfect on kidney and tumor with a false cyst in one case (cyst Dice 0, n = 1);
    model b has no cyst anywhere and kidney Dice 0.6. The Mean averages kidney and tumor for
    both (was: a over three classes, b over two, ranking b first; found by a hostile run), says
    so, and its paired test compares the same classes."""
    rows = {name: synthetic_rows(rng, 20, 0.9) for name in "ab"}
    for i in range(20):
        rows["a"][i].update(dice_kidney=1.0, dice_tumor=1.0, dice_cyst=0.0 if i == 4 else float("nan"))
        rows["b"][i].update(dice_kidney=0.6, dice_tumor=1.0, dice_cyst=float("nan"))
        for r in (rows["a"][i], rows["b"][i]):
            defined = [r[c] for c in ("dice_kidney", "dice_tumor", "dice_cyst") if not np.isnan(r[c])]
            r["dice_mean"] = float(np.mean(defined))
    args = []
    for name, model_rows in rows.items():
        args += ["--eval", f"{name}={write_csv(tmp_path / name / 'per_case.csv', model_rows)}"]
    out = tmp_path / "cmp"
    result = cli(*args, "--out", out, "--bootstrap", 200)
    assert result.exit_code == 0, result.output
    dice = json.loads((out / "comparison.json").read_text())["sets"]["validation"]["metrics"]["dice"]
    assert dice["mean_leaves_out"] == {"Cyst": ["b"]}
    assert dice["models"]["a"]["Mean"]["mean"] == pytest.approx(1.0)
    assert dice["models"]["b"]["Mean"]["mean"] == pytest.approx(0.8)
    assert dice["paired"]["a vs b"]["Mean"]["mean_difference"] == pytest.approx(0.2)
    assert "The Mean leaves out Cyst for every model: b has no case with a Cyst value" in result.output
    assert "The Mean leaves out Cyst" in (out / "comparison.md").read_text()
