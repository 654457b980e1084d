"""Surface Dice at a tolerance: the official KiTS21/23 algorithm, computed fast.

The KiTS21/23 challenges score Surface Dice (the "normalised surface distance" of Nikolov et
al., *Clinically applicable segmentation of head and neck anatomy for radiotherapy*,
arXiv:1809.04430) with DeepMind's `surface-distance` package. Its algorithm:

1. Surface points lie on the grid of voxel *corners* (one more per axis than voxels). Each
   corner gets an 8-bit code from the 2×2×2 voxels around it; corners whose code is neither
   0 (all outside) nor 255 (all inside) are surface points.
2. Each surface point is weighted by the area in mm² of its marching-cubes surface elements
   ("surfels") at the voxel spacing, read from a 256-entry table indexed by the code.
3. The distance from every surface point of one mask to the nearest surface point of the
   other is an exact Euclidean distance transform with `sampling=spacing`.
4. Surface Dice = (area of A's surfels within the tolerance of B + area of B's surfels within
   the tolerance of A) / (area of A + area of B).

This module gives exactly the same number, faster: the masks are cropped to their union's
bounding box; corner codes come from three pairwise sums instead of a 2×2×2 correlation; and
since only "distance ≤ tolerance" matters, each surface point is tested against the few grid
offsets inside the tolerance ellipsoid (gathers into the other surface), instead of two
distance transforms over the whole box and a Python-level sort. Offset lengths use the same
floating-point expression as SciPy's distance transform so that points exactly at the
tolerance are decided identically. The surfel-area table is the reference's own
(`surface_distance.lookup_tables`): it is a hand-made marching-cubes table whose entries for
ambiguous configurations do not follow from first principles (we checked: scikit-image's
marching cubes gives other areas for 44 of the 256 codes), so reproducing the official
numbers means using that table.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
from scipy import ndimage

MAX_OFFSETS = 2000
"""Above this many grid offsets inside the tolerance ellipsoid, use a distance transform."""


@functools.lru_cache(maxsize=64)
def surfel_areas(spacing: tuple[float, float, float]) -> np.ndarray:
    """The surfel area in mm² of each of the 256 corner codes at `spacing` (mm along i, j, k)."""
    from surface_distance.lookup_tables import create_table_neighbour_code_to_surface_area

    table = create_table_neighbour_code_to_surface_area(tuple(float(s) for s in spacing))
    table.setflags(write=False)
    return table


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box (slices) holding every True voxel of `mask`, or None if it is empty."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def corner_codes(mask: np.ndarray) -> np.ndarray:
    """The 8-bit neighbourhood code of every voxel corner of a 3D boolean mask.

    Corner (i, j, k) sits between voxels i-1 and i (and likewise on the other axes); voxels
    outside the array count as background. Voxel (i-1+a, j-1+b, k-1+d) contributes bit
    2**(7 - (4a + 2b + d)), the bit order of the reference implementation.
    """
    padded = np.pad(mask.astype(np.uint8), 1)
    pairs = padded[:, :, :-1] * np.uint8(2) + padded[:, :, 1:]
    quads = pairs[:, :-1] * np.uint8(4) + pairs[:, 1:]
    return quads[:-1] * np.uint8(16) + quads[1:]


def _offset_lengths(offsets: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    # The same float64 operations, in the same order, as scipy.ndimage.distance_transform_edt.
    d = offsets.astype(np.float64) * spacing
    d = d * d
    return np.sqrt(d[:, 0] + d[:, 1] + d[:, 2])


def tolerance_offsets(spacing: tuple[float, float, float], tolerance_mm: float) -> np.ndarray:
    """All integer grid offsets whose length in mm is at most `tolerance_mm`, shortest first."""
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    reach = [int(np.floor(tolerance_mm / s)) for s in spacing_arr]
    grid = np.array(list(itertools.product(*(range(-r, r + 1) for r in reach))), dtype=np.int64)
    lengths = _offset_lengths(grid, spacing_arr)
    keep = lengths <= tolerance_mm
    return grid[keep][np.argsort(lengths[keep], kind="stable")]


def _within_by_offsets(points: np.ndarray, other: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """For each point (rows of indices into `other`), is some `other` voxel at one of `offsets`?"""
    margin = np.abs(offsets).max(axis=0) if offsets.size else np.zeros(3, np.int64)
    padded = np.pad(other, [(int(m), int(m)) for m in margin])
    strides = np.array([padded.shape[1] * padded.shape[2], padded.shape[2], 1], dtype=np.int64)
    flat = padded.ravel()
    base = (points + margin) @ strides
    found = np.zeros(len(points), dtype=bool)
    pending = np.arange(len(points))
    for offset in offsets:
        hit = flat[base[pending] + offset @ strides]
        found[pending[hit]] = True
        pending = pending[~hit]
        if pending.size == 0:
            break
    return found


def _within_by_distance_transform(
    points: np.ndarray, other: np.ndarray, spacing: tuple[float, float, float], tolerance_mm: float
) -> np.ndarray:
    distance = ndimage.distance_transform_edt(~other, sampling=spacing)
    return distance[tuple(points.T)] <= tolerance_mm


def surface_dice(
    mask_ref: np.ndarray, mask_pred: np.ndarray, spacing: tuple[float, float, float], tolerance_mm: float
) -> float:
    """Surface Dice of two 3D boolean masks at `tolerance_mm`, equal to `surface-distance`'s
    `compute_surface_dice_at_tolerance(compute_surface_distances(ref, pred, spacing), tol)`.

    Args:
        mask_ref: the reference mask.
        mask_pred: the predicted mask, on the same grid.
        spacing: voxel size in mm along the array axes.
        tolerance_mm: the largest surface-to-surface distance counted as agreement.

    Returns:
        The Surface Dice in [0, 1]; 0 when exactly one mask is empty and NaN when both are
        (the KiTS convention of scoring those cases 1 and 0 is applied by the caller).
    """
    if mask_ref.shape != mask_pred.shape or mask_ref.ndim != 3:
        raise ValueError(f"need two 3D masks of one shape, got {mask_ref.shape} and {mask_pred.shape}")
    box = bounding_box(mask_ref | mask_pred)
    if box is None:
        return float("nan")
    spacing = tuple(float(s) for s in spacing)
    areas = surfel_areas(spacing)
    codes_ref = corner_codes(mask_ref[box])
    codes_pred = corner_codes(mask_pred[box])
    border_ref = (codes_ref != 0) & (codes_ref != 255)
    border_pred = (codes_pred != 0) & (codes_pred != 255)
    points_ref = np.argwhere(border_ref)
    points_pred = np.argwhere(border_pred)
    area_ref = areas[codes_ref[border_ref]]
    area_pred = areas[codes_pred[border_pred]]
    total = area_ref.sum() + area_pred.sum()
    if points_ref.size == 0 or points_pred.size == 0:
        return 0.0
    offsets = tolerance_offsets(spacing, tolerance_mm)
    if len(offsets) <= MAX_OFFSETS:
        close_ref = _within_by_offsets(points_ref, border_pred, offsets)
        close_pred = _within_by_offsets(points_pred, border_ref, offsets)
    else:
        close_ref = _within_by_distance_transform(points_ref, border_pred, spacing, tolerance_mm)
        close_pred = _within_by_distance_transform(points_pred, border_ref, spacing, tolerance_mm)
    return float((area_ref[close_ref].sum() + area_pred[close_pred].sum()) / total)
