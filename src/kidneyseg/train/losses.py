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

from kidneyseg.config import LOSSES
from kidneyseg.errors import KidneysegError


def build_loss(name: str, ce_weight: float = 1.0) -> nn.Module:
    """The loss called `name` (one of `LOSSES`); `ce_weight` weighs the cross-entropy term of
    `dice_ce` (MONAI's `lambda_ce`)."""
    from monai.losses import DiceCELoss, DiceLoss

    if name == "dice_ce":
        if ce_weight < 0:
            raise KidneysegError(f"train.ce_weight must be >= 0, got {ce_weight}")
        return DiceCELoss(to_onehot_y=True, softmax=True, lambda_ce=ce_weight)
    if name == "dice_squared":
        return DiceLoss(to_onehot_y=True, softmax=True, squared_pred=True)
    if name == "dice":
        return DiceLoss(to_onehot_y=True, softmax=True)
    raise KidneysegError(f"unknown loss {name!r}; choose one of {LOSSES}")
