"""Post-processing of predicted label maps: keep the kidneys, drop stray islands.

A person has at most two kidneys, and every KiTS class (kidney, tumor, cyst) lies in or on a
kidney. So foreground islands that are not connected to the two largest connected components
of the union of all foreground classes (KiTS's "kidney and masses" region) are false positives,
typically on the spleen, liver or bowel that share kidney HU. nnU-Net applies the same idea
("remove all but the largest component" per region) when it improves validation Dice; whether
it does here is measured in docs/prediction.md.
"""

from __future__ import annotations

import numpy as np


def keep_largest_components(labels: np.ndarray, keep: int = 2) -> np.ndarray:
    """Zero every foreground voxel outside the `keep` largest 26-connected foreground components.

    Args:
        labels: integer label map (0 = background), any shape with 3 dimensions.
        keep: how many components to keep (2: the two kidneys).

    Returns:
        A new label map; classes inside kept components are unchanged.
    """
    from scipy import ndimage

    foreground = labels > 0
    if not foreground.any():
        return labels.copy()
    # Work inside the bounding box of the foreground: on a full CT this is a small part.
    box = ndimage.find_objects(foreground.astype(np.uint8))[0]
    components, count = ndimage.label(foreground[box], structure=np.ones((3, 3, 3), dtype=bool))
    out = labels.copy()
    if count <= keep:
        return out
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    kept = np.argsort(sizes)[::-1][:keep]
    drop = ~np.isin(components, kept) & (components > 0)
    out[box][drop] = 0
    return out
