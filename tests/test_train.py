"""The training engine end to end on tiny phantoms: run folder, determinism, exact resume,
2D stage-2 fine-tuning, bad input, divergence, the CLI and DDP with gloo."""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kidneyseg.checkpoint import load_checkpoint, save_checkpoint
from kidneyseg.cli import app
from kidneyseg.config import RunConfig
from kidneyseg.data.phantom import generate_dataset
from kidneyseg.errors import KidneysegError
from kidneyseg.io.atomic import partial_name
from kidneyseg.plaindata import differences, dump_yaml, from_dict, load_yaml
from kidneyseg.recipes import load_recipe
from kidneyseg.train import engine, record, trainer

TINY = ["preprocess.spacing=[6.0, 6.0, 6.0]", "data.num_workers=0", "train.val_max_cases=0"]
SCA = [
    *TINY,
    "data.patch_size=[32, 32, 16]",
    "inference.roi_size=[32, 32, 16]",
    "data.samples_per_case=1",
    "data.batch_size=2",
    "data.cache_rate=0.5",  # 5 training cases: SmartCache holds 2 and replaces 1 per epoch
    "model.kwargs.channels=[4, 8, 8, 8]",
]
AG = [
    *TINY,
    "data.patch_size=[48, 48]",
    "inference.roi_size=[48, 48]",
    "data.batch_size=8",
    "model.kwargs.channels=[4, 8, 16]",
]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantoms")
    generate_dataset(root, cases=6, seed=0, size="tiny", progress=False)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module", autouse=True)
def _one_thread_for_every_run(one_torch_thread):
    """Runs compared weight for weight must sum in the same order: one torch thread throughout
    (the killed runs' children use one), whatever OMP_NUM_THREADS the suite runs with."""


@pytest.fixture(scope="module")
def run3d(phantoms, cache, tmp_path_factory) -> Path:
    """An uninterrupted 2-epoch SCA-UNet run: the reference for determinism and resume."""
    out = tmp_path_factory.mktemp("runs") / "sca"
    engine.train(
        load_recipe("sca-unet-3d:cpu", overrides=[*SCA, "train.epochs=2"]), phantoms, out, cache_dir=cache
    )
    return out


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model_state


