"""Typed, frozen configuration: dataclasses built from YAML/dicts, merged with overrides.

Every configuration section is a frozen dataclass. `from_dict` builds one from plain data,
rejecting unknown keys with a suggestion; `to_dict` turns it back into plain data for YAML or
JSON; `apply_overrides` applies `section.key=value` strings (values parsed as YAML).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kidneyseg.errors import KidneysegError

T = TypeVar("T")


@dataclass(frozen=True)
class PreprocessConfig:
    """How a CT is brought to the network's grid (SCA-UNet paper defaults).

    Attributes:
        orientation: canonical axis codes of the preprocessed array.
        spacing: target voxel size in mm along the canonical axes (x, y, z for RAS):
            1.62 mm in-plane and 2 mm cranio-caudal.
        hu_window: HU values clipped to this range, then rescaled to [0, 1].
        crop_foreground: crop to the bounding box of the body.
        body_threshold_hu: voxels above this HU count as body for the crop.
        crop_margin_mm: margin kept around the body box.
    """

    orientation: str = "RAS"
    spacing: tuple[float, float, float] = (1.62, 1.62, 2.0)
    hu_window: tuple[float, float] = (-80.0, 305.0)
    crop_foreground: bool = True
    body_threshold_hu: float = -500.0
    crop_margin_mm: float = 0.0


@dataclass(frozen=True)
class ModelConfig:
    """Which registered network to build, with keyword overrides for `build_model`."""

    name: str = "sca_unet_3d"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InferenceConfig:
    """Sliding-window inference on the preprocessed grid.

    Attributes:
        roi_size: window size along the canonical array axes (x, y, z for RAS; the SCA-UNet
            paper's 64×128×128 z-first patch is (128, 128, 64)); two values for 2D models,
            which run slice by slice along z.
        overlap: fraction of a window shared with its neighbour (0.8 in the SCA-UNet paper).
        blend: "gaussian" or "constant" weighting of overlapping windows.
        sw_batch_size: windows per forward pass.
        mirror_axes: spatial axes mirrored for test-time augmentation (empty: none).
    """

    roi_size: tuple[int, ...] = (128, 128, 64)
    overlap: float = 0.8
    blend: str = "gaussian"
    sw_batch_size: int = 4
    mirror_axes: tuple[int, ...] = ()


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, saved beside every checkpoint and read back by `predict`."""

    labels: str = "kits23"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise KidneysegError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except (KidneysegError, TypeError, ValueError):
                continue
        raise KidneysegError(f"{where}: {value!r} is not a valid {tp}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise KidneysegError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise KidneysegError(f"{where}: expected {len(args)} values, got {list(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))
    if origin is dict:
        if not isinstance(value, dict):
            raise KidneysegError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    raise KidneysegError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build the frozen dataclass `cls` from `data`; unknown keys are an error."""
    types_ = _field_types(cls)
    unknown = set(data) - set(types_)
    if unknown:
        key = sorted(unknown)[0]
        close = difflib.get_close_matches(key, list(types_), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {sorted(types_)}"
        raise KidneysegError(f"{where}: unknown key {key!r}{hint}")
    kwargs = {k: _coerce(v, types_[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Plain data (dicts, lists, scalars) for a dataclass, ready for YAML or JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of `data` with `a.b.c=value` overrides applied (value parsed as YAML)."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise KidneysegError(f"override {item!r} must look like section.key=value")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise KidneysegError(f"override {item!r}: {part!r} is not a config section")
            node = node[part]
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`base` with `update` merged in recursively (update wins)."""
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KidneysegError("no such config file", path) from None
    except yaml.YAMLError as exc:
        raise KidneysegError(f"not valid YAML ({exc})", path) from None
    if not isinstance(data, dict):
        raise KidneysegError("a config file must hold a mapping", path)
    return data


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)
