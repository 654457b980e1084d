"""The layers of MONAI's U-Net family (MONAI 1.x `monai.networks`), rebuilt in plain PyTorch.

Importing anything from MONAI imports every MONAI subpackage first (3.5 s of a 2-core machine's
start-up, more than PyTorch itself), and a prediction needs none of them but these layers. The
classes here build the same module tree as MONAI's, with the same names, parameters, defaults
and forward passes, so a checkpoint written with either loads into the other (tests/test_models.py
compares them with MONAI's module by module):

* `Convolution`: a convolution (transposed on request) with "same" padding, then `ADN`.
* `ADN`: normalisation (N), dropout (D) and activation (A) in the order asked for.
* `ResidualUnit`: `subunits` convolutions plus a residual path (Kerfoot et al. 2019).
* `SkipConnection`: a submodule's output stacked after its input.
* `TwoConv`: two 3×3(×3) `Convolution`s, the level of the classic U-Net.

`kidneyseg.models.unet.UNet` builds MONAI's `UNet` from them.

Activations, normalisations and dropout are named as in MONAI ("prelu", ("instance", {"affine":
True}), ...); a name outside the few kept here is looked up in MONAI's own factories.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_TRANSPOSED = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
MAX_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}

ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "relu": nn.ReLU,
    "prelu": nn.PReLU,
    "gelu": nn.GELU,
    "leakyrelu": nn.LeakyReLU,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}
NORMS: dict[str, dict[int, Callable[..., nn.Module]]] = {
    "instance": {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d},
    "batch": {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d},
}


def split_args(spec: str | tuple) -> tuple[str, dict[str, Any]]:
    """A layer named as MONAI names them, "name" or ("name", {arguments}): (name, arguments)."""
    if isinstance(spec, str):
        return spec, {}
    name, args = spec
    return name, dict(args)


def act_layer(spec: str | tuple) -> nn.Module:
    """The activation `spec` names (MONAI's `get_act_layer`)."""
    name, args = split_args(spec)
    if name.lower() in ACTIVATIONS:
        return ACTIVATIONS[name.lower()](**args)
    from monai.networks.layers import get_act_layer

    return get_act_layer(spec)


def norm_layer(spec: str | tuple, spatial_dims: int, channels: int) -> nn.Module:
    """The normalisation `spec` names, over `channels` features (MONAI's `get_norm_layer`)."""
    name, args = split_args(spec)
    if name.lower() in NORMS:
        return NORMS[name.lower()][spatial_dims](**{"num_features": channels, **args})
    from monai.networks.layers import get_norm_layer

    return get_norm_layer(spec, spatial_dims, channels)


def dropout_layer(spec: str | tuple | float, dropout_dim: int) -> nn.Module:
    """Dropout of probability `spec`, or the dropout layer it names (MONAI's `get_dropout_layer`)."""
    if isinstance(spec, (int, float)) and dropout_dim == 1:
        return nn.Dropout(p=float(spec))
    from monai.networks.layers.utils import get_dropout_layer

    return get_dropout_layer(spec, dropout_dim)


def same_padding(
    kernel_size: Sequence[int] | int, dilation: Sequence[int] | int = 1
) -> tuple[int, ...] | int:
    """The padding that keeps the size of a stride-1 convolution's input."""
    span = (np.atleast_1d(kernel_size) - 1) * np.atleast_1d(dilation)
    if np.any(span % 2 == 1):
        raise ValueError(f"no same padding for kernel_size={kernel_size} and dilation={dilation}")
    padding = tuple(int(p) for p in span // 2)
    return padding if len(padding) > 1 else padding[0]


def _output_padding(strides: Sequence[int] | int) -> tuple[int, ...] | int:
    """A transposed convolution's output padding that makes its output `strides` times its input."""
    padding = tuple(int(s) - 1 for s in np.atleast_1d(strides))
    return padding if len(padding) > 1 else padding[0]


class ADN(nn.Sequential):
    """Normalisation "N", dropout "D" and activation "A" in the order of `ordering`, each only when
    given (MONAI's `ADN`)."""

    def __init__(
        self,
        ordering: str = "NDA",
        in_channels: int | None = None,
        act: str | tuple | None = "relu",
        norm: str | tuple | None = None,
        norm_dim: int | None = None,
        dropout: str | tuple | float | None = None,
        dropout_dim: int | None = None,
    ):
        super().__init__()
        layers: dict[str, nn.Module] = {}
        if norm is not None:
            layers["N"] = norm_layer(norm, norm_dim or dropout_dim, in_channels)
        if act is not None:
            layers["A"] = act_layer(act)
        if dropout is not None:
            layers["D"] = dropout_layer(dropout, dropout_dim or norm_dim)
        for item in ordering.upper():
            if item not in "ADN":
                raise ValueError(f"ordering must be made of A, D and N, got {item!r} in {ordering!r}")
            if item in layers:
                self.add_module(item, layers[item])


class Convolution(nn.Sequential):
    """A convolution ("conv"), transposed with `is_transposed`, padded to keep the size at stride 1,
    followed by `ADN` ("adn") unless `conv_only` or nothing is asked of it (MONAI's `Convolution`)."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        strides: Sequence[int] | int = 1,
        kernel_size: Sequence[int] | int = 3,
        adn_ordering: str = "NDA",
        act: str | tuple | None = "prelu",
        norm: str | tuple | None = "instance",
        dropout: str | tuple | float | None = None,
        dropout_dim: int | None = 1,
        dilation: Sequence[int] | int = 1,
        groups: int = 1,
        bias: bool = True,
        conv_only: bool = False,
        is_transposed: bool = False,
        padding: Sequence[int] | int | None = None,
        output_padding: Sequence[int] | int | None = None,
    ):
        super().__init__()
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.is_transposed = is_transposed
        if padding is None:
            padding = same_padding(kernel_size, dilation)
        common = {"kernel_size": kernel_size, "stride": strides, "padding": padding, "groups": groups}
        if is_transposed:
            if output_padding is None:
                output_padding = _output_padding(strides)
            conv = CONV_TRANSPOSED[spatial_dims](
                in_channels,
                out_channels,
                **common,
                output_padding=output_padding,
                bias=bias,
                dilation=dilation,
            )
        else:
            conv = CONV[spatial_dims](in_channels, out_channels, **common, dilation=dilation, bias=bias)
        self.add_module("conv", conv)
        if conv_only or (act is None and norm is None and dropout is None):
            return
        adn = ADN(adn_ordering, out_channels, act, norm, spatial_dims, dropout, dropout_dim)
        self.add_module("adn", adn)


class ResidualUnit(nn.Module):
    """`subunits` `Convolution`s ("conv": unit0, unit1, ...; the first carries the stride) added to a
    residual path ("residual": identity, or a convolution where the stride or width changes)
    (MONAI's `ResidualUnit`)."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        strides: Sequence[int] | int = 1,
        kernel_size: Sequence[int] | int = 3,
        subunits: int = 2,
        adn_ordering: str = "NDA",
        act: str | tuple | None = "prelu",
        norm: str | tuple | None = "instance",
        dropout: str | tuple | float | None = None,
        dropout_dim: int | None = 1,
        dilation: Sequence[int] | int = 1,
        bias: bool = True,
        last_conv_only: bool = False,
        padding: Sequence[int] | int | None = None,
    ):
        super().__init__()
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv = nn.Sequential()
        self.residual: nn.Module = nn.Identity()
        if not padding:
            padding = same_padding(kernel_size, dilation)
        channels, stride = in_channels, strides
        subunits = max(1, subunits)
        for unit in range(subunits):
            self.conv.add_module(
                f"unit{unit:d}",
                Convolution(
                    spatial_dims,
                    channels,
                    out_channels,
                    strides=stride,
                    kernel_size=kernel_size,
                    adn_ordering=adn_ordering,
                    act=act,
                    norm=norm,
                    dropout=dropout,
                    dropout_dim=dropout_dim,
                    dilation=dilation,
                    bias=bias,
                    conv_only=last_conv_only and unit == subunits - 1,
                    padding=padding,
                ),
            )
            channels, stride = out_channels, 1
        if np.prod(strides) != 1 or in_channels != out_channels:
            kernel, pad = (kernel_size, padding) if np.prod(strides) != 1 else (1, 0)
            self.residual = CONV[spatial_dims](in_channels, out_channels, kernel, strides, pad, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.residual(x)


class SkipConnection(nn.Module):
    """The submodule's output stacked after its input along the channels (MONAI's `SkipConnection`,
    mode "cat")."""

    def __init__(self, submodule: nn.Module):
        super().__init__()
        self.submodule = submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.submodule(x)], dim=1)


class TwoConv(nn.Sequential):
    """Two 3×3(×3) `Convolution`s with norm, dropout and activation, "conv_0" and "conv_1" (MONAI's
    `basic_unet.TwoConv`)."""

    def __init__(
        self,
        spatial_dims: int,
        in_chns: int,
        out_chns: int,
        act: str | tuple,
        norm: str | tuple,
        bias: bool,
        dropout: float | tuple = 0.0,
    ):
        super().__init__()
        for name, channels in (("conv_0", in_chns), ("conv_1", out_chns)):
            conv = Convolution(
                spatial_dims, channels, out_chns, act=act, norm=norm, dropout=dropout, bias=bias, padding=1
            )
            self.add_module(name, conv)