def test_run_folder_holds_config_metrics_curves_record_and_checkpoints(run3d):
    assert {p.name for p in run3d.iterdir()} >= {"config.yaml", "metrics.csv", "curves.png", "run.json"}
    config = from_dict(RunConfig, load_yaml(run3d / "config.yaml"))
    last = load_checkpoint(run3d / "last.pt")
    assert last.config == config and config.model.kwargs["out_channels"] == 4
    assert last.extra["epoch"] == 2
    torch.load(run3d / "best.pt", weights_only=True)
    rows = _rows(run3d)
    assert [r["epoch"] for r in rows] == ["1.0", "2.0"]
    for r in rows:
        assert float(r["train_loss"]) > 0 and 0 <= float(r["val_dice"]) <= 1
        assert {
            "val_dice_kidney",
            "val_dice_tumor",
            "val_dice_cyst",
            "patches_per_second",
            "cpu_seconds",
        } <= set(r)
    assert (run3d / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((run3d / "run.json").read_text())
    assert record["status"] == "finished" and record["epochs_done"] == 2 and record["device"] == "cpu"
    assert record["wall_seconds_training"] > 0 and record["cpu_seconds_training"] > 0
    assert set(record["versions"]) >= {"torch", "monai", "kidneyseg"}
    assert len(record["train_cases"]) == 5 and len(record["val_cases"]) == 1
    best = max(float(r["val_dice"]) for r in rows)
    assert record["best_val_dice"] == pytest.approx(best)
    chosen = record["postprocessing"]  # chosen for best.pt on the validation cases
    settings = [0.0, *config.train.absorb_candidates_ml]
    assert chosen["cases"] == record["val_cases"] and [r["ml"] for r in chosen["settings"]] == settings
    best_pt = load_checkpoint(run3d / "best.pt")
    assert best_pt.config.inference.absorb_islands_ml == chosen["absorb_islands_ml"]


def test_same_seed_same_losses_and_resume_is_exact(run3d, phantoms, cache, tmp_path):
    out = tmp_path / "interrupted"
    engine.train(
        load_recipe("sca-unet-3d:cpu", overrides=[*SCA, "train.epochs=1"]), phantoms, out, cache_dir=cache
    )
    first = _rows(out)
    reference = _rows(run3d)
    keys = ("train_loss", "val_loss", "val_dice", "lr")
    assert [first[0][k] for k in keys] == [reference[0][k] for k in keys]  # same seed, same numbers
    result = engine.resume(out, epochs=2)
    assert result.epochs == 2
    resumed = _rows(out)
    assert [[r[k] for k in keys] for r in resumed] == [[r[k] for k in keys] for r in reference]
    a, b = _weights(out / "last.pt"), _weights(run3d / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_keeps_each_epochs_weights_when_asked_and_a_lost_one_is_rewritten_on_resume(
    run3d, phantoms, cache, tmp_path
):
    out = tmp_path / "kept"
    keep = [*SCA, "train.keep_epoch_weights=true"]
    engine.train(
        load_recipe("sca-unet-3d:cpu", overrides=[*keep, "train.epochs=1"]), phantoms, out, cache_dir=cache
    )
    first = out / "epochs" / "epoch_0001.pt"
    after_one = _weights(out / "last.pt")
    assert all(torch.equal(_weights(first)[k], after_one[k]) for k in after_one)
    assert load_checkpoint(first).extra == {}  # weights alone, no training state
    first.unlink()  # as if killed between last.pt and the epoch's own file, mid-write
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    partial = partial_name(first)
    partial.with_name(partial.name.replace(f"-{os.getpid()}", f"-{int(dead.stdout)}")).write_bytes(b"half")
    engine.resume(out, epochs=2)
    assert sorted(p.name for p in (out / "epochs").iterdir()) == ["epoch_0001.pt", "epoch_0002.pt"]
    assert all(torch.equal(_weights(first)[k], after_one[k]) for k in after_one)
    second, reference = _weights(out / "epochs" / "epoch_0002.pt"), _weights(run3d / "last.pt")
    assert all(torch.equal(second[k], reference[k]) for k in reference)
    assert not (run3d / "epochs").exists()  # off by default


def test_an_interrupted_run_says_so_in_its_record_and_resumes(run3d, phantoms, cache, tmp_path, monkeypatch):
    out = tmp_path / "stopped"
    epochs = []
    train_epoch = trainer.Trainer._train_epoch

    def second_epoch_interrupted(self, samples, epoch):
        epochs.append(epoch)
        if epoch == 1:  # Ctrl-C or SIGTERM, under the error of a data-loader worker it killed
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise RuntimeError("DataLoader worker (pid 12345) is killed by signal: Terminated.") from None
        return train_epoch(self, samples, epoch)

    monkeypatch.setattr(trainer.Trainer, "_train_epoch", second_epoch_interrupted)
    config = load_recipe("sca-unet-3d:cpu", overrides=[*SCA, "train.epochs=2"])
    with pytest.raises(RuntimeError, match="DataLoader worker"):
        engine.train(config, phantoms, out, cache_dir=cache, progress=False)
    record = json.loads((out / "run.json").read_text())
    assert epochs == [0, 1] and record["status"] == "interrupted"
    assert record["epochs_done"] == load_checkpoint(out / "last.pt").extra["epoch"] == 1
    monkeypatch.undo()
    assert engine.resume(out, progress=False).epochs == 2
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


def test_a_run_that_fails_after_it_started_says_so_in_its_record(phantoms, cache, tmp_path, monkeypatch):
    """Was: `run.json` said "running" after any error but an interrupt or a divergence."""

    def broken_epoch(self, samples, epoch):
        raise RuntimeError("an error in epoch 1")

    monkeypatch.setattr(trainer.Trainer, "_train_epoch", broken_epoch)
    out = tmp_path / "failed"
    config = load_recipe("sca-unet-3d:cpu", overrides=[*SCA, "train.epochs=1"])
    with pytest.raises(RuntimeError, match="an error in epoch 1"):
        engine.train(config, phantoms, out, cache_dir=cache, progress=False)
    assert json.loads((out / "run.json").read_text())["status"] == "failed"

    def full_disk(self, samples, epoch):  # a one-line error that is not a divergence
        raise KidneysegError("could not write (No space left on device)", self.out / "metrics.csv")

    monkeypatch.setattr(trainer.Trainer, "_train_epoch", full_disk)
    out = tmp_path / "full"
    with pytest.raises(KidneysegError, match="No space left"):
        engine.train(config, phantoms, out, cache_dir=cache, progress=False)
    assert json.loads((out / "run.json").read_text())["status"] == "failed"  # was: "diverged"


def _with_labels(phantoms: Path, out: Path, change) -> Path:
    """A copy of the phantom dataset with each case's label map passed through `change(id, labels)`."""
    from kidneyseg.io.volume import Volume, read_volume, write_volume

    for case in sorted((phantoms / "dataset").iterdir()):
        (out / "dataset" / case.name).mkdir(parents=True)
        shutil.copy(case / "imaging.nii.gz", out / "dataset" / case.name)
        labels = read_volume(case / "segmentation.nii.gz")
        changed = change(case.name, labels.array.copy())
        write_volume(out / "dataset" / case.name / "segmentation.nii.gz", Volume(changed, labels.affine))
    return out


def test_data_without_foreground_to_train_or_validate_on_is_refused(phantoms, tmp_path):
    """Was: validation cases without foreground gave "finished … best validation Dice -inf (epoch
    0)" and no best.pt; an all-background dataset trained to "finished"; a 2D run said "no
    training slice holds foreground", naming no folder, and left run.json "running"."""
    from kidneyseg.data.splits import run_split

    config = load_recipe("sca-unet-3d:cpu", overrides=[*SCA, "train.epochs=1"])
    ids = sorted(p.name for p in (phantoms / "dataset").iterdir())
    val = run_split(ids, config.data)[1]
    bgval = _with_labels(phantoms, tmp_path / "bgval", lambda i, a: a * (i not in val))
    bg = _with_labels(phantoms, tmp_path / "bg", lambda i, a: a * 0)
    notumor = _with_labels(phantoms, tmp_path / "notumor", lambda i, a: np.where(a == 2, 1, a))
    tumor_slices = load_recipe("attention-unet-2d:cpu", overrides=[*AG, "data.slice_filter=tumor"])
    for data, run_config, message in [
        (bgval, config, f"the validation case(s) {val[0]} hold no kidney, tumor or cyst: no validation Dice"),
        (bg, config, "none of the 5 training case(s) holds kidney, tumor or cyst: nothing to train on"),
        (notumor, tumor_slices, "none of the 5 training case(s) holds tumor: nothing to train on"),
    ]:
        out = tmp_path / f"run-{data.name}"
        with pytest.raises(KidneysegError) as info:
            engine.train(run_config, data, out, progress=False)
        assert str(info.value).startswith(f"{data}: {message}")
        assert [p.name for p in out.iterdir()] == ["preprocessed"]  # no record: the run never started


def test_a_run_folder_without_best_pt_is_used_through_last_pt_with_a_warning(run3d, tmp_path, caplog):
    """Was: `predict --model RUN` of a run without best.pt used its last.pt without a word."""
    from kidneyseg.checkpoint import resolve_checkpoint

    shutil.copy(run3d / "last.pt", tmp_path / "last.pt")
    assert resolve_checkpoint(tmp_path) == tmp_path / "last.pt"
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path}: no best.pt (no epoch validated yet); using last.pt"
    ]


