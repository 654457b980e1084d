"""Post-processing of predicted label maps: keep the kidneys, drop stray islands.

A person has at most two kidneys, and every KiTS class (kidney, tumor, cyst) lies in or on a
kidney. So foreground islands that are not connected to the two largest connected components
of the union of all foreground classes (KiTS's "kidney and masses" region) are false positives,
typically on the spleen, liver or bowel that share kidney HU. nnU-Net applies the same idea
("remove all but the largest component" per region) when it improves validation Dice; whether
it does here is measured in docs/prediction.md. `keep_kidneys` also skips components that the CT
around them rules out as kidneys (`kidneyseg.predict.anatomy`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kidneyseg.evaluate.surface import bounding_box
from kidneyseg.predict.anatomy import MAX_CHECKED, AnatomyCheck
from kidneyseg.report.geometry import voxel_counts


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
