"""The two papers' losses, both from MONAI, and the KiTS region loss.

- `dice_ce`: Dice + cross-entropy (MONAI `DiceCELoss`), the SCA-UNet loss (Gohil & Lad, KiTS21).
- `dice_squared`: the Sørensen–Dice loss with squared terms in the denominator, the V-Net form
  (Milletari et al. 2016) used by the attention-gate U-Net (Rathnayaka et al., KiTS19):
  MONAI `DiceLoss(squared_pred=True)`.
- `dice`: the plain soft Dice loss.
- `dice_ce_regions`: the Dice term over the KiTS evaluation regions (kidney + masses, masses,
  tumor; `kidneyseg.labels.KITS_REGIONS`) instead of the exclusive classes, each region's
  probability the sum of its classes' softmax probabilities, plus the cross-entropy over the
  classes. nnU-Net trains KiTS on the regions with one sigmoid each; summing a softmax keeps the
  network's output, and so everything that predicts with it, unchanged.

All take raw logits (softmax inside) and integer labels of shape (B, 1, ...) (one-hot inside).
"""

from __future__ import annotations

import torch
from torch import nn

from kidneyseg.config import TrainConfig
from kidneyseg.labels import KITS_REGIONS, LabelMap


def region_matrix(label_map: LabelMap) -> torch.Tensor:
    """(regions, classes): 1 where a class belongs to a KiTS region. Regions of the same classes
    count once (KiTS19: masses and tumor are both the tumor class)."""
    rows: list[tuple[int, ...]] = []
    for region in KITS_REGIONS:
        values = region.values(label_map)
        if values and values not in rows:
            rows.append(values)
    matrix = torch.zeros(len(rows), len(label_map.names))
    for r, values in enumerate(rows):
        matrix[r, list(values)] = 1.0
    return matrix


class RegionDiceCE(nn.Module):
    """Soft Dice over the KiTS regions (MONAI `DiceLoss` on the summed probabilities) plus
    `ce_weight` × cross-entropy over the exclusive classes."""

    def __init__(self, label_map: LabelMap, ce_weight: float) -> None:
        from monai.losses import DiceLoss

        super().__init__()
        self.register_buffer("regions", region_matrix(label_map))
        self.dice = DiceLoss()
        self.ce = nn.CrossEntropyLoss()
        self.ce_weight = ce_weight

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        classes = label[:, 0].long()
        onehot = nn.functional.one_hot(classes, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        probs = torch.softmax(logits, 1)
        regions = self.regions.to(device=logits.device, dtype=logits.dtype)  # the trainer never moves a loss
        in_region = torch.einsum("bc...,rc->br...", probs, regions)
        target = torch.einsum("bc...,rc->br...", onehot, regions)
        return self.dice(in_region, target) + self.ce_weight * self.ce(logits, classes)


def build_loss(train: TrainConfig, label_map: LabelMap) -> nn.Module:
    """The loss `train.loss` names: MONAI's DiceCELoss (`ce_weight` weighs its cross-entropy
    term, MONAI's `lambda_ce`) or DiceLoss, with squared denominators for "dice_squared", or the
    region loss over `label_map`'s KiTS regions."""
    from monai.losses import DiceCELoss, DiceLoss

    if train.loss == "dice_ce":
        return DiceCELoss(to_onehot_y=True, softmax=True, lambda_ce=train.ce_weight)
    if train.loss == "dice_ce_regions":
        return RegionDiceCE(label_map, train.ce_weight)
    return DiceLoss(to_onehot_y=True, softmax=True, squared_pred=train.loss == "dice_squared")
