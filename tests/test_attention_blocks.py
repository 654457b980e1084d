"""The attention modules against results computed independently with explicit numpy loops."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kidneyseg.models.blocks import (
    Attended,
    AttentionGate,
    ChannelAttention,
    SpatialAttention,
    match_map,
    record_attention,
)


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def relu(v: float) -> float:
    return max(v, 0.0)


def gelu(v: float) -> float:
    return 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))


def set_weight(param: torch.nn.Parameter, value: np.ndarray) -> None:
    with torch.no_grad():
        param.copy_(torch.from_numpy(value))


def cross_correlate_same(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Zero-padded 'same' cross-correlation of image (C, *S) with kernel (C, *K), summed over C."""
    channels, *size = image.shape
    half = [k // 2 for k in kernel.shape[1:]]
    out = np.zeros(size)
    for pos in itertools.product(*(range(s) for s in size)):
        total = 0.0
        for c in range(channels):
            for off in itertools.product(*(range(k) for k in kernel.shape[1:])):
                src = [p + o - h for p, o, h in zip(pos, off, half, strict=True)]
                if all(0 <= s < n for s, n in zip(src, size, strict=True)):
                    total += kernel[(c, *off)] * image[(c, *src)]
        out[pos] = total
    return out


@pytest.mark.parametrize(
    ("spatial_dims", "size", "kernel"), [(2, (4, 5), 3), (3, (3, 4, 3), 3), (2, (3, 3), 7)]
)
def test_spatial_attention_matches_hand_computation(spatial_dims: int, size: tuple, kernel: int) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 3, *size))
    weight = rng.normal(size=(1, 2) + (kernel,) * spatial_dims)
    module = SpatialAttention(spatial_dims, kernel_size=kernel).double()
    set_weight(module.conv.weight, weight)

    pooled = np.stack([x[0].mean(axis=0), x[0].max(axis=0)])
    logits = cross_correlate_same(pooled, weight[0])
    expected = np.vectorize(sigmoid)(logits)

    got = module(torch.from_numpy(x)).detach().numpy()
    assert got.shape == (1, 1, *size)
    np.testing.assert_allclose(got[0, 0], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("act", "fn", "out_channels"), [("relu", relu, None), ("gelu", gelu, 5)])
def test_channel_attention_matches_hand_computation(act: str, fn, out_channels: int | None) -> None:
    rng = np.random.default_rng(2)
    channels, reduction = 8, 4
    hidden, out = channels // reduction, out_channels or channels
    x = rng.normal(size=(2, channels, 3, 4, 2))
    w0 = rng.normal(size=(hidden, channels, 1, 1, 1))
    w1 = rng.normal(size=(out, hidden, 1, 1, 1))
    module = ChannelAttention(3, channels, out_channels, reduction=reduction, act=act).double()
    set_weight(module.mlp[0].weight, w0)
    set_weight(module.mlp[2].weight, w1)

    expected = np.zeros((2, out))
    for n in range(2):
        descriptors = [
            [x[n, c].mean() for c in range(channels)],
            [x[n, c].max() for c in range(channels)],
        ]
        total = [0.0] * out
        for d in descriptors:
            h = [fn(sum(w0[j, c, 0, 0, 0] * d[c] for c in range(channels))) for j in range(hidden)]
            for o in range(out):
                total[o] += sum(w1[o, j, 0, 0, 0] * h[j] for j in range(hidden))
        expected[n] = [sigmoid(t) for t in total]

    got = module(torch.from_numpy(x)).detach().numpy()
    assert got.shape == (2, out, 1, 1, 1)
    np.testing.assert_allclose(got[:, :, 0, 0, 0], expected, rtol=1e-12, atol=1e-12)


