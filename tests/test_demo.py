"""The demo end to end on tiny phantoms: every stage's output, linked from index.html."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from kidneyseg.cli import app
from kidneyseg.demo import FINETUNE_OVERRIDES, DemoSettings, run_demo
from kidneyseg.io.volume import read_volume
from kidneyseg.report import ReportOptions

TINY = ("preprocess.spacing=[6.0, 6.0, 6.0]", "data.num_workers=0", "train.epochs=1")
TINY_2D = (
    *TINY,
    "data.patch_size=[48, 48]",
    "data.batch_size=8",
    "model.kwargs.channels=[4, 8, 16]",
    "inference.roi_size=[48, 48]",
)
TINY_3D = (
    *TINY,
    "data.patch_size=[32, 32, 16]",
    "data.samples_per_case=1",
    "data.batch_size=2",
    "model.kwargs.channels=[4, 8, 8, 8]",
    "inference.roi_size=[32, 32, 16]",
)


def test_demo_writes_every_stage_and_links_it(tmp_path):
    out = tmp_path / "demo"
    settings = DemoSettings(
        recipe="attention-unet-2d", cases=5, size="tiny", device="cpu", overrides=TINY_2D, test_cases=2
    )
    result = run_demo(out, settings, progress=False)

    record = json.loads((out / "demo.json").read_text())
    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    held_out = record["held_out_cases"]
    assert len(held_out) == 2 and summary["n_cases"] == 2
    assert record["scores"]["kidney_dice"] == summary["metrics"]["dice_kidney"]["mean"]
    assert 0.0 <= result.scores["kidney_dice"] <= 1.0
    run = json.loads((out / "run" / "run.json").read_text())
    assert sorted(run["train_cases"] + run["val_cases"]) == [f"case_{i:05d}" for i in range(5)]

    def seeds(folder):
        return {json.loads(p.read_text())["seed"] for p in (out / folder / "dataset").glob("*/phantom.json")}

    assert len(seeds("phantoms")) == 5 and len(seeds("test-phantoms")) == 2
    assert not seeds("phantoms") & seeds("test-phantoms")  # the test phantoms are other cases
    for case_id in held_out:
        ct = read_volume(out / "test-phantoms" / "dataset" / case_id / "imaging.nii.gz")
        pred = read_volume(out / "evaluation" / "test" / f"{case_id}.nii.gz")
        assert pred.shape == ct.shape and np.allclose(pred.affine, ct.affine)
        assert (out / "reports" / f"{case_id}_report.html").is_file()

    page = result.index.read_text()
    for href in re.findall(r'(?:href|src)="([^"]+)"', page):
        assert (out / href).is_file(), href
    assert len(re.findall(r"_report\.html", page)) == len(held_out)


def test_demo_resumes_a_finished_folder_and_refuses_another_recipe_or_settings_there(tmp_path, monkeypatch):
    """Found in review: a finished run was kept whatever it was trained with, while `demo.json`
    recorded this demo's settings; now another recipe or other settings are refused in one line
    naming the run's config.yaml, before anything is written."""
    import kidneyseg.demo
    from kidneyseg.errors import KidneysegError

    monkeypatch.setattr(kidneyseg.demo, "DEMO_OVERRIDES", (*kidneyseg.demo.DEMO_OVERRIDES, *TINY_3D))
    out = tmp_path / "demo"
    settings = DemoSettings(cases=4, size="tiny", device="cpu", test_cases=1)
    first = run_demo(out, settings, progress=False)
    checkpoint = out / "run" / "last.pt"
    stamp = checkpoint.stat().st_mtime_ns
    again = run_demo(out, settings, progress=False)
    assert checkpoint.stat().st_mtime_ns == stamp
    assert again.scores == first.scores and again.seconds["train"] < first.seconds["train"]

    before = sorted(p.name for p in out.rglob("*"))
    monkeypatch.setattr(kidneyseg.demo, "DEMO_OVERRIDES", (*kidneyseg.demo.DEMO_OVERRIDES, "train.lr=0.01"))
    real_ct = out / "test-phantoms" / "dataset" / "case_00000" / "imaging.nii.gz"
    with pytest.raises(KidneysegError) as refused:
        run_demo(out, DemoSettings(cases=4, size="tiny", device="cpu", test_cases=1, real_ct=real_ct))
    assert str(refused.value) == (
        f"{out / 'run' / 'config.yaml'}: the run here was trained with train.lr=0.003 where this "
        "demo asks for 0.01 (1 setting(s) differ); choose another --out"
    )
    assert sorted(p.name for p in out.rglob("*")) == before and checkpoint.stat().st_mtime_ns == stamp

    monkeypatch.undo()  # the 2D recipe cannot take the tiny 3D settings
    with pytest.raises(KidneysegError) as other:
        run_demo(out, DemoSettings(recipe="unet-2d", cases=4, size="tiny", device="cpu", test_cases=1))
    assert other.value.path == str(out / "run") and "sca-unet-3d" in str(other.value)
    assert sorted(p.name for p in out.rglob("*")) == before and checkpoint.stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cases", "1"], "the demo needs at least 2 phantom cases (to train and validate on), got 1"),
        (["--test-cases", "0"], "the demo needs at least 1 test phantom, got 0"),
        (["--device", "bogus"], "unknown device 'bogus'"),
        (["--real-ct-labels", "seg.nii.gz"], "--real-ct-labels were given without the CT"),
        (["--seed", "-1"], "Invalid value for '--seed'"),
    ],
    ids=["too-few-cases", "no-test-cases", "unknown-device", "labels-without-ct", "negative-seed"],
)
def test_demo_with_bad_settings_refuses_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--fast", "--quiet", *args])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and message in result.output
    assert len(result.output.splitlines()) == 1, result.output
    assert not out.exists()


