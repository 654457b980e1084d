"""Validation on whole cases by sliding window (SCA-UNet paper: every epoch, mean foreground Dice).

Each validation case is segmented on its preprocessed grid with MONAI's
`sliding_window_inference` (Gaussian blending); 2D networks run on (x, y, 1) windows, i.e.
slice by slice. The validation loss is the training loss on the stitched whole-case logits
(the attention U-Net paper reduces its learning rate on its plateau). Per-class Dice uses
MONAI's `compute_dice`; a class absent from a case's reference is skipped for that case.
Cases are split across ranks and the sums all-reduced, so every rank sees the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.metrics import compute_dice
from monai.networks.utils import one_hot
from torch import nn

from kidneyseg.labels import LabelMap
from kidneyseg.train.data import CaseRecord, load_full_case
from kidneyseg.train.distributed import DistContext, all_reduce_sum


def slice_predictor(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Wrap a 2D network so that it takes (B, C, x, y, 1) windows and returns (B, K, x, y, 1)."""

    def predict(window: torch.Tensor) -> torch.Tensor:
        return model(window[..., 0])[..., None]

    return predict


def window_size(patch_size: Sequence[int], two_d: bool) -> tuple[int, ...]:
    """The sliding-window size for a training patch/slice size."""
    return (*patch_size, 1) if two_d else tuple(patch_size)


@torch.no_grad()
def segment_case(
    model: nn.Module,
    image: torch.Tensor,
    roi: Sequence[int],
    two_d: bool,
    overlap: float,
    device: torch.device,
    amp: bool,
    sw_batch_size: int = 4,
) -> torch.Tensor:
    """Whole-case logits (1, K, x, y, z) for an image (1, 1, x, y, z) on the preprocessed grid."""
    predictor = slice_predictor(model) if two_d else model
    with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
        logits = sliding_window_inference(
            image.to(device),
            roi_size=tuple(roi),
            sw_batch_size=sw_batch_size * (8 if two_d else 1),
            predictor=predictor,
            overlap=overlap,
            mode="gaussian",
        )
    return logits.float()


def validate(
    model: nn.Module,
    records: Sequence[CaseRecord],
    lut: np.ndarray,
    label_map: LabelMap,
    loss_fn: nn.Module,
    roi: Sequence[int],
    two_d: bool,
    overlap: float,
    ctx: DistContext,
    amp: bool,
) -> dict[str, float]:
    """Validation loss and Dice on whole cases; identical on every rank.

    Returns:
        `val_loss`, `val_dice` (mean over foreground classes of the per-class mean Dice) and
        `val_dice_<class>` for every foreground class (NaN where no case holds that class).
    """
    k = label_map.num_classes
    sums = torch.zeros(2 * (k - 1) + 2, dtype=torch.float64)
    was_training = model.training
    model.eval()
    for record in records[ctx.rank :: ctx.world]:
        image, label = load_full_case(record, lut)
        logits = segment_case(model, image, roi, two_d, overlap, ctx.device, amp).cpu()
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
