"""Where the network runs during prediction: a table of backends behind one small protocol.

A `Backend` compiles a PyTorch network for one window shape, runs it on batches of windows,
releases what it holds between cases and describes itself for the run record. `Predictor` and
the run record only call these four methods; `BACKENDS` is the table (`--backend` chooses by
name, `auto` takes the first of `AUTO_ORDER` that can run on the device). A new backend is one
class and one entry here. The sliding-window placement, blending, test-time mirroring and
ensembling stay the same whatever the backend: only the forward pass moves. How fast each runs
on this project's CPU, and how close its logits are to PyTorch's: docs/prediction.md.

OpenVINO: the network is traced once with TorchScript for the window shape (batch left dynamic)
and compiled for the CPU with the precision asked for and a fixed number of windows per call
(OpenVINO plans the buffers of a static shape once: 0.56 GiB per window of the paper's SCA-UNet
against 0.83 GiB with the batch left dynamic, at the same speed; docs/prediction.md). Tracing
runs the network once in PyTorch (1.8 s for the paper-scale SCA-UNet on 2 cores), so the converted
network is kept in the compile cache (`kidneyseg.predict.compile_cache`); a later process with
the same network reads that graph back, float32 weights and all, instead of tracing (and with
int8 the quantised graph, instead of calibrating and quantising again). OpenVINO's
CPU plugin would pick bfloat16 by itself on CPUs that have it, so float32 is requested explicitly.
`int8` (OpenVINO only) is post-training quantisation with NNCF: the converted model's
convolutions get int8 weights and activations, their ranges calibrated on phantom windows
(`kidneyseg.predict.calibration`); what NNCF leaves unquantised runs in float32.

OpenVINO's model conversion sends usage telemetry to Google Analytics by default (package
`openvino_telemetry`, opt-out only through a consent file in the user's home). kidneyseg runs on
patient CT and must send nothing, so `import_openvino` hides that package before OpenVINO is
imported: OpenVINO then falls back to its own no-op telemetry stub, as when the package is absent.
NNCF (for int8) sends usage telemetry through the same package; `import_nncf` imports it only after
hiding that package, so NNCF takes its own no-op stub (and a no-op replaces the sender where NNCF
had been imported before; its import-time message, though, has then already gone).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import sys
import time
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from kidneyseg.errors import KidneysegError

if TYPE_CHECKING:
    import torch

    from kidneyseg.predict.calibration import CalibrationSet

OPENVINO_PRECISION = {"float32": "f32", "bfloat16": "bf16", "int8": "f32"}
"""OpenVINO's inference precision per `--precision`; with int8, for what NNCF left unquantised."""
INSTALL_HINT = "pip install openvino"
INT8_INSTALL_HINT = "pip install nncf (in a kidneyseg checkout: pip install '.[int8]')"


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def nncf_available() -> bool:
    return importlib.util.find_spec("nncf") is not None


TELEMETRY_MODULE = "openvino_telemetry"
OPENVINO_TELEMETRY_USERS = (
    "openvino.tools.ovc.convert_impl",
    "openvino.tools.ovc.main",
    "openvino.tools.ovc.telemetry_utils",
    "openvino.tools.ovc.utils",
)


def import_openvino() -> ModuleType:
    """`openvino`, with its usage telemetry disabled (see the module docstring)."""
    sys.modules[TELEMETRY_MODULE] = None  # type: ignore[assignment]  # `import` now raises ImportError
    import openvino
    from openvino.tools.ovc import telemetry_stub

    for name in OPENVINO_TELEMETRY_USERS:  # modules imported before this call hold the real one
        module = sys.modules.get(name)
        if module is not None:
            module.tm = telemetry_stub
    return openvino


NNCF_TELEMETRY_USERS = ("nncf.telemetry", "nncf.telemetry.wrapper", "nncf.telemetry.decorator")


