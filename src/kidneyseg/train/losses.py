"""The two papers' losses, both from MONAI.

- `dice_ce`: Dice + cross-entropy (MONAI `DiceCELoss`), the SCA-UNet loss (Gohil & Lad, KiTS21).
- `dice_squared`: the Sørensen–Dice loss with squared terms in the denominator, the V-Net form
  (Milletari et al. 2016) used by the attention-gate U-Net (Rathnayaka et al., KiTS19):
  MONAI `DiceLoss(squared_pred=True)`.
- `dice`: the plain soft Dice loss.

All take raw logits (softmax inside) and integer labels of shape (B, 1, ...) (one-hot inside).
"""

from __future__ import annotations

from torch import nn

from kidneyseg.config import TrainConfig


def build_loss(train: TrainConfig) -> nn.Module:
    """The loss `train.loss` names: MONAI's DiceCELoss (`ce_weight` weighs its cross-entropy
    term, MONAI's `lambda_ce`) or DiceLoss, with squared denominators for "dice_squared"."""
    from monai.losses import DiceCELoss, DiceLoss

    if train.loss == "dice_ce":
        return DiceCELoss(to_onehot_y=True, softmax=True, lambda_ce=train.ce_weight)
    return DiceLoss(to_onehot_y=True, softmax=True, squared_pred=train.loss == "dice_squared")
