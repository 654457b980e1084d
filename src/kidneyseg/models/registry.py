"""The model registry: every network the recipes can name, built by `build_model(name, **overrides)`.

Each registered model is a function named after it that returns its default constructor
arguments, decorated with `register_model(network_class, paper=...)` (timm's pattern). The
defaults are the papers' configurations; recipes and the CLI override any of them, e.g.
`build_model("unet_2d", channels=(16, 32, 64))`. A default `out_channels` is the number of
classes of the label map the paper trained on (`kidneyseg.labels`); a run fixes it to its own.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from kidneyseg.errors import KidneysegError
from kidneyseg.labels import KITS19, KITS23
from kidneyseg.models.nets import (
    SCA_PAPER_ATTENTION,
    AttentionGateUNet,
    PaddedUNet,
    SCAUNet,
    count_parameters,
)
from kidneyseg.models.unet import UNet
from kidneyseg.plaindata import is_whole

GOHIL_LAD = (
    "Gohil & Lad, Kidney and kidney tumor segmentation using spatial and channel attention enhanced "
    "U-Net, KiTS21, LNCS 13168 (2022)"
)
OKTAY = "Oktay et al., Attention U-Net: learning where to look for the pancreas, MIDL 2018, arXiv:1804.03999"
KERFOOT = "Kerfoot et al., Left-ventricle quantification using residual U-Net, STACOM 2018 (LNCS 11395)"
RATHNAYAKA = "Rathnayaka et al., attention-gate U-Net on KiTS19 axial slices; gates: " + OKTAY


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: the network class, its default arguments and where it comes from."""

    name: str
    network: type[nn.Module]
    defaults: Mapping[str, Any]
    paper: str
    summary: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    network: type[nn.Module], *, paper: str
) -> Callable[[Callable[[], dict[str, Any]]], Callable[[], dict[str, Any]]]:
    """Register the decorated function's name as a model built by `network(**function())`.

    Args:
        network: the network class.
        paper: the reference the configuration follows.
    """

    def decorator(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        if fn.__name__ in _REGISTRY:
            raise ValueError(f"model {fn.__name__!r} is already registered")
        summary = " ".join((fn.__doc__ or "").split("\n\n")[0].split())
        _REGISTRY[fn.__name__] = ModelEntry(fn.__name__, network, MappingProxyType(fn()), paper, summary)
        return fn

    return decorator


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    """The registry entry of `name`; an unknown name is a `KidneysegError` listing the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise KidneysegError(
            f"unknown model {name!r}; {hint}registered: {', '.join(list_models())}"
        ) from None


def _accepted_arguments(network: type[nn.Module]) -> set[str]:
    params = inspect.signature(network.__init__).parameters
    names = {n for n, p in params.items() if n != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD}
    if issubclass(network, UNet) and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        names |= set(inspect.signature(UNet.__init__).parameters) - {"self"}
    return names


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_types(name: str, defaults: Mapping[str, Any], overrides: dict[str, Any]) -> None:
    """Refuse an override that cannot stand for a list or number default (e.g. `channels=abc`),
    before the network's constructor fails on it with a message about its own internals."""
    for key, value in overrides.items():
        default = defaults.get(key)
        if isinstance(default, (list, tuple)) and not isinstance(value, (list, tuple)):
            expected = "a list"
        elif (
            isinstance(default, (list, tuple))
            and all(is_whole(v) for v in default)
            and not all(is_whole(v) for v in value)
        ):  # e.g. channels=[8,16,1e9]: YAML 1.1 reads 1e9 as a string (was: a %-formatting error)
            expected = "a list of whole numbers"
        elif _is_number(default) and not _is_number(value):
            expected = "a number"
        else:
            continue
        raise KidneysegError(f"model {name!r}: {key} must be {expected} like {default!r}, got {value!r}")


def build_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model `name`, its paper defaults updated with `overrides`.

    Args:
        name: a name from `list_models()`.
        **overrides: constructor arguments replacing the defaults (MONAI vocabulary:
            `spatial_dims`, `in_channels`, `out_channels`, `channels`, `strides`, ...).

    Raises:
        KidneysegError: unknown name, unknown argument, or a configuration the network rejects.
    """
    entry = get_entry(name)
    accepted = _accepted_arguments(entry.network)
    for key in overrides:
        if key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid: {', '.join(sorted(accepted))}"
            raise KidneysegError(f"model {name!r} has no argument {key!r}; {hint}")
    _check_types(name, entry.defaults, overrides)
    classes = overrides.get("out_channels", 2)
    if classes < 2:  # was: a network of 0 outputs built, a zero-element warning from torch
        raise KidneysegError(
            f"model {name!r}: out_channels must be at least 2 (background and a class), got {classes}"
        )
    try:
        return entry.network(**{**entry.defaults, **overrides})
    except (TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: a negative size
        raise KidneysegError(f"model {name!r}: {_culprits(entry, overrides)}{exc}") from None


def _culprits(entry: ModelEntry, overrides: dict[str, Any]) -> str:
    """The overrides that each alone keep the network from being built ("key=value: "), found
    by building it on the meta device (no weights allocated)."""
    bad = []
    for key, value in overrides.items():
        try:
            with torch.device("meta"):
                entry.network(**{**entry.defaults, key: value})
        except (TypeError, ValueError, RuntimeError):
            bad.append(f"{key}={value!r}")
    return f"{', '.join(bad)}: " if bad else ""


def model_info(name: str, **overrides: Any) -> dict[str, Any]:
    """What a registered model is, without allocating its weights (built on the meta device).

    Returns:
        name, network (class name), summary, paper, spatial_dims, in_channels, out_channels,
        divisor (total stride per axis: sizes that need no padding), parameters, and the
        resolved constructor arguments.
    """
    entry = get_entry(name)
    with torch.device("meta"):
        model = build_model(name, **overrides)
    return {
        "name": name,
        "network": entry.network.__name__,
        "summary": entry.summary,
        "paper": entry.paper,
        "spatial_dims": model.spatial_dims,
        "in_channels": model.in_channels,
        "out_channels": model.out_channels,
        "divisor": tuple(model.divisor),
        "parameters": count_parameters(model),
        "arguments": {**entry.defaults, **overrides},
    }


@register_model(SCAUNet, paper=GOHIL_LAD)
def sca_unet_3d() -> dict[str, Any]:
    """SCA-UNet 3D as the paper describes it: CBAM spatial attention on the first encoder and last
    decoder block, channel attention on the bottleneck, widths 32-64-128 / 128."""
    return {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": KITS23.num_classes,
        "channels": (32, 64, 128, 128),
        "strides": (2, 2, 2),
        "attention": dict(SCA_PAPER_ATTENTION),
        "attention_source": "output",
    }


@register_model(SCAUNet, paper=GOHIL_LAD + " - public code srg9000/kits21_spatial_channel_attention")
def sca_unet_3d_authors() -> dict[str, Any]:
    """SCA-UNet 3D as the authors' public code builds it: widths 64-512 / 512, attention computed
    from each block's input, GELU channel MLP, bare last up-convolution, PReLU after the head."""
    return {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": KITS23.num_classes,
        "channels": (64, 128, 256, 512, 512),
        "strides": (2, 2, 2, 2),
        "attention": dict(SCA_PAPER_ATTENTION),
        "attention_source": "input",
        "channel_reduction": 16,
        "channel_act": "gelu",
        "last_decoder_adn": False,
        "head_bias": False,
        "head_act": "prelu",
    }


@register_model(PaddedUNet, paper=GOHIL_LAD + " §2.5 baseline; " + KERFOOT)
def residual_unet_3d() -> dict[str, Any]:
    """Residual U-Net 3D baseline: MONAI UNet with 2 residual units per block, widths 16-256."""
    return {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": KITS23.num_classes,
        "channels": (16, 32, 64, 128, 256),
        "strides": (2, 2, 2, 2),
        "num_res_units": 2,
    }


@register_model(AttentionGateUNet, paper=RATHNAYAKA)
def attention_unet_2d() -> dict[str, Any]:
    """Attention-gate U-Net 2D on axial slices: classic U-Net 64-1024 with additive gates on every skip."""
    return {
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": KITS19.num_classes,
        "channels": (64, 128, 256, 512, 1024),
    }


@register_model(AttentionGateUNet, paper=RATHNAYAKA + " (baseline without gates)")
def unet_2d() -> dict[str, Any]:
    """Plain U-Net 2D baseline: the attention-gate U-Net without its gates."""
    return {
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": KITS19.num_classes,
        "channels": (64, 128, 256, 512, 1024),
        "attention": False,
    }


@register_model(AttentionGateUNet, paper=OKTAY)
def attention_unet_3d() -> dict[str, Any]:
    """Attention-gate U-Net 3D: widths 16-256 (Oktay et al.'s 3D CT model: 64-1024 / feature scale 4)."""
    return {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": KITS23.num_classes,
        "channels": (16, 32, 64, 128, 256),
    }


@register_model(AttentionGateUNet, paper=OKTAY + " (baseline without gates)")
def unet_3d() -> dict[str, Any]:
    """Plain U-Net 3D: the 3D attention-gate U-Net without its gates."""
    return {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": KITS23.num_classes,
        "channels": (16, 32, 64, 128, 256),
        "attention": False,
    }