class _NoTelemetry:
    """Stands in for NNCF's telemetry sender: every call does nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def import_nncf() -> ModuleType:
    """`nncf`, with its usage telemetry disabled (see the module docstring)."""
    import_openvino()  # hides openvino_telemetry: NNCF imported now falls back to its stub
    import nncf

    for name in NNCF_TELEMETRY_USERS:  # NNCF imported before this call holds the real sender
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "telemetry"):
            module.telemetry = _NoTelemetry()
    return nncf


def quantize_int8(model: Any, calibration: Sequence[Any]) -> Any:
    """`model` (an OpenVINO model) with int8 convolutions, calibrated on the `calibration` inputs.

    NNCF's defaults otherwise, with the `MIXED` preset (asymmetric activation ranges: the networks'
    activations after normalisation and PReLU are not centred on zero). NNCF's progress bars are
    not shown.
    """
    nncf = import_nncf()
    with contextlib.redirect_stdout(io.StringIO()):
        return nncf.quantize(
            model,
            nncf.Dataset(list(calibration)),
            subset_size=len(calibration),
            preset=nncf.QuantizationPreset.MIXED,
        )


class OpenVINONetwork:
    """A network compiled by OpenVINO for one window shape, called like the module on a batch.

    Args:
        network: the PyTorch network (put in eval mode here).
        window_shape: `(channels, *spatial)` of one input window; the batch size may vary.
        precision: "float32", "bfloat16" or "int8".
        threads: CPU threads for inference.
        calibration: with int8, its calibration (`kidneyseg.predict.calibration.CalibrationSet`:
            windows made only when the quantised network is not in the compile cache).
        batch: windows per forward pass the network is compiled for; a call with another number
            of windows runs them `batch` at a time, the last pass padded with zeros.

    Attributes:
        quantize_seconds: time NNCF took to quantise (int8 not read from the cache; else 0).
        cache: "hit" (read from `compile_cache_dir`), "miss" (traced, then kept there), "off"
            (no cache) or "unwritable" (traced; the cache folder could not be written); with
            int8, of the quantised network.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        window_shape: Sequence[int],
        precision: str,
        threads: int,
        calibration: CalibrationSet | None = None,
        batch: int = 1,
    ):
        ov = import_openvino()
        if precision not in OPENVINO_PRECISION:
            raise ValueError(f"precision must be one of {tuple(OPENVINO_PRECISION)}, got {precision!r}")
        if precision == "int8" and not calibration:
            raise ValueError("int8 needs calibration inputs")
        self.window_shape = tuple(int(s) for s in window_shape)
        self.spatial_dims = len(self.window_shape) - 1
        self.quantize_seconds = 0.0
        self._model = self._convert(network.eval(), ov, calibration if precision == "int8" else None)
        self.batch = int(batch)
        self._model.reshape([self.batch, *self.window_shape])
        self._config = {
            "INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[precision],
            "INFERENCE_NUM_THREADS": int(threads),
            "PERFORMANCE_HINT": "LATENCY",
        }
        self._request = self._compile()

    def _convert(self, network: torch.nn.Module, ov: ModuleType, calibration: CalibrationSet | None) -> Any:
        """The OpenVINO model of `network`, quantised when a calibration is given: from the
        cache, or made (and then cached)."""
        from kidneyseg.predict.compile_cache import cached_model, compile_cache_dir, network_key

        folder = compile_cache_dir()
        key = network_key(network, self.window_shape, ov.get_version()) if folder is not None else ""
        if calibration is None:
            model, self.cache = cached_model(ov, folder, key, lambda: self._trace(network, ov))
            return model

        def quantized() -> Any:
            model, _ = cached_model(ov, folder, key, lambda: self._trace(network, ov))
            windows = calibration.windows()  # timed apart, in the calibration's record
            start = time.perf_counter()
            model = quantize_int8(model, windows)
            self.quantize_seconds = time.perf_counter() - start
            return model

        int8_key = (
            hashlib.sha256(f"{key} {calibration.key()}".encode()).hexdigest() if folder is not None else ""
        )
        model, self.cache = cached_model(ov, folder, f"{int8_key}.int8", quantized)
        return model

    def _trace(self, network: torch.nn.Module, ov: ModuleType) -> Any:
        """`network` traced for this window shape and converted to OpenVINO."""
        import torch

        with torch.no_grad(), warnings.catch_warnings():
            # Shape checks inside the networks become constants: right for this window shape,
            # which the compiled input enforces. torch.export would avoid the deprecated tracer,
            # but OpenVINO's graph from it ran slower (docs/prediction.md, "Not done").
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace(network, torch.zeros(1, *self.window_shape), check_trace=False)
        return ov.convert_model(traced, input=[(-1, *self.window_shape)])

    def _compile(self):
        return import_openvino().Core().compile_model(self._model, "CPU", self._config).create_infer_request()

    def release(self) -> None:
        """Free the compiled network and the buffers OpenVINO keeps between calls (docs/prediction.md,
        "What keeps the memory down"); the next call compiles again."""
        self._request = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import numpy as np
        import torch

        if tuple(x.shape[1:]) != self.window_shape:
            got = tuple(x.shape[1:])
            raise ValueError(f"this compiled network takes windows {self.window_shape}, got {got}")
        if self._request is None:
            self._request = self._compile()
        windows = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        if len(windows) == self.batch:
            self._request.infer([windows])
            return torch.from_numpy(self._request.get_output_tensor(0).data.copy())
        parts = []
        for start in range(0, len(windows), self.batch):
            chunk = windows[start : start + self.batch]
            padded = np.zeros((self.batch, *self.window_shape), dtype=np.float32)
            padded[: len(chunk)] = chunk
            self._request.infer([padded])
            parts.append(self._request.get_output_tensor(0).data[: len(chunk)].copy())
        return torch.from_numpy(np.concatenate(parts))


