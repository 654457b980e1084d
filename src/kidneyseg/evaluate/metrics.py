"""Per-case segmentation metrics: the papers' per-label Dice, the KiTS21/23 hierarchical
evaluation classes (Dice and Surface Dice), the KiTS19 composite and lesion detection.

Conventions (documented in docs/evaluation.md):

- Per-label Dice (kidney = 1, tumor = 2, cyst = 3), as Gohil & Lad (SCA-UNet, KiTS21) and
  Rathnayaka et al. (attention U-Net, KiTS19) report them: when the class is absent from
  both prediction and reference the Dice is undefined (NaN) and the case is left out of that
  class's mean (as nnU-Net does); absent from one side only scores 0.
- KiTS21/23 HECs (`kidneyseg.labels.KITS_REGIONS`): Dice and Surface Dice at the official
  tolerances, scored 1 when both masks are empty and 0 when exactly one is, as the official
  KiTS evaluation does.
- KiTS19 composite: kidney Dice on labels > 0, tumor Dice on label 2, and their mean (the
  KiTS19 leaderboard score). On labels 0-3 these are the kidney+masses and tumor HEC Dice.
"""

from __future__ import annotations

import numpy as np

from kidneyseg.evaluate.lesions import match_lesions
from kidneyseg.evaluate.surface import bounding_box, surface_dice
from kidneyseg.labels import KITS23, KITS_REGIONS

CLASSES = tuple(c.name for c in KITS23.foreground)
"""The per-label classes: kidney, tumor, cyst."""
LESION_CLASSES = {"tumor": (2,), "cyst": (3,), "masses": (2, 3)}


def dice(mask_ref: np.ndarray, mask_pred: np.ndarray) -> float:
    """Sørensen–Dice coefficient; NaN when both masks are empty."""
    total = int(mask_ref.sum()) + int(mask_pred.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.count_nonzero(mask_ref & mask_pred)) / total


def kits_dice(mask_ref: np.ndarray, mask_pred: np.ndarray) -> float:
    """Dice with the KiTS rule for empty masks: 1 when both are empty (0 when one is)."""
    value = dice(mask_ref, mask_pred)
    return 1.0 if np.isnan(value) else value


def kits_region_scores(
    mask_ref: np.ndarray, mask_pred: np.ndarray, spacing: tuple[float, float, float], tolerance_mm: float
) -> tuple[float, float]:
    """(Dice, Surface Dice) of one KiTS HEC with the official empty-mask rules."""
    ref_empty = not mask_ref.any()
    pred_empty = not mask_pred.any()
    if ref_empty and pred_empty:
        return 1.0, 1.0
    if ref_empty or pred_empty:
        return 0.0, 0.0
    return kits_dice(mask_ref, mask_pred), surface_dice(mask_ref, mask_pred, spacing, tolerance_mm)


def case_metrics(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, float]:
    """Every metric of one case as a flat `{column: value}` mapping.

    Args:
        pred: predicted label map (values 0-3) on the reference's grid.
        ref: reference label map (values 0-3).
        spacing: voxel size in mm, taken from the reference file.

    Returns:
        Columns `dice_<class>` and `dice_mean` (mean over the defined classes),
        `hec_dice_<region>`, `hec_sd_<region>`, `hec_dice_mean`, `hec_sd_mean`,
        `kits19_kidney_dice`, `kits19_tumor_dice`, `kits19_composite`, and per lesion class
        (tumor, cyst, masses) the counts of `LesionMatch.counts` as `<class>_lesions_<key>`.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    box = bounding_box((ref > 0) | (pred > 0))
    if box is None:
        box = tuple(slice(0, 0) for _ in range(3))
    pred = np.asarray(pred[box])
    ref = np.asarray(ref[box])
    row: dict[str, float] = {}
    for value, name in enumerate(CLASSES, start=1):
        row[f"dice_{name}"] = dice(ref == value, pred == value)
    defined = [row[f"dice_{n}"] for n in CLASSES if not np.isnan(row[f"dice_{n}"])]
    row["dice_mean"] = float(np.mean(defined)) if defined else float("nan")
    for region in KITS_REGIONS:
        d, sd = kits_region_scores(
            np.isin(ref, region.values), np.isin(pred, region.values), spacing, region.tolerance_mm
        )
        row[f"hec_dice_{region.name}"] = d
        row[f"hec_sd_{region.name}"] = sd
    row["hec_dice_mean"] = float(np.mean([row[f"hec_dice_{r.name}"] for r in KITS_REGIONS]))
    row["hec_sd_mean"] = float(np.mean([row[f"hec_sd_{r.name}"] for r in KITS_REGIONS]))
    row["kits19_kidney_dice"] = kits_dice(ref > 0, pred > 0)
    row["kits19_tumor_dice"] = kits_dice(ref == 2, pred == 2)
    row["kits19_composite"] = (row["kits19_kidney_dice"] + row["kits19_tumor_dice"]) / 2.0
    for name, values in LESION_CLASSES.items():
        counts = match_lesions(np.isin(ref, values), np.isin(pred, values), spacing).counts()
        row.update({f"{name}_lesions_{k}": v for k, v in counts.items()})
    return row
