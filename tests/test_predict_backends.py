"""Prediction backends: OpenVINO runs the same networks as PyTorch, within float rounding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kidneyseg.checkpoint import build_model_from_config, save_checkpoint
from kidneyseg.config import InferenceConfig, ModelConfig, PreprocessConfig, RunConfig
from kidneyseg.data.phantom import generate_case
from kidneyseg.errors import KidneysegError
from kidneyseg.io.volume import Volume, write_volume
from kidneyseg.models import build_model
from kidneyseg.models.registry import list_models
from kidneyseg.predict import backends
from kidneyseg.predict.backends import OpenVINONetwork, resolve_backend
from kidneyseg.predict.compile_cache import CACHE_ENV
from kidneyseg.predict.predictor import Predictor, PredictSettings
from kidneyseg.predict.runner import run_prediction
from kidneyseg.predict.sliding_window import WindowPredictor, sliding_window_scores

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_3D = RunConfig(
    labels="kits23",
    preprocess=PreprocessConfig(spacing=(6.0, 6.0, 6.0)),
    model=ModelConfig("sca_unet_3d", {"channels": [4, 8, 16, 16]}),
    inference=InferenceConfig(roi_size=(32, 32, 16), overlap=0.5, sw_batch_size=4),
)


@pytest.fixture(scope="module")
def ckpt3d(tmp_path_factory) -> Path:
    torch.manual_seed(2)
    net = build_model_from_config(TINY_3D)
    path = tmp_path_factory.mktemp("ckpt") / "tiny3d.pt"
    return save_checkpoint(path, model_state=net.state_dict(), config=TINY_3D)


@pytest.fixture(scope="module")
def phantom_ct() -> Volume:
    return generate_case(6, size="tiny", orientation="LPS").ct


def test_auto_is_openvino_on_cpu_only_when_installed(monkeypatch):
    assert resolve_backend("auto", "cpu").name == "openvino"
    assert resolve_backend("auto", "cuda:0").name == "torch"
    assert resolve_backend("torch", "cpu").name == "torch"
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    assert resolve_backend("auto", "cpu").name == "torch"
    with pytest.raises(KidneysegError, match="pip install openvino"):
        resolve_backend("openvino", "cpu")


@pytest.mark.parametrize("backend, device", [("tensorrt", "cpu"), ("openvino", "cuda")])
def test_backends_that_cannot_run_are_refused(backend, device):
    with pytest.raises(KidneysegError, match=backend if backend != "openvino" else "CPU only"):
        resolve_backend(backend, device)


@pytest.mark.parametrize(
    "name, kwargs, window",
    [
        ("sca_unet_3d", {"channels": [4, 8, 16, 16]}, (1, 32, 32, 16)),
        ("residual_unet_3d", {"channels": [4, 8, 16], "strides": [2, 2]}, (1, 32, 32, 16)),
        ("attention_unet_2d", {"channels": [4, 8, 16]}, (1, 32, 32)),
    ],
)
def test_openvino_network_matches_pytorch_for_any_batch(rng, name, kwargs, window):
    torch.manual_seed(0)
    net = build_model(name, **kwargs).eval()
    compiled = OpenVINONetwork(net, window, "float32", threads=1, batch=2)
    for batch in (1, 2, 3):  # fewer windows than compiled for (padded), as many, more (two passes)
        x = torch.from_numpy(rng.random((batch, *window), dtype=np.float32))
        with torch.inference_mode():
            expected = net(x)
        got = compiled(x)
        assert got.shape == expected.shape and got.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        compiled.release()  # frees the buffers; the next call compiles again
    with pytest.raises(ValueError, match="takes windows"):
        compiled(torch.zeros(1, 1, *[s // 2 for s in window[1:]]))


def test_openvino_windows_blend_like_pytorch(rng):
    """Constant (all-air) windows go through PyTorch: instance norm makes them rounding-sensitive."""
    torch.manual_seed(1)
    net = build_model("sca_unet_3d", channels=[4, 8, 16, 16]).eval()
    image = rng.random((50, 40, 30), dtype=np.float32)
    image[:, :, :18] = 0.0
    inference = InferenceConfig((32, 32, 16), overlap=0.5, sw_batch_size=2)
    torch_predictor = WindowPredictor([net], mirror_axes=(0,))
    expected = sliding_window_scores(image, torch_predictor, inference)
    compiled = OpenVINONetwork(net, (1, 32, 32, 16), "float32", 1)
    ov_predictor = WindowPredictor([compiled], mirror_axes=(0,), constant_networks=[net])
    got = sliding_window_scores(image, ov_predictor, inference)
    assert ov_predictor.stats == torch_predictor.stats
    assert ov_predictor.stats.reused > 0
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_predictor_labels_agree_across_backends(ckpt3d, phantom_ct):
    on_torch = Predictor([ckpt3d], PredictSettings(backend="torch"))
    on_openvino = Predictor([ckpt3d], PredictSettings(backend="openvino"))
    assert (on_torch.backend.name, on_openvino.backend.name) == ("torch", "openvino")
    assert on_openvino.compile_seconds > 0 == round(on_torch.compile_seconds, 3)  # as the run record rounds
    a = on_torch.predict(phantom_ct).labels.array
    b = on_openvino.predict(phantom_ct).labels.array
    assert a.shape == b.shape == phantom_ct.shape
    assert np.mean(a == b) >= 0.999


def test_auto_falls_back_to_pytorch_when_openvino_cannot_compile(ckpt3d, phantom_ct, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("Exception from src/inference: no CPU support\nmore detail")

    monkeypatch.setattr(backends, "OpenVINONetwork", broken)
    with pytest.raises(KidneysegError, match=r"OpenVINO could not compile the network \(RuntimeError"):
        Predictor([ckpt3d], PredictSettings(backend="openvino"))
    predictor = Predictor([ckpt3d])
    assert predictor.backend.name == "torch" and predictor.compile_seconds == 0.0
    assert "no CPU support" in predictor.backend_fallback and "\n" not in predictor.backend_fallback
    ct = write_volume(tmp_path / "ct.nii.gz", phantom_ct)
    warnings: list[str] = []
    run_prediction(ct, tmp_path / "out", [ckpt3d], progress=False, warn=warnings.append)
    environment = json.loads((tmp_path / "out" / "predict_run.json").read_text())["environment"]
    assert environment["backend"] == "torch"
    assert environment["backend_fallback"] == predictor.backend_fallback
    # the fallback is said once (so are the untrained network's low confidence and unsure lesions,
    # and the unenhanced phantom's kidneys)
    others = ("confidence", "the model was unsure of", "the scan looks unenhanced")
    model = [w for w in warnings if any(o in w for o in others)]
    assert [w for w in warnings if w not in model] == [f"warning: {predictor.backend_fallback}"]


def test_a_converted_network_is_cached_and_read_back_the_same(rng, tmp_path, monkeypatch):
    """The second conversion of the same network reads the cache instead of tracing, and scores
    exactly as the traced one; other weights, another window or an unreadable entry trace again."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    torch.manual_seed(0)
    net = build_model("sca_unet_3d", channels=[4, 8, 16, 16]).eval()
    window = (1, 32, 32, 16)
    x = torch.from_numpy(rng.random((2, *window), dtype=np.float32))
    traced = OpenVINONetwork(net, window, "float32", threads=1)
    assert traced.cache == "miss" and len(list((tmp_path / "cache" / "openvino").glob("*.bin"))) == 1

    def no_tracing(*args, **kwargs):
        raise AssertionError("traced although cached")

    with monkeypatch.context() as patched:
        patched.setattr(torch.jit, "trace", no_tracing)
        cached = OpenVINONetwork(net, window, "float32", threads=1)
    assert cached.cache == "hit"
    assert torch.equal(cached(x), traced(x))
    assert OpenVINONetwork(net, (1, 32, 32, 32), "float32", threads=1).cache == "miss"
    with torch.no_grad():
        next(net.parameters()).add_(1.0)
    changed = OpenVINONetwork(net, window, "float32", threads=1)
    assert changed.cache == "miss"
    with torch.inference_mode():
        torch.testing.assert_close(changed(x), net(x), rtol=1e-4, atol=1e-4)
    for xml in (tmp_path / "cache" / "openvino").glob("*.xml"):
        xml.write_text("not a model")
    assert OpenVINONetwork(net, window, "float32", threads=1).cache == "miss"
    assert OpenVINONetwork(net, window, "float32", threads=1).cache == "hit"
    assert not list((tmp_path / "cache" / "openvino").glob("*partial*"))
    monkeypatch.setenv(CACHE_ENV, "")
    assert OpenVINONetwork(net, window, "float32", threads=1).cache == "off"
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocked))
    assert OpenVINONetwork(net, window, "float32", threads=1).cache == "unwritable"