def test_resume_refuses_data_holding_other_cases(run3d, phantoms, tmp_path):
    """Was: the split was made again from what the data held now: validation cases were trained
    on, epochs validated on other cases compared for best.pt, run.json's cases overwritten."""
    run = tmp_path / "run"
    shutil.copytree(run3d, run)
    other = tmp_path / "other"
    shutil.copytree(phantoms, other)
    shutil.rmtree(other / "dataset" / "case_00000")
    shutil.copytree(phantoms / "dataset" / "case_00001", other / "dataset" / "case_00009")
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for _where in ("in last.pt", "in run.json only"):  # an older last.pt holds no cases
        with pytest.raises(KidneysegError) as info:
            engine.resume(run, epochs=3, data_dir=other, progress=False)
        assert str(info.value).startswith(
            f"{run}: cannot resume: {other} does not hold the cases the run was trained and validated "
            "on (new: case_00009; gone: case_00000; "
        )
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == files
        ckpt = load_checkpoint(run / "last.pt")
        ckpt.extra.pop("train_cases", None), ckpt.extra.pop("val_cases", None)
        save_checkpoint(
            run / "last.pt", model_state=ckpt.model_state, config=ckpt.config, extra_state=ckpt.extra
        )
        files["last.pt"] = (run / "last.pt").read_bytes()
    moved = tmp_path / "moved"  # the same cases in another folder: resumed
    shutil.copytree(phantoms, moved)
    assert engine.resume(run, epochs=3, data_dir=moved, progress=False).epochs == 3


def test_one_ct_under_two_case_ids_is_refused_before_anything_is_written(phantoms, tmp_path):
    """Found by a hostile run: a case folder linking to another (case_00009 -> case_00001) was
    preprocessed as a case of its own, so one CT could be trained on and validated on."""
    data = tmp_path / "data"
    shutil.copytree(phantoms, data)
    (data / "dataset" / "case_00009").symlink_to(data / "dataset" / "case_00001", target_is_directory=True)
    with pytest.raises(KidneysegError, match="cases case_00001 and case_00009 are one CT") as info:
        engine.train(
            load_recipe("sca-unet-3d:cpu", overrides=[*SCA, "train.epochs=1"]), data, tmp_path / "run"
        )
    assert str(info.value).startswith(f"{data}: ")
    assert not (tmp_path / "run").exists()


