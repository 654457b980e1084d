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

This module gives exactly the same number, faster: the work is done only inside tight boxes
around the foreground, split wherever a whole plane is empty (a stray island far from the
kidneys costs its own small box, not the bounding box of everything); corner codes come from
three pairwise sums instead of a 2×2×2 correlation; and since only "distance ≤ tolerance"
matters, each surface point is looked up (binary search in the other surface's sorted flat
indices) at the few grid offsets inside the tolerance ellipsoid, instead of two distance
transforms over the whole bounding box and a Python-level sort. Offset lengths use the same
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
    box = [slice(None)] * mask.ndim
    for axis in range(mask.ndim):  # each axis searched within the extent found along the earlier ones
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask[tuple(box)].any(axis=other))
        if hits.size == 0:
            return None
        box[axis] = slice(int(hits[0]), int(hits[-1]) + 1)
    return tuple(box)


def _runs(occupied: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of True values."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], occupied.view(np.int8), [0]))))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def foreground_boxes(mask: np.ndarray) -> list[tuple[slice, ...]]:
    """Tight boxes covering every True voxel, split wherever a whole plane is empty.

    Boxes are separated by at least one empty plane, so no 2×2×2 neighbourhood (hence no
    surface element and no 26-connected component) spans two boxes: metrics can be computed
    box by box and added up. A prediction with islands far from the kidneys then costs the
    islands' boxes, not the bounding box of everything.
    """
    done = []
    stack = [tuple(slice(0, n) for n in mask.shape)]
    while stack:
        box = stack.pop()
        sub = mask[box]
        for axis in range(mask.ndim):
            occupied = sub.any(axis=tuple(a for a in range(mask.ndim) if a != axis))
            runs = _runs(occupied)
            if runs != [(0, sub.shape[axis])]:
                start = box[axis].start
                for a, b in runs:
                    stack.append((*box[:axis], slice(start + a, start + b), *box[axis + 1 :]))
                break
        else:
            done.append(box)
    return sorted(done, key=lambda b: tuple(s.start for s in b))


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
    reach = [int(np.floor(tolerance_mm / s)) + 1 for s in spacing_arr]  # + 1: safe from rounding
    grid = np.array(list(itertools.product(*(range(-r, r + 1) for r in reach))), dtype=np.int64)
    lengths = _offset_lengths(grid, spacing_arr)
    keep = lengths <= tolerance_mm
    return grid[keep][np.argsort(lengths[keep], kind="stable")]


def surface_points(
    mask: np.ndarray, spacing: tuple[float, float, float], origin: tuple[int, ...] = (0, 0, 0)
) -> tuple[np.ndarray, np.ndarray]:
    """The surface points of a boolean mask and their surfel areas.

    Args:
        mask: a 3D boolean mask (typically a box cut out of a larger volume).
        spacing: voxel size in mm.
        origin: index of `mask[0, 0, 0]` in the larger volume; points are returned as corner
            indices of that volume (corner i lies between voxels i-1 and i).

    Returns:
        (points, areas): an (N, 3) int64 array and the N surfel areas in mm².
    """
    codes = corner_codes(mask)
    border = (codes != 0) & (codes != 255)
    points = np.argwhere(border) + np.asarray(origin, dtype=np.int64)
    return points, surfel_areas(tuple(float(s) for s in spacing))[codes[border]]


def _within_by_offsets(points: np.ndarray, other: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    # Flat indices in a grid padded by the offsets' reach, so that no offset wraps around an axis;
    # membership of each shifted point among `other`'s sorted indices by binary search.
    reach = np.abs(offsets).max(axis=0)
    low = np.minimum(points.min(axis=0), other.min(axis=0)) - reach
    dims = np.maximum(points.max(axis=0), other.max(axis=0)) + reach - low + 1
    strides = np.array([dims[1] * dims[2], dims[2], 1], dtype=np.int64)
    keys = np.sort((other - low) @ strides)
    base = (points - low) @ strides
    found = np.zeros(len(points), dtype=bool)
    pending = np.arange(len(points))
    for offset in offsets:
        candidates = base[pending] + offset @ strides
        position = np.minimum(np.searchsorted(keys, candidates), len(keys) - 1)
        hit = keys[position] == candidates
        found[pending[hit]] = True
        pending = pending[~hit]
        if pending.size == 0:
            break
    return found


def _within_by_distance_transform(
    points: np.ndarray, other: np.ndarray, spacing: tuple[float, float, float], tolerance_mm: float
) -> np.ndarray:
    # Exact as long as the grid holds every surface point of `other`.
    low = np.minimum(points.min(axis=0), other.min(axis=0))
    high = np.maximum(points.max(axis=0), other.max(axis=0))
    grid = np.ones(high - low + 1, dtype=bool)
    grid[tuple((other - low).T)] = False
    distance = ndimage.distance_transform_edt(grid, sampling=spacing)
    return distance[tuple((points - low).T)] <= tolerance_mm


def surface_dice_from_points(
    ref: tuple[np.ndarray, np.ndarray],
    pred: tuple[np.ndarray, np.ndarray],
    spacing: tuple[float, float, float],
    tolerance_mm: float,
) -> float:
    """Surface Dice from the (points, areas) of both surfaces (see `surface_points`); 0 when
    one surface is empty, NaN when both are."""
    (points_ref, area_ref), (points_pred, area_pred) = ref, pred
    total = area_ref.sum() + area_pred.sum()
    if len(points_ref) == 0 and len(points_pred) == 0:
        return float("nan")
    if len(points_ref) == 0 or len(points_pred) == 0:
        return 0.0
    spacing = tuple(float(s) for s in spacing)
    offsets = tolerance_offsets(spacing, tolerance_mm)
    if len(offsets) <= MAX_OFFSETS:
        close_ref = _within_by_offsets(points_ref, points_pred, offsets)
        close_pred = _within_by_offsets(points_pred, points_ref, offsets)
    else:
        close_ref = _within_by_distance_transform(points_ref, points_pred, spacing, tolerance_mm)
        close_pred = _within_by_distance_transform(points_pred, points_ref, spacing, tolerance_mm)
    return float((area_ref[close_ref].sum() + area_pred[close_pred].sum()) / total)


def concatenate_points(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Join the (points, areas) of several boxes of one mask."""
    if not parts:
        return np.zeros((0, 3), np.int64), np.zeros(0)
    return np.concatenate([p for p, _ in parts]), np.concatenate([a for _, a in parts])


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
    boxes = foreground_boxes(mask_ref | mask_pred)
    origins = [tuple(s.start for s in box) for box in boxes]
    ref = concatenate_points(
        [surface_points(mask_ref[b], spacing, o) for b, o in zip(boxes, origins, strict=True)]
    )
    pred = concatenate_points(
        [surface_points(mask_pred[b], spacing, o) for b, o in zip(boxes, origins, strict=True)]
    )
    return surface_dice_from_points(ref, pred, spacing, tolerance_mm)