def test_a_network_with_batch_norm_is_cached_too(rng, tmp_path, monkeypatch):
    """Found by a hostile run: the cache key viewed every weight as bytes, which a 0-dim tensor
    (BatchNorm's num_batches_tracked, in the 2D U-Nets) cannot be: OpenVINO "could not compile"
    them and `--backend auto` fell back to PyTorch whenever the compile cache was on."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    torch.manual_seed(0)
    net = build_model("unet_2d", channels=[4, 8, 16]).eval()
    assert any(t.dim() == 0 for t in net.state_dict().values())
    window = (1, 32, 32)
    x = torch.from_numpy(rng.random((2, *window), dtype=np.float32))
    assert OpenVINONetwork(net, window, "float32", threads=1).cache == "miss"
    cached = OpenVINONetwork(net, window, "float32", threads=1)
    assert cached.cache == "hit"
    with torch.inference_mode():
        torch.testing.assert_close(cached(x), net(x), rtol=1e-4, atol=1e-4)


def test_the_compile_cache_drops_the_least_recently_used_entry(tmp_path, monkeypatch):
    """Beyond `KEEP` entries the one read or written longest ago goes; a read counts as a use."""
    import time

    from kidneyseg.predict import compile_cache

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(compile_cache, "KEEP", 2)
    torch.manual_seed(0)
    net = build_model("sca_unet_3d", channels=[4, 8, 16, 16]).eval()
    windows = [(1, 32, 32, 16), (1, 32, 32, 32), (1, 16, 16, 16)]
    assert [OpenVINONetwork(net, w, "float32", threads=1).cache for w in windows[:2]] == ["miss", "miss"]
    time.sleep(0.05)
    assert OpenVINONetwork(net, windows[0], "float32", threads=1).cache == "hit"  # now the newer
    time.sleep(0.05)
    assert OpenVINONetwork(net, windows[2], "float32", threads=1).cache == "miss"
    assert len(list((tmp_path / "cache" / "openvino").glob("*.bin"))) == 2
    assert [OpenVINONetwork(net, w, "float32", threads=1).cache for w in windows] == ["hit", "miss", "miss"]


def test_run_record_names_the_backend(ckpt3d, phantom_ct, tmp_path):
    ct = write_volume(tmp_path / "ct.nii.gz", phantom_ct)
    run_prediction(ct, tmp_path / "out", [ckpt3d], PredictSettings(backend="openvino"), progress=False)
    environment = json.loads((tmp_path / "out" / "predict_run.json").read_text())["environment"]
    assert environment["backend"] == "openvino"
    assert environment["backend_version"].startswith(tuple("0123456789"))
    assert environment["backend_compile_seconds"] > 0
    # the network and the locator, neither cached: the tests' KIDNEYSEG_CACHE_DIR is empty
    assert environment["compile_cache"] == ["off", "off"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_compiles_for_openvino(rng, name):
    torch.manual_seed(0)
    net = build_model(name).eval()
    window = (1, 32, 32, 16) if getattr(net, "spatial_dims", 3) == 3 else (1, 64, 64)
    x = torch.from_numpy(rng.random((1, *window), dtype=np.float32))
    with torch.inference_mode():
        expected = net(x)
    torch.testing.assert_close(OpenVINONetwork(net, window, "float32", 1)(x), expected, rtol=1e-4, atol=1e-4)


NO_NETWORK = """
import socket, sys