def test_resume_refuses_other_files_under_the_runs_case_ids(run3d, tmp_path):
    """Phantoms of another seed hold the same case ids: a resume trained on them and chose best.pt
    by Dice on other validation cases (found by a hostile review)."""
    run = tmp_path / "run"
    shutil.copytree(run3d, run)
    other = tmp_path / "other"
    generate_dataset(other, cases=6, seed=7, size="tiny", progress=False)
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(
        KidneysegError, match="holds other files under the run's case ids than it was trained on"
    ):
        engine.resume(run, epochs=3, data_dir=other, progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == files


TIMING = {"train_seconds", "patches_per_second", "val_seconds", "epoch_seconds", "cpu_seconds"}


def _killed_run(
    config: RunConfig, phantoms: Path, out: Path, cache: Path, write: int, when: str, start=engine.train
) -> list[str]:
    """Train (`start(config, phantoms, out, ...)`) in a forked process that SIGKILLs itself just
    `before` or `after` its `write`-th rename into the run folder (every file of a run is written
    by a rename); the names of the files it got to are returned, the last one being where it died."""
    log = out.parent / f"{out.name}.writes"

    def child() -> None:
        torch.set_num_threads(1)
        real = os.replace
        names: list[str] = []

        def replace(src, dst):
            if Path(dst).parent != out:
                return real(src, dst)
            names.append(Path(dst).name)
            log.write_text("\n".join(names))
            here = len(names) - 1 == write
            if here and when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            real(src, dst)
            if here:
                os.kill(os.getpid(), signal.SIGKILL)

        os.replace = replace
        start(config, phantoms, out, cache_dir=cache, progress=False)

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(300)
    if process.exitcode is None:
        process.kill()
    assert process.exitcode in (-signal.SIGKILL, 0), process.exitcode
    return log.read_text().split("\n") if process.exitcode else []


def _assert_same_as_uninterrupted(out: Path, reference: Path) -> None:
    keep = [k for k in _rows(reference)[0] if k not in TIMING]
    assert [[r[k] for k in keep] for r in _rows(out)] == [[r[k] for k in keep] for r in _rows(reference)]
    history = load_checkpoint(out / "last.pt").extra["history"]
    record.write_metrics_csv(out.parent / "from-checkpoint.csv", history)
    assert (out / "metrics.csv").read_text() == (out.parent / "from-checkpoint.csv").read_text()
    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(out / name), load_checkpoint(reference / name)
        assert a.extra["epoch"] == b.extra["epoch"], name
        assert all(torch.equal(a.model_state[k], b.model_state[k]) for k in b.model_state), name
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert not [p.name for p in out.iterdir() if ".partial-" in p.name]


def _kill_and_recover(run3d, phantoms, cache, out: Path, write: int, when: str) -> list[str]:
    config = load_recipe("sca-unet-3d:cpu", overrides=[*SCA, "train.epochs=2"])
    names = _killed_run(config, phantoms, out, cache, write, when)
    if names:
        if (out / "config.yaml").exists():
            assert engine.resume(out, progress=False).epochs == 2
        else:  # killed before the config: nothing to resume, the same --out starts it again
            engine.train(config, phantoms, out, cache_dir=cache, progress=False)
        _assert_same_as_uninterrupted(out, run3d)
    return names


@pytest.mark.parametrize(
    ("write", "when", "name"),
    [
        (1, "after", "config.yaml"),  # in the first epoch: resumed from scratch
        (2, "before", "last.pt"),  # the first checkpoint half written: its .partial removed
        (3, "before", "best.pt"),  # best.pt behind last.pt
        (7, "after", "last.pt"),  # the final checkpoint written, metrics.csv not yet
    ],
)
def test_a_run_killed_at_a_write_resumes_to_the_uninterrupted_files(
    run3d, phantoms, cache, tmp_path, one_torch_thread, write, when, name
):
    names = _kill_and_recover(run3d, phantoms, cache, tmp_path / "run", write, when)
    assert names[-1] == name, names


@pytest.mark.slow
def test_a_run_killed_at_every_write_resumes_to_the_uninterrupted_files(
    run3d, phantoms, cache, tmp_path, one_torch_thread
):
    killed = []
    for when in ("before", "after"):
        write = 0
        while names := _kill_and_recover(run3d, phantoms, cache, tmp_path / f"{when}-{write}", write, when):
            killed.append(f"{when} {names[-1]}")
            write += 1
    files = {"run.json", "config.yaml", "last.pt", "best.pt", "metrics.csv", "curves.png"}
    assert {k.split()[1] for k in killed} == files and len(killed) >= 2 * 12, killed


def test_2d_recipe_then_tumor_finetuning_freezes_shallow_levels(phantoms, cache, tmp_path):
    stage1 = tmp_path / "ag"
    config = load_recipe("attention-unet-2d:cpu", overrides=[*AG, "train.epochs=1"])
    engine.train(config, phantoms, stage1, cache_dir=cache, progress=False)
    assert 0 <= float(_rows(stage1)[0]["val_dice"]) <= 1
    best = torch.load(stage1 / "best.pt", weights_only=True)  # as if 0.75 mL had been chosen for it
    best["config"] = best["config"].replace("absorb_islands_ml: 0.0", "absorb_islands_ml: 0.75")
    torch.save(best, stage1 / "best.pt")
    assert load_checkpoint(stage1 / "best.pt").config.inference.absorb_islands_ml == 0.75
    stage2 = tmp_path / "ag-tumor"
    engine.finetune_tumor(
        stage1, phantoms, stage2, overrides=["train.epochs=1", "train.freeze_depth=2"], cache_dir=cache
    )
    before, after = _weights(stage1 / "best.pt"), _weights(stage2 / "last.pt")
    frozen = [k for k in before if k.startswith(("encoder.0.", "encoder.1."))]
    trained = [k for k in before if k.startswith("encoder.2.") and before[k].dtype.is_floating_point]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)  # incl. batch-norm statistics
    assert any(not torch.equal(before[k], after[k]) for k in trained)
    tuned = load_checkpoint(stage2 / "last.pt").config
    assert tuned.data.slice_filter == "tumor" and tuned.train.recipe.endswith("+finetune-tumor")
    assert tuned.inference.absorb_islands_ml == 0.0  # stage 1's choice was for stage 1's weights
    # killed before its first checkpoint, a fine-tuning run starts again from the stage-1 weights
    killed = tmp_path / "ag-tumor-killed"

    def finetune(config, data_dir, out, **kwargs):
        engine.finetune_tumor(
            stage1, data_dir, out, overrides=["train.epochs=1", "train.freeze_depth=2"], **kwargs
        )

    assert _killed_run(config, phantoms, killed, cache, 1, "after", finetune)[-1] == "config.yaml"
    engine.resume(killed, progress=False)
    again = _weights(killed / "last.pt")
    assert all(torch.equal(again[k], after[k]) for k in after)


