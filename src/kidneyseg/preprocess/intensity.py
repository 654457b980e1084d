"""Intensity steps of preprocessing: the body mask for the foreground crop and the HU window.

Following the SCA-UNet paper (Gohil & Lad, KiTS21), CT values are clipped to the soft-tissue
window [-80, 305] HU and rescaled linearly to [0, 1]; the field of view is first reduced to
the body (the largest connected region above a HU threshold), which removes air, and the
scanner table when it does not touch the patient.
"""

from __future__ import annotations

import numpy as np


def window(array: np.ndarray, hu_window: tuple[float, float]) -> np.ndarray:
    """Clip to `hu_window` and rescale to [0, 1] as float32 (in place when `array` is float32)."""
    low, high = float(hu_window[0]), float(hu_window[1])
    out = array if array.dtype == np.float32 else array.astype(np.float32)
    np.clip(out, low, high, out=out)
    out -= low
    out *= np.float32(1.0 / (high - low))
    return out


def body_box(mask: np.ndarray) -> tuple[tuple[int, int], ...] | None:
    """The bounding box `((lo, hi), ...)` (half-open) of the largest connected region of
    `mask`, or None when `mask` is empty."""
    from scipy import ndimage

    components, count = ndimage.label(mask)
    if count == 0:
        return None
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    largest = int(np.argmax(sizes))
    slices = ndimage.find_objects(components, max_label=largest)[largest - 1]
    return tuple((int(s.start), int(s.stop)) for s in slices)
