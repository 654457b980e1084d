"""Registry-wide checks of the networks (tiny widths via overrides, odd input sizes)."""

from __future__ import annotations

import pytest
import torch

from kidneyseg.models import build_model, list_models

TINY = {
    "sca_unet_3d": {"channels": (4, 8, 8)},
    "sca_unet_3d_authors": {"channels": (4, 8, 16, 16)},
    "residual_unet_3d": {"channels": (4, 8, 8)},
    "attention_unet_2d": {"channels": (4, 8, 16)},
    "unet_2d": {"channels": (4, 8, 16)},
    "attention_unet_3d": {"channels": (4, 8, 16)},
    "unet_3d": {"channels": (4, 8, 16)},
}


@pytest.mark.parametrize("name", list_models())
def test_output_shape_for_odd_sizes(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, **TINY[name])
    size = (13, 11, 7) if model.spatial_dims == 3 else (37, 29)
    x = torch.rand(2, 1, *size)
    assert model(x).shape == (2, model.out_channels, *size)