def test_a_run_can_start_from_another_runs_weights(run3d, phantoms, cache, tmp_path):
    out = tmp_path / "from-sca"
    slow = load_recipe("sca-unet-3d:cpu", overrides=[*SCA, "train.epochs=1", "train.lr=0.000000000001"])
    engine.train(slow, phantoms, out, cache_dir=cache, progress=False, init_weights=run3d)
    start, after = _weights(run3d / "best.pt"), _weights(out / "last.pt")
    floats = [k for k in start if start[k].dtype.is_floating_point and "running" not in k]
    assert all(torch.allclose(start[k], after[k], atol=1e-6) for k in floats)
    engine.train(slow, phantoms, tmp_path / "scratch", cache_dir=cache, progress=False)
    scratch = _weights(tmp_path / "scratch" / "last.pt")  # the random start of the same seed
    assert any(not torch.allclose(scratch[k], after[k], atol=1e-6) for k in floats)
    record = json.loads((out / "run.json").read_text())
    assert record["initial_weights"] == str((run3d / "best.pt").resolve()) and record["freeze_depth"] == 0
    other = load_recipe("sca-unet-3d:cpu", overrides=[*SCA, "model.kwargs.channels=[4, 8, 16, 16]"])
    with pytest.raises(KidneysegError, match="another network") as error:
        engine.train(other, phantoms, tmp_path / "misfit", cache_dir=cache, init_weights=run3d)
    assert "best.pt" in str(error.value)
    whole = tmp_path / "whole.pt"  # the same network, its weights rounded to integers
    source = load_checkpoint(run3d / "best.pt")
    state = {k: v.long() if v.is_floating_point() else v for k, v in source.model_state.items()}
    save_checkpoint(whole, model_state=state, config=source.config)
    with pytest.raises(KidneysegError, match=r"holds torch\.int64 values where the network has"):
        engine.train(slow, phantoms, tmp_path / "rounded", cache_dir=cache, init_weights=whole)
    assert not (tmp_path / "rounded").exists()


def test_a_patch_larger_than_the_cases_is_padded(phantoms, cache, tmp_path):
    patch = ["data.patch_size=[64, 64, 48]", "inference.roi_size=[64, 64, 48]"]
    overrides = [*SCA, *patch, "train.epochs=1", "train.augment.elastic_prob=0.0"]
    result = engine.train(
        load_recipe("sca-unet-3d:cpu", overrides=overrides), phantoms, tmp_path / "r", cache_dir=cache
    )
    assert result.status == "finished" and 0 <= result.last_metrics["val_dice"] <= 1


def test_a_run_trains_on_the_kits_regions(phantoms, cache, tmp_path):
    overrides = [*SCA, "train.epochs=1", "train.loss=dice_ce_regions"]
    config = load_recipe("sca-unet-3d:cpu", overrides=overrides)
    result = engine.train(config, phantoms, tmp_path / "r", cache_dir=cache)
    assert result.status == "finished" and math.isfinite(result.last_metrics["train_loss"])
    assert 0 <= result.last_metrics["val_dice"] <= 1
    assert load_checkpoint(tmp_path / "r" / "last.pt").config.train.loss == "dice_ce_regions"


def test_resume_from_a_damaged_training_state_is_one_clear_error(run3d, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run3d, run)
    payload = torch.load(run / "last.pt", weights_only=True)
    del payload["extra"]["epoch"]
    torch.save(payload, run / "last.pt")
    with pytest.raises(KidneysegError, match=r"state is incomplete or damaged \(KeyError: 'epoch'\)"):
        engine.resume(run, progress=False)
    payload["extra"]["epoch"] = 1
    payload["extra"]["optimizer"]["param_groups"] = []
    torch.save(payload, run / "last.pt")
    with pytest.raises(KidneysegError, match="the checkpoint's training state does not fit this run"):
        engine.resume(run, progress=False)
    payload = torch.load(run3d / "last.pt", weights_only=True)
    name = next(iter(payload["model_state"]))
    payload["model_state"][name] = torch.full_like(payload["model_state"][name], float("nan"))
    torch.save(payload, run / "last.pt")  # was: resumed, and the loss diverged at the first step
    with pytest.raises(KidneysegError, match=rf"NaN or infinite weights \(1 tensors, first {name}\)"):
        engine.resume(run, progress=False)


