"""Where the network runs during prediction: a table of backends behind one small protocol.

A `Backend` compiles a PyTorch network for one window shape, runs it on batches of windows,
releases what it holds between cases and describes itself for the run record. `Predictor` and
the run record only call these four methods; `BACKENDS` is the table (`--backend` chooses by
name, `auto` takes the first of `AUTO_ORDER` that can run on the device). A new backend is one
class and one entry here. The sliding-window placement, blending, test-time mirroring and
ensembling stay the same whatever the backend: only the forward pass moves. How fast each runs
on this project's CPU, and how close its logits are to PyTorch's: docs/prediction.md.

OpenVINO: the network is traced once with TorchScript for the window shape (batch left dynamic)
and compiled for the CPU with the precision asked for. OpenVINO's CPU plugin would pick bfloat16
by itself on CPUs that have it, so float32 is requested explicitly.

OpenVINO's model conversion sends usage telemetry to Google Analytics by default (package
`openvino_telemetry`, opt-out only through a consent file in the user's home). kidneyseg runs on
patient CT and must send nothing, so `import_openvino` hides that package before OpenVINO is
imported: OpenVINO then falls back to its own no-op telemetry stub, as when the package is absent.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from kidneyseg.errors import KidneysegError

if TYPE_CHECKING:
    import torch

OPENVINO_PRECISION = {"float32": "f32", "bfloat16": "bf16"}
INSTALL_HINT = "pip install openvino"


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


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


class OpenVINONetwork:
    """A network compiled by OpenVINO for one window shape, called like the module on a batch.

    Args:
        network: the PyTorch network (put in eval mode here).
        window_shape: `(channels, *spatial)` of one input window; the batch size may vary.
        precision: "float32" or "bfloat16".
        threads: CPU threads for inference.
    """

    def __init__(self, network: torch.nn.Module, window_shape: Sequence[int], precision: str, threads: int):
        import torch

        ov = import_openvino()
        if precision not in OPENVINO_PRECISION:
            raise ValueError(f"precision must be one of {tuple(OPENVINO_PRECISION)}, got {precision!r}")
        self.window_shape = tuple(int(s) for s in window_shape)
        self.spatial_dims = len(self.window_shape) - 1
        network = network.eval()
        with torch.no_grad(), warnings.catch_warnings():
            # Shape checks inside the networks become constants: right for this window shape,
            # which the compiled input enforces. torch.export would avoid the deprecated tracer,
            # but OpenVINO's graph from it ran slower (docs/prediction.md, "Not done").
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace(network, torch.zeros(1, *self.window_shape), check_trace=False)
        self._model = ov.convert_model(traced, input=[(-1, *self.window_shape)])
        self._config = {
            "INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[precision],
            "INFERENCE_NUM_THREADS": int(threads),
            "PERFORMANCE_HINT": "LATENCY",
        }
        self._request = self._compile()

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
        self._request.infer([np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)])
        return torch.from_numpy(self._request.get_output_tensor(0).data.copy())


class Backend(Protocol):
    """What runs a network on batches of windows during prediction."""

    name: str
    title: str  # how messages name it

    def unavailable(self, device: str) -> str | None:
        """Why this backend cannot run on `device` here, or None when it can."""

    def compile(self, network: torch.nn.Module, window_shape: Sequence[int], precision: str) -> Any:
        """`network` (in eval mode) ready for windows of `window_shape` = `(channels, *spatial)`.

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

    def unavailable(self, device: str) -> str | None:
        return None

    def compile(self, network: torch.nn.Module, window_shape: Sequence[int], precision: str) -> Any:
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

    def unavailable(self, device: str) -> str | None:
        if str(device) != "cpu":
            return f"the openvino backend runs on the CPU only, not on {device}"
        if not openvino_available():
            return f"the openvino backend is not installed: {INSTALL_HINT}"
        return None

    def compile(self, network: torch.nn.Module, window_shape: Sequence[int], precision: str) -> Any:
        import torch

        return OpenVINONetwork(network, window_shape, precision, torch.get_num_threads())

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