class Backend(Protocol):
    """What runs a network on batches of windows during prediction."""

    name: str
    title: str  # how messages name it
    precisions: tuple[str, ...]  # the `--precision` values it runs

    def unavailable(self, device: str) -> str | None:
        """Why this backend cannot run on `device` here, or None when it can."""

    def compile(
        self,
        network: torch.nn.Module,
        window_shape: Sequence[int],
        precision: str,
        calibration: CalibrationSet | None = None,
        batch: int = 1,
    ) -> Any:
        """`network` (in eval mode) ready for windows of `window_shape` = `(channels, *spatial)`;
        `calibration`: for precisions that need it (int8), else None; `batch`: the windows
        per forward pass it will mostly be given.

        Raises:
            Exception: the backend's own error when it cannot compile this network.
        """

    def run(self, compiled: Any, windows: torch.Tensor) -> torch.Tensor:
        """Scores `[B, C, *spatial]` float32 for a batch of windows `[B, channels, *spatial]`."""

    def release(self, compiled: Any) -> None:
        """Free what `compiled` holds between cases; `run` still works afterwards."""

    def describe(self) -> dict[str, str]:
        """For the run record: `backend` (the name) and `backend_version` (its library's)."""


class TorchBackend:
    """PyTorch itself: the network as it is (precision is `WindowPredictor`'s autocast)."""

    name = "torch"
    title = "PyTorch"
    precisions = ("float32", "bfloat16")

    def unavailable(self, device: str) -> str | None:
        return None

    def compile(
        self,
        network: torch.nn.Module,
        window_shape: Sequence[int],
        precision: str,
        calibration: CalibrationSet | None = None,
        batch: int = 1,
    ) -> Any:
        return network

    def run(self, compiled: Any, windows: torch.Tensor) -> torch.Tensor:
        return compiled(windows)

    def release(self, compiled: Any) -> None:
        return None

    def describe(self) -> dict[str, str]:
        import torch

        return {"backend": self.name, "backend_version": torch.__version__}


class OpenVINOBackend:
    """OpenVINO on the CPU (`OpenVINONetwork`), with as many threads as PyTorch has."""

    name = "openvino"
    title = "OpenVINO"
    precisions = ("float32", "bfloat16", "int8")

    def unavailable(self, device: str) -> str | None:
        if str(device) != "cpu":
            return f"the openvino backend runs on the CPU only, not on {device}"
        if not openvino_available():
            return f"the openvino backend is not installed: {INSTALL_HINT}"
        return None

    def compile(
        self,
        network: torch.nn.Module,
        window_shape: Sequence[int],
        precision: str,
        calibration: CalibrationSet | None = None,
        batch: int = 1,
    ) -> Any:
        import torch

        return OpenVINONetwork(network, window_shape, precision, torch.get_num_threads(), calibration, batch)

    def run(self, compiled: Any, windows: torch.Tensor) -> torch.Tensor:
        return compiled(windows)

    def release(self, compiled: Any) -> None:
        compiled.release()

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "backend_version": import_openvino().get_version()}


BACKENDS: dict[str, Backend] = {b.name: b for b in (TorchBackend(), OpenVINOBackend())}
"""The backends by name; `--backend` takes one of these or "auto"."""
AUTO_ORDER = ("openvino", "torch")
"""`auto`: the first of these that can run on the device (the fastest first, docs/prediction.md)."""
FALLBACK = "torch"
"""What `auto` falls back to when its backend cannot compile the network."""
CHOICES = ("auto", *BACKENDS)


def resolve_backend(backend: str, device: str) -> Backend:
    """The backend that will run: "auto" is OpenVINO on CPU when it is installed, else PyTorch.

    Raises:
        KidneysegError: unknown backend, or one that cannot run on `device` here (OpenVINO asked
            for on a GPU or without being installed).
    """
    if backend == "auto":
        return next(BACKENDS[name] for name in AUTO_ORDER if BACKENDS[name].unavailable(device) is None)
    if backend not in BACKENDS:
        raise KidneysegError(f"backend must be one of {CHOICES}, got {backend!r}")
    reason = BACKENDS[backend].unavailable(device)
    if reason is not None:
        raise KidneysegError(reason)
    return BACKENDS[backend]


NEEDS_CALIBRATION = ("int8",)
"""Precisions whose compilation needs calibration inputs (`Backend.compile(calibration=...)`)."""


def check_precision(backend: Backend, precision: str, device: str) -> None:
    """Refuse a precision the backend does not run (int8 on PyTorch), or int8 without NNCF.

    Raises:
        KidneysegError: one line saying what to do instead.
    """
    from kidneyseg.predict.sliding_window import PRECISIONS

    if precision not in PRECISIONS:
        raise KidneysegError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    runs = [b.name for b in BACKENDS.values() if precision in b.precisions]
    if precision not in backend.precisions:
        raise KidneysegError(
            f"--precision {precision} runs on the {' or '.join(runs)} backend only, but this "
            f"prediction would run on {backend.title} ({device}): use --backend openvino on the CPU"
        )
    if precision == "int8" and not nncf_available():
        raise KidneysegError(f"--precision int8 needs NNCF, which is not installed: {INT8_INSTALL_HINT}")
