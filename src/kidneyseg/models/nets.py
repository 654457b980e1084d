"""The networks of the two papers, built from MONAI's layers (`kidneyseg.models.layers` and
`unet`, the same layers without importing MONAI); every one accepts any input size.

* `PaddedUNet`: MONAI's `UNet` (Kerfoot et al. 2019, https://doi.org/10.1007/978-3-030-12029-0_40)
  with pad-and-crop, the residual U-Net 3D baseline of Gohil & Lad.
* `SCAUNet`: SCA-UNet 3D (Gohil & Lad, "Kidney and Kidney Tumor Segmentation Using Spatial and
  Channel Attention Enhanced U-Net", KiTS21, LNCS 13168, https://doi.org/10.1007/978-3-030-98385-7_20):
  MONAI's stride-2 `UNet` with CBAM spatial/channel attention inserted at configurable places.
* `AttentionGateUNet`: the classic U-Net (Ronneberger et al. 2015) with additive attention gates on
  the skip connections (Oktay et al. 2018, https://arxiv.org/abs/1804.03999), as trained on KiTS19
  axial slices by Rathnayaka et al.; without gates it is the plain U-Net baseline.

Sizes that are not a multiple of the network's total stride (`model.divisor`, per axis) are padded
at the high end of each axis and the logits are cropped back, so output shape == input shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kidneyseg.models.blocks import Attended, AttentionGate, ChannelAttention, SpatialAttention
from kidneyseg.models.layers import CONV, CONV_TRANSPOSED, MAX_POOL, Convolution, TwoConv
from kidneyseg.models.unet import UNet

PAD_MODES = ("replicate", "constant")


def total_stride(strides: Sequence[int | Sequence[int]], spatial_dims: int) -> tuple[int, ...]:
    """Product of the down-sampling strides per spatial axis (each stride an int or a per-axis tuple)."""
    out = [1] * spatial_dims
    for s in strides:
        per_axis = [s] * spatial_dims if isinstance(s, int) else list(s)
        out = [o * p for o, p in zip(out, per_axis, strict=True)]
    return tuple(out)


def pad_to_divisor(
    x: torch.Tensor, divisor: Sequence[int], mode: str
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Pad the spatial axes of `x` (N, C, *spatial) at their high end up to multiples of `divisor`.

    Returns:
        The padded tensor and the original spatial size, for `crop_to`.
    """
    if x.ndim != len(divisor) + 2:
        raise ValueError(
            f"expected input of shape (N, C, {', '.join('*' * len(divisor))}) for a {len(divisor)}D network, "
            f"got {tuple(x.shape)}"
        )
    size = tuple(x.shape[2:])
    extra = [(-s) % d for s, d in zip(size, divisor, strict=True)]
    if not any(extra):
        return x, size
    pads: list[int] = []
    for e in reversed(extra):
        pads += [0, e]
    return F.pad(x, pads, mode=mode), size


