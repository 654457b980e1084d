"""Checkpoints that are safe to load and enough to predict with.

A checkpoint is one `torch.save` file holding only tensors and plain data, so that
`torch.load(path, weights_only=True)` reads it without executing pickled code:

- `kidneyseg_checkpoint`: the format version (an int);
- `config`: the resolved `RunConfig` as YAML text (label map, preprocessing, model, inference,
  data, train); the classes the network predicts are its `labels` (format 1 also held them as
  `label_map` JSON text: read, checked against the config, and no longer written);
- `versions`: JSON text with the kidneyseg, torch, MONAI and Python versions that wrote it;
- `model_state`: the network's `state_dict` (unwrapped from DDP);
- `extra`: engine state for an exact resume (epoch, optimizer, scheduler, AMP scaler, sampler
  position, metric history): tensors and plain data only.

Like nnU-Net's plans + `init_args` beside the weights, the resolved config travels with the
weights: `predict` needs nothing but this file.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kidneyseg.config import RunConfig
from kidneyseg.errors import KidneysegError
from kidneyseg.io.atomic import atomic_path
from kidneyseg.labels import LabelMap
from kidneyseg.plaindata import dump_yaml, from_dict, yaml_load

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
FORMAT_KEY = "kidneyseg_checkpoint"
BEST_NAME = "best.pt"
LAST_NAME = "last.pt"
EPOCHS_DIR = "epochs"
"""With `train.keep_epoch_weights`, each epoch's weights go into this folder of the run."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: the file it was read from.
        config: the resolved run configuration (its `label_map`: the classes the network
            predicts, channel i = class value i).
        model_state: the network's state dict.
        versions: library versions that wrote it.
        extra: engine state for resuming (empty for a weights-only use).
        format_version: the checkpoint format version.
    """

    path: Path
    config: RunConfig
    model_state: dict[str, Any]
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def label_map(self) -> LabelMap:
        """The classes the network predicts: the config's label map."""
        return self.config.label_map


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a run's numbers."""
    from importlib.metadata import version

    import numpy
    import torch

    from kidneyseg import __version__

    return {
        "kidneyseg": __version__,
        "torch": torch.__version__,
        "monai": version("monai"),  # importing MONAI to ask would import all of it
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model_state: dict[str, Any],
    config: RunConfig,
    extra_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically: a failed write (e.g. a full disk) leaves any previous
    file at `path` intact and no partial file behind.

    Args:
        path: destination file (conventionally `RUN/best.pt` or `RUN/last.pt`).
        model_state: the network's `state_dict()` (of the unwrapped module under DDP).
        config: the resolved run configuration (with the label map the network predicts).
        extra_state: tensors and plain data needed to resume training exactly.

    Raises:
        KidneysegError: the file could not be written; the message names it.
    """
    import torch

    payload = {
        FORMAT_KEY: FORMAT_VERSION,
        "config": dump_yaml(config),
        "versions": json.dumps(library_versions()),
        "model_state": dict(model_state),
        "extra": extra_state or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str], map_location: str = "cpu") -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint` without executing pickled code.

    Raises:
        KidneysegError: the file is missing, corrupt, not a kidneyseg checkpoint, or written
            by a newer format version.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise KidneysegError("no such checkpoint file", path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except Exception:  # torch's safe loader raises many types for damaged or foreign files
        raise KidneysegError(
            "not a readable checkpoint: corrupt, truncated, or holding pickled code that a safe load refuses",
            path,
        ) from None
    if not isinstance(payload, dict) or FORMAT_KEY not in payload:
        raise KidneysegError("not a kidneyseg checkpoint (no format marker)", path)
    version = payload[FORMAT_KEY]
    if type(version) is not int or version < 1:
        raise KidneysegError(f"checkpoint format marker {version!r} is not a format version", path)
    if version > FORMAT_VERSION:
        raise KidneysegError(
            f"checkpoint format version {version} is newer than this kidneyseg reads "
            f"({FORMAT_VERSION}); upgrade kidneyseg",
            path,
        )
    try:
        config = from_dict(RunConfig, yaml_load(payload["config"]), "checkpoint config")
        _check_stored_label_map(payload.get("label_map"), config)
        versions = json.loads(payload.get("versions", "{}"))
        model_state = payload["model_state"]
        if not isinstance(model_state, dict):
            raise TypeError("model_state is not a mapping of names to tensors")
    except KidneysegError as exc:
        raise KidneysegError(f"checkpoint holds an invalid config ({exc})", path) from None
    except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise KidneysegError(f"checkpoint is incomplete or damaged ({type(exc).__name__})", path) from None
    return Checkpoint(
        path=path,
        config=config,
        model_state=model_state,
        versions=versions,
        extra=payload.get("extra") or {},
        format_version=version,
    )


def _check_stored_label_map(stored: str | None, config: RunConfig) -> None:
    """A format-1 checkpoint also holds its label map as JSON: it must name the config's classes."""
    if stored is None:
        return
    classes = LabelMap.from_dict(json.loads(stored)).names
    if classes != config.label_map.names:
        raise KidneysegError(f"its label map {classes} is not the classes of labels={config.labels!r}")


def resolve_checkpoint(run_or_file: str | os.PathLike[str]) -> Path:
    """The checkpoint file for a run folder (its best checkpoint, else its last, with a warning
    saying so) or a file.

    Raises:
        KidneysegError: nothing usable at that path.
    """
    path = Path(run_or_file)
    if path.is_file():
        return path
    if path.is_dir():
        if (path / BEST_NAME).is_file():
            return path / BEST_NAME
        if (path / LAST_NAME).is_file():
            log.warning("%s: no %s (no epoch validated yet); using %s", path, BEST_NAME, LAST_NAME)
            return path / LAST_NAME
        raise KidneysegError(f"run folder holds no checkpoint ({BEST_NAME} or {LAST_NAME})", path)
    raise KidneysegError("no such run folder or checkpoint file", path)


def output_channels(config: RunConfig) -> int:
    """The network's output channels: one per class of the config's label map.

    Raises:
        KidneysegError: `model.kwargs.out_channels` states another number.
    """
    label_map = config.label_map
    declared = config.model.kwargs.get("out_channels")
    if declared is not None and int(declared) != label_map.num_classes:
        raise KidneysegError(
            f"model.kwargs.out_channels={declared} but the {label_map.name} label map has "
            f"{label_map.num_classes} classes; drop the override or change `labels`"
        )
    return label_map.num_classes


def build_model_from_config(config: RunConfig) -> Any:
    """The untrained network a run config describes (`config.model.name` + its kwargs), with
    one output channel per class of the config's label map (`output_channels`)."""
    from kidneyseg.models import build_model

    return build_model(config.model.name, **{**config.model.kwargs, "out_channels": output_channels(config)})


def build_model_from_checkpoint(ckpt: Checkpoint) -> Any:
    """The network of a checkpoint, with its weights loaded, in eval mode.

    Raises:
        KidneysegError: the config names a network that cannot be built, the weights are not
            finite, or they do not fit the network.
    """
    import torch

    try:
        model = build_model_from_config(ckpt.config)
    except KidneysegError as exc:
        raise KidneysegError(f"checkpoint's network cannot be built: {exc}", ckpt.path) from None
    bad = [
        name
        for name, value in ckpt.model_state.items()
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()
    ]
    if bad:
        raise KidneysegError(
            f"checkpoint holds NaN or infinite weights ({len(bad)} tensors, first {bad[0]}): "
            "the training diverged; use an earlier checkpoint",
            ckpt.path,
        )
    misfit = _misfit(model.state_dict(), ckpt.model_state)
    if misfit:
        raise KidneysegError(f"weights do not fit model {ckpt.config.model.name!r}: {misfit}", ckpt.path)
    model.load_state_dict(ckpt.model_state, strict=True)
    return model.eval()


def _misfit(expected: dict[str, Any], given: dict[str, Any]) -> str | None:
    """What keeps `given` weights from loading into a network whose state is `expected`: missing
    or unexpected names, other shapes, or whole numbers where the network holds floats (a
    load would round them silently)."""
    import torch

    problems = []
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing:
        problems.append(f"{len(missing)} missing (first {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (first {unexpected[0]})")
    for name, want in expected.items():
        have = given.get(name)
        if have is None:
            continue
        if not torch.is_tensor(have):
            problems.append(f"{name} is a {type(have).__name__}, not a tensor")
        elif have.shape != want.shape:
            problems.append(f"{name} has shape {tuple(have.shape)}, the network {tuple(want.shape)}")
        elif want.is_floating_point() and not have.is_floating_point():
            problems.append(f"{name} holds {have.dtype} values where the network has {want.dtype}")
        else:
            continue
        break
    return "; ".join(problems) or None