def test_demo_refuses_a_folder_holding_more_phantoms_than_asked(tmp_path):
    """Found in review: a demo folder of an earlier, larger demo was trained on (or scored) whole
    while `demo.json` recorded the smaller number asked; now one line names the folder, before
    anything is written."""
    from kidneyseg.data.phantom import generate_dataset
    from kidneyseg.demo import TEST_SEED_OFFSET

    out = tmp_path / "demo"
    generate_dataset(out / "test-phantoms", 2, seed=TEST_SEED_OFFSET, size="tiny", progress=False)
    args = ["demo", "--out", str(out), "--cases", "3", "--test-cases", "1", "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.output == (
        f"error: {out / 'test-phantoms' / 'dataset'}: holds 2 phantom cases where this demo asks for 1 "
        "(--cases, --test-cases): choose another --out\n"
    )
    assert sorted(p.name for p in out.iterdir()) == ["test-phantoms"]


def test_demo_refuses_a_folder_holding_phantoms_of_another_seed(tmp_path):
    """Found in review: as many phantoms as asked but of another `--seed` were kept, trained on
    and scored while `demo.json` recorded the seed asked; now refused before anything is written."""
    from kidneyseg.data.phantom import generate_dataset
    from kidneyseg.demo import TEST_SEED_OFFSET

    out = tmp_path / "demo"
    generate_dataset(out / "test-phantoms", 1, seed=TEST_SEED_OFFSET, size="small", progress=False)
    args = ["demo", "--out", str(out), "--seed", "1", "--test-cases", "1", "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.output.startswith(
        f"error: {out / 'test-phantoms' / 'dataset'}: already holds phantoms made "
    )
    assert "another seed" in result.output and len(result.output.splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["test-phantoms"]


def test_demo_starts_with_a_real_ct_and_the_bundled_model(tmp_path):
    """`--real-ct` (here a phantom stands in for it): labels, report, Dice and confidence, linked."""
    from kidneyseg.data.phantom import generate_dataset

    case = generate_dataset(tmp_path / "real", cases=1, seed=3, size="tiny", progress=False)[0]
    out = tmp_path / "demo"
    settings = DemoSettings(
        cases=3,
        size="tiny",
        device="cpu",
        overrides=TINY_3D,
        test_cases=1,
        real_ct=case / "imaging.nii.gz",
        real_ct_labels=case / "segmentation.nii.gz",
    )
    result = run_demo(out, settings, progress=False)
    real = json.loads((out / "demo.json").read_text())["real_ct"]
    assert real == result.real_ct and real["model"] == "sca-unet-3d-transfer"
    labels = read_volume(out / "real-ct" / "labels.nii.gz")
    reference = read_volume(case / "segmentation.nii.gz").array > 0
    predicted = labels.array > 0
    assert real["kidney_dice"] == round(
        2 * (reference & predicted).sum() / (reference.sum() + predicted.sum()), 4
    )
    assert real["kidney_dice"] >= 0.9  # the bundled model finds this phantom's kidneys (0.98)
    assert 0 < real["confidence"] <= 1
    report = json.loads((out / real["report"]).with_suffix(".json").read_text())
    threshold = ReportOptions().min_sure_fraction
    unsure = [
        r for r in report["lesions"] if r["sure_fraction"] is not None and r["sure_fraction"] < threshold
    ]
    assert (real["lesions"], real["uncertain_lesions"]) == (len(report["lesions"]), len(unsure))
    page = result.index.read_text()
    assert "Real CT, bundled pretrained model" in page and real["report"] in page
    assert f"{real['lesions']} lesion(s), the model unsure of {real['uncertain_lesions']}" in page
    assert real["warnings"] == [w["code"] for w in report["warnings"]]
    phase = json.loads((case / "phantom.json").read_text())["phase"]
    assert ("unenhanced_scan" in real["warnings"]) == (phase == "noncontrast")
    assert "report warnings: " + ", ".join(real["warnings"]) in page
    assert (out / real["report"]).is_file()


def test_demo_starts_from_the_bundled_weights_when_the_network_is_the_bundled_models(tmp_path):
    """SCA-UNet 3D's cpu network is the bundled model's: the demo fine-tunes it with its
    fine-tuning settings (a learning rate too small to move the weights shows where training
    started); `--from-scratch` does not."""
    import torch

    from kidneyseg.checkpoint import load_checkpoint
    from kidneyseg.predict.pretrained import BUNDLED, bundled_path

    patch = ("data.patch_size=[32, 32, 16]", "inference.roi_size=[32, 32, 16]", "data.samples_per_case=1")
    same_network = (*TINY, *patch, "train.lr=1.0e-12")
    bundled = load_checkpoint(bundled_path()).model_state
    for from_bundled in (True, False):
        out = tmp_path / f"demo-{from_bundled}"
        settings = DemoSettings(
            cases=3,
            size="tiny",
            device="cpu",
            overrides=same_network,
            from_bundled=from_bundled,
            test_cases=1,
        )
        result = run_demo(out, settings, progress=False)
        record = json.loads((out / "demo.json").read_text())
        trained = load_checkpoint(out / "run" / "last.pt").model_state
        same = all(torch.allclose(trained[k].float(), bundled[k].float(), atol=1e-6) for k in bundled)
        assert same is from_bundled
        assert record["initial_weights"] == (BUNDLED if from_bundled else None)
        assert record["settings"]["from_bundled"] is from_bundled
        assert (set(FINETUNE_OVERRIDES) <= set(record["settings"]["overrides"])) is from_bundled
        run_config = load_checkpoint(out / "run" / "best.pt").config
        assert run_config.train.val_max_cases == (6 if from_bundled else 3)
        assert run_config.train.lr == 1.0e-12  # the caller's overrides come last
        assert ("starting from the weights of" in result.index.read_text()) is from_bundled
        chosen = json.loads((out / "run" / "run.json").read_text())["postprocessing"]["absorb_islands_ml"]
        assert (
            record["absorb_islands_ml"]
            == chosen
            == load_checkpoint(out / "run" / "best.pt").config.inference.absorb_islands_ml
        )
        assert (
            "Post-processing chosen on its validation cases when training ended" in result.index.read_text()
        )


@pytest.fixture(scope="module")
def real_case(tmp_path_factory):
    """A tiny phantom standing in for a real CT, and label maps that do not fit it."""
    import nibabel as nib

    from kidneyseg.data.phantom import generate_dataset

    root = tmp_path_factory.mktemp("real")
    case = generate_dataset(root, cases=1, seed=3, size="tiny", progress=False)[0]
    seg = nib.load(case / "segmentation.nii.gz")
    labels, affine = np.asanyarray(seg.dataobj), seg.affine
    shifted = affine.copy()
    shifted[:3, 3] += 40
    for name, array, grid in (
        ("shifted", labels, shifted),
        ("sevens", np.full(labels.shape, 7, np.uint8), affine),
        ("halves", labels.astype(np.float32) * 0.5, affine),
        ("cropped", labels[:, :, : labels.shape[2] // 2], affine),
        ("mask_as_ct", labels.astype(np.int16), nib.load(case / "imaging.nii.gz").affine),
    ):
        nib.save(nib.Nifti1Image(np.ascontiguousarray(array), grid), root / f"{name}.nii.gz")
    return case


@pytest.mark.parametrize(
    ("ct", "labels", "message"),
    [
        ("imaging", "shifted", r"label map geometry differs from the CT's \(.*\): origin"),
        ("imaging", "sevens", r"label values \[7\] are not in the kits23 label map"),
        ("imaging", "halves", "label map holds non-integer values"),
        ("imaging", "cropped", r"label map shape \(.*\) differs from the CT's"),
        ("mask_as_ct", None, "the image looks already normalised"),
    ],
    ids=["labels-40mm-off", "label-7", "labels-1.5", "labels-of-another-shape", "mask-as-ct"],
)
def test_demo_checks_the_real_ct_and_its_labels_before_anything(
    real_case, tmp_path, monkeypatch, ct, labels, message
):
    """(was: a Dice from labels on another grid or with values 7 and 1.5, a label map segmented as a
    CT, and for labels of another shape a numpy traceback after predicting, outputs left behind)"""
    from kidneyseg.predict import Predictor

    monkeypatch.setattr(Predictor, "predict", lambda *a, **k: pytest.fail("predicted"))
    root = real_case.parent.parent
    ct_path = real_case / "imaging.nii.gz" if ct == "imaging" else root / f"{ct}.nii.gz"
    args = [
        "demo",
        "--out",
        str(tmp_path / "demo"),
        "--fast",
        "--quiet",
        "--device",
        "cpu",
        "--real-ct",
        str(ct_path),
    ]
    if labels is not None:
        args += ["--real-ct-labels", str(root / f"{labels}.nii.gz")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert len(result.output.splitlines()) == 1 and re.match(
        rf"error: .*{labels or ct}\.nii\.gz: ", result.output
    )
    assert re.search(message, result.output), result.output
    assert not (tmp_path / "demo").exists()
