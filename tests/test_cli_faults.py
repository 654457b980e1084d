"""Faults that concern every verb (docs/reliability.md): bad option values, SIGTERM, a broken
environment. Each gives one line naming the problem and a non-zero exit, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kidneyseg.cli import app
from kidneyseg.cli.common import EXIT_TERMINATED
from test_predict import TINY_3D, save_tiny
from test_predict_cli import phantom_file

runner = CliRunner()


def _one_error_line(result, message: str) -> None:
    assert result.output.startswith("error: "), result.output
    assert message in result.output, result.output
    assert len(result.output.splitlines()) == 1, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["phantom", "--out", "x", "-n", "abc"], "Invalid value for '--cases'"),
        (["phantom", "--out", "x", "--seed", "-1"], "Invalid value for '--seed'"),
        (["compare", "--out", "x", "--eval", "a=b", "--seed", "-1"], "Invalid value for '--seed'"),
        (["predict", "-i", "ct.nii.gz", "-o", "x", "--threads", "0"], "Invalid value for '--threads'"),
        (["predict", "-i", "ct.nii.gz", "-o", "x", "--threads", "-1"], "Invalid value for '--threads'"),
        (["predict", "-i", "ct.nii.gz", "-o", "x", "--bogus"], "No such option: --bogus"),
        (["evaluate", "--pred", "p", "--ref", "r"], "Missing option '--out'"),
        (["report", "--ct", "c", "--labels", "l", "--out", "o", "--min-lesion-mm", "x"], "--min-lesion-mm"),
        (["nonsense"], "No such command 'nonsense'"),
        (
            ["predict", "-i", "a.nii.gz", "-i", "b.nii.gz", "-o", "x"],
            "'--input' / '-i': given twice; it takes one",
        ),
        (
            ["predict", "-i", "a.nii.gz", "--out=x", "-o", "y"],
            "'--out' / '-o': given twice; it takes one value",
        ),
        (
            ["train", "-r", "sca-unet-3d:cpu", "--recipe", "x", "--data", "d", "--out", "o"],
            "'--recipe' / '-r': given",
        ),
        (
            ["predict", "-ia.nii.gz", "-ib.nii.gz", "-o", "x"],
            "'--input' / '-i': given twice; it takes one value",
        ),
        (
            ["predict", "-i", "a.nii.gz", "-o", "x", "-m", "m1", "-m", "m2", "--tta", "--tta"],
            "no such file or folder",
        ),
        (
            ["report", "--ct", "a.nii.gz", "--labels", "b.nii.gz", "--out", "o", "--case-id", "--out"],
            "no such file",
        ),
    ],
    ids=[
        "phantom-cases-abc",
        "phantom-seed-negative",
        "compare-seed-negative",
        "predict-threads-0",
        "predict-threads-negative",
        "predict-unknown-option",
        "evaluate-missing-option",
        "report-float-abc",
        "unknown-verb",
        "predict-input-twice",
        "predict-out-twice-one-with-equals",
        "train-recipe-twice",
        "predict-input-twice-attached",
        "predict-models-and-flags-repeat-freely",
        "report-a-value-that-looks-like-an-option",
    ],
)
def test_bad_option_values_are_one_line_not_a_usage_box(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    _one_error_line(result, message)
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "tiny3d.pt", TINY_3D, seed=0)


@pytest.mark.parametrize("worker_died", [False, True], ids=["main", "group"])
def test_sigterm_is_one_line_exit_143_and_leaves_no_output(ckpt, tmp_path, monkeypatch, worker_died):
    """SIGTERM (kill, timeout, a scheduler's time limit) in the middle of a folder of cases: the
    case loop does not take it for a bad case and go on; the empty output folder is removed.
    Sent to the process group (`timeout`, SLURM), it also kills PyTorch's data-loader workers,
    whose SIGCHLD handler raises a RuntimeError while the interrupt unwinds (was: that
    traceback, exit 1, in `train`)."""
    import kidneyseg.predict.runner

    cases = tmp_path / "cases"
    cases.mkdir()
    for seed in (1, 2):
        phantom_file(cases / f"case{seed}.nii.gz", seed)

    unwinding = []  # the SIGCHLD handler while the interrupt unwinds

    def killed(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            unwinding.append(signal.getsignal(signal.SIGCHLD))
            if worker_died:  # as PyTorch's SIGCHLD handler does for a dead worker
                raise RuntimeError("DataLoader worker (pid 12345) is killed by signal: Terminated. ")

    def loader_handler(signum, frame):  # stands in for the data loader's (other children end too)
        pass

    monkeypatch.setattr(kidneyseg.predict.runner, "predict_case", killed)
    original = signal.signal(signal.SIGCHLD, loader_handler)
    try:
        before = signal.getsignal(signal.SIGTERM)
        out = tmp_path / "out"
        result = runner.invoke(app, ["predict", "-i", str(cases), "-o", str(out), "--model", str(ckpt), "-q"])
        assert signal.getsignal(signal.SIGCHLD) is loader_handler  # restored on the way out
    finally:
        signal.signal(signal.SIGCHLD, original)
    assert result.exit_code == EXIT_TERMINATED == 143
    assert result.output == "terminated\n"
    assert not out.exists()
    assert signal.getsignal(signal.SIGTERM) is before and unwinding == [signal.SIG_DFL]


@pytest.mark.parametrize("value", ["abc", "0", "-2", "2.5"])
def test_an_unusable_omp_num_threads_is_one_line(monkeypatch, value):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    result = runner.invoke(app, ["models", "unet_2d"])
    assert result.exit_code == 2
    _one_error_line(result, f"OMP_NUM_THREADS={value!r} must be a positive whole number")


def test_a_valid_omp_num_threads_list_is_accepted(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")
    assert runner.invoke(app, ["models", "unet_2d"]).exit_code == 0


def test_an_unwritable_home_prints_no_matplotlib_warnings(tmp_path):
    """Matplotlib falls back to a temporary config folder by itself; its two warning lines about
    it are kept off the console."""
    env = {k: v for k, v in os.environ.items() if k != "MPLCONFIGDIR"}
    env["HOME"] = str(tmp_path / "missing" / "home")
    code = "from kidneyseg.cli.common import check_environment; check_environment(); import matplotlib.pyplot"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stderr == ""


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORLD_SIZE": "abc"}, "environment variable WORLD_SIZE='abc' must be a whole number"),
        ({"WORLD_SIZE": "2"}, "environment variable RANK is not set"),
    ],
    ids=["world-size-abc", "rank-missing"],
)
def test_a_broken_torchrun_environment_is_one_line(monkeypatch, env, message):
    from kidneyseg.errors import KidneysegError
    from kidneyseg.train.distributed import init_distributed

    monkeypatch.delenv("RANK", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(KidneysegError, match=message):
        init_distributed("cpu")


def test_resume_of_a_missing_folder_says_so(tmp_path):
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    _one_error_line(result, "nowhere: no such run folder")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--recipe", "unet-2d"], "takes its recipe and weights from the stage-1 run: leave out --recipe"),
        ([], "--finetune-tumor needs --data and --out"),
    ],
    ids=["with-a-recipe", "without-data"],
)
def test_finetune_tumor_says_which_option_is_wrong(tmp_path, extra, message):
    """(was: "--finetune-tumor needs --data and --out" when both were given with --recipe)"""
    args = ["train", "--finetune-tumor", str(tmp_path / "run"), *extra]
    if extra:
        args += ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    _one_error_line(result, message)


# ---- predict: outputs over inputs, impossible voxel sizes, checkpoints that would load wrongly


def test_predict_refuses_an_output_that_would_replace_an_input_ct(ckpt, tmp_path):
    """Was: `-o` naming the CT itself counted the CT as its own finished label map (exit 0, nothing
    predicted); with --overwrite it would have replaced the CT. Likewise a folder as its own output."""
    ct = phantom_file(tmp_path / "ct.nii.gz", 1)
    original = ct.read_bytes()
    for args in (["-o", ct], ["-o", ct, "--overwrite"], ["-o", tmp_path]):
        result = runner.invoke(
            app,
            [
                "predict",
                "-i",
                str(ct if args[1] == ct else tmp_path),
                *map(str, args),
                "--model",
                str(ckpt),
                "-q",
            ],
        )
        assert result.exit_code == 2
        _one_error_line(result, "the label map would replace this input CT")
    assert ct.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz"]


@pytest.mark.parametrize("spacing", [100.0, 0.01], ids=["100mm", "0.01mm"])
def test_predict_refuses_voxel_sizes_no_ct_has(ckpt, tmp_path, spacing):
    """Was: 0.01 mm voxels gave a label map from a one-voxel network grid, exit 0; 100 mm voxels a
    memory refusal that hid the cause."""
    import nibabel as nib
    import numpy as np

    image = nib.load(phantom_file(tmp_path / "good.nii.gz", 1))
    affine = image.affine.copy()
    affine[:3, :3] *= spacing / np.linalg.norm(affine[:3, :3], axis=0)
    ct = tmp_path / "odd.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), affine), ct)
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", "-i", str(ct), "-o", str(out), "--model", str(ckpt), "-q"])
    assert result.exit_code == 2
    _one_error_line(result, f"voxel spacing ({spacing:g}, {spacing:g}, {spacing:g}) mm is not that of a CT")
    assert not out.exists()


def _broken_checkpoints(ckpt: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    import torch

    from kidneyseg.checkpoint import FORMAT_KEY, load_checkpoint, save_checkpoint

    loaded = load_checkpoint(ckpt)

    def save(name: str, state) -> Path:
        return save_checkpoint(tmp_path / name, model_state=state, config=loaded.config)

    state = loaded.model_state
    first = next(iter(state))
    payload = torch.load(ckpt, weights_only=True)
    assert FORMAT_KEY in payload
    not_a_dict = tmp_path / "state_is_text.pt"
    torch.save({**payload, "model_state": "weights"}, not_a_dict)
    return {
        "integer-weights": (
            save("int.pt", {k: v.long() if v.is_floating_point() else v for k, v in state.items()}),
            f"weights do not fit model 'sca_unet_3d': {first} holds torch.int64 values where the network "
            "has torch.float32",
        ),
        "missing-key": (
            save("missing.pt", {k: v for k, v in state.items() if k != first}),
            f"weights do not fit model 'sca_unet_3d': 1 missing (first {first})",
        ),
        "extra-key": (
            save("extra.pt", {**state, "extra.weight": torch.zeros(3)}),
            "weights do not fit model 'sca_unet_3d': 1 unexpected (first extra.weight)",
        ),
        "state-not-a-dict": (not_a_dict, "checkpoint is incomplete or damaged (TypeError)"),
    }


def test_checkpoints_that_would_load_wrongly_are_one_line(ckpt, tmp_path):
    """Was: integer weights were rounded into the network silently (exit 0, nonsense labels); a
    model_state that is not a mapping gave a traceback; a misfit named no key."""
    ct = phantom_file(tmp_path / "ct.nii.gz", 1)
    for name, (path, message) in _broken_checkpoints(ckpt, tmp_path).items():
        out = tmp_path / "out"
        result = runner.invoke(app, ["predict", "-i", str(ct), "-o", str(out), "--model", str(path), "-q"])
        assert result.exit_code == 2, name
        _one_error_line(result, f"{path}: {message}")
        assert not out.exists(), name


# ---- report, evaluate: options and folders


@pytest.fixture(scope="module")
def phantom_case(tmp_path_factory) -> tuple[Path, Path]:
    from kidneyseg.data.phantom import generate_case
    from kidneyseg.io.volume import write_volume

    folder = tmp_path_factory.mktemp("case")
    case = generate_case(4, size="tiny")
    return write_volume(folder / "ct.nii.gz", case.ct), write_volume(folder / "seg.nii.gz", case.labels)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min-lesion-mm", "-1"], "--min-lesion-mm must be a number >= 0, got -1.0"),
        (["--min-lesion-ml", "nan"], "--min-lesion-ml must be a number >= 0, got nan"),
        (["--confidence", "1.5"], "--confidence must be between 0 and 1, got 1.5"),
        (["--confidence", "-1"], "--confidence must be between 0 and 1, got -1.0"),
        (["--case-id", "../../escaped"], "--case-id names the report's files and must be a plain name"),
        (["--case-id", ".."], "--case-id names the report's files and must be a plain name"),
    ],
    ids=[
        "min-mm-negative",
        "min-ml-nan",
        "confidence-above-1",
        "confidence-negative",
        "case-id-path",
        "case-id-dots",
    ],
)
def test_report_options_out_of_range_are_one_line(phantom_case, tmp_path, args, message):
    """Was: accepted; a --case-id with ../ wrote the report outside --out."""
    ct, seg = phantom_case
    out = tmp_path / "deep" / "out"
    result = runner.invoke(app, ["report", "--ct", str(ct), "--labels", str(seg), "--out", str(out), *args])
    assert result.exit_code == 2
    _one_error_line(result, message)
    assert list(tmp_path.iterdir()) == []


def test_a_ct_given_as_labels_lists_a_few_values_not_hundreds(phantom_case, tmp_path):
    ct, _ = phantom_case
    result = runner.invoke(
        app, ["report", "--ct", str(ct), "--labels", str(ct), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    _one_error_line(result, ", ...] (")
    assert len(result.output) < 300, result.output


def test_evaluate_refuses_a_bad_annotation_the_same_folder_and_a_file(phantom_case, tmp_path):
    """Was: --annotation XYZ ignored; --pred = --ref scored 1.000 everywhere; a file as --pred
    was "folder does not exist"; --annotation MAJ for references that are no KiTS21 layout
    ignored (found by a hostile review); a KiTS folder against its own dataset/ (the same files
    by another path) scored 1.000 everywhere (found by a hostile run)."""
    _, seg = phantom_case
    preds = tmp_path / "preds"
    preds.mkdir()
    (preds / "case_1.nii.gz").write_bytes(seg.read_bytes())
    kits23 = tmp_path / "kits23"
    (kits23 / "dataset" / "case_00001").mkdir(parents=True)
    (kits23 / "dataset" / "case_00001" / "segmentation.nii.gz").write_bytes(seg.read_bytes())
    out = tmp_path / "eval"
    for args, message in (
        (["--pred", preds, "--ref", kits23, "--annotation", "MAJ"], "this is no KiTS21 layout"),
        (["--pred", preds, "--ref", preds, "--annotation", "XYZ"], "is not one of AND, MAJ, OR"),
        (["--pred", preds, "--ref", preds], "are the reference files themselves (case_1, in"),
        (["--pred", kits23, "--ref", kits23 / "dataset"], "are the reference files themselves"),
        (["--pred", seg, "--ref", preds], f"{seg}: is a file, not a folder"),
    ):
        result = runner.invoke(app, ["evaluate", *map(str, args), "--out", str(out), "-q"])
        assert result.exit_code == 2
        _one_error_line(result, message)
        assert not out.exists()


# ---- preprocess, phantom: never replace what is not ours


def test_preprocess_never_replaces_the_dataset_or_foreign_folders(tmp_path, monkeypatch):
    """Was: `preprocess --out DATASET/dataset` deleted every case's CT and labels (the cache's case
    folders are the dataset's); a folder of another kind with a case's name was deleted too."""
    from kidneyseg.data.phantom import generate_dataset

    generate_dataset(tmp_path / "data", 2, size="tiny", progress=False)
    dataset = tmp_path / "data" / "dataset"
    before = sorted(p.relative_to(tmp_path) for p in dataset.rglob("*"))
    result = runner.invoke(app, ["preprocess", "--data", str(tmp_path / "data"), "--out", str(dataset), "-q"])
    assert result.exit_code == 2
    _one_error_line(result, "the cache would replace the dataset's case folder")
    assert sorted(p.relative_to(tmp_path) for p in dataset.rglob("*")) == before
    inside = dataset / "case_00000" / "cache"  # found by a hostile run: was written there
    result = runner.invoke(app, ["preprocess", "--data", str(tmp_path / "data"), "--out", str(inside), "-q"])
    assert result.exit_code == 2
    _one_error_line(
        result, f"the cache would lie in the dataset's folder {(dataset / 'case_00000').resolve()}"
    )
    assert sorted(p.relative_to(tmp_path) for p in dataset.rglob("*")) == before

    foreign = tmp_path / "cache" / "case_00000"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    result = runner.invoke(
        app, ["preprocess", "--data", str(tmp_path / "data"), "--out", str(foreign.parent), "-q"]
    )
    assert result.exit_code == 2
    _one_error_line(result, f"{foreign}: exists but is not a preprocessed case (no meta.json); it is kept")
    assert (foreign / "notes.txt").read_text() == "mine"


def test_preprocess_out_of_memory_is_one_line_naming_the_case(tmp_path, monkeypatch):
    """Was: a numpy MemoryError traceback (e.g. `--spacing 0.01 0.01 0.01`)."""
    import kidneyseg.preprocess.cache
    from kidneyseg.data.phantom import generate_dataset

    def too_big(*args, **kwargs):
        raise MemoryError("Unable to allocate 31.6 GiB")

    generate_dataset(tmp_path / "data", 1, size="tiny", progress=False)
    monkeypatch.setattr(kidneyseg.preprocess.cache, "preprocess", too_big)
    result = runner.invoke(
        app, ["preprocess", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "c"), "-q"]
    )
    assert result.exit_code == 2
    _one_error_line(result, "imaging.nii.gz: not enough memory to resample it to")
    assert not (tmp_path / "c").exists()


def test_phantom_into_a_dataset_of_other_phantoms_is_refused(tmp_path):
    """Was: `phantom --seed 9` into a folder of seed-0 phantoms rewrote the first cases and kept
    the rest: one dataset of two seeds, exit 0."""
    out = str(tmp_path / "ph")
    assert runner.invoke(app, ["phantom", "--out", out, "-n", "2", "--size", "tiny", "-q"]).exit_code == 0
    assert runner.invoke(app, ["phantom", "--out", out, "-n", "3", "--size", "tiny", "-q"]).exit_code == 0
    for args in (["--seed", "9"], ["--orientation", "RAS"]):
        result = runner.invoke(app, ["phantom", "--out", out, "-n", "2", "--size", "tiny", "-q", *args])
        assert result.exit_code == 2
        _one_error_line(result, "already holds phantoms made with another seed, size, orientation, chest")


def test_phantom_never_overwrites_a_real_label_map_or_mixes_anatomy(tmp_path, shared_data):
    """Was: `phantom --out` a folder holding a real KiTS case replaced its segmentation with a
    synthetic one, and phantoms over another (or no) anatomy folder were rewritten in place, exit 0
    (found by a hostile review)."""
    real = tmp_path / "kits" / "dataset" / "case_00000"
    real.mkdir(parents=True)
    source = shared_data / "kits19" / "case_00000" / "segmentation.nii.gz"
    (real / "segmentation.nii.gz").write_bytes(source.read_bytes())
    result = runner.invoke(
        app, ["phantom", "--out", str(tmp_path / "kits"), "-n", "1", "--size", "tiny", "-q"]
    )
    assert result.exit_code == 2
    _one_error_line(result, "holds a case that is not a kidneyseg phantom (case_00000: a label map without")
    killed = tmp_path / "killed"  # a phantom a killed run left without phantom.json: written again
    assert (
        runner.invoke(app, ["phantom", "--out", str(killed), "-n", "2", "--size", "tiny", "-q"]).exit_code
        == 0
    )
    (killed / "dataset" / "case_00001" / "phantom.json").unlink()
    assert (
        runner.invoke(app, ["phantom", "--out", str(killed), "-n", "2", "--size", "tiny", "-q"]).exit_code
        == 0
    )
    assert (killed / "dataset" / "case_00001" / "phantom.json").is_file()
    assert (real / "segmentation.nii.gz").read_bytes() == source.read_bytes()
    assert sorted(p.name for p in real.iterdir()) == ["segmentation.nii.gz"]
    anatomy = tmp_path / "anatomy"
    (anatomy / "case_00000").mkdir(parents=True)
    (anatomy / "case_00000" / "segmentation.nii.gz").symlink_to(source)
    out = str(tmp_path / "ph")
    base = ["phantom", "--out", out, "-n", "1", "--size", "tiny", "-q"]
    assert runner.invoke(app, [*base, "--anatomy", str(anatomy)]).exit_code == 0
    assert runner.invoke(app, [*base, "--anatomy", str(anatomy)]).exit_code == 0  # the same: rewritten
    elsewhere = tmp_path / "other-anatomy" / "case_00001"
    elsewhere.mkdir(parents=True)
    (elsewhere / "segmentation.nii.gz").symlink_to(source)
    for other in ([], ["--anatomy", str(elsewhere.parent)]):
        result = runner.invoke(app, [*base, *other])
        assert result.exit_code == 2
        _one_error_line(result, "already holds phantoms made with another seed, size, orientation, chest")


# ---- faults that held when tried: kept there


@pytest.fixture(scope="module")
def odd_inputs(tmp_path_factory) -> dict[str, Path]:
    """Files a hostile user passes as a CT, each named after what is wrong with it."""
    import gzip

    import nibabel as nib
    import numpy as np

    folder = tmp_path_factory.mktemp("odd")
    good = phantom_file(folder / "good.nii.gz", 4)
    image = nib.load(good)
    array, affine = np.asarray(image.dataobj), image.affine

    def save(name: str, values) -> Path:
        nib.save(nib.Nifti1Image(values, affine), folder / name)
        return folder / name

    nan, inf = array.astype(np.float32), array.astype(np.float32)
    nan[3, 3, 3], inf[3, 3, 3] = np.nan, np.inf
    (folder / "png.nii.gz").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (folder / "gzipped_text.nii.gz").write_bytes(gzip.compress(b"hello\n"))
    (folder / "empty.nii.gz").write_bytes(b"")
    (folder / "folder.nii.gz").mkdir()
    (folder / "notes.txt").write_text("not an image")
    (folder / "dangling.nii.gz").symlink_to(folder / "gone.nii.gz")
    (folder / "loop_a.nii.gz").symlink_to(folder / "loop_b.nii.gz")
    (folder / "loop_b.nii.gz").symlink_to(folder / "loop_a.nii.gz")

    def header_edit(name: str, **fields) -> Path:
        header = image.header.copy()
        for key, value in fields.items():
            header[key] = value
        nib.save(nib.Nifti1Image(array, None, header=header), folder / name)
        return folder / name

    def raw_pixdim(name: str, index: int, value: float) -> Path:
        """The good CT with pixdim[index] set in the stored bytes (nibabel repairs it on saving)."""
        header = image.header.copy()
        header["sform_code"], header["qform_code"] = 0, 1
        data = bytearray(nib.Nifti1Image(array, None, header=header).to_bytes())
        data[76 + 4 * index : 80 + 4 * index] = np.float32(value).tobytes()
        (folder / name).write_bytes(bytes(data))
        return folder / name

    srows = {k: image.header[k] * np.array([1e4, 1e4, 1e4, 1.0]) for k in ("srow_x", "srow_y", "srow_z")}
    return {
        "zero_pixdim": raw_pixdim("zero_pixdim.nii", 1, 0.0),
        "negative_pixdim": raw_pixdim("negative_pixdim.nii", 3, -2.5),
        "sform_in_metres_per_1e4": header_edit("sform_scaled.nii.gz", sform_code=1, qform_code=0, **srows),
        "scaled_values": save("scaled.nii.gz", array.astype(np.int32) * 100000),
        "tenths_of_hu": save("tenths.nii.gz", array.astype(np.int32) * 10),
        "good": good,
        "png": folder / "png.nii.gz",
        "gzipped_text": folder / "gzipped_text.nii.gz",
        "empty": folder / "empty.nii.gz",
        "folder": folder / "folder.nii.gz",
        "txt": folder / "notes.txt",
        "dangling": folder / "dangling.nii.gz",
        "loop": folder / "loop_a.nii.gz",
        "nan": save("nan.nii.gz", nan),
        "inf": save("inf.nii.gz", inf),
        "uint16": save("uint16.nii.gz", (array.astype(np.int32) + 1024).clip(0).astype(np.uint16)),
        "mask": save("mask.nii.gz", (array > 0).astype(np.uint8)),
        "one_voxel": save("one_voxel.nii.gz", array[:1, :1, :1].copy()),
        "int8": save("int8.nii.gz", array.clip(-128, 127).astype(np.int8)),
        "float64": save("float64.nii.gz", array.astype(np.float64)),
        "int32": save("int32.nii.gz", array.astype(np.int32)),
        "one_slice": save("one_slice.nii.gz", np.ascontiguousarray(array[:, :, 10:11])),
        "zero_slices": save("zero_slices.nii.gz", np.ascontiguousarray(array[:, :, :0])),
        "two_voxels_wide": save("two_wide.nii.gz", np.ascontiguousarray(array[:, 30:32, :])),
    }


HELD_PREDICT = {
    "png-renamed": ("png", [], "cannot read the NIfTI header"),
    "gzipped-text": ("gzipped_text", [], "cannot read the NIfTI header"),
    "empty-file": ("empty", [], "Empty file"),
    "folder-named-nii": ("folder", [], "no CT found"),
    "text-file": ("txt", [], "not a NIfTI file (.nii, .nii.gz) or a DICOM folder"),
    "dangling-symlink": ("dangling", [], "no such file or folder"),
    "symlink-loop": ("loop", [], "no such file or folder"),
    "nan-voxel": ("nan", [], "the image holds NaN or infinite values"),
    "inf-voxel": ("inf", [], "the image holds NaN or infinite values"),
    "uint16-without-intercept": ("uint16", [], "no value below 0"),
    "values-scaled": ("scaled_values", [], "no CT in Hounsfield units goes above 50000"),
    "tenths-of-hu": ("tenths_of_hu", [], "the air in the image lies at about -99"),
    "zero-pixdim": ("zero_pixdim", [], "voxel sizes (pixdim) 0, "),
    "negative-pixdim": ("negative_pixdim", [], "must be positive and finite"),
    "sform-scaled-pixdim-not": ("sform_in_metres_per_1e4", [], "is not that of a CT"),
    "roi-margin-nan": ("good", ["--roi-margin", "nan"], "the ROI margin must be a finite number of mm"),
    "absorb-islands-inf": (
        "good",
        ["--absorb-islands-ml", "inf"],
        "lesion islands are absorbed below a finite",
    ),
    "mask-as-ct": ("mask", [], "the image looks already normalised"),
    "one-voxel": ("one_voxel", [], "no body in the image"),
    "zero-slices": ("zero_slices", [], "zero_slices.nii.gz: the image has no voxels (shape "),
    "series-for-a-file": ("good", ["--series", "1.2.3"], "--series chooses a series of a DICOM folder"),
    "overlap-1": ("good", ["--overlap", "1.0"], "--overlap must be in [0, 1), got 1.0"),
    "overlap-negative": ("good", ["--overlap", "-0.1"], "--overlap must be in [0, 1), got -0.1"),
    "overlap-nan": ("good", ["--overlap", "nan"], "--overlap must be in [0, 1), got nan"),
    "batch-0": ("good", ["--batch", "0"], "--batch must be at least 1, got 0"),
    "shard-3-of-2": ("good", ["--shard", "3/2"], "--shard i/n needs 1 <= i <= n, got '3/2'"),
    "shard-0-of-2": ("good", ["--shard", "0/2"], "--shard i/n needs 1 <= i <= n, got '0/2'"),
    "shard-1-of-0": ("good", ["--shard", "1/0"], "--shard i/n needs 1 <= i <= n, got '1/0'"),
    "shard-abc": ("good", ["--shard", "abc"], "--shard must look like i/n"),
    "shard-of-a-file": (
        "good",
        ["--shard", "1/2"],
        "--shard shares out the cases of a folder, and this is one CT",
    ),
    "device-bogus": ("good", ["--device", "bogus"], "unknown device 'bogus'"),
    "precision-float16": ("good", ["--precision", "float16"], "--precision must be one of"),
    "int8-on-pytorch": (
        "good",
        ["--precision", "int8", "--backend", "torch"],
        "--precision int8 runs on the openvino backend only, but this prediction would run on PyTorch",
    ),
    "blend-unknown": ("good", ["--blend", "x"], "--blend must be one of"),
}


@pytest.mark.parametrize(("name", "args", "message"), HELD_PREDICT.values(), ids=list(HELD_PREDICT))
def test_predict_odd_inputs_and_options_are_one_line(ckpt, odd_inputs, tmp_path, name, args, message):
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["predict", "-i", str(odd_inputs[name]), "-o", str(out), "--model", str(ckpt), "-q", *args]
    )
    assert result.exit_code == 2
    _one_error_line(result, message)
    assert not out.exists()


def test_cases_whose_outputs_would_clash_are_refused_and_an_empty_shard_says_so(ckpt, odd_inputs, tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    for name in ("c0", "c0_kidney"):  # with --per-class, c0's kidney mask is c0_kidney.nii.gz
        (cases / f"{name}.nii.gz").write_bytes(odd_inputs["good"].read_bytes())
    out = tmp_path / "out"
    args = ["predict", "-i", str(cases), "-o", str(out), "--model", str(ckpt), "-q"]
    result = runner.invoke(app, [*args, "--per-class", "--shard", "2/2"])
    assert result.exit_code == 2
    _one_error_line(result, f"{out / 'c0_kidney.nii.gz'}: cases c0 and c0_kidney would both write this file")
    assert not out.exists()
    result = runner.invoke(app, [*args, "--shard", "3/3"])  # two cases in three shares
    assert result.exit_code == 0 and "this shard holds none of the folder's cases" in result.output
    assert not out.exists()
    result = runner.invoke(app, [*args, "--shard", "2/2"])
    assert result.exit_code == 0 and sorted(p.name for p in out.glob("*.nii.gz")) == ["c0_kidney.nii.gz"]


def test_predict_output_that_is_a_file_is_one_line(ckpt, odd_inputs, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = runner.invoke(
        app, ["predict", "-i", str(odd_inputs["good"]), "-o", str(blocker), "--model", str(ckpt), "-q"]
    )
    assert result.exit_code == 2
    _one_error_line(result, f"{blocker}: the output path exists and is not a folder")
    assert blocker.read_text() == "x"


def test_predict_takes_any_integer_or_float_type_and_odd_shapes(ckpt, odd_inputs, tmp_path):
    """int32 and float64 copies of an int16 CT give the same labels; int8 (no air) a warning; a
    one-slice CT, one two voxels wide and a path with spaces and non-ASCII letters are segmented on
    their own grid."""
    import nibabel as nib
    import numpy as np

    spaced = tmp_path / "Patient Ä 1.nii.gz"
    spaced.write_bytes(odd_inputs["good"].read_bytes())
    labels = {}
    for name, path in [
        *((n, odd_inputs[n]) for n in ("good", "int32", "float64", "int8")),
        ("spaced", spaced),
    ]:
        result = runner.invoke(
            app, ["predict", "-i", str(path), "-o", str(tmp_path / name), "-m", str(ckpt), "-q"]
        )
        assert result.exit_code == 0, result.output
        labels[name] = np.asarray(nib.load(tmp_path / name / path.name).dataobj)
        if name == "int8":
            assert "no air in the image (minimum -128 HU)" in result.output
            record = json.loads((tmp_path / name / "predict_run.json").read_text())
            assert "no_air" in record["cases"][0]["statistics"]["warnings"].split("; ")
    for name in ("int32", "float64", "spaced"):
        np.testing.assert_array_equal(labels[name], labels["good"], err_msg=name)
    for name in ("one_slice", "two_voxels_wide"):
        out = tmp_path / name
        result = runner.invoke(
            app, ["predict", "-i", str(odd_inputs[name]), "-o", str(out), "-m", str(ckpt), "-q"]
        )
        assert result.exit_code == 0, result.output
        written = nib.load(out / odd_inputs[name].name)
        assert written.shape == nib.load(odd_inputs[name]).shape


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--spacing", "0", "1", "1"], "preprocess.spacing (0.0, 1.0, 1.0) must be positive and finite"),
        (["--spacing", "nan", "1", "1"], "preprocess.spacing (nan, 1.0, 1.0) must be positive and finite"),
        (
            ["--hu-window", "300", "-100"],
            "preprocess.hu_window (300.0, -100.0) must be finite with low < high",
        ),
        (["--layout", "foo"], "layout='foo' is not one of"),
        (["--annotation", "XX"], "annotation='XX' is not one of"),
    ],
    ids=["spacing-0", "spacing-nan", "hu-window-reversed", "layout-unknown", "annotation-unknown"],
)
def test_preprocess_bad_options_are_one_line(phantom_case, tmp_path, args, message):
    data = phantom_case[0].parent
    result = runner.invoke(
        app, ["preprocess", "--data", str(data), "--out", str(tmp_path / "c"), "-q", *args]
    )
    assert result.exit_code == 2
    _one_error_line(result, message)
    assert not (tmp_path / "c").exists()


def test_evaluate_jobs_zero_is_one_line(phantom_case, tmp_path):
    for side in ("pred", "ref"):
        (tmp_path / side).mkdir()
        (tmp_path / side / "case_1.nii.gz").write_bytes(phantom_case[1].read_bytes())
    args = ["--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--out", str(tmp_path / "e")]
    result = runner.invoke(app, ["evaluate", *args, "-j", "0"])
    assert result.exit_code == 2
    _one_error_line(result, "--jobs must be at least 1, got 0")
    assert not (tmp_path / "e").exists()


def test_report_cohort_names_the_cases_on_one_side_only(phantom_case, tmp_path):
    """Was: label maps without a CT, and CTs without a label map, were left out without a word."""
    ct, seg = phantom_case
    (tmp_path / "cts").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ("a", "b"):
        (tmp_path / "cts" / f"{name}.nii.gz").write_bytes(ct.read_bytes())
    for name in ("a", "zzz"):
        (tmp_path / "labels" / f"{name}.nii.gz").write_bytes(seg.read_bytes())
    cts, labels = tmp_path / "cts", tmp_path / "labels"
    result = runner.invoke(
        app, ["report", "--ct", str(cts), "--labels", str(labels), "--out", str(tmp_path / "o"), "-q"]
    )
    assert result.exit_code == 0, result.output
    assert f"warning: 1 CT(s) of {cts} have no label map in {labels}: b\n" in result.output
    assert f"warning: 1 label map(s) in {labels} have no CT in {cts}: zzz\n" in result.output


def test_report_cohort_removes_the_earlier_reports_of_cts_whose_label_map_is_gone(phantom_case, tmp_path):
    """Was: the reports of a case whose label map is gone stayed beside the new statistics.csv.
    Only files the earlier run wrote, and still as it wrote them, go; a case that fails now
    keeps its earlier report, and its record entry, for a later run to clean."""
    ct, seg = phantom_case
    cts, labels, out = tmp_path / "cts", tmp_path / "labels", tmp_path / "o"
    cts.mkdir(), labels.mkdir()
    for name in ("a", "b", "c"):
        (cts / f"{name}.nii.gz").write_bytes(ct.read_bytes())
        (labels / f"{name}.nii.gz").write_bytes(seg.read_bytes())
    args = ["report", "--ct", str(cts), "--labels", str(labels), "--out", str(out), "-q"]
    assert runner.invoke(app, args).exit_code == 0
    (labels / "b.nii.gz").write_bytes(ct.read_bytes())  # b fails now: a CT is no label map
    (labels / "c.nii.gz").unlink()
    with (out / "c_report.html").open("a") as page:
        page.write("<!-- the user's note -->")
    (out / "x_report.json").write_text("{}")  # not written by kidneyseg
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert (
        "warning: removed 2 report file(s) an earlier run wrote for CTs whose label map is gone: "
        "c_report.json, c_preview.png\n"
    ) in result.output
    reports = {f"{c}_{kind}" for c in "ab" for kind in ("report.json", "report.html", "preview.png")}
    kept = reports | {"c_report.html", "x_report.json"}
    assert {p.name for p in out.iterdir()} == kept | {"statistics.csv", "report_run.json"}
    assert set(json.loads((out / "report_run.json").read_text())["cases"]) == {"a", "b"}
    (labels / "b.nii.gz").unlink()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "b_report.json, b_report.html, b_preview.png\n" in result.output
    assert not any(out.glob("b_*"))


@pytest.mark.parametrize(
    "option", [["--case-id", "p7"], ["--confidence", "0.9"]], ids=["case-id", "confidence"]
)
def test_report_cohort_refuses_the_options_of_one_case(phantom_case, tmp_path, option):
    """Was: ignored, the files named by the case ids and no model confidence, exit 0."""
    ct, seg = phantom_case
    for folder, source in (("cts", ct), ("labels", seg)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.nii.gz").write_bytes(source.read_bytes())
    args = ["--ct", str(tmp_path / "cts"), "--labels", str(tmp_path / "labels"), "--out", str(tmp_path / "o")]
    result = runner.invoke(app, ["report", *args, *option])
    assert result.exit_code == 2
    _one_error_line(result, f"{tmp_path / 'labels'}: {option[0]} is for one case: a folder of label maps")
    assert not (tmp_path / "o").exists()


def test_a_file_as_the_dataset_folder_is_named_as_a_file(phantom_case, tmp_path):
    result = runner.invoke(app, ["preprocess", "--data", str(phantom_case[0]), "--out", str(tmp_path / "c")])
    assert result.exit_code == 2
    _one_error_line(result, f"{phantom_case[0]}: is a file, not a dataset folder")


def test_a_nifti_without_orientation_is_predicted_with_a_warning(ckpt, odd_inputs, tmp_path):
    """Was: read as nibabel's default orientation without a word (right and left may be swapped)."""
    import nibabel as nib
    import numpy as np

    image = nib.load(odd_inputs["good"])
    unoriented = nib.Nifti1Image(np.asarray(image.dataobj), image.affine)
    unoriented.set_qform(None, code=0)
    unoriented.set_sform(None, code=0)
    ct = tmp_path / "unoriented.nii.gz"
    nib.save(unoriented, ct)
    result = runner.invoke(
        app, ["predict", "-i", str(ct), "-o", str(tmp_path / "out"), "-m", str(ckpt), "-q"]
    )
    assert result.exit_code == 0, result.output
    assert f"warning: {ct}: the header gives no orientation (qform and sform codes 0)" in result.output


def test_label_maps_state_their_grid_as_the_ct_does(ckpt, odd_inputs, tmp_path):
    """A label map's header says what its CT's says: no orientation stays none (was: qform and
    sform written with code 1 and nibabel's guess, which ITK readers place 300 mm away from the
    CT they read with codes 0), a template-space sform (code 2) beside no qform stays so, and a
    qform that differs from the sform is kept. The same for --per-class masks and segment()."""
    import nibabel as nib
    import numpy as np

    import kidneyseg

    image = nib.load(odd_inputs["good"])
    turned = image.affine.copy()
    turned[:3, 3] += 7.5
    for name, (qcode, scode) in {"none": (0, 0), "template": (0, 2), "both": (1, 1)}.items():
        source = nib.Nifti1Image(np.asarray(image.dataobj), image.affine)
        source.set_qform(turned if name == "both" else image.affine, code=qcode)
        source.set_sform(image.affine, code=scode)
        ct = tmp_path / f"{name}.nii.gz"
        nib.save(source, ct)
        out = tmp_path / f"out-{name}"
        args = ["predict", "-i", str(ct), "-o", str(out), "-m", str(ckpt), "-q", "--per-class"]
        assert runner.invoke(app, args).exit_code == 0
        written = [nib.load(out / f"{name}.nii.gz"), nib.load(out / f"{name}_kidney.nii.gz")]
        written.append(kidneyseg.segment(nib.load(ct), model=str(ckpt)))
        read = nib.load(ct).header
        for label in written:
            header = label.header
            assert (int(header["qform_code"]), int(header["sform_code"])) == (qcode, scode), name
            if qcode:
                np.testing.assert_allclose(header.get_qform(), read.get_qform(), atol=1e-4)
            if scode:
                np.testing.assert_allclose(header.get_sform(), read.get_sform(), atol=1e-4)
            np.testing.assert_allclose(header.get_best_affine(), read.get_best_affine(), atol=1e-4)
            np.testing.assert_allclose(header.get_zooms()[:3], read.get_zooms()[:3])


def test_a_qform_of_code_0_holding_no_rotation_is_ignored_and_a_crop_is_written_where_it_lies(tmp_path):
    """Found in review of the frames: a qform of code 0 holding numbers that are no rotation
    (ignored by every reader) broke reading the file; a Volume given another affine (a crop) was
    written where its source's header put the uncropped grid."""
    import dataclasses

    import nibabel as nib
    import numpy as np

    from kidneyseg.io.volume import read_volume, write_volume

    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    image = nib.Nifti1Image(np.zeros((20, 20, 10), np.int16), affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=0)
    image.header["quatern_b"], image.header["quatern_c"] = 0.9, 0.9
    nib.save(image, tmp_path / "junk.nii.gz")
    volume = read_volume(tmp_path / "junk.nii.gz")
    np.testing.assert_allclose(volume.affine, affine)
    shifted = affine.copy()
    shifted[2, 3] += 12.0  # 4 slices of 3 mm cut off
    write_volume(
        tmp_path / "crop.nii.gz", dataclasses.replace(volume, array=volume.array[:, :, 4:], affine=shifted)
    )
    np.testing.assert_allclose(nib.load(tmp_path / "crop.nii.gz").affine, shifted, atol=1e-4)


def test_an_output_or_cache_folder_that_cannot_be_made_is_one_line(tmp_path_factory, tmp_path):
    """Was: NotADirectoryError / FileNotFoundError tracebacks, exit 1, from `train` and
    `preprocess`."""
    from kidneyseg.data.phantom import generate_dataset

    data = tmp_path_factory.mktemp("data")
    generate_dataset(data, cases=2, seed=0, size="tiny", progress=False)
    afile = tmp_path / "afile.txt"
    afile.write_text("hi\n")
    for args, path, kind in [
        (["preprocess", "--out", str(afile / "sub")], afile / "sub", "cache"),
        (["preprocess", "--out", "/proc/kidneyseg-x"], "/proc/kidneyseg-x", "cache"),
        (["train", "--out", str(afile / "run")], afile / "run", "run"),
        (["train", "--out", "/proc/kidneyseg-x"], "/proc/kidneyseg-x", "run"),
        (["train", "--out", str(tmp_path / "run"), "--cache", str(afile)], afile, "cache"),
    ]:
        recipe = ["--recipe", "sca-unet-3d:cpu"] if args[0] == "train" else []
        result = runner.invoke(app, [args[0], "--data", str(data), *recipe, *args[1:], "-q"])
        assert result.exit_code == 2, result.output
        _one_error_line(result, f"{path}")
        assert f"cannot create the {kind} folder (" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile.txt"]  # nothing left behind


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["models", "sca_unet_3d", "--set", "out_channels=-1"],
            "error: model 'sca_unet_3d': out_channels must be at least 2 (background and a class), got -1",
        ),
        (
            ["models", "sca_unet_3d", "--set", "spatial_kernel_size=-1"],
            "error: model 'sca_unet_3d': spatial_kernel_size=-1: Trying to create tensor",
        ),
        (
            ["train", "model.kwargs.spatial_kernel_size=-1"],
            "error: model 'sca_unet_3d': spatial_kernel_size=-1: Trying to create tensor",
        ),
        (["train", "model.kwargs.in_channels=2"], "error: model.kwargs.in_channels=2 must be 1"),
    ],
    ids=["models-out-channels", "models-kernel", "train-kernel", "train-in-channels"],
)
def test_network_settings_that_cannot_build_or_run_are_one_line(phantom_case, tmp_path, args, message):
    """Was: tracebacks; `in_channels=2` failed in epoch 1 leaving `run.json` "running"."""
    if args[0] == "train":
        data = ["--data", str(phantom_case[0].parent), "--out", str(tmp_path / "run")]
        args = ["train", "--recipe", "sca-unet-3d:cpu", *data, "-q", *args[1:]]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    _one_error_line(result, message)
    assert not (tmp_path / "run").exists()


def test_a_network_the_constructor_takes_but_cannot_run_is_refused_before_training():
    import dataclasses

    from kidneyseg.errors import KidneysegError
    from kidneyseg.recipes import load_recipe
    from kidneyseg.train.build import check_network_runs, resolve_model_config

    config = resolve_model_config(load_recipe("sca-unet-3d:cpu"))
    check_network_runs(config)
    wrong = dataclasses.replace(config.model)
    object.__setattr__(wrong, "kwargs", {**wrong.kwargs, "in_channels": 2})  # past the config's rule
    with pytest.raises(
        KidneysegError, match=r"in_channels=2 cannot run on a one-channel 3D input \(RuntimeError"
    ):
        check_network_runs(dataclasses.replace(config, model=wrong))