log = open(sys.argv[1], "a")


def refuse(*args, **kwargs):
    log.write(f"network call {args[:2]!r}\\n")
    log.flush()
    raise OSError("no network in this test")


socket.getaddrinfo = socket.create_connection = socket.socket.connect = socket.socket.connect_ex = refuse
from kidneyseg.cli import main

sys.argv = ["kidneyseg", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_predict_with_openvino_opens_no_network_connection(ckpt3d, phantom_ct, tmp_path, precision):
    """OpenVINO's usage telemetry (sent over HTTPS by default, from a forked child) stays off:
    a CPU `predict` on patient CT must send nothing anywhere. int8 imports NNCF, which sends its
    own telemetry through the same package (and turns it off by itself under pytest, hence the
    separate process, and no CI variable that would turn it off)."""
    import os
    import subprocess
    import sys

    ct = write_volume(tmp_path / "ct.nii.gz", phantom_ct)
    calls = tmp_path / "calls.log"
    calls.touch()
    quiet_in_ci = ("CI", "TF_BUILD", "JENKINS_URL", "NNCF_CI", "NNCF_DEV")
    env = {k: v for k, v in os.environ.items() if k not in quiet_in_ci}
    env.update(HOME=str(tmp_path), OMP_NUM_THREADS="1")
    args = ["predict", "-i", ct, "-o", tmp_path / "out", "-m", ckpt3d, "--backend", "openvino", "-q"]
    args += ["--precision", precision]
    result = subprocess.run(
        [sys.executable, "-c", NO_NETWORK, calls, *map(str, args)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "ct.nii.gz").is_file()
    environment = json.loads((tmp_path / "out" / "predict_run.json").read_text())["environment"]
    assert environment["precision"] == precision
    assert calls.read_text() == ""
    assert not (tmp_path / "intel").exists()  # nor a telemetry client id in the user's home


class CountingBackend(backends.TorchBackend):
    """A new backend: one class, one entry in `BACKENDS`."""

    name, title = "counting", "Counting"

    def __init__(self):
        self.compiled, self.runs, self.released = 0, 0, 0

    def compile(self, network, window_shape, precision, calibration=None, batch=1):
        self.compiled += 1
        return network

    def run(self, compiled, windows):
        self.runs += 1
        return compiled(windows)

    def release(self, compiled):
        self.released += 1

    def describe(self):
        return {"backend": self.name, "backend_version": "1.0"}


def test_a_new_backend_is_one_entry_in_the_table(ckpt3d, phantom_ct, tmp_path, monkeypatch):
    counting = CountingBackend()
    monkeypatch.setitem(backends.BACKENDS, counting.name, counting)
    settings = PredictSettings(backend="counting", roi="body")
    expected = Predictor([ckpt3d], PredictSettings(backend="torch", roi="body")).predict(phantom_ct)
    got = Predictor([ckpt3d], settings).predict(phantom_ct)
    assert counting.compiled == 1 and counting.runs > 0 and counting.released == 1
    assert np.array_equal(got.labels.array, expected.labels.array)
    run_prediction(
        write_volume(tmp_path / "ct.nii.gz", phantom_ct), tmp_path / "out", [ckpt3d], settings, progress=False
    )
    environment = json.loads((tmp_path / "out" / "predict_run.json").read_text())["environment"]
    assert (environment["backend"], environment["backend_version"]) == ("counting", "1.0")
