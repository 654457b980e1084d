"""Where the network runs during prediction: PyTorch, or OpenVINO on CPU.

On this project's 2-core CPU a pass of two windows of the paper's SCA-UNet 3D (128 × 128 × 64,
float32) takes 3.67 s in PyTorch and 0.85 s compiled by OpenVINO (4.3×), with logits within 5e-4
of PyTorch's (benchmarks/window_backends.py, docs/prediction.md). The sliding-window placement,
blending, test-time mirroring, ensembling and everything around it stay the same: only the
forward pass moves.

The network is traced once with TorchScript for the window shape (batch left dynamic) and
compiled by OpenVINO for the CPU with the precision asked for. OpenVINO's CPU plugin would pick
bfloat16 by itself on CPUs that have it, so float32 is requested explicitly.

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
from typing import TYPE_CHECKING

from kidneyseg.errors import KidneysegError

if TYPE_CHECKING:
    import torch

BACKENDS = ("auto", "torch", "openvino")
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


def backend_version(backend: str) -> str:
    """The version of the library behind a resolved backend."""
    if backend == "openvino":
        return import_openvino().get_version()
    import torch

    return torch.__version__


def resolve_backend(backend: str, device: str) -> str:
    """The backend that will run: "auto" is OpenVINO on CPU when it is installed, else PyTorch.

    Raises:
        KidneysegError: unknown backend, OpenVINO asked for on a GPU or without being installed.
    """
    if backend not in BACKENDS:
        raise KidneysegError(f"backend must be one of {BACKENDS}, got {backend!r}")
    on_cpu = str(device) == "cpu"
    if backend == "auto":
        return "openvino" if on_cpu and openvino_available() else "torch"
    if backend == "openvino":
        if not on_cpu:
            raise KidneysegError(f"the openvino backend runs on the CPU only, not on {device}")
        if not openvino_available():
            raise KidneysegError(f"the openvino backend is not installed: {INSTALL_HINT}")
    return backend


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
            # but OpenVINO's graph from it ran a window 2.2x slower (docs/prediction.md).
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
        """Free the compiled network and its buffers (≈ 1 GB per window of the paper's SCA-UNet,
        held between calls); the next call compiles again (≈ 0.2 s)."""
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