def linear_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Weights of 1-D linear interpolation with half-pixel centres (align_corners=False)."""
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = math.floor(src)
        i1 = min(i0 + 1, n_in - 1)
        frac = src - i0
        m[o, i0] += 1.0 - frac
        m[o, i1] += frac
    return m


def test_attention_gate_matches_hand_computation() -> None:
    rng = np.random.default_rng(3)
    cx, cg, inter = 2, 3, 2
    x = rng.normal(size=(1, cx, 4, 6))
    g = rng.normal(size=(1, cg, 2, 3))
    w_theta = rng.normal(size=(inter, cx, 2, 2))
    w_phi, b_phi = rng.normal(size=(inter, cg, 1, 1)), rng.normal(size=inter)
    w_psi, b_psi = rng.normal(size=(1, inter, 1, 1)), rng.normal(size=1)
    gate = AttentionGate(2, cx, cg, inter_channels=inter).double()
    set_weight(gate.theta.weight, w_theta)
    set_weight(gate.phi.weight, w_phi)
    set_weight(gate.phi.bias, b_phi)
    set_weight(gate.psi.weight, w_psi)
    set_weight(gate.psi.bias, b_psi)

    coarse = np.zeros((2, 3))
    for i, j in itertools.product(range(2), range(3)):
        q = []
        for k in range(inter):
            theta = sum(
                w_theta[k, c, a, b] * x[0, c, 2 * i + a, 2 * j + b]
                for c in range(cx)
                for a in range(2)
                for b in range(2)
            )
            phi = b_phi[k] + sum(w_phi[k, c, 0, 0] * g[0, c, i, j] for c in range(cg))
            q.append(relu(theta + phi))
        coarse[i, j] = sigmoid(b_psi[0] + sum(w_psi[0, k, 0, 0] * q[k] for k in range(inter)))
    expected = linear_resize_matrix(2, 4) @ coarse @ linear_resize_matrix(3, 6).T

    alpha = gate(torch.from_numpy(x), torch.from_numpy(g)).detach().numpy()
    assert alpha.shape == (1, 1, 4, 6)
    np.testing.assert_allclose(alpha[0, 0], expected, rtol=1e-12, atol=1e-12)
    assert (alpha >= 0).all() and (alpha <= 1).all()


def test_match_map_pools_down_and_repeats_up() -> None:
    rng = np.random.default_rng(4)
    fine = rng.random((1, 1, 4, 6))
    down = match_map(torch.from_numpy(fine), (2, 3)).numpy()
    expected_down = np.array(
        [[fine[0, 0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].max() for j in range(3)] for i in range(2)]
    )
    np.testing.assert_array_equal(down[0, 0], expected_down)

    coarse = rng.random((1, 1, 2, 3))
    up = match_map(torch.from_numpy(coarse), (4, 6)).numpy()
    expected_up = np.array([[coarse[0, 0, i // 2, j // 2] for j in range(6)] for i in range(4)])
    np.testing.assert_array_equal(up[0, 0], expected_up)

    channel_map = torch.rand(1, 5, 1, 1)
    assert match_map(channel_map, (4, 6)) is channel_map


@pytest.mark.parametrize("source", ["output", "input"])
def test_attended_applies_map_from_chosen_source(source: str) -> None:
    torch.manual_seed(5)
    block = torch.nn.AvgPool2d(2)
    attention = SpatialAttention(2, kernel_size=3)
    module = Attended(block, attention, source)
    x = torch.rand(1, 3, 6, 8)
    y = block(x)
    expected = y * attention(y) if source == "output" else y * F.max_pool2d(attention(x), 2)
    torch.testing.assert_close(module(x), expected, rtol=0, atol=0)


def test_record_attention_keeps_output_and_removes_hooks() -> None:
    torch.manual_seed(6)
    module = Attended(torch.nn.Conv2d(2, 4, 3, padding=1), ChannelAttention(2, 4, reduction=2)).eval()
    x = torch.rand(2, 2, 5, 5)
    plain = module(x)
    with record_attention(module) as maps:
        recorded = module(x)
    assert torch.equal(plain, recorded)
    assert list(maps) == ["attention"]
    torch.testing.assert_close(maps["attention"], module.attention(module.block(x)))
    assert not module.attention._forward_hooks
