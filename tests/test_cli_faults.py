"""Faults that concern every verb (docs/reliability.md): bad option values, SIGTERM, a broken
environment. Each gives one line naming the problem and a non-zero exit, and leaves nothing behind."""

from __future__ import annotations

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


def test_sigterm_is_one_line_exit_143_and_leaves_no_output(ckpt, tmp_path, monkeypatch):
    """SIGTERM (kill, timeout, a scheduler's time limit) in the middle of a folder of cases: the
    case loop does not take it for a bad case and go on; the empty output folder is removed."""
    import kidneyseg.predict.runner

    cases = tmp_path / "cases"
    cases.mkdir()
    for seed in (1, 2):
        phantom_file(cases / f"case{seed}.nii.gz", seed)

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(kidneyseg.predict.runner, "predict_case", killed)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", "-i", str(cases), "-o", str(out), "--model", str(ckpt), "-q"])
    assert result.exit_code == EXIT_TERMINATED == 143
    assert result.output == "terminated\n"
    assert not out.exists()
    assert signal.getsignal(signal.SIGTERM) is before


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
