"""`--precision int8`: NNCF post-training quantisation for OpenVINO, calibrated on phantom windows."""

from __future__ import annotations

import json

import nibabel as nib
import nncf  # noqa: F401  (the `dev` extra installs it and OpenVINO: `make test` tests int8)
import numpy as np
import openvino  # noqa: F401
import pytest
import torch
from typer.testing import CliRunner

from kidneyseg.checkpoint import build_model_from_checkpoint, load_checkpoint
from kidneyseg.cli import app
from kidneyseg.data.phantom import generate_case
from kidneyseg.errors import KidneysegError
from kidneyseg.io.volume import write_volume
from kidneyseg.predict import backends, calibration
from kidneyseg.predict.backends import OpenVINONetwork
from kidneyseg.predict.calibration import Calibration, CalibrationSet, calibration_windows
from kidneyseg.predict.compile_cache import CACHE_ENV
from kidneyseg.predict.predictor import Predictor, PredictSettings
from kidneyseg.predict.pretrained import bundled_path
from kidneyseg.predict.runner import run_prediction

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = Calibration(windows=4, phantoms=1, size="tiny")
"""A quick calibration for the tests (the default cuts 16 windows from 4 `small` phantoms)."""


@pytest.fixture(scope="module")
def bundled():
    """The bundled (trained) model: int8 must keep a trained network's labels."""
    ckpt = load_checkpoint(bundled_path())
    return ckpt, build_model_from_checkpoint(ckpt).eval()


@pytest.fixture(scope="module")
def phantom():
    return generate_case(7, size="tiny")


def test_calibration_windows_are_fixed_phantom_windows_of_the_network_shape(bundled):
    config = bundled[0].config.preprocess
    windows = calibration_windows(config, (1, 64, 64, 48), SMALL)
    assert [w.shape for w in windows] == [(1, 1, 64, 64, 48)] * 4
    assert all(w.dtype == np.float32 and w.min() >= 0 and w.max() <= 1 for w in windows)
    again = calibration_windows(config, (1, 64, 64, 48), SMALL)
    assert all(np.array_equal(a, b) for a, b in zip(windows, again, strict=True))
    other = calibration_windows(
        config, (1, 64, 64, 48), Calibration(windows=4, phantoms=1, size="tiny", seed=1)
    )
    assert not np.array_equal(windows[0], other[0])
    # 2D networks are calibrated on axial slices
    assert [w.shape for w in calibration_windows(config, (1, 32, 24), SMALL)] == [(1, 1, 32, 24)] * 4


def test_int8_network_is_quantised_and_keeps_a_trained_networks_labels(bundled, phantom):
    ckpt, net = bundled
    window = (1, *ckpt.config.inference.roi_size)
    int8 = OpenVINONetwork(net, window, "int8", 1, CalibrationSet(ckpt.config.preprocess, window, SMALL))
    float32 = OpenVINONetwork(net, window, "float32", 1)
    assert int8.quantize_seconds > 0
    assert any(op.get_type_name() == "FakeQuantize" for op in int8._model.get_ops())
    assert not any(op.get_type_name() == "FakeQuantize" for op in float32._model.get_ops())
    # windows of another phantom than the calibration's, around its kidneys and anywhere in the body
    x = torch.from_numpy(
        np.concatenate(
            calibration_windows(
                ckpt.config.preprocess, window, Calibration(windows=4, phantoms=1, seed=7, size="tiny")
            )
        )
    )
    a, b = float32(x), int8(x)
    assert a.shape == b.shape == (4, 4, *window[1:])
    assert not torch.equal(a, b)  # int8 arithmetic, not float32's
    assert (a.argmax(1) == b.argmax(1)).float().mean() >= 0.99
    with pytest.raises(ValueError, match="calibration"):
        OpenVINONetwork(net, window, "int8", 1)


