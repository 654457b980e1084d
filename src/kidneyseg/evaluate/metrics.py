"""Per-case segmentation metrics: the papers' per-label Dice, the KiTS21/23 hierarchical
evaluation classes (Dice and Surface Dice), the KiTS19 composite and lesion detection.

Conventions (documented in docs/evaluation.md):

- Per-label Dice (per foreground class of the label map the case is scored in: KITS23 kidney
  = 1, tumor = 2, cyst = 3; KITS19 kidney = 1, tumor = 2), as Gohil & Lad (SCA-UNet, KiTS21) and
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

from kidneyseg.evaluate.lesions import LesionMatch, match_lesions
from kidneyseg.evaluate.surface import (
    concatenate_points,
    foreground_boxes,
    surface_dice_from_points,
    surface_points,
)
from kidneyseg.labels import KITS23, KITS_REGIONS, LabelMap, lesion_classes


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


def lesion_figures(pred: np.ndarray, ref: np.ndarray, label_map: LabelMap) -> dict[str, float]:
    """A case's lesion figures (the bundled model's rules and `benchmarks/sim_to_real.py` score
    with them): the KiTS regions tumor and masses (1 when both maps lack them), and the Dice of
    every lesion class that is not one of those regions (cyst; NaN when both maps lack it)."""
    figures: dict[str, float] = {}
    seen: set[tuple[int, ...]] = set()
    for region in KITS_REGIONS[:0:-1]:  # tumor, then masses (KITS19: the same voxels, "tumor")
        values = region.values(label_map)
        if values and values not in seen:
            seen.add(values)
            figures[region.name] = kits_dice(np.isin(ref, values), np.isin(pred, values))
    for name, values in lesion_classes(label_map).items():
        if values not in seen:
            seen.add(values)
            figures[name] = dice(np.isin(ref, values), np.isin(pred, values))
    return figures


def _region_scores(
    parts: list[tuple[np.ndarray, np.ndarray]],
    origins: list[tuple[int, ...]],
    spacing: tuple[float, float, float],
    tolerance_mm: float,
) -> tuple[float, float]:
    """KiTS (Dice, Surface Dice) of one region given its (ref, pred) masks box by box."""
    ref_n = sum(int(r.sum()) for r, _ in parts)
    pred_n = sum(int(p.sum()) for _, p in parts)
    if ref_n == 0 and pred_n == 0:
        return 1.0, 1.0
    if ref_n == 0 or pred_n == 0:
        return 0.0, 0.0
    both = sum(int(np.count_nonzero(r & p)) for r, p in parts)
    ref = concatenate_points(
        [surface_points(r, spacing, o) for (r, _), o in zip(parts, origins, strict=True)]
    )
    pred = concatenate_points(
        [surface_points(p, spacing, o) for (_, p), o in zip(parts, origins, strict=True)]
    )
    return 2.0 * both / (ref_n + pred_n), surface_dice_from_points(ref, pred, spacing, tolerance_mm)


def _dice_from_parts(parts: list[tuple[np.ndarray, np.ndarray]]) -> float:
    total = sum(int(r.sum()) + int(p.sum()) for r, p in parts)
    if total == 0:
        return float("nan")
    return 2.0 * sum(int(np.count_nonzero(r & p)) for r, p in parts) / total


def case_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float, float], label_map: LabelMap = KITS23
) -> dict[str, float]:
    """Every metric of one case as a flat `{column: value}` mapping.

    The volume is cut into tight boxes around the foreground (`foreground_boxes`); every metric
    is computed box by box and added up, which gives the same values as on the whole volume.

    Args:
        pred: predicted label map (values of `label_map`) on the reference's grid.
        ref: reference label map (values of `label_map`).
        spacing: voxel size in mm, taken from the reference file.
        label_map: the classes both maps hold; the per-label classes, KiTS regions and lesion
            kinds are those it has (`kidneyseg.labels`).

    Returns:
        Columns `dice_<class>` per foreground class and `dice_mean` (mean over the defined
        classes), `hec_dice_<region>`, `hec_sd_<region>`, `hec_dice_mean`, `hec_sd_mean`,
        `kits19_kidney_dice`, `kits19_tumor_dice`, `kits19_composite`, and per lesion kind
        (`kidneyseg.labels.lesion_classes`) the counts of `LesionMatch.counts` as
        `<kind>_lesions_<key>`.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    spacing = tuple(float(s) for s in spacing)
    boxes = foreground_boxes((ref > 0) | (pred > 0))
    origins = [tuple(s.start for s in box) for box in boxes]
    labels = [(np.asarray(ref[box]), np.asarray(pred[box])) for box in boxes]

    def masks(values: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(np.isin(r, values), np.isin(p, values)) for r, p in labels]

    row: dict[str, float] = {}
    names = [c.name for c in label_map.foreground]
    for cls in label_map.foreground:
        row[f"dice_{cls.name}"] = _dice_from_parts(masks((cls.value,)))
    defined = [row[f"dice_{n}"] for n in names if not np.isnan(row[f"dice_{n}"])]
    row["dice_mean"] = float(np.mean(defined)) if defined else float("nan")
    regions = {r.name: r.values(label_map) for r in KITS_REGIONS}
    for region in KITS_REGIONS:
        d, sd = _region_scores(masks(regions[region.name]), origins, spacing, region.tolerance_mm)
        row[f"hec_dice_{region.name}"] = d
        row[f"hec_sd_{region.name}"] = sd
    row["hec_dice_mean"] = float(np.mean([row[f"hec_dice_{r.name}"] for r in KITS_REGIONS]))
    row["hec_sd_mean"] = float(np.mean([row[f"hec_sd_{r.name}"] for r in KITS_REGIONS]))
    for column, region in (("kits19_kidney_dice", "kidney_and_masses"), ("kits19_tumor_dice", "tumor")):
        value = _dice_from_parts(masks(regions[region]))
        row[column] = 1.0 if np.isnan(value) else value
    row["kits19_composite"] = (row["kits19_kidney_dice"] + row["kits19_tumor_dice"]) / 2.0
    for name, values in lesion_classes(label_map).items():
        matches = [match_lesions(np.isin(r, values), p, values, spacing) for r, p in labels]
        counts = (LesionMatch.concatenate(matches) if matches else _no_lesions()).counts(label_map.names)
        row.update({f"{name}_lesions_{k}": v for k, v in counts.items()})
    return row


def _no_lesions() -> LesionMatch:
    empty = np.zeros(0)
    return LesionMatch(empty, empty.astype(bool), empty, empty.astype(bool), empty.astype(np.int64))
