"""Post-processing of predicted label maps: keep the kidneys, drop stray islands.

A person has at most two kidneys, and every KiTS class (kidney, tumor, cyst) lies in or on a
kidney. So foreground islands that are not connected to the two largest connected components
of the union of all foreground classes (KiTS's "kidney and masses" region) are false positives,
typically on the spleen, liver or bowel that share kidney HU. nnU-Net applies the same idea
("remove all but the largest component" per region) when it improves validation Dice; whether
it does here is measured in docs/prediction.md. `keep_kidneys` also skips components that the CT
around them rules out as kidneys (`kidneyseg.predict.anatomy`).

`foreground_voxels` and `kept_confidence` summarise how sure the network was of the foreground
that post-processing kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kidneyseg.evaluate.surface import bounding_box
from kidneyseg.predict.anatomy import MAX_CHECKED, AnatomyCheck
from kidneyseg.report.geometry import to_world, voxel_counts

if TYPE_CHECKING:
    import torch


def keep_largest_components(labels: np.ndarray, keep: int = 2) -> np.ndarray:
    """Zero every foreground voxel outside the `keep` largest 26-connected foreground components.

    Args:
        labels: integer label map (0 = background), any shape with 3 dimensions.
        keep: how many components to keep (2: the two kidneys).

    Returns:
        A new label map; classes inside kept components are unchanged.
    """
    return keep_kidneys(labels, keep)[0]


def keep_kidneys(
    labels: np.ndarray, keep: int = 2, check: AnatomyCheck | None = None
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Keep the `keep` largest 26-connected foreground components that `check` does not rule out.

    Args:
        labels: integer label map (0 = background), any shape with 3 dimensions.
        keep: how many components to keep (2: the two kidneys).
        check: the CT-based checks of `kidneyseg.predict.anatomy`, or None for size alone.

    Returns:
        A new label map (classes inside kept components unchanged), and for each component a
        check ruled out: its voxel count and volume (mL), bounding box (voxel indices) and the reason.
    """
    from scipy import ndimage

    foreground = labels > 0
    if not foreground.any():
        return labels.copy(), []
    # Work inside the bounding box of the foreground: on a full CT this is a small part.
    box = ndimage.find_objects(foreground.astype(np.uint8))[0]
    components, count = ndimage.label(foreground[box], structure=np.ones((3, 3, 3), dtype=bool))
    out = labels.copy()
    if count <= keep and check is None:
        return out, []
    # Counted slab by slab, and dropped through a per-component table rather than np.isin: both
    # np.bincount and np.isin make an 8-byte copy of every voxel's component number, which was
    # the peak memory of a whole prediction on long scans (docs/prediction.md).
    sizes = voxel_counts(components, count)
    sizes[0] = 0
    drop = np.ones(count + 1, dtype=bool)
    drop[0] = False
    order = [int(i) for i in np.argsort(sizes)[::-1] if sizes[i]]
    ruled_out: list[dict[str, Any]] = []
    if check is None:
        drop[order[:keep]] = False
    else:
        kept = 0
        for i in [i for i in order if sizes[i] >= check.min_voxels][:MAX_CHECKED]:
            mask = components == i  # its box from this mask: find_objects would scan every label
            place = bounding_box(mask)
            whole = tuple(slice(p.start + b.start, p.stop + b.start) for p, b in zip(place, box, strict=True))
            reason = check.reason(mask[place], labels[whole], whole)
            if reason is None:
                drop[i] = False
                kept += 1
                if kept == keep:
                    break
            else:
                ruled_out.append(
                    {
                        "voxels": int(sizes[i]),
                        "volume_ml": round(int(sizes[i]) * check.voxel_ml, 2),
                        "box": [[s.start, s.stop] for s in whole],
                        "reason": reason,
                    }
                )
    np.copyto(out[box], 0, where=drop[components])
    return out, ruled_out


def foreground_voxels(
    parts: Sequence[tuple[Sequence[int], torch.Tensor]], probabilities: bool, chunk: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """The network-grid voxels whose winning class is not background, and that class's probability.

    Args:
        parts: `(start, scores)` per region predicted (the whole image, or the kidney regions):
            `scores` is `[C, X, ...]` logits (one network) or averaged probabilities (an
            ensemble) whose first voxel sits at index `start` of the network grid.
        probabilities: whether the scores are probabilities already.
        chunk: slices along X per step (bounds the temporary memory).

    Returns:
        uint16 `[N, 3]` network-grid indices and float32 `[N]` winning probabilities.
    """
    import torch

    points, tops = [np.zeros((0, 3), np.uint16)], [np.zeros(0, np.float32)]
    for (origin, scores), x in ((part, x) for part in parts for x in range(0, part[1].shape[1], chunk)):
        block = scores[:, x : x + chunk].float()
        top, winner = (block if probabilities else torch.softmax(block, dim=0)).max(dim=0)
        where = np.argwhere(winner.numpy() > 0)
        tops.append(top.numpy()[tuple(where.T)])
        where[:, 0] += x
        points.append((where + np.asarray(origin)).astype(np.uint16))
    return np.concatenate(points), np.concatenate(tops)


def kept_confidence(
    points: np.ndarray, top: np.ndarray, points_affine: np.ndarray, labels: np.ndarray, affine: np.ndarray
) -> float | None:
    """Mean winning probability over the network-grid `points` still labelled in the output.

    A point counts when the voxel of `labels` (on the grid `affine`) nearest to its centre
    (`points_affine`) holds any foreground class, so voxels that post-processing dropped do not
    count. None when no point does: a confidence needs something labelled.
    """
    to_labels = np.linalg.inv(affine) @ np.asarray(points_affine, dtype=float)
    kept = np.zeros(len(points), bool)
    for start in range(0, len(points), 1 << 20):
        block = to_world(points[start : start + (1 << 20)].astype(float), to_labels)  # labels' indices
        index = np.rint(block).astype(np.intp)
        inside = np.all((index >= 0) & (index < labels.shape), axis=1)
        kept[start : start + len(block)][inside] = labels[tuple(index[inside].T)] > 0
    return float(top[kept].mean()) if kept.any() else None
