"""The pieces a run is assembled from: resolved model config, optimizer, scheduler, freezing."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch
from torch import nn

from kidneyseg.checkpoint import output_channels
from kidneyseg.config import RunConfig, TrainConfig
from kidneyseg.errors import KidneysegError, exception_line


def resolve_model_config(config: RunConfig) -> RunConfig:
    """`config` with the model's output channels fixed to its label map's classes, checked
    against the sampling (3D patches need a 3D network, 2D slices a 2D one) and the window size
    (`inference.roi_size`, used by validation and prediction, equal to `data.patch_size`)."""
    from kidneyseg.models import model_info

    kwargs = {**config.model.kwargs, "out_channels": output_channels(config)}
    dims = model_info(config.model.name, **kwargs)["spatial_dims"]
    wanted = 3 if config.data.sampling == "patch3d" else 2
    if dims != wanted:
        raise KidneysegError(
            f"model {config.model.name!r} is {dims}D but data.sampling={config.data.sampling!r} "
            f"feeds {wanted}D samples"
        )
    if len(config.data.patch_size) != wanted:
        raise KidneysegError(f"data.patch_size {list(config.data.patch_size)} needs {wanted} values")
    if tuple(config.inference.roi_size) != tuple(config.data.patch_size):
        raise KidneysegError(
            f"inference.roi_size {list(config.inference.roi_size)} must equal data.patch_size "
            f"{list(config.data.patch_size)}: the network predicts on windows of the size it trained on"
        )
    return dataclasses.replace(config, model=dataclasses.replace(config.model, kwargs=kwargs))


def check_network_runs(config: RunConfig) -> None:
    """Build the run's network and pass one small one-channel input through it, so that model
    settings its constructor takes but it cannot run with fail in one line naming them, before
    anything is written (a few milliseconds for the recipes' networks).

    Raises:
        KidneysegError: the network cannot be built, or cannot run on a CT's one channel.
    """
    from kidneyseg.checkpoint import build_model_from_config

    model = build_model_from_config(config)
    size = [2 * d for d in model.divisor]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 1, *size))
    except Exception as exc:  # whatever the network raises for settings it cannot run with
        settings = ", ".join(f"{k}={v!r}" for k, v in config.model.kwargs.items() if k != "out_channels")
        raise KidneysegError(
            f"model {config.model.name!r} with model.kwargs {settings or '(defaults)'} cannot run on "
            f"a one-channel {len(size)}D input ({exception_line(exc)})"
        ) from None


def build_optimizer(params: Iterable[nn.Parameter], train: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer `train.optimizer` names (SGD: Nesterov momentum 0.99, as nnU-Net)."""
    if train.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=train.lr, weight_decay=train.weight_decay, momentum=0.99, nesterov=True
        )
    optimizer = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
    return optimizer(params, lr=train.lr, weight_decay=train.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig) -> object | None:
    """None, ReduceLROnPlateau (stepped with the validation loss) or cosine annealing (per epoch)."""
    if train.scheduler == "none":
        return None
    if train.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=train.plateau_factor, patience=train.plateau_patience
        )
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(train.epochs, 1))


def freeze_encoder(model: nn.Module, depth: int) -> list[nn.Module]:
    """Freeze the `depth` shallowest encoder levels (attention U-Net stage 2, Rathnayaka et al.).

    Frozen levels get `requires_grad=False`; the returned modules must be kept in eval mode
    (so their batch-norm statistics stay fixed) each time the model is put in train mode.

    Raises:
        KidneysegError: the network has no encoder levels, or fewer than `depth`.
    """
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.ModuleList):
        raise KidneysegError(
            f"{type(model).__name__} has no encoder levels to freeze (use a 2D/3D attention U-Net)"
        )
    if not 0 <= depth < len(encoder):
        raise KidneysegError(f"train.freeze_depth must be in 0..{len(encoder) - 1}, got {depth}")
    frozen = list(encoder[:depth])
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    return frozen
