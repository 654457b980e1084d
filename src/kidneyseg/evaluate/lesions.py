"""Per-lesion detection: lesions as 3D connected components, matched one-to-one by overlap.

Rules (documented in docs/evaluation.md):

- A lesion is a 26-connected component of the class mask (tumor, cyst, or masses = either).
- A reference lesion and a predicted component are a candidate pair when their Dice exceeds
  `MIN_DICE` (0.1). Pairs are accepted greedily by decreasing Dice, each lesion and each
  component at most once. Accepted reference lesions are *detected*; predicted components
  left unmatched are *false positives*.
- A lesion's size is its volume-equivalent diameter `(6 V / π)^(1/3)`, binned as < 1, 1–4,
  4–7 and > 7 cm (the T1a / T1b / T2 cut-offs of the TNM staging that KiTS's
  `radiographic_size` follows; the equivalent diameter is at most the largest diameter).
- A missed reference lesion is *missed as* the predicted label value that covers most of its
  voxels (ties: the lower value): background, kidney, the other lesion class, or its own class
  when the predicted component covering it is matched to another lesion or overlaps it by a
  Dice of at most `MIN_DICE` (a component far larger than the lesion).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from kidneyseg.evaluate.surface import bounding_box

MIN_DICE = 0.1
SIZE_BINS_CM = (1.0, 4.0, 7.0)
BIN_NAMES = ("lt1cm", "1to4cm", "4to7cm", "gt7cm")
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class LesionMatch:
    """Lesions of one class in one case.

    Attributes:
        ref_diameter_cm: equivalent diameter of each reference lesion.
        ref_detected: whether each reference lesion was matched.
        pred_diameter_cm: equivalent diameter of each predicted component.
        pred_matched: whether each predicted component was matched (False = false positive).
        ref_majority: the predicted label value covering most of each reference lesion.
    """

    ref_diameter_cm: np.ndarray
    ref_detected: np.ndarray
    pred_diameter_cm: np.ndarray
    pred_matched: np.ndarray
    ref_majority: np.ndarray

    @classmethod
    def concatenate(cls, matches: list[LesionMatch]) -> LesionMatch:
        """The lesions of several disjoint boxes of one case, as one match."""
        return cls(*(np.concatenate([getattr(m, f) for m in matches]) for f in cls.__dataclass_fields__))

    def counts(self, names: tuple[str, ...]) -> dict[str, int]:
        """Reference lesions, detected ones and false positives, in total and per size bin
        (false positives binned by their own size), and the missed lesions by what they were
        missed as (`missed_as_<name>`, `names` naming the label values in order)."""
        missed_as = self.ref_majority[~self.ref_detected]
        out = {
            "ref": len(self.ref_detected),
            "detected": int(self.ref_detected.sum()),
            "fp": int((~self.pred_matched).sum()),
        }
        ref_bins = size_bin(self.ref_diameter_cm)
        fp_bins = size_bin(self.pred_diameter_cm[~self.pred_matched])
        for i, name in enumerate(BIN_NAMES):
            out[f"ref_{name}"] = int((ref_bins == i).sum())
            out[f"detected_{name}"] = int(self.ref_detected[ref_bins == i].sum())
            out[f"fp_{name}"] = int((fp_bins == i).sum())
        for value, name in enumerate(names):
            out[f"missed_as_{name}"] = int((missed_as == value).sum())
        return out


def size_bin(diameter_cm: np.ndarray) -> np.ndarray:
    """The index into `BIN_NAMES` of each diameter."""
    return np.searchsorted(np.asarray(SIZE_BINS_CM), diameter_cm, side="right")


def _diameters_cm(sizes_voxels: np.ndarray, voxel_mm3: float) -> np.ndarray:
    return np.cbrt(6.0 * sizes_voxels * voxel_mm3 / np.pi) / 10.0


def match_lesions(
    mask_ref: np.ndarray,
    pred: np.ndarray,
    values: tuple[int, ...],
    spacing: tuple[float, float, float],
    min_dice: float = MIN_DICE,
) -> LesionMatch:
    """Find and match the lesions of one class (see the module docstring for the rules).

    Args:
        mask_ref: the reference mask of the class.
        pred: the predicted label map, on the same grid.
        values: the label values of the class.
        spacing: voxel size in mm.
        min_dice: a pair must overlap with a Dice above this to count as a detection.
    """
    mask_pred = np.isin(pred, values)
    box = bounding_box(mask_ref | mask_pred)
    if box is not None:
        mask_ref, mask_pred, pred = mask_ref[box], mask_pred[box], pred[box]
    ref_labels, n_ref = ndimage.label(mask_ref, structure=_CONNECTIVITY)
    pred_labels, n_pred = ndimage.label(mask_pred, structure=_CONNECTIVITY)
    ref_sizes = np.bincount(ref_labels.ravel(), minlength=n_ref + 1)[1:]
    pred_sizes = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)[1:]
    ref_detected = np.zeros(n_ref, dtype=bool)
    pred_matched = np.zeros(n_pred, dtype=bool)
    both = (ref_labels > 0) & (pred_labels > 0)
    if both.any():
        pair = (ref_labels[both].astype(np.int64) - 1) * n_pred + (pred_labels[both] - 1)
        pair_ids, overlap = np.unique(pair, return_counts=True)
        r, p = np.divmod(pair_ids, n_pred)
        dice = 2.0 * overlap / (ref_sizes[r] + pred_sizes[p])
        for k in np.argsort(-dice, kind="stable"):
            if dice[k] <= min_dice:
                break
            if not ref_detected[r[k]] and not pred_matched[p[k]]:
                ref_detected[r[k]] = True
                pred_matched[p[k]] = True
    voxel_mm3 = float(np.prod(spacing))
    return LesionMatch(
        _diameters_cm(ref_sizes, voxel_mm3),
        ref_detected,
        _diameters_cm(pred_sizes, voxel_mm3),
        pred_matched,
        _majority(ref_labels, n_ref, pred),
    )


def _majority(ref_labels: np.ndarray, n_ref: int, pred: np.ndarray) -> np.ndarray:
    """The predicted value covering most voxels of each reference component (ties: the lower)."""
    inside = ref_labels > 0
    n_values = int(pred.max()) + 1 if pred.size else 1
    pair = (ref_labels[inside].astype(np.int64) - 1) * n_values + pred[inside]
    table = np.bincount(pair, minlength=n_ref * n_values).reshape(n_ref, n_values)
    return table.argmax(axis=1)