def test_resume_chooses_the_best_again_when_best_pt_is_lost_and_refuses_fewer_epochs(run3d, tmp_path, capsys):
    """Found by a hostile review: with best.pt deleted, a resume reported the best epoch of weights
    that were not there (and predict then said no epoch had validated); `--resume` with fewer
    epochs than done was taken, and the record said 4 planned, 8 done."""
    run = tmp_path / "run"
    shutil.copytree(run3d, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(
        KidneysegError, match=r"has done 2 epochs: a new total \(train.epochs\) must be at least"
    ):
        engine.resume(run, epochs=1, progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    payload = torch.load(run / "last.pt", weights_only=True)
    payload["extra"]["best_epoch"], payload["extra"]["best_dice"] = 1, 2.0  # no later epoch beats it
    torch.save(payload, run / "last.pt")
    (run / "best.pt").unlink()
    result = engine.resume(run, epochs=3, progress=False)
    assert "best.pt: missing or not the checkpoint of the best epoch" in capsys.readouterr().err
    assert result.best_epoch == 3 and load_checkpoint(run / "best.pt").extra["epoch"] == 3
    assert json.loads((run / "run.json").read_text())["best_epoch"] == 3


def test_resume_does_not_keep_a_best_pt_of_another_run(run3d, tmp_path, capsys):
    """Found by a hostile run: a best.pt copied from another run (here: another learning rate) at
    the same epoch number was kept on resume, and predict then used that run's network. Its
    config must be the run's (but for the epochs and time limit a resume may change, and the
    island volume chosen for best.pt when a training ended)."""
    from kidneyseg.plaindata import dump_yaml, yaml_load

    run = tmp_path / "run"
    shutil.copytree(run3d, run)
    payload = torch.load(run / "last.pt", weights_only=True)
    payload["extra"]["best_epoch"], payload["extra"]["best_dice"] = 2, 2.0  # no later epoch beats it
    torch.save(payload, run / "last.pt")
    best = torch.load(run / "best.pt", weights_only=True)
    best["extra"]["epoch"] = 2
    torch.save(best, run / "best.pt")
    engine.resume(run, epochs=3, progress=False)  # its own best.pt, another total of epochs: kept
    assert "best.pt: missing or not" not in capsys.readouterr().err
    assert load_checkpoint(run / "best.pt").extra["epoch"] == 2
    config = yaml_load(best["config"])
    config["inference"]["absorb_islands_ml"] = 0.75  # as chosen when a training ended: still its own
    best["config"] = dump_yaml(config)
    torch.save(best, run / "best.pt")
    engine.resume(run, epochs=4, progress=False)
    assert "best.pt: missing or not" not in capsys.readouterr().err
    assert load_checkpoint(run / "best.pt").extra["epoch"] == 2
    config["train"]["lr"] = config["train"]["lr"] * 10
    best["config"] = dump_yaml(config)
    torch.save(best, run / "best.pt")
    result = engine.resume(run, epochs=5, progress=False)
    assert "best.pt: missing or not the checkpoint of the best epoch" in capsys.readouterr().err
    odd = differences(load_checkpoint(run / "best.pt").config, load_checkpoint(run / "last.pt").config)
    assert result.best_epoch == 5 and {key for key, _, _ in odd} <= {"inference.absorb_islands_ml"}


def test_a_moved_run_resumes_with_its_own_cache_or_the_one_given(run3d, tmp_path):
    """A run folder moved with its default cache made the old location again and filled it anew,
    and `--resume --cache DIR` was ignored (found by a hostile review)."""
    run = tmp_path / "moved"
    shutil.copytree(run3d, run)
    payload = torch.load(run / "last.pt", weights_only=True)
    payload["extra"]["cache_root"] = str(tmp_path / "old-place" / "preprocessed")
    torch.save(payload, run / "last.pt")
    engine.resume(run, epochs=3, progress=False)
    assert not (tmp_path / "old-place").exists() and any((run / "preprocessed").iterdir())
    assert json.loads((run / "run.json").read_text())["cache_root"] == str((run / "preprocessed").resolve())
    engine.resume(run, epochs=4, cache_dir=tmp_path / "given", progress=False)
    assert any((tmp_path / "given").iterdir())


def test_resume_refuses_a_config_yaml_that_is_not_the_checkpoints(run3d, tmp_path):
    """A hand-edited config.yaml (or a last.pt of another run) was trained on and overwritten."""
    run = tmp_path / "run"
    shutil.copytree(run3d, run)
    written = load_yaml(run / "config.yaml")
    lr = written["train"]["lr"]
    written["train"]["lr"] = lr / 10
    written["train"]["epochs"] = 5  # a resume may change this one
    (run / "config.yaml").write_text(dump_yaml(written))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(
        KidneysegError,
        match=rf"config\.yaml: says train\.lr: {lr / 10!r} but the run's last\.pt "
        rf"was trained with {lr!r} \(1 key\(s\) differ\)",
    ):
        engine.resume(run, progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    (run / "config.yaml").write_text("train:\n\tlr: 1\n")  # not a config: rewritten from last.pt
    engine.resume(run, progress=False)
    assert (run / "config.yaml").read_text() == (run3d / "config.yaml").read_text()
    (run / "config.yaml").write_bytes(b"\xff\xfe\x00 not text")
    engine.resume(run, progress=False)
    assert (run / "config.yaml").read_text() == (run3d / "config.yaml").read_text()


def test_a_diverging_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(
    run3d, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    shutil.copytree(run3d, run)
    before = (run / "last.pt").read_bytes()
    real = trainer.build_loss

    def nan_loss(train, label_map):
        loss = real(train, label_map)
        return lambda logits, label: loss(logits, label) * float("nan")

    monkeypatch.setattr(trainer, "build_loss", nan_loss)
    with pytest.raises(
        KidneysegError,
        match=r"training diverged: the loss is nan \(here or on another rank\) at epoch 3, step 1; "
        r"the last good checkpoint is kept; train a new run from it .* --init-weights .*last\.pt train\.lr=",
    ):
        engine.resume(run, epochs=3)
    assert (run / "last.pt").read_bytes() == before
    assert json.loads((run / "run.json").read_text())["status"] == "diverged"


def test_bad_input_is_one_clear_error(phantoms, cache, tmp_path, run3d):
    unlabelled = tmp_path / "unlabelled" / "dataset"
    for case in sorted((phantoms / "dataset").iterdir())[:3]:
        (unlabelled / case.name).mkdir(parents=True)
        shutil.copy(case / "imaging.nii.gz", unlabelled / case.name)
    config = load_recipe("sca-unet-3d:cpu", overrides=SCA)
    with pytest.raises(KidneysegError, match="none of the 3 cases has a reference segmentation"):
        engine.train(config, unlabelled.parent, tmp_path / "a", cache_dir=cache)
    # KiTS19's 3 classes without a cyst mapping: the phantoms' cysts (3) are unknown
    kits19 = load_recipe(
        "attention-unet-2d", overrides=[*AG, "data.label_mapping={}", "model.kwargs.channels=[4, 8]"]
    )
    with pytest.raises(
        KidneysegError, match=r"label\.npy: label values \[3\] are not in the kits19 label map"
    ):
        engine.train(kits19, phantoms, tmp_path / "b", cache_dir=cache)
    assert not (tmp_path / "b").exists()  # nothing written for a run that could not start
    with pytest.raises(KidneysegError, match=re.escape(f"{run3d}: folder already holds a run (config.yaml)")):
        engine.train(config, phantoms, run3d, cache_dir=cache)
    foreign = tmp_path / "project"  # no checkpoint, but not what a run writes before one: kept
    foreign.mkdir()
    (foreign / "config.yaml").write_text("learning_rate: 0.1\n")
    with pytest.raises(KidneysegError, match="folder already holds a run"):
        engine.train(config, phantoms, foreign, cache_dir=cache)
    assert (foreign / "config.yaml").read_text() == "learning_rate: 0.1\n"
    for folder in (tmp_path, foreign):
        with pytest.raises(
            KidneysegError, match=r"no last\.pt to resume from, nor the config\.yaml of a run"
        ):
            engine.resume(folder)
    assert (foreign / "config.yaml").read_text() == "learning_rate: 0.1\n"


def test_cli_trains_resumes_and_reports_errors_in_one_line(phantoms, cache, tmp_path):
    runner = CliRunner()
    run = tmp_path / "cli-run"
    args = [
        "train",
        "--recipe",
        "sca-unet-3d",
        "--variant",
        "cpu",
        "--data",
        str(phantoms),
        "--out",
        str(run),
    ]
    result = runner.invoke(app, [*args, "--cache", str(cache), "--quiet", *SCA, "train.epochs=1"])
    assert result.exit_code == 0, result.output
    assert "finished: 1 epochs" in result.output and (run / "last.pt").is_file()
    result = runner.invoke(app, ["train", "--resume", str(run), "--quiet", "train.epochs=2"])
    assert result.exit_code == 0, result.output
    assert len(_rows(run)) == 2
    tuned = tmp_path / "cli-tuned"
    result = runner.invoke(
        app,
        [
            *args[:-1],
            str(tuned),
            "--init-weights",
            str(run),
            "--cache",
            str(cache),
            "--quiet",
            *SCA,
            "train.epochs=1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tuned / "run.json").read_text())["initial_weights"].endswith("best.pt")
    wider = [*SCA, "model.kwargs.channels=[8, 8, 8, 8]"]
    result = runner.invoke(app, [*args[:-1], str(tmp_path / "y"), "--init-weights", str(run), *wider])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "initial weights are of another network" in result.output and not (tmp_path / "y").exists()
    result = runner.invoke(
        app, ["train", "--recipe", "sca-unet3d", "--data", str(phantoms), "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: unknown recipe 'sca-unet3d'; did you mean 'sca-unet-3d'? "
        "available: attention-unet-2d, residual-unet-3d, sca-unet-3d, unet-2d"
    ]
    assert not (tmp_path / "x").exists()
    result = runner.invoke(app, ["train", "--resume", str(run), "data.batch_size=4"])
    assert (
        result.exit_code == 2 and "only train.epochs and train.time_limit_minutes may change" in result.output
    )
    listing = runner.invoke(app, ["train", "--list-recipes"])
    assert listing.exit_code == 0 and "attention-unet-2d" in listing.output and "cpu" in listing.output
    shown = runner.invoke(app, ["train", "--recipe", "unet-2d:cpu", "--show-config", "train.lr=0.01"])
    assert shown.exit_code == 0 and "lr: 0.01" in shown.output and "name: unet_2d" in shown.output


def test_cli_restarts_a_run_stopped_before_its_first_checkpoint(phantoms, cache, tmp_path, one_torch_thread):
    runner = CliRunner()
    recipe = ["--recipe", "sca-unet-3d:cpu", "--data", str(phantoms), "--cache", str(cache), "--quiet", *SCA]
    bad = runner.invoke(app, ["train", *recipe, "--out", str(tmp_path / "bad"), "train.lr=-1"])
    assert bad.exit_code == 2
    assert bad.output.strip().splitlines() == ["error: train.lr=-1.0 must be positive and finite"]
    assert not (tmp_path / "bad").exists()  # validated before anything is written
    config = load_recipe("sca-unet-3d:cpu", overrides=[*SCA, "train.epochs=1"])
    for name, args, said in [
        (
            "resumed",
            ["--resume"],
            "no last.pt yet (the run stopped in its first epoch); starting from scratch",
        ),
        (
            "restarted",
            [*recipe, "train.epochs=1", "--out"],
            "the run here stopped before its first checkpoint (last.pt); starting it again",
        ),
    ]:
        run = tmp_path / name
        assert _killed_run(config, phantoms, run, cache, 1, "after")[-1] == "config.yaml"
        assert not (run / "last.pt").exists()
        result = runner.invoke(app, ["train", *args, str(run), "--quiet"])
        assert result.exit_code == 0, result.output
        assert f"{run}: {said}\n" in result.output
        assert "finished: 1 epochs" in result.output and len(_rows(run)) == 1


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(phantoms, cache, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "kidneyseg", "train",
        "--recipe", "sca-unet-3d:cpu", "--data", str(phantoms), "--out", str(run), "--cache", str(cache),
        "--device", "cpu", "--quiet", *SCA, "train.epochs=2",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(run)
    assert len(rows) == 2
    record = json.loads((run / "run.json").read_text())
    assert record["world_size"] == 2 and record["status"] == "finished"
    per_rank = math.ceil(5 / 2)  # 5 training cases split over 2 ranks, the shorter shard padded
    cached = round(per_rank * 0.5)  # each rank's SmartCache holds cache_rate of its shard
    assert float(rows[0]["patches"]) == 2 * cached  # 1 patch per cached case per rank, summed over ranks
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # rank 0 alone wrote, nothing partial
    load_checkpoint(run / "last.pt")


def test_curves_before_the_first_validated_epoch_draw_without_a_warning(tmp_path):
    """Was: matplotlib's "No artists with labels found to put in legend" on stderr after epoch 1
    of a run that validates every third epoch (the demo)."""
    import warnings

    from kidneyseg.train.record import plot_curves

    row = {"epoch": 1.0, "train_loss": 0.5, "val_loss": float("nan"), "val_dice": float("nan")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = plot_curves(tmp_path / "curves.png", [row], ["kidney"], "run")
    assert path.read_bytes().startswith(b"\x89PNG")


def test_a_mapping_trains_label_values_outside_the_datasets_label_map(phantoms, cache, tmp_path):
    """`data.label_mapping={4: 2}` on label maps whose tumor is 4 (was: refused by preprocessing,
    which checked the values against the layout's label map before any mapping; found by a
    hostile review). Without the mapping, the value is refused naming the file."""
    import nibabel as nib
    import numpy as np

    plain = tmp_path / "plain"
    for case in sorted((phantoms / "dataset").iterdir()):
        for folder in ("images", "labels"):
            (plain / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(case / "imaging.nii.gz", plain / "images" / f"{case.name}.nii.gz")
        image = nib.load(case / "segmentation.nii.gz")
        labels = np.asarray(image.dataobj).copy()
        labels[labels == 2] = 4
        nib.save(nib.Nifti1Image(labels, image.affine), plain / "labels" / f"{case.name}.nii.gz")
    overrides = [*SCA, "train.epochs=1"]
    with pytest.raises(KidneysegError, match=r"label values \[4\] are not in the kits23 label map"):
        engine.train(
            load_recipe("sca-unet-3d:cpu", overrides=overrides), plain, tmp_path / "a", cache_dir=cache
        )
    mapped = load_recipe("sca-unet-3d:cpu", overrides=[*overrides, "data.label_mapping={4: 2}"])
    result = engine.train(mapped, plain, tmp_path / "b", cache_dir=cache)
    assert result.status == "finished"
    assert math.isfinite(float(_rows(tmp_path / "b")[0]["val_dice_tumor"]))  # 4 validated as tumor


def test_an_all_background_label_map_is_named(phantoms, cache, tmp_path, caplog):
    """Was: trained on as "no kidney here" without a word (found by a hostile review)."""
    import nibabel as nib
    import numpy as np

    data = tmp_path / "data"
    shutil.copytree(phantoms, data)
    path = data / "dataset" / "case_00002" / "segmentation.nii.gz"
    image = nib.load(path)
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine), path)
    engine.train(
        load_recipe("sca-unet-3d:cpu", overrides=[*SCA, "train.epochs=1"]),
        data,
        tmp_path / "r",
        cache_dir=cache,
    )
    assert f"{data.resolve()}: 1 case(s) with an all-background label map: case_00002" in caplog.messages


def test_the_record_names_the_validation_cases_that_chose_best_pt(phantoms, cache, tmp_path):
    """Was: with `train.val_max_cases` run.json listed every validation case and not which of
    them were validated. The post-processing is chosen on all of them, not only those."""
    overrides = [*SCA, "train.epochs=1", "data.val_fraction=0.5", "train.val_max_cases=2"]
    config = load_recipe("sca-unet-3d:cpu", overrides=overrides)
    out = tmp_path / "run"
    engine.train(config, phantoms, out, cache_dir=cache, progress=False)
    record = json.loads((out / "run.json").read_text())
    assert len(record["val_cases"]) == 3
    assert record["validated_cases"] == record["val_cases"][:2]
    assert record["postprocessing"]["cases"] == record["val_cases"]
