"""The compile cache: OpenVINO networks converted from PyTorch, kept on disk for later runs.

Tracing a network for OpenVINO runs it once in PyTorch (1.8 s for the paper-scale SCA-UNet on 2
cores); the converted graph is kept under `compile_cache_dir()`, keyed by `network_key` (the
weights, the layers, the source of `kidneyseg.models` and of the backends, the window shape and
the library versions), so any change traces again. An int8 network quantised from one of them is
kept too, under that key and its calibration's (`kidneyseg.predict.calibration.CalibrationSet.key`).
`kidneyseg.predict.backends.OpenVINONetwork` reads and writes it (`cached_model`). Entries are
dropped least recently used first beyond `KEEP`, so upgrades and retrained networks do not fill
the disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

CACHE_ENV = "KIDNEYSEG_CACHE_DIR"
"""Environment variable naming the cache folder; set and empty, nothing is cached."""
KEEP = 16
"""Converted networks kept: writing a new one removes the least recently used beyond this many."""


def compile_cache_dir() -> Path | None:
    """Where converted OpenVINO networks are kept: `$KIDNEYSEG_CACHE_DIR/openvino`, else
    `$XDG_CACHE_HOME/kidneyseg/openvino` (`~/.cache/kidneyseg/openvino`); None when
    `KIDNEYSEG_CACHE_DIR` is set and empty."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen is not None:
        return Path(chosen) / "openvino" if chosen else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kidneyseg" / "openvino"


def network_key(network: torch.nn.Module, window_shape: Sequence[int], openvino_version: str) -> str:
    """A digest of what a converted network depends on (module docstring)."""
    import torch

    import kidneyseg
    from kidneyseg import models
    from kidneyseg.predict import backends

    digest = hashlib.sha256()
    versions = f"{kidneyseg.__version__} {torch.__version__} {openvino_version} {tuple(window_shape)}"
    digest.update(versions.encode())
    digest.update(repr(network).encode())
    for source in [
        *sorted(Path(models.__file__).parent.glob("*.py")),
        Path(backends.__file__),
        Path(__file__),
    ]:
        digest.update(source.read_bytes())
    for name, tensor in network.state_dict().items():
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        # reshape: a 0-dim tensor (BatchNorm's num_batches_tracked) cannot be viewed as bytes
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_model(ov: ModuleType, model: Any, path: Path) -> bool:
    """Write `model` as `path` (.xml) and its .bin, float32, so that a reader never sees half of
    it (written under temporary names, the .bin renamed first); False when it cannot be written."""
    temporary = path.with_name(f"{path.stem}.{os.getpid()}.partial.xml")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(model, str(temporary), compress_to_fp16=False)
        os.replace(temporary.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(temporary, path)
    except (OSError, RuntimeError):
        _remove(temporary)
        return False
    for stale in sorted(_entries(path.parent), key=_last_used, reverse=True)[KEEP:]:
        _remove(stale)
    return True


def cached_model(ov: ModuleType, folder: Path | None, name: str, make: Callable[[], Any]) -> tuple[Any, str]:
    """The OpenVINO model kept as `folder/name.xml`, or `make()`'s (then kept there), and where it
    came from: "hit", "miss", "off" (`folder` is None) or "unwritable"."""
    if folder is None:
        return make(), "off"
    path = folder / f"{name}.xml"
    if path.is_file() and path.with_suffix(".bin").is_file():
        with contextlib.suppress(Exception):  # unreadable: make it again and replace it
            model = ov.Core().read_model(str(path))
            mark_used(path)
            return model, "hit"
    model = make()
    return model, "miss" if save_model(ov, model, path) else "unwritable"


def mark_used(path: Path) -> None:
    """Record that the entry `path` (.xml) was just read, so that it is dropped last."""
    with contextlib.suppress(OSError):
        os.utime(path)


def _entries(folder: Path) -> list[Path]:
    return [p for p in folder.glob("*.xml") if not p.name.endswith(".partial.xml")]


def _last_used(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed meanwhile by another run
        return 0.0


def _remove(xml: Path) -> None:
    """Delete an entry's .xml and .bin (a reader that opened them keeps them until it closes)."""
    for part in (xml, xml.with_suffix(".bin")):
        with contextlib.suppress(OSError):
            part.unlink()
