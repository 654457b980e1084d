"""Registry-wide checks of the networks (tiny widths via overrides, odd input sizes) and their structure."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet

from kidneyseg.errors import KidneysegError
from kidneyseg.models import (
    AttentionGate,
    ChannelAttention,
    SpatialAttention,
    build_model,
    count_parameters,
    layers,
    list_models,
    model_info,
    record_attention,
    unet,
)

TINY = {
    "sca_unet_3d": {"channels": (4, 8, 8), "strides": (2, 2)},
    "sca_unet_3d_authors": {"channels": (4, 8, 16, 16), "strides": (2, 2, 2)},
    "residual_unet_3d": {"channels": (4, 8, 8), "strides": (2, 2)},
    "attention_unet_2d": {"channels": (4, 8, 16)},
    "unet_2d": {"channels": (4, 8, 16)},
    "attention_unet_3d": {"channels": (4, 8, 16)},
    "unet_3d": {"channels": (4, 8, 16)},
}
ODD_3D = (13, 11, 7)
ODD_2D = (37, 29)


def tiny(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, **{**TINY[name], **overrides})


def odd_input(model: torch.nn.Module, batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    size = ODD_3D if model.spatial_dims == 3 else ODD_2D
    return torch.rand(batch, model.in_channels, *size, generator=generator)


def test_registry_names_are_the_recipes_names() -> None:
    assert list_models() == sorted(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_output_shape_for_odd_sizes(name: str) -> None:
    model = tiny(name)
    x = odd_input(model)
    assert any(s % d for s, d in zip(x.shape[2:], model.divisor, strict=True)), "size must need padding"
    assert model(x).shape == (2, model.out_channels, *x.shape[2:])


@pytest.mark.parametrize("name", sorted(TINY))
def test_gradient_reaches_every_parameter(name: str) -> None:
    model = tiny(name).train()
    x = odd_input(model)
    target = torch.rand(
        x.shape[0], model.out_channels, *x.shape[2:], generator=torch.Generator().manual_seed(2)
    )
    (model(x) * target).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("name", sorted(TINY))
def test_eval_forward_is_deterministic_and_batch_independent(name: str) -> None:
    model = tiny(name).eval()
    x = odd_input(model)
    with torch.no_grad():
        first, second = model(x), model(x)
        single = model(x[1:])
    assert torch.equal(first, second)
    torch.testing.assert_close(single, first[1:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(TINY))
def test_recording_attention_leaves_output_identical(name: str) -> None:
    model = tiny(name).eval()
    x = odd_input(model)
    with torch.no_grad():
        plain = model(x)
        with record_attention(model) as maps:
            recorded = model(x)
    assert torch.equal(plain, recorded)
    has_attention = any(
        isinstance(m, (SpatialAttention, ChannelAttention, AttentionGate)) for m in model.modules()
    )
    assert bool(maps) == has_attention
    for attention_map in maps.values():
        assert attention_map.min() >= 0 and attention_map.max() <= 1


@pytest.mark.parametrize("name", ["sca_unet_3d", "unet_2d"])
@pytest.mark.parametrize("pad_mode", ["replicate", "constant"])
def test_odd_input_is_padded_at_the_high_end_and_cropped_back(name: str, pad_mode: str) -> None:
    model = tiny(name, pad_mode=pad_mode).eval()
    x = odd_input(model, batch=1)
    extra = [(-s) % d for s, d in zip(x.shape[2:], model.divisor, strict=True)]
    pads = [p for e in reversed(extra) for p in (0, e)]
    padded = F.pad(x, pads, mode=pad_mode)
    with torch.no_grad():
        expected = model(padded)[(..., *(slice(0, s) for s in x.shape[2:]))]
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_wrong_input_rank_names_the_expected_shape() -> None:
    model = tiny("sca_unet_3d")
    with pytest.raises(ValueError, match=r"\(N, C, \*, \*, \*\)"):
        model(torch.rand(1, 1, 16, 16))


MONAI_UNETS = [
    {"spatial_dims": 3, "in_channels": 1, "out_channels": 4, "channels": (4, 8, 16), "strides": (2, 2)},
    {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 3,
        "channels": (4, 8, 16, 16),
        "strides": (2, 2, 2),
        "num_res_units": 2,
    },
    {
        "spatial_dims": 2,
        "in_channels": 2,
        "out_channels": 3,
        "channels": (4, 8, 8),
        "strides": ((2, 1), 2),
        "kernel_size": 5,
        "num_res_units": 1,
        "act": ("leakyrelu", {"negative_slope": 0.1}),
        "norm": ("instance", {"affine": True}),
        "dropout": 0.1,
        "adn_ordering": "ADN",
    },
    {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 2,
        "channels": (4, 8, 8),
        "strides": (2, 2),
        "num_res_units": 1,
        "act": "RELU",
        "norm": "batch",
        "bias": False,
    },
    {  # names outside the layers' own table come from MONAI's factories
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 2,
        "channels": (4, 8),
        "strides": (2,),
        "act": "swish",
        "norm": ("group", {"num_groups": 2}),
    },
]


@pytest.mark.parametrize("kwargs", MONAI_UNETS, ids=range(len(MONAI_UNETS)))
def test_unet_layers_build_monais_unet(kwargs) -> None:
    """`kidneyseg.models.layers` builds MONAI's UNet without importing MONAI: the same module tree,
    names and parameter shapes, and with the same weights the same outputs, in training mode too."""
    torch.manual_seed(0)
    theirs = UNet(**kwargs)
    ours = unet.UNet(**kwargs)
    assert repr(ours) == repr(theirs)
    ours.load_state_dict(theirs.state_dict())
    x = torch.rand(2, kwargs["in_channels"], *(16,) * kwargs["spatial_dims"])
    for mode in (False, True):
        ours.train(mode), theirs.train(mode)
        torch.manual_seed(1)
        expected = theirs(x)
        torch.manual_seed(1)
        torch.testing.assert_close(ours(x), expected, rtol=0, atol=0)


def test_two_conv_and_layer_names_are_monais() -> None:
    from monai.networks.layers import get_act_layer
    from monai.networks.nets.basic_unet import TwoConv

    torch.manual_seed(0)
    theirs = TwoConv(2, 3, 5, "relu", ("batch", {"momentum": 0.2}), False, 0.2)
    ours = layers.TwoConv(2, 3, 5, "relu", ("batch", {"momentum": 0.2}), False, 0.2)
    assert repr(ours) == repr(theirs)
    for name in ("prelu", "gelu", ("leakyrelu", {"negative_slope": 0.3}), "Tanh"):
        assert repr(layers.act_layer(name)) == repr(get_act_layer(name))
    with pytest.raises(ValueError, match="no same padding"):
        layers.Convolution(3, 1, 1, kernel_size=4)


def test_sca_unet_attention_sits_where_the_paper_puts_it() -> None:
    model = tiny("sca_unet_3d").eval()
    x = torch.rand(1, 1, 16, 12, 8)
    with torch.no_grad(), record_attention(model) as maps:
        model(x)
    shapes = {name: tuple(m.shape) for name, m in maps.items()}
    # first encoder block: stride-2 output; bottleneck: one weight per channel; last decoder: full size
    assert sorted(shapes.values()) == sorted([(1, 1, 8, 6, 4), (1, 8, 1, 1, 1), (1, 1, 16, 12, 8)])
    spatial = [m for m in model.modules() if isinstance(m, SpatialAttention)]
    channel = [m for m in model.modules() if isinstance(m, ChannelAttention)]
    assert len(spatial) == 2 and len(channel) == 1
    assert spatial[0].conv.kernel_size == (7, 7, 7)


def test_sca_unet_authors_variant_computes_attention_from_block_input() -> None:
    model = tiny("sca_unet_3d_authors").eval()
    x = torch.rand(1, 1, 16, 16, 8)
    with torch.no_grad(), record_attention(model) as maps:
        model(x)
    shapes = sorted(tuple(m.shape) for m in maps.values())
    # encoder map from the full-size input, decoder map from the half-size stacked features
    assert shapes == sorted([(1, 1, 16, 16, 8), (1, 16, 1, 1, 1), (1, 1, 8, 8, 4)])
    channel = next(m for m in model.modules() if isinstance(m, ChannelAttention))
    assert isinstance(channel.mlp[1], torch.nn.GELU)


def test_sca_unet_attention_placement_is_configuration() -> None:
    none = tiny("sca_unet_3d", attention={})
    assert not any(isinstance(m, (SpatialAttention, ChannelAttention)) for m in none.modules())
    moved = tiny("sca_unet_3d", attention={"encoder1": "channel", "decoder1": "spatial"})
    assert sum(isinstance(m, ChannelAttention) for m in moved.modules()) == 1
    assert sum(isinstance(m, SpatialAttention) for m in moved.modules()) == 1
    assert moved(torch.rand(1, 1, 9, 9, 9)).shape == (1, 4, 9, 9, 9)
    narrow = tiny("sca_unet_3d", last_decoder_channels=3)
    assert narrow.model[-1].conv.in_channels == 3 and narrow.model[-1].conv.out_channels == 4
    assert narrow(torch.rand(1, 1, 9, 9, 9)).shape == (1, 4, 9, 9, 9)
    with pytest.raises(
        KidneysegError, match=r"attention at 'encoder5' needs at least 7 channels \(levels\), got 4"
    ):
        build_model("sca_unet_3d", attention={"encoder5": "spatial"})


def test_attention_gates_use_the_coarser_decoder_feature_before_upsampling() -> None:
    model = tiny("attention_unet_2d").eval()
    seen = []
    hooks = [g.register_forward_hook(lambda _m, inp, _out: seen.append(inp)) for g in model.gates]
    with torch.no_grad():
        model(torch.rand(1, 1, 32, 24))
    for h in hooks:
        h.remove()
    assert len(seen) == len(model.channels) - 1
    for skip, gating in seen:
        assert gating.shape[1] == model.channels[model.channels.index(skip.shape[1]) + 1]
        assert tuple(gating.shape[2:]) == tuple(s // 2 for s in skip.shape[2:])
    assert model.gates is not None and tiny("unet_2d").gates is None


def test_unknown_names_and_arguments_are_one_line_errors_with_suggestions() -> None:
    with pytest.raises(KidneysegError, match="did you mean 'unet_2d'"):
        build_model("unet2d")
    with pytest.raises(KidneysegError, match="did you mean 'channels'"):
        build_model("unet_2d", chanels=(4, 8))
    with pytest.raises(KidneysegError, match="pad_mode"):
        build_model("residual_unet_3d", pad_mode="reflect")


# Parameter counts of the default configurations. Conventions: a k-wide convolution from a to b channels
# with bias has k**d * a * b + b weights; MONAI's instance norm has no affine weights; batch norm has 2 per
# channel; PReLU has 1.


def conv(k: int, d: int, a: int, b: int, bias: bool = True) -> int:
    return k**d * a * b + (b if bias else 0)


def plain_unet_parameters(d: int, in_ch: int, out_ch: int, channels: tuple, attention: bool) -> int:
    """Classic U-Net (two 3×3 conv + batch norm per level, 2×2 up-convolutions) plus gates (Oktay et al.)."""
    total, widths = 0, (in_ch, *channels)
    for a, b in itertools.pairwise(widths):
        total += conv(3, d, a, b) + 2 * b + conv(3, d, b, b) + 2 * b
    for fine, coarse in itertools.pairwise(channels):
        total += conv(2, d, coarse, fine)  # up-convolution
        total += conv(3, d, 2 * fine, fine) + 2 * fine + conv(3, d, fine, fine) + 2 * fine
        if attention:
            inter = fine // 2
            total += conv(2, d, fine, inter, bias=False) + conv(1, d, coarse, inter) + conv(1, d, inter, 1)
    return total + conv(1, d, channels[0], out_ch)


def unet_count(*args, **kwargs) -> int:
    return count_parameters(UNet(*args, **kwargs))


EXPECTED_PARAMETERS = {
    "attention_unet_2d": lambda: plain_unet_parameters(2, 1, 3, (64, 128, 256, 512, 1024), True),
    "unet_2d": lambda: plain_unet_parameters(2, 1, 3, (64, 128, 256, 512, 1024), False),
    "attention_unet_3d": lambda: plain_unet_parameters(3, 1, 4, (16, 32, 64, 128, 256), True),
    "unet_3d": lambda: plain_unet_parameters(3, 1, 4, (16, 32, 64, 128, 256), False),
    # MONAI's own UNet with the same arguments: the registry adds nothing but padding.
    "residual_unet_3d": lambda: unet_count(3, 1, 4, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2),
    # MONAI UNet, whose last up-convolution 64 -> 4 (bare) becomes 64 -> 64 + instance norm + PReLU,
    # then the 1x1x1 head 64 -> 4, two 7x7x7 spatial convolutions 2 -> 1, channel MLP 128 -> 8 -> 128.
    "sca_unet_3d": lambda: (
        unet_count(3, 1, 4, (32, 64, 128, 128), (2, 2, 2))
        - conv(3, 3, 64, 4)
        + conv(3, 3, 64, 64)
        + 1
        + conv(1, 3, 64, 4)
        + 2 * conv(7, 3, 2, 1, bias=False)
        + 2 * 128 * 8
    ),
    # Same with 128 stacked features at the top, a bias-free head and a PReLU after it, MLP 512 -> 32 -> 512.
    # The authors' SpatialAttention also holds an unused 1x1x1 `conv_flat` (1 + 128 * 128 weights) that is
    # left out here: their state dict has 16385 more entries.
    "sca_unet_3d_authors": lambda: (
        unet_count(3, 1, 4, (64, 128, 256, 512, 512), (2, 2, 2, 2))
        - conv(3, 3, 128, 4)
        + conv(3, 3, 128, 128)
        + conv(1, 3, 128, 4, bias=False)
        + 1
        + 2 * conv(7, 3, 2, 1, bias=False)
        + 2 * 512 * 32
    ),
}
# The same counts as numbers, as printed by `kidneyseg models` (a change here changes the documentation).
PINNED = {
    "attention_unet_2d": 32_087_943,
    "attention_unet_3d": 5_756_952,
    "residual_unet_3d": 4_808_537,
    "sca_unet_3d": 1_387_463,
    "sca_unet_3d_authors": 21_493_285,
    "unet_2d": 31_042_499,
    "unet_3d": 5_647_908,
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_default_parameter_counts(name: str) -> None:
    info = model_info(name)
    assert info["parameters"] == EXPECTED_PARAMETERS[name]() == PINNED[name]


def test_model_info_on_meta_device_matches_a_real_build() -> None:
    info = model_info("sca_unet_3d")
    assert info["parameters"] == count_parameters(build_model("sca_unet_3d"))
    assert info["divisor"] == (8, 8, 8) and info["spatial_dims"] == 3 and info["out_channels"] == 4
    assert model_info("attention_unet_2d")["divisor"] == (16, 16)
    assert model_info("unet_2d", channels=(4, 8))["parameters"] == plain_unet_parameters(
        2, 1, 3, (4, 8), False
    )


def test_cli_lists_every_model_with_its_parameter_count() -> None:
    from typer.testing import CliRunner

    from kidneyseg.checkpoint import load_checkpoint
    from kidneyseg.cli import app
    from kidneyseg.predict.pretrained import BUNDLED, default_model

    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    table, bundled = result.output.split("\n\n")
    rows = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert sorted(rows) == list_models()
    for name, row in rows.items():
        assert f"{PINNED[name]:,}" in row
    state = load_checkpoint(default_model()).model_state
    assert f"{BUNDLED} = sca_unet_3d" in bundled and f"{sum(v.numel() for v in state.values()):,}" in bundled


def test_cli_shows_one_model_with_overrides_as_json() -> None:
    import json

    from typer.testing import CliRunner

    from kidneyseg.cli import app

    result = CliRunner().invoke(app, ["models", "unet_2d", "--set", "channels=[4, 8]", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["parameters"] == plain_unet_parameters(2, 1, 3, (4, 8), False)
    assert info["divisor"] == [2, 2] and info["arguments"]["channels"] == [4, 8]


def test_cli_unknown_model_is_one_line_exit_2() -> None:
    from typer.testing import CliRunner

    from kidneyseg.cli import app

    result = CliRunner().invoke(app, ["models", "sca_unet3d"])
    assert result.exit_code == 2
    assert "unknown model 'sca_unet3d'; did you mean 'sca_unet_3d'?" in result.output
    assert "Traceback" not in result.output


def test_cli_override_of_the_wrong_kind_is_one_line() -> None:
    from typer.testing import CliRunner

    from kidneyseg.cli import app

    result = CliRunner().invoke(app, ["models", "unet_3d", "--set", "channels=abc"])
    assert result.exit_code == 2
    assert (
        result.output
        == "error: model 'unet_3d': channels must be a list like (16, 32, 64, 128, 256), got 'abc'\n"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "channels=[8,16,32,1e9]",
            "channels must be a list of whole numbers like (32, 64, 128, 128), got [8, 16, 32, 1000000000.0]",
        ),
        (
            "channels=[8,16,32,1.5]",
            "channels must be a list of whole numbers like (32, 64, 128, 128), got [8, 16, 32, 1.5]",
        ),
        (
            "channels=[8]",  # the override that alone keeps the network from being built is named first
            "channels=[8]: attention at 'encoder0' needs at least 2 channels (levels), got 1: [8]",
        ),
        ("out_channels=0", "out_channels must be at least 2 (background and a class), got 0"),
    ],
    ids=["exponent", "fraction", "too-few-levels", "no-classes"],
)
def test_cli_channels_that_cannot_build_the_network_are_named(value, message) -> None:
    """(was: "not all arguments converted during string formatting" for 1e9, which YAML 1.1
    read as a string, now a float; "unknown attention position 'encoder0'" for one channel)"""
    from typer.testing import CliRunner

    from kidneyseg.cli import app

    result = CliRunner().invoke(app, ["models", "sca_unet_3d", "--set", value])
    assert result.exit_code == 2
    assert result.output == f"error: model 'sca_unet_3d': {message}\n"
