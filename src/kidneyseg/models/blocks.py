"""Attention building blocks shared by the networks, for 2D and 3D alike.

* `SpatialAttention` and `ChannelAttention`: the two halves of CBAM (Woo et al., "CBAM:
  Convolutional Block Attention Module", ECCV 2018, https://arxiv.org/abs/1807.06521), used by
  SCA-UNet 3D (Gohil & Lad, KiTS21).
* `AttentionGate`: the additive attention gate of Oktay et al. ("Attention U-Net: Learning Where
  to Look for the Pancreas", MIDL 2018, https://arxiv.org/abs/1804.03999), used by the 2D
  attention U-Net of Rathnayaka et al. (KiTS19).

Every attention module returns its attention *map* (coefficients in [0, 1]), not the re-weighted
features, so that the map is one module output that `record_attention` can capture with a forward
hook. `Attended` applies a map to a block's output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from kidneyseg.models.layers import CONV, act_layer


def _linear_mode(spatial_dims: int) -> str:
    return {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial_dims]


class SpatialAttention(nn.Module):
    """CBAM spatial attention map (Woo et al. 2018, Eq. 3).

    `M_s(F) = sigmoid(conv_k([mean_c(F); max_c(F)]))`: the channel-wise mean and maximum are
    stacked as two channels, convolved with one k×k(×k) kernel (no bias, "same" padding) and
    squashed to [0, 1].

    Args:
        spatial_dims: 2 or 3.
        kernel_size: size of the convolution kernel along every axis (7 in CBAM and SCA-UNet).

    Returns (from `forward`): the map, shape (N, 1, *spatial) of the input.
    """

    def __init__(self, spatial_dims: int, kernel_size: int = 7):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"spatial attention kernel_size must be odd, got {kernel_size}")
        self.conv = CONV[spatial_dims](2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))


class ChannelAttention(nn.Module):
    """CBAM channel attention map (Woo et al. 2018, Eq. 2).

    `M_c(F) = sigmoid(MLP(mean_s(F)) + MLP(max_s(F)))`: global average and global max pooling over
    the spatial axes feed one shared two-layer MLP, written as 1×1(×1) convolutions without bias,
    with `in_channels // reduction` hidden units.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the feature map the attention is computed from.
        out_channels: channels of the map (the feature map it is applied to); default
            `in_channels`. They differ only when the map is computed from a block's input and
            applied to its output (the SCA-UNet authors' code).
        reduction: hidden-layer reduction ratio r (16 in CBAM); at least one hidden unit is kept.
        act: activation between the two MLP layers, a MONAI activation name ("relu" in CBAM).

    Returns (from `forward`): the map, shape (N, out_channels, 1, ..., 1).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int | None = None,
        reduction: int = 16,
        act: str | tuple = "relu",
    ):
        super().__init__()
        conv = CONV[spatial_dims]
        hidden = max(1, in_channels // reduction)
        self.mlp = nn.Sequential(
            conv(in_channels, hidden, 1, bias=False),
            act_layer(act),
            conv(hidden, out_channels or in_channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axes = tuple(range(2, x.ndim))
        return torch.sigmoid(
            self.mlp(x.mean(dim=axes, keepdim=True)) + self.mlp(x.amax(dim=axes, keepdim=True))
        )


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018, Eqs. 1–2 and Fig. 2).

    `alpha = sigmoid(psi(relu(theta(x) + phi(g))))`, resampled to the grid of `x`. The skip feature
    `x` is brought to the coarser grid of the gating signal `g` by `theta`, a convolution with
    kernel = stride = `sub_sample` and no bias (as in the authors' reference implementation);
    `phi` and `psi` are 1×1(×1) convolutions with bias. If `phi(g)` and `theta(x)` still differ in
    size, `phi(g)` is resampled (bi/trilinear) onto the grid of `theta(x)`; `alpha` is resampled
    (bi/trilinear) onto the grid of `x`.

    Args:
        spatial_dims: 2 or 3.
        skip_channels: channels of the gated skip feature `x`.
        gating_channels: channels of the gating signal `g` (the coarser decoder feature).
        inter_channels: channels of the intermediate space; default `skip_channels // 2` (min 1).
        sub_sample: grid ratio between `x` and `g`.

    Returns (from `forward(x, g)`): the coefficients alpha, shape (N, 1, *spatial of x).
    """

    def __init__(
        self,
        spatial_dims: int,
        skip_channels: int,
        gating_channels: int,
        inter_channels: int | None = None,
        sub_sample: int = 2,
    ):
        super().__init__()
        conv = CONV[spatial_dims]
        inter = inter_channels or max(1, skip_channels // 2)
        self.mode = _linear_mode(spatial_dims)
        self.theta = conv(skip_channels, inter, sub_sample, stride=sub_sample, bias=False)
        self.phi = conv(gating_channels, inter, 1, bias=True)
        self.psi = conv(inter, 1, 1, bias=True)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        theta_x = self.theta(x)
        phi_g = self.phi(g)
        if phi_g.shape[2:] != theta_x.shape[2:]:
            phi_g = F.interpolate(phi_g, size=theta_x.shape[2:], mode=self.mode, align_corners=False)
        alpha = torch.sigmoid(self.psi(F.relu(theta_x + phi_g)))
        if alpha.shape[2:] != x.shape[2:]:
            alpha = F.interpolate(alpha, size=x.shape[2:], mode=self.mode, align_corners=False)
        return alpha


def match_map(attention_map: torch.Tensor, size: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Bring an attention map onto a feature grid of `size`.

    Channel maps (all spatial sizes 1) broadcast and are returned unchanged. A larger map is
    max-pooled to `size` and a smaller one nearest-upsampled, which is how the SCA-UNet authors'
    code transfers a map computed from a block's input onto the block's strided output.
    """
    map_size = tuple(attention_map.shape[2:])
    size = tuple(size)
    if map_size == size or all(s == 1 for s in map_size):
        return attention_map
    if all(m >= s for m, s in zip(map_size, size, strict=True)):
        pool = {2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}[len(size)]
        return pool(attention_map, size)
    return F.interpolate(attention_map, size=size, mode="nearest")


class Attended(nn.Module):
    """A block whose output is re-weighted by an attention map: `y = block(x) * A(s)`.

    Args:
        block: the wrapped block (a MONAI convolution or residual unit, any module).
        attention: a `SpatialAttention` or `ChannelAttention`.
        source: "output" computes the map from the block's output `y` (CBAM, the SCA-UNet paper);
            "input" computes it from the block's input `x` and applies it to the output after
            `match_map` (the SCA-UNet authors' public code).
    """

    def __init__(self, block: nn.Module, attention: nn.Module, source: str = "output"):
        super().__init__()
        if source not in ("output", "input"):
            raise ValueError(f"attention source must be 'output' or 'input', got {source!r}")
        self.block = block
        self.attention = attention
        self.source = source

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        attention_map = self.attention(y if self.source == "output" else x)
        return y * match_map(attention_map, y.shape[2:])


ATTENTION_MODULES = (SpatialAttention, ChannelAttention, AttentionGate)


@contextlib.contextmanager
def record_attention(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Record every attention map a model computes, for pictures; the forward output is unchanged.

    Forward hooks on each `SpatialAttention`, `ChannelAttention` and `AttentionGate` store a
    detached copy of the map under the module's qualified name (the latest forward wins). Maps are
    on the grid where they are computed: the network's padded grid at that block's resolution.

    Example:
        >>> with record_attention(model) as maps:
        ...     logits = model(image)
        >>> sorted(maps)  # e.g. ['gates.0', 'gates.1', ...]

    Yields:
        The dictionary that the hooks fill, name -> map.
    """
    maps: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def store(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            maps[name] = output.detach()

        return store

    handles = [
        module.register_forward_hook(hook(name))
        for name, module in model.named_modules()
        if isinstance(module, ATTENTION_MODULES)
    ]
    try:
        yield maps
    finally:
        for handle in handles:
            handle.remove()