def crop_to(y: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The low corner of `y`'s spatial axes with extent `size` (undoes `pad_to_divisor`)."""
    if tuple(y.shape[2:]) == tuple(size):
        return y
    return y[(..., *(slice(0, s) for s in size))]


def _check_pad_mode(pad_mode: str) -> str:
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    return pad_mode


class PaddedUNet(UNet):
    """MONAI `UNet` (Kerfoot et al. 2019) that accepts any input size.

    All arguments are those of MONAI's `UNet` (`kidneyseg.models.unet.UNet`), plus:

    Args:
        pad_mode: "replicate" or "constant" (zeros): how inputs are padded up to a multiple of
            `divisor` before the forward pass; the logits are cropped back.

    Attributes:
        divisor: total stride per spatial axis; inputs of multiples of it are not padded.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        strides: Sequence[int],
        *,
        pad_mode: str = "replicate",
        **unet_kwargs: Any,
    ):
        super().__init__(spatial_dims, in_channels, out_channels, channels, strides, **unet_kwargs)
        self.spatial_dims = spatial_dims
        self.pad_mode = _check_pad_mode(pad_mode)
        self.divisor = total_stride(list(strides)[: len(channels) - 1], spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_divisor(x, self.divisor, self.pad_mode)
        return crop_to(self.model(x), size)


SCA_PAPER_ATTENTION: Mapping[str, str] = MappingProxyType(
    {"encoder0": "spatial", "bottleneck": "channel", "decoder0": "spatial"}
)


class SCAUNet(PaddedUNet):
    """SCA-UNet (Gohil & Lad, KiTS21): MONAI's stride-2 `UNet` with CBAM attention.

    How MONAI's `UNet` maps onto the paper: `channels=(32, 64, 128, 128)`, `strides=(2, 2, 2)` gives
    three encoder blocks (one 3×3×3 stride-2 convolution + norm/dropout/activation each) of 32, 64
    and 128 feature maps, a stride-1 bottleneck of 128, and decoder blocks whose inputs are the
    stacked skip connections, 128 + 128 = 256, 64 + 64 = 128 and 32 + 32 = 64 feature maps, each
    upsampled by a stride-2 transposed convolution. The last decoder block keeps its 64 feature
    maps (MONAI would map straight to the classes; `last_decoder_channels` changes the width) and a
    final 1×1×1 convolution gives the classes.

    Attention is placed by `attention`, a mapping from position to kind. Positions are
    "encoder{i}" and "decoder{i}" for levels i = 0 (full resolution, i.e. the first encoder and the
    last decoder block) to len(channels) - 2, and "bottleneck"; kinds are "spatial"
    (`SpatialAttention`) and "channel" (`ChannelAttention`). The paper: spatial on encoder0 and
    decoder0, channel on the bottleneck.

    Args:
        spatial_dims, in_channels, out_channels, channels, strides: as MONAI `UNet`.
        attention: placement, see above; `{}` gives the plain stride-2 U-Net with the 1×1×1 head.
        attention_source: "output" (paper, CBAM: the map is computed from the features it
            re-weights) or "input" (authors' code: computed from the block's input).
        spatial_kernel_size: kernel of the spatial attention convolution (7).
        channel_reduction: reduction ratio of the channel-attention MLP (16).
        channel_act: activation inside the channel-attention MLP ("relu" in CBAM, "gelu" in the
            authors' code).
        last_decoder_adn: apply MONAI's norm/dropout/activation after the last transposed
            convolution (True: every block is conv + ADN as the paper describes; the authors'
            code leaves it a bare convolution).
        last_decoder_channels: feature maps of the last decoder block, i.e. the head's input
            (None: as many as its stacked input, 2 * channels[0], as in the authors' code; the
            transposed convolution 2c -> 2c at full resolution is then the costliest layer).
        head_bias: bias in the final 1×1×1 convolution.
        head_act: activation after the final convolution (None: raw logits; the authors' code
            applies "prelu").
        pad_mode: see `PaddedUNet`.
        **unet_kwargs: kernel_size, up_kernel_size, num_res_units, act, norm, dropout, bias,
            adn_ordering of MONAI `UNet`.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 4,
        channels: Sequence[int] = (32, 64, 128, 128),
        strides: Sequence[int] = (2, 2, 2),
        *,
        attention: Mapping[str, str] = SCA_PAPER_ATTENTION,
        attention_source: str = "output",
        spatial_kernel_size: int = 7,
        channel_reduction: int = 16,
        channel_act: str | tuple = "relu",
        last_decoder_adn: bool = True,
        last_decoder_channels: int | None = None,
        head_bias: bool = True,
        head_act: str | tuple | None = None,
        pad_mode: str = "replicate",
        **unet_kwargs: Any,
    ):
        levels = len(channels) - 1
        valid = {
            "bottleneck",
            *(f"encoder{i}" for i in range(levels)),
            *(f"decoder{i}" for i in range(levels)),
        }
        for position, kind in attention.items():
            level = position.removeprefix("encoder").removeprefix("decoder")
            if position not in valid and level != position and level.isdigit():
                raise ValueError(
                    f"attention at {position!r} needs at least {int(level) + 2} channels (levels), "
                    f"got {len(channels)}: {list(channels)}"
                )
            if position not in valid:
                raise ValueError(f"unknown attention position {position!r}; valid: {sorted(valid)}")
            if kind not in ("spatial", "channel"):
                raise ValueError(
                    f"attention kind at {position!r} must be 'spatial' or 'channel', got {kind!r}"
                )
        if attention_source not in ("output", "input"):
            raise ValueError(f"attention_source must be 'output' or 'input', got {attention_source!r}")
        # Read by the layer hooks below, which MONAI's UNet.__init__ calls bottom-up.
        self._attention_plan = dict(attention)
        self._attention_source = attention_source
        self._spatial_kernel_size = spatial_kernel_size
        self._channel_reduction = channel_reduction
        self._channel_act = channel_act
        self._last_decoder_adn = last_decoder_adn
        self._last_decoder_channels = last_decoder_channels
        self._head_bias = head_bias
        self._head_act = head_act
        self._next_level = levels - 1
        super().__init__(
            spatial_dims, in_channels, out_channels, channels, strides, pad_mode=pad_mode, **unet_kwargs
        )
        self.attention = dict(attention)
        self.attention_source = attention_source

    def _attend(self, block: nn.Module, position: str, in_channels: int, out_channels: int) -> nn.Module:
        kind = self._attention_plan.get(position)
        if kind is None:
            return block
        if kind == "spatial":
            attention: nn.Module = SpatialAttention(self.dimensions, self._spatial_kernel_size)
        else:
            source_channels = out_channels if self._attention_source == "output" else in_channels
            attention = ChannelAttention(
                self.dimensions, source_channels, out_channels, self._channel_reduction, self._channel_act
            )
        return Attended(block, attention, self._attention_source)

    def _get_bottom_layer(self, in_channels: int, out_channels: int) -> nn.Module:
        layer = super()._get_bottom_layer(in_channels, out_channels)
        return self._attend(layer, "bottleneck", in_channels, out_channels)

    def _get_up_layer(self, in_channels: int, out_channels: int, strides: int, is_top: bool) -> nn.Module:
        if not is_top:
            return super()._get_up_layer(in_channels, out_channels, strides, is_top)
        width = self._last_decoder_channels or in_channels
        return super()._get_up_layer(in_channels, width, strides, not self._last_decoder_adn)

    def _get_connection_block(
        self, down_path: nn.Module, up_path: nn.Module, subblock: nn.Module
    ) -> nn.Module:
        level = self._next_level
        self._next_level -= 1
        down_in = self.in_channels if level == 0 else self.channels[level - 1]
        up_in = 2 * self.channels[level] if level < len(self.channels) - 2 else sum(self.channels[-2:])
        up_out = (self._last_decoder_channels or up_in) if level == 0 else self.channels[level - 1]
        down_path = self._attend(down_path, f"encoder{level}", down_in, self.channels[level])
        up_path = self._attend(up_path, f"decoder{level}", up_in, up_out)
        block = super()._get_connection_block(down_path, up_path, subblock)
        if level == 0:
            block.append(
                Convolution(
                    self.dimensions,
                    up_out,
                    self.out_channels,
                    kernel_size=1,
                    act=self._head_act,
                    norm=None,
                    dropout=None,
                    bias=self._head_bias,
                    conv_only=self._head_act is None,
                )
            )
        return block


class AttentionGateUNet(nn.Module):
    """U-Net with additive attention gates on the skip connections (Oktay et al. 2018), 2D or 3D.

    The classic U-Net (Ronneberger et al. 2015): each level is two 3×3(×3) convolutions + norm +
    activation (MONAI `TwoConv`), max-pooling by 2 between levels, 2×2(×2) stride-2 transposed
    convolutions up, skip connections concatenated, and a final 1×1(×1) convolution to the classes.
    With `attention=True` every skip feature is multiplied by the coefficients of an
    `AttentionGate` whose gating signal is the coarser decoder feature *before* it is upsampled
    (MONAI's `AttentionUnet`, in contrast, gates with the already-upsampled feature).

    Args:
        spatial_dims: 2 (axial slices, Rathnayaka et al.) or 3.
        in_channels: input channels.
        out_channels: classes (3 for KiTS19: background, kidney, tumor).
        channels: feature maps per level, top first; the last is the bottleneck.
        attention: gate the skips (False: the plain U-Net baseline).
        act: MONAI activation ("relu").
        norm: MONAI normalisation ("batch").
        dropout: dropout after each convolution.
        bias: bias in the 3×3 convolutions.
        inter_channels: channels inside the gates; default half the skip's.
        pad_mode: see `PaddedUNet`.

    Attributes:
        divisor: total stride per spatial axis, 2 ** (len(channels) - 1).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 3,
        channels: Sequence[int] = (64, 128, 256, 512, 1024),
        attention: bool = True,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        dropout: float = 0.0,
        bias: bool = True,
        inter_channels: Sequence[int] | None = None,
        pad_mode: str = "replicate",
    ):
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"channels needs at least two levels, got {tuple(channels)}")
        if inter_channels is not None and len(inter_channels) != len(channels) - 1:
            raise ValueError(f"inter_channels needs one value per skip ({len(channels) - 1})")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = tuple(channels)
        self.pad_mode = _check_pad_mode(pad_mode)
        self.divisor = (2 ** (len(channels) - 1),) * spatial_dims
        widths = [in_channels, *channels]
        self.encoder = nn.ModuleList(
            TwoConv(spatial_dims, widths[i], widths[i + 1], act, norm, bias, dropout)
            for i in range(len(channels))
        )
        self.pool = MAX_POOL[spatial_dims](kernel_size=2)
        up_conv = CONV_TRANSPOSED[spatial_dims]
        skips = range(len(channels) - 1)
        self.up = nn.ModuleList(up_conv(channels[i + 1], channels[i], kernel_size=2, stride=2) for i in skips)
        self.gates = (
            nn.ModuleList(
                AttentionGate(
                    spatial_dims, channels[i], channels[i + 1], inter_channels and inter_channels[i]
                )
                for i in skips
            )
            if attention
            else None
        )
        self.decoder = nn.ModuleList(
            TwoConv(spatial_dims, 2 * channels[i], channels[i], act, norm, bias, dropout) for i in skips
        )
        self.head = CONV[spatial_dims](channels[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_divisor(x, self.divisor, self.pad_mode)
        skips = []
        h = x
        for i, block in enumerate(self.encoder):
            h = block(self.pool(h) if i else h)
            skips.append(h)
        h = skips.pop()
        for i in reversed(range(len(skips))):
            skip = skips[i]
            if self.gates is not None:
                skip = skip * self.gates[i](skip, h)
            h = self.decoder[i](torch.cat([skip, self.up[i](h)], dim=1))
        return crop_to(self.head(h), size)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (works on models built on the meta device)."""
    return sum(p.numel() for p in model.parameters())