def test_the_quantised_network_is_cached_and_read_back_without_calibrating(bundled, tmp_path, monkeypatch):
    """A second int8 compilation of the same network with the same calibration reads the
    quantised graph from the compile cache: no windows, no NNCF, the same scores."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    ckpt, net = bundled
    window = (1, *ckpt.config.inference.roi_size)
    first_set = CalibrationSet(ckpt.config.preprocess, window, SMALL)
    first = OpenVINONetwork(net, window, "int8", 1, first_set)
    assert first.cache == "miss" and first.quantize_seconds > 0 and first_set.windows_seconds is not None
    # the float32 graph it was quantised from is kept beside it
    assert len(list((tmp_path / "cache" / "openvino").glob("*.xml"))) == 2

    def refuse(*args, **kwargs):
        raise AssertionError("quantised or calibrated although cached")

    monkeypatch.setattr(backends, "quantize_int8", refuse)
    monkeypatch.setattr(calibration, "calibration_windows", refuse)
    again_set = CalibrationSet(ckpt.config.preprocess, window, SMALL)
    again = OpenVINONetwork(net, window, "int8", 1, again_set)
    assert (again.cache, again.quantize_seconds, again_set.windows_seconds) == ("hit", 0.0, None)
    assert any(op.get_type_name() == "FakeQuantize" for op in again._model.get_ops())
    x = torch.from_numpy(np.concatenate(calibration_windows(ckpt.config.preprocess, window, SMALL)))
    monkeypatch.undo()
    assert torch.equal(again(x), first(x))
    # another calibration is another quantised network
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    other = CalibrationSet(
        ckpt.config.preprocess, window, Calibration(windows=4, phantoms=1, size="tiny", seed=1)
    )
    assert other.key() != again_set.key()
    from_cached_float32 = OpenVINONetwork(net, window, "int8", 1, other)  # quantises the cached graph
    float32 = OpenVINONetwork(net, window, "float32", 1)
    assert (from_cached_float32.cache, float32.cache) == ("miss", "hit")
    assert (from_cached_float32(x).argmax(1) == float32(x).argmax(1)).float().mean() >= 0.99


def test_predict_int8_agrees_with_float32_and_records_the_calibration(phantom, tmp_path, monkeypatch):
    monkeypatch.setattr(calibration, "CALIBRATION", SMALL)
    ct = write_volume(tmp_path / "ct.nii.gz", phantom.ct)
    labels = {}
    for precision in ("float32", "int8"):
        settings = PredictSettings(backend="openvino", precision=precision)
        run_prediction(ct, tmp_path / precision, [bundled_path()], settings, progress=False)
        labels[precision] = np.asarray(nib.load(tmp_path / precision / "ct.nii.gz").dataobj)
    a, b = labels["float32"], labels["int8"]
    assert a.shape == b.shape == phantom.ct.shape and set(np.unique(b)) <= {0, 1, 2, 3}
    assert (a > 0).sum() > 500 and np.mean(a == b) >= 0.999  # 99.995 % with NNCF 3.4, OpenVINO 2026.4
    assert 2 * ((a > 0) & (b > 0)).sum() / ((a > 0).sum() + (b > 0).sum()) >= 0.98  # kidney + masses
    environment = json.loads((tmp_path / "int8" / "predict_run.json").read_text())["environment"]
    assert environment["precision"] == "int8" and environment["backend"] == "openvino"
    record = environment["calibration"]
    assert (record["windows"], record["phantoms"], record["seed"], record["size"]) == (4, 1, 0, "tiny")
    assert record["quantize_seconds"] > 0 and record["window_shape"] == [1, 64, 64, 48]
    assert environment["backend_compile_seconds"] >= record["quantize_seconds"] + record["windows_seconds"]
    float32 = json.loads((tmp_path / "float32" / "predict_run.json").read_text())["environment"]
    assert (float32["precision"], float32["calibration"]) == ("float32", None)


@pytest.mark.parametrize(
    ("settings", "device", "message"),
    [
        (
            {"backend": "torch"},
            "cpu",
            "--precision int8 runs on the openvino backend only, but this "
            "prediction would run on PyTorch (cpu)",
        ),
        ({"backend": "auto"}, "cuda", "would run on PyTorch (cuda:0)"),
    ],
)
def test_int8_is_refused_where_openvino_does_not_run(settings, device, message, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # refused before any CUDA call
    with pytest.raises(KidneysegError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Predictor([bundled_path()], PredictSettings(precision="int8", **settings), device=device)


def test_segment_names_precision_and_backend_as_its_arguments():
    """(was: `segment(ct, precision="int8", backend="torch")` was told to use `--backend openvino`,
    an option of the command line)"""
    import kidneyseg

    with pytest.raises(KidneysegError) as refused:
        kidneyseg.segment("never-read.nii.gz", precision="int8", backend="torch", device="cpu")
    assert str(refused.value) == (
        "precision='int8' runs on the openvino backend only, but this prediction would run on "
        "PyTorch (cpu): use backend='openvino' on the CPU"
    )


def test_int8_without_nncf_says_how_to_install_it(phantom, tmp_path, monkeypatch):
    monkeypatch.setattr(backends, "nncf_available", lambda: False)
    with pytest.raises(
        KidneysegError, match=r"needs NNCF, which is not installed: pip install nncf \(in a kidneyseg"
    ):
        Predictor([bundled_path()], PredictSettings(precision="int8", backend="openvino"))
    Predictor([bundled_path()], PredictSettings(precision="bfloat16", backend="openvino"))  # others still run
    ct = write_volume(tmp_path / "ct.nii.gz", phantom.ct)
    result = CliRunner().invoke(
        app, ["predict", "-i", str(ct), "-o", str(tmp_path / "out"), "--precision", "int8"]
    )
    assert result.exit_code == 2 and not (tmp_path / "out").exists()
    assert result.output.splitlines() == [
        "error: --precision int8 needs NNCF, which is not installed: "
        "pip install nncf (in a kidneyseg checkout: pip install '.[int8]')"
    ]


def test_int8_does_not_fall_back_to_pytorch_in_float32(monkeypatch):
    """`auto` falls back to PyTorch when OpenVINO cannot compile, but PyTorch has no int8."""

    def broken(*args, **kwargs):
        raise RuntimeError("no CPU support")

    monkeypatch.setattr(calibration, "CALIBRATION", SMALL)
    monkeypatch.setattr(backends, "OpenVINONetwork", broken)
    with pytest.raises(KidneysegError, match=r"OpenVINO could not compile the network \(RuntimeError"):
        Predictor([bundled_path()], PredictSettings(precision="int8"))
