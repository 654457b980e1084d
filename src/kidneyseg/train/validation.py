"""Validation on whole cases by sliding window (SCA-UNet paper: every epoch, mean foreground Dice).

Each validation case is segmented on its preprocessed grid by prediction's inferer
(`kidneyseg.predict.sliding_window`: MONAI's window placement, the run's `inference.blend`,
2D networks slice by slice) with the run's `InferenceConfig` and validation's overrides
(`validation_inference`). The validation loss is the training loss on the stitched whole-case
logits (the attention U-Net paper reduces its learning rate on its plateau). Per-class Dice uses
MONAI's `compute_dice`; a class absent from a case's reference is skipped for that case.
Cases are split across ranks and the sums all-reduced, so every rank sees the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from monai.metrics import compute_dice
from monai.networks.utils import one_hot
from torch import nn

from kidneyseg.config import InferenceConfig, RunConfig
from kidneyseg.labels import LabelMap
from kidneyseg.predict.sliding_window import WindowPredictor, sliding_window_scores
from kidneyseg.train.data import CaseRecord, load_full_case
from kidneyseg.train.distributed import DistContext, all_reduce_sum

VAL_WINDOWS_PER_PASS = 4
"""Windows per forward pass in validation; a 2D network takes 8 times as many slices."""


def validation_inference(config: RunConfig) -> InferenceConfig:
    """The run's inference config with validation's explicit overrides: `train.val_overlap`
    (when set; the recipes validate with fewer windows than they predict with), no test-time
    mirroring, and its own batch."""
    two_d = config.data.sampling == "slice2d"
    overlap = config.inference.overlap if config.train.val_overlap is None else config.train.val_overlap
    return replace(
        config.inference,
        overlap=overlap,
        mirror_axes=(),
        sw_batch_size=VAL_WINDOWS_PER_PASS * (8 if two_d else 1),
    )


@torch.no_grad()
def segment_case(
    model: nn.Module, image: torch.Tensor, inference: InferenceConfig, device: torch.device, amp: bool
) -> torch.Tensor:
    """Whole-case logits (1, K, x, y, z) for an image (1, 1, x, y, z) on the preprocessed grid
    (float16 autocast with `amp` on CUDA, as in training)."""
    predictor = WindowPredictor(
        [model],
        spatial_dims=len(inference.roi_size),
        precision="float16" if amp and device.type == "cuda" else "float32",
    )
    return sliding_window_scores(image[0, 0].to(device), predictor, inference)[None]


def validate(
    model: nn.Module,
    records: Sequence[CaseRecord],
    lut: np.ndarray,
    label_map: LabelMap,
    loss_fn: nn.Module,
    inference: InferenceConfig,
    ctx: DistContext,
    amp: bool,
) -> dict[str, float]:
    """Validation loss and Dice on whole cases; identical on every rank.

    Returns:
        `val_loss`, `val_dice` (mean over foreground classes of the per-class mean Dice over the
        cases holding that class: the figure `best.pt` follows) and
        `val_dice_<class>` for every foreground class (NaN where no case holds that class).
    """
    k = label_map.num_classes
    sums = torch.zeros(2 * (k - 1) + 2, dtype=torch.float64)
    was_training = model.training
    model.eval()
    for record in records[ctx.rank :: ctx.world]:
        image, label = load_full_case(record, lut)
        logits = segment_case(model, image, inference, ctx.device, amp).cpu()
        sums[-2] += float(loss_fn(logits, label))
        sums[-1] += 1
        pred = one_hot(logits.argmax(dim=1, keepdim=True), num_classes=k)
        dice = compute_dice(pred, one_hot(label, num_classes=k), include_background=False, ignore_empty=True)[
            0
        ]
        for c, d in enumerate(dice.tolist()):
            if not math.isnan(d):
                sums[c] += d
                sums[k - 1 + c] += 1
    model.train(was_training)
    sums = all_reduce_sum(sums, ctx)
    out: dict[str, float] = {"val_loss": float(sums[-2] / max(sums[-1], 1))}
    per_class = []
    for c, cls in enumerate(label_map.foreground):
        n = float(sums[k - 1 + c])
        value = float(sums[c]) / n if n else float("nan")
        out[f"val_dice_{cls.name}"] = value
        per_class.append(value)
    finite = [v for v in per_class if not math.isnan(v)]
    out["val_dice"] = float(np.mean(finite)) if finite else float("nan")
    return out
