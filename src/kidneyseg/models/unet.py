"""MONAI's residual U-Net (Kerfoot et al. 2019, https://doi.org/10.1007/978-3-030-12029-0_40) from
the layers of `kidneyseg.models.layers`, without importing MONAI: the same module tree and state-dict
names as `monai.networks.nets.UNet` (tests/test_models.py compares them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from kidneyseg.models.layers import Convolution, ResidualUnit, SkipConnection


class UNet(nn.Module):
    """The residual U-Net of MONAI (Kerfoot et al. 2019): each level a down layer (strided
    `Convolution` or `ResidualUnit`), a `SkipConnection` around the levels below it and an up layer
    (transposed `Convolution`, plus a `ResidualUnit` with `num_res_units`), stored as `model`.

    Built from the bottom up through `_get_down_layer`, `_get_bottom_layer`, `_get_up_layer` and
    `_get_connection_block`, called in MONAI's order (innermost level first) so that subclasses
    can change any of them. Arguments and defaults are those of `monai.networks.nets.UNet`.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        strides: Sequence[int],
        kernel_size: Sequence[int] | int = 3,
        up_kernel_size: Sequence[int] | int = 3,
        num_res_units: int = 0,
        act: str | tuple = "prelu",
        norm: str | tuple = "instance",
        dropout: float = 0.0,
        bias: bool = True,
        adn_ordering: str = "NDA",
    ):
        super().__init__()
        if len(channels) < 2:
            raise ValueError("the length of `channels` should be no less than 2.")
        if len(strides) < len(channels) - 1:
            raise ValueError("the length of `strides` should equal to `len(channels) - 1`.")
        for name, size in (("kernel_size", kernel_size), ("up_kernel_size", up_kernel_size)):
            if isinstance(size, Sequence) and len(size) != spatial_dims:
                raise ValueError(f"the length of `{name}` should equal to `dimensions`.")
        self.dimensions = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = channels
        self.strides = strides
        self.kernel_size = kernel_size
        self.up_kernel_size = up_kernel_size
        self.num_res_units = num_res_units
        self.act = act
        self.norm = norm
        self.dropout = dropout
        self.bias = bias
        self.adn_ordering = adn_ordering
        self.model = self._create_block(in_channels, out_channels, channels, strides, True)

    def _create_block(
        self, inc: int, outc: int, channels: Sequence[int], strides: Sequence[int], is_top: bool
    ) -> nn.Module:
        """One level and, recursively, those below it."""
        c, s = channels[0], strides[0]
        if len(channels) > 2:
            subblock = self._create_block(c, c, channels[1:], strides[1:], False)
            up_channels = c * 2
        else:
            subblock = self._get_bottom_layer(c, channels[1])
            up_channels = c + channels[1]
        down = self._get_down_layer(inc, c, s, is_top)
        up = self._get_up_layer(up_channels, outc, s, is_top)
        return self._get_connection_block(down, up, subblock)

    def _get_connection_block(
        self, down_path: nn.Module, up_path: nn.Module, subblock: nn.Module
    ) -> nn.Module:
        return nn.Sequential(down_path, SkipConnection(subblock), up_path)

    def _layer_arguments(self) -> dict[str, Any]:
        return {
            "act": self.act,
            "norm": self.norm,
            "dropout": self.dropout,
            "bias": self.bias,
            "adn_ordering": self.adn_ordering,
        }

    def _get_down_layer(self, in_channels: int, out_channels: int, strides: int, is_top: bool) -> nn.Module:
        if self.num_res_units > 0:
            return ResidualUnit(
                self.dimensions,
                in_channels,
                out_channels,
                strides=strides,
                kernel_size=self.kernel_size,
                subunits=self.num_res_units,
                **self._layer_arguments(),
            )
        return Convolution(
            self.dimensions,
            in_channels,
            out_channels,
            strides=strides,
            kernel_size=self.kernel_size,
            **self._layer_arguments(),
        )

    def _get_bottom_layer(self, in_channels: int, out_channels: int) -> nn.Module:
        return self._get_down_layer(in_channels, out_channels, 1, False)

    def _get_up_layer(self, in_channels: int, out_channels: int, strides: int, is_top: bool) -> nn.Module:
        conv: nn.Module = Convolution(
            self.dimensions,
            in_channels,
            out_channels,
            strides=strides,
            kernel_size=self.up_kernel_size,
            conv_only=is_top and self.num_res_units == 0,
            is_transposed=True,
            **self._layer_arguments(),
        )
        if self.num_res_units > 0:
            unit = ResidualUnit(
                self.dimensions,
                out_channels,
                out_channels,
                strides=1,
                kernel_size=self.kernel_size,
                subunits=1,
                last_conv_only=is_top,
                **self._layer_arguments(),
            )
            conv = nn.Sequential(conv, unit)
        return conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
