"""Networks of the two papers behind one registry: `build_model(name, **overrides)`.

Importing this package imports torch, not MONAI (`kidneyseg.models.layers` and `unet` rebuild
the layers it takes from MONAI).
"""

from kidneyseg.models.blocks import (
    Attended,
    AttentionGate,
    ChannelAttention,
    SpatialAttention,
    record_attention,
)
from kidneyseg.models.nets import AttentionGateUNet, PaddedUNet, SCAUNet, count_parameters
from kidneyseg.models.registry import build_model, list_models, model_info, register_model

__all__ = [
    "Attended",
    "AttentionGate",
    "AttentionGateUNet",
    "ChannelAttention",
    "PaddedUNet",
    "SCAUNet",
    "SpatialAttention",
    "build_model",
    "count_parameters",
    "list_models",
    "model_info",
    "record_attention",
    "register_model",
]
