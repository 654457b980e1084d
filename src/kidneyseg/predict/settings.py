"""What a prediction is asked for (`PredictSettings`) and what it gives back (`Prediction`)."""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from kidneyseg.config import InferenceConfig
from kidneyseg.errors import KidneysegError
from kidneyseg.io.volume import Volume
from kidneyseg.predict.roi import MARGIN_MM, ROIS
from kidneyseg.predict.votes import Votes

EVERY_AXIS = (0, 1, 2)
"""`mirror_axes` of `--tta` / `tta=True`: every spatial axis the network has (a 2D network, which
runs slice by slice along z, mirrors in-plane only). Named axes must all be the network's."""

POSTPROCESS_DEFAULT = True
"""Whether prediction keeps only the foreground connected to the two largest kidney components by
default: on, because it raised the KiTS Dice of every one of 10 held-out phantoms
(benchmarks/postprocess_gain.py, docs/prediction.md)."""


@dataclass(frozen=True)
class PredictSettings:
    """Inference settings; `None` means "as the checkpoint's config says".

    Attributes:
        overlap: window overlap (the checkpoint's `inference.overlap`, the one default).
        blend: "gaussian" or "constant".
        sw_batch_size: windows (3D) or slices (2D) per forward pass.
        mirror_axes: spatial axes mirrored for test-time augmentation (empty tuple: none).
        precision: "float32", "bfloat16" (faster with native bf16) or "int8" (OpenVINO + NNCF); not exact.
        backend: "auto" (OpenVINO on CPU when installed, else PyTorch), "torch" or "openvino"
            (see `kidneyseg.predict.backends`).
        postprocess: keep only the two largest kidney components (see `postprocess`).
        anatomy_check: with `postprocess`, skip components the CT rules out as kidneys (at the
            body surface, inside a blood pool or bone: `kidneyseg.predict.anatomy`).
        probabilities: also return class probabilities on the network grid.
        chunk_slices: slices of the original grid inverted at a time (bounds memory).
        reuse_constant_windows: compute constant (all-air) windows once per value.
        roi: "kidneys" (two-stage: the user's network only around the kidneys the bundled model
            finds, `kidneyseg.predict.roi`), "body" (the whole body crop), or None: "kidneys" when
            the bundled model is installed, else "body".
        roi_margin_mm: margin around each kidney box with `roi="kidneys"`.
        absorb_islands_ml: with `postprocess`, tumor and cyst islands smaller than this (mL) take
            the class around them (the checkpoint's `inference.absorb_islands_ml`; 0: none).
    """

    overlap: float | None = None
    blend: str | None = None
    sw_batch_size: int | None = None
    mirror_axes: tuple[int, ...] | None = None
    precision: str = "float32"
    backend: str = "auto"
    postprocess: bool = POSTPROCESS_DEFAULT
    anatomy_check: bool = True
    probabilities: bool = False
    chunk_slices: int = 16
    reuse_constant_windows: bool = True
    roi: str | None = None
    roi_margin_mm: float = MARGIN_MM
    absorb_islands_ml: float | None = None

    def __post_init__(self) -> None:
        """Refuse values no prediction can use when the settings are made, not after the
        network has run, each in one line naming the setting."""
        for setting in fields(self):
            if setting.type == "bool":
                check_flag(setting.name, getattr(self, setting.name))
        if self.overlap is not None and not (
            isinstance(self.overlap, numbers.Real) and not isinstance(self.overlap, bool)
        ):
            raise KidneysegError(f"overlap must be a number in [0, 1), got {self.overlap!r}")
        if self.sw_batch_size is not None and not _whole(self.sw_batch_size):
            raise KidneysegError(
                f"sw_batch_size must be a whole number, at least 1, got {self.sw_batch_size!r}"
            )
        for name in ("blend", "precision", "backend"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise KidneysegError(f"{name} must be a name (a string), got {value!r}")
        if self.mirror_axes is not None:
            if not isinstance(self.mirror_axes, list | tuple):
                raise KidneysegError(
                    f"mirror_axes must be a tuple of axes such as (0, 1), got {self.mirror_axes!r}"
                )
            outside = [a for a in self.mirror_axes if not _whole(a) or a not in EVERY_AXIS]
            if outside:
                raise KidneysegError(
                    f"mirror_axes {outside} are not spatial axes: use 0 (x), 1 (y) and 2 (z)"
                )
            object.__setattr__(self, "mirror_axes", tuple(self.mirror_axes))
        if not _whole(self.chunk_slices) or self.chunk_slices < 1:
            raise KidneysegError(
                f"chunk_slices must be a whole number, at least 1, got {self.chunk_slices!r}"
            )
        if self.roi is not None and self.roi not in ROIS:
            raise KidneysegError(f"roi must be one of {ROIS}, got {self.roi!r}")
        if not (isinstance(self.roi_margin_mm, numbers.Real) and 0 <= self.roi_margin_mm < math.inf):
            raise KidneysegError(
                f"the ROI margin must be a finite number of mm, at least 0, got {self.roi_margin_mm}"
            )
        if self.absorb_islands_ml is not None and not (
            isinstance(self.absorb_islands_ml, numbers.Real) and 0 <= self.absorb_islands_ml < math.inf
        ):
            raise KidneysegError(
                "lesion islands are absorbed below a finite volume in mL, at least 0; "
                f"got {self.absorb_islands_ml!r}"
            )

    def resolve(self, inference: InferenceConfig) -> InferenceConfig:
        """The checkpoint's inference config with these settings applied."""
        changes = {
            k: getattr(self, k)
            for k in ("overlap", "blend", "sw_batch_size", "mirror_axes", "absorb_islands_ml")
            if getattr(self, k) is not None
        }
        return replace(inference, **changes)


def model_list(models: Any) -> list:
    """The run folders or checkpoints a `Predictor` is given, as a list (one path alone or many),
    `~` expanded as a shell would.

    Raises:
        KidneysegError: none given (`pretrained.NO_MODEL` says how to pass the bundled one), or
            something that is not a path.
    """
    from kidneyseg.predict.pretrained import NO_MODEL

    if isinstance(models, str | os.PathLike):
        models = [models]
    if not models:
        raise KidneysegError(NO_MODEL)
    if not isinstance(models, list | tuple) or not all(isinstance(m, str | os.PathLike) for m in models):
        raise KidneysegError(f"a model is a run folder or checkpoint path, or a list of them; got {models!r}")
    return [os.path.expanduser(m) for m in models]


def check_flag(name: str, value: Any) -> None:
    """Refuse a yes/no setting that is not True or False (numpy's included): `"no"` or `"false"`
    would count as true.

    Raises:
        KidneysegError: naming the setting.
    """
    if not isinstance(value, bool | np.bool_):
        raise KidneysegError(f"{name} must be True or False, got {value!r}")


def _whole(value: Any) -> bool:
    """A whole number, numpy's integers included (settings are made in Python, not read from
    YAML as `plaindata.is_whole`'s are)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True, eq=False)
class Prediction:
    """The result for one CT.

    Attributes:
        labels: uint8 label map on exactly the CT's grid.
        probabilities: `[C, X, Y, Z]` float32 class probabilities on the network grid, or None.
        probabilities_affine: voxel-to-world affine of `probabilities` (RAS+, mm).
        seconds: time per stage (preprocess, windows, inverse, postprocess).
        windows: how many windows were seen, computed and reused.
        roi: with `roi="kidneys"`: the locator, its window counts, the kidney boxes (world mm), the
            fallback to the whole volume and why, and the regions on the network grid.
        ruled_out: the components post-processing dropped because the CT rules them out as kidneys:
            voxels, volume (mL), bounding box (voxel indices of the CT) and the reason.
        absorbed: the lesion islands below `absorb_islands_ml` that took the class around them, per
            class and class taken: how many and their volume (mL).
        confidence: the mean, over the network-grid voxels predicted as any foreground class
            and still labelled after post-processing, of the winning class's probability (1:
            every such voxel certain; near 1 / classes: a guess); None when nothing is labelled.
            Low on images unlike the training data.
        votes: the network-grid voxels it labelled foreground, their classes and probabilities
            (`kidneyseg.predict.votes.Votes`): what the report's per-lesion confidence reads.
    """

    labels: Volume
    probabilities: np.ndarray | None = None
    probabilities_affine: np.ndarray | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    windows: dict[str, int] = field(default_factory=dict)
    confidence: float | None = None
    roi: dict[str, Any] | None = None
    ruled_out: tuple[dict[str, Any], ...] = ()
    absorbed: tuple[dict[str, Any], ...] = ()
    votes: Votes | None = None

    @property
    def report_facts(self) -> dict[str, Any]:
        """What a report of these labels takes from the prediction, as keywords of
        `kidneyseg.report.measure` and `write_report`: confidence, votes, absorbed islands."""
        return {"confidence": self.confidence, "votes": self.votes, "absorbed": self.absorbed}
