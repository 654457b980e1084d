"""Physical shape measurements of binary masks on any voxel grid (anisotropic, permuted, oblique).

All distances are computed in world millimetres from the voxel-to-RAS+ affine. A mask's
outline is represented by the midpoints of its boundary voxel faces (the vertices that
marching squares/cubes would put at the 0.5 iso-level, as in pyradiomics' shape features),
so diameters are measured edge to edge, the way a radiologist places calipers. On random
discretised ellipses this convention stays within [-0.24, +0.92] voxel of the true diameter.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np
from scipy import ndimage

from kidneyseg.evaluate.surface import bounding_box as tight_box
from kidneyseg.io.volume import affine_spacing

FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)
"""26-connectivity: voxels touching by a face, an edge or a corner belong to one component."""


def slice_axis(affine: np.ndarray, world_axis: int = 2) -> int:
    """The array axis closest to world axis `world_axis` (default z, cranio-caudal).

    Slices across the z-closest axis are the axial images a radiologist reads: array axis 2
    for RAS/LPS volumes, axis 0 for the KiTS19 NIfTI files.
    """
    columns = np.asarray(affine, dtype=np.float64)[:3, :3]
    return int(np.argmax(np.abs(columns[world_axis]) / np.linalg.norm(columns, axis=0)))


def craniocaudal_mm(slices: tuple[int, int], affine: np.ndarray) -> float:
    """The scan's length (mm) across its axial slices `slices` (first, one past the last; from
    `imaged_slices`): their number times their spacing."""
    return round((slices[1] - slices[0]) * affine_spacing(affine)[slice_axis(affine)], 1)


def to_world(index_points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Map (n, 3) voxel index coordinates to (n, 3) world RAS+ mm."""
    affine = np.asarray(affine, dtype=np.float64)
    return index_points @ affine[:3, :3].T + affine[:3, 3]


def grid_map(row: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """One row of an affine applied to every index of a grid of `shape`: `row[:3] @ index + row[3]`
    (e.g. `affine[0]`: each voxel's world x), float64."""
    grids = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij", sparse=True)
    return np.broadcast_to(sum(row[a] * grids[a] for a in range(3)) + row[3], shape)


def box_corners(box: Sequence[tuple[float, float]]) -> np.ndarray:
    """The 2^d corners of the box `((low, high), ...)`, as a (2^d, d) float array."""
    return np.array(list(itertools.product(*box)), dtype=float)


SLAB = 16
"""Slices (along array axis 0) handled at a time where a whole-volume temporary would cost
several bytes a voxel: the memory of measuring a long scan stays that of its masks."""


def _face_slabs(mask: np.ndarray, axes: Sequence[int]) -> Iterator[tuple[int, int, int, np.ndarray]]:
    """The mask's boundary faces normal to `axes`, `SLAB` slices along axis 0 at a time: per part
    and direction, `(first slice, axis, step, voxels)` with `voxels` marking those (in the part)
    whose neighbour `step` (+1 or -1) along `axis` lies outside the mask."""
    padded = np.pad(mask.astype(bool, copy=False), 1)
    inner = (slice(1, -1),) * 3
    for start in range(0, mask.shape[0], SLAB):
        block = padded[start : start + SLAB + 2]
        for axis in axes:
            for step in (1, -1):
                shifted = list(inner)
                shifted[axis] = slice(1 + step, block.shape[axis] - 1 + step)
                yield start, axis, step, block[inner] & ~block[tuple(shifted)]


def face_midpoint_slabs(mask: np.ndarray, axes: tuple[int, ...] = (0, 1, 2)) -> Iterator[np.ndarray]:
    """Index coordinates of the midpoints of the mask's boundary faces normal to `axes`, in
    non-empty parts of `SLAB` slices along axis 0.

    A face lies between a voxel inside the mask and its neighbour outside it along one of
    `axes`; with `axes` the two in-plane axes of a slice these are the in-plane outline
    points of every slice.
    """
    for start, axis, step, faces in _face_slabs(mask, axes):
        points = np.argwhere(faces).astype(np.float64)
        if len(points):
            points[:, 0] += start
            points[:, axis] += 0.5 * step
            yield points


def face_count(mask: np.ndarray) -> int:
    """How many boundary faces the mask has (the points `face_midpoint_slabs` gives), without
    the memory of their coordinates."""
    return sum(int(np.count_nonzero(faces)) for *_, faces in _face_slabs(mask, (0, 1, 2)))


def line_extremes_by_axis(
    mask: np.ndarray, axes: tuple[int, ...] = (0, 1, 2)
) -> Iterator[tuple[int, np.ndarray]]:
    """Of the outline points `face_midpoint_slabs` gives, only the first and the last on every line
    of voxels along each of `axes`, in parts (`SLAB` slices along axis 0 at a time), each with the
    axis its lines run along.

    Every other outline point lies between these two on its line, so it is never a corner of the
    outline's convex hull: the hulls, diameters and linear extents (z range) of the outline are
    theirs, from two points a line instead of every boundary face (a random network's speckle has
    millions). Lines along axis 0 cross the slabs; their ends come last.
    """
    ends = np.full((2, *mask.shape[1:]), -1, dtype=np.int64) if 0 in axes else None
    for start in range(0, mask.shape[0], SLAB):
        block = mask[start : start + SLAB].astype(bool, copy=False)
        for axis in axes:
            present = block.any(axis=axis)
            if not present.any():
                continue
            low = np.argmax(block, axis=axis)
            high = block.shape[axis] - 1 - np.argmax(np.flip(block, axis=axis), axis=axis)
            if axis == 0:
                unset = present & (ends[0] < 0)
                ends[0][unset] = low[unset] + start
                ends[1][present] = high[present] + start
            else:
                yield axis, _line_ends(present, low, high, axis, start)
    if ends is not None and (ends[0] >= 0).any():
        yield 0, _line_ends(ends[0] >= 0, ends[0], ends[1], 0, 0)


def _line_ends(present: np.ndarray, low: np.ndarray, high: np.ndarray, axis: int, start: int) -> np.ndarray:
    """Index coordinates of the outer faces of the first (`low`) and last (`high`) voxel of the lines
    along `axis` that hold any (`present`, indexed by the other two axes), axis 0 offset by `start`."""
    lines = np.argwhere(present).astype(np.float64)
    points = np.empty((2 * len(lines), 3))
    points[:, [a for a in range(3) if a != axis]] = np.concatenate([lines, lines])
    points[:, axis] = np.concatenate([low[present] - 0.5, high[present] + 0.5])
    points[:, 0] += start
    return points


def voxel_slabs(mask: np.ndarray) -> Iterator[np.ndarray]:
    """The index coordinates of the mask's voxels, (n, 3) float64, in non-empty parts of `SLAB`
    slices."""
    for start in range(0, mask.shape[0], SLAB):
        points = np.argwhere(mask[start : start + SLAB]).astype(np.float64)
        if len(points):
            points[:, 0] += start
            yield points


def _sole_axis(affine: np.ndarray, world_axis: int) -> int | None:
    """The array axis that world axis `world_axis` follows alone (the other two add nothing to
    that coordinate), or None for a rotated grid."""
    along = np.flatnonzero(np.asarray(affine, dtype=np.float64)[world_axis, :3])
    return int(along[0]) if len(along) == 1 else None


def _occupied(mask: np.ndarray, a: int) -> np.ndarray:
    """The indices of the slices across array axis `a` that hold voxels of the mask."""
    return np.flatnonzero(mask.any(axis=tuple(b for b in range(3) if b != a)))


def world_range_mm(mask: np.ndarray, affine: np.ndarray, world_axis: int) -> tuple[float, float] | None:
    """The limits (low, high) in world mm along `world_axis` of the mask's outline; None for an
    empty mask. Where that world axis follows one array axis alone (no rotation between them)
    they are the outer faces of the first and last slices across it that hold voxels; otherwise
    the extremes over the ends of every line of voxels."""
    affine = np.asarray(affine, dtype=np.float64)
    a = _sole_axis(affine, world_axis)
    if a is not None:
        occupied = _occupied(mask, a)
        if not len(occupied):
            return None
        faces = np.array([occupied[0] - 0.5, occupied[-1] + 0.5])
        ends = faces * affine[world_axis, a] + affine[world_axis, 3]
        return float(ends.min()), float(ends.max())
    parts = [to_world(points, affine)[:, world_axis] for _, points in line_extremes_by_axis(mask)]
    if not parts:
        return None
    return min(float(p.min()) for p in parts), max(float(p.max()) for p in parts)


def sagittal_gap_mm(mask: np.ndarray, affine: np.ndarray, x: float) -> float | None:
    """The smallest distance (mm) between the mask's outline and the sagittal plane at world
    `x` (the patient's midline); None for an empty mask."""
    affine = np.asarray(affine, dtype=np.float64)
    a = _sole_axis(affine, 0)
    if a is not None:
        return _aligned_plane_gap(mask, affine, a, x)
    limits = world_range_mm(mask, affine, 0)
    if limits is None:
        return None
    low, high = limits
    if low > x or high < x:  # one side of the plane: the nearest point is an extreme one
        return low - x if low > x else x - high
    gaps = [float(np.abs(to_world(points, affine)[:, 0] - x).min()) for points in face_midpoint_slabs(mask)]
    return min(gaps)


def _aligned_plane_gap(mask: np.ndarray, affine: np.ndarray, a: int, x: float) -> float | None:
    """`sagittal_gap_mm` where world x follows array axis `a` alone. The outline's x values are
    then those of the slices across `a` that hold voxels (their in-plane outline) and those of
    the faces between neighbouring slices that differ; a face lies next to a slice that holds
    voxels, so only the slices nearest the plane and their faces need looking at (beside the
    mask too: the nearest is then the outer face of its end slice)."""
    occupied = _occupied(mask, a)
    if not len(occupied):
        return None
    scale, shift = affine[0, a], affine[0, 3]
    distance = np.abs(occupied - (x - shift) / scale)
    positions = []
    for i in occupied[distance <= distance.min() + 1].tolist():
        positions.append(float(i))
        for j in (i - 1, i):  # the faces between slices j and j + 1
            beyond = j < 0 or j + 1 >= mask.shape[a]
            if beyond or np.any(np.take(mask, j, axis=a) != np.take(mask, j + 1, axis=a)):
                positions.append(j + 0.5)
    return min(abs(p * scale + shift - x) for p in positions)


def cranio_caudal_range_mm(mask: np.ndarray, affine: np.ndarray) -> tuple[float, float]:
    """The world z (inferior, superior) limits of the outline of the non-empty `mask`, in mm."""
    limits = world_range_mm(mask, affine, 2)
    if limits is None:
        raise ValueError("an empty mask has no cranio-caudal range")
    return limits


def outline_points(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World points (mm) of the mask's outline (`face_midpoint_slabs`), all of them."""
    parts = [to_world(points, affine) for points in face_midpoint_slabs(mask)]
    return np.concatenate(parts) if parts else np.empty((0, 3))


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of `mask`: (label array with 1..n, n), uint16 where n allows it
    (half the memory of scipy's int32, which a mask of more components gets)."""
    try:
        labelled, count = ndimage.label(mask, structure=FULL_CONNECTIVITY, output=np.uint16)
        return labelled, int(count)
    except RuntimeError:  # scipy: "insufficient bit-depth in requested output type"
        pass  # labelled again below, once the failed attempt's arrays are freed with the exception
    labelled, count = ndimage.label(mask, structure=FULL_CONNECTIVITY)
    return labelled, int(count)


def voxel_counts(labelled: np.ndarray, count: int, within: np.ndarray | None = None) -> np.ndarray:
    """The voxels of each component 0..count of `labelled` (those inside `within` if given),
    counted `SLAB` slices at a time: `np.bincount` on the whole array would first copy every
    voxel's component number to 8 bytes."""
    sizes = np.zeros(count + 1, dtype=np.int64)
    for start in range(0, labelled.shape[0], SLAB):
        part = labelled[start : start + SLAB]
        part = part if within is None else part[within[start : start + SLAB]]
        sizes += np.bincount(part.ravel(), minlength=count + 1)
    return sizes


def centroid_index(mask: np.ndarray) -> np.ndarray:
    """The mean voxel index of `mask` (3,), from its projections on each axis."""
    total = int(np.count_nonzero(mask))
    return np.array(
        [
            float(np.dot(mask.sum(axis=tuple(b for b in range(3) if b != a)), np.arange(mask.shape[a])))
            / total
            for a in range(3)
        ]
    )


def bounding_box(
    mask: np.ndarray, shape: tuple[int, ...], within: tuple[slice, ...] | None = None, pad: int = 1
) -> tuple[slice, ...]:
    """The bounding box of `mask` (itself a crop starting at `within`), padded by `pad` voxels
    and clipped to `shape`."""
    starts = [0, 0, 0] if within is None else [s.start for s in within]
    return tuple(
        slice(max(0, start + s.start - pad), min(n, start + s.stop + pad))
        for s, start, n in zip(tight_box(mask), starts, shape, strict=True)
    )


def crop_affine(affine: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """The voxel-to-world affine of the sub-array `box` of the array `affine` maps (a slice's
    step, when it has one, is the sub-array's voxel size along it)."""
    local = np.array(affine, dtype=np.float64)
    local[:3, :3] = local[:3, :3] * np.array([s.step or 1 for s in box], dtype=np.float64)
    local[:3, 3] = to_world(np.array([[s.start for s in box]], dtype=np.float64), affine)[0]
    return local


def touches_edge(mask: np.ndarray, starts, low, high) -> bool:
    """Whether `mask`, a crop starting at index `starts` of an array, has a voxel on the faces of
    the scan, which along each axis runs from index `low` to `high` - 1 (the object is cut off by
    the edge of the scan); voxels beyond those faces belong to no object."""
    for axis in range(3):
        count = mask.shape[axis]
        first, last = low[axis] - starts[axis], high[axis] - 1 - starts[axis]  # in the crop
        if first >= 0 and np.take(mask, np.arange(min(first + 1, count)), axis=axis).any():
            return True
        if last < count and np.take(mask, np.arange(max(last, 0), count), axis=axis).any():
            return True
    return False


def imaged_slices(array: np.ndarray, axis: int) -> tuple[int, int]:
    """The first slice along `axis` and one past the last that hold anything denser than air
    (-500 HU): slices of nothing but air beyond them are padding (a CT padded to a size), not
    scan. A scan's own end slices hold the body, so this is usually (0, number of slices), found
    from those two slices alone; an image without body is all scan."""
    from kidneyseg.predict.checks import BODY_HU

    count = array.shape[axis]

    def body_on(index: int) -> bool:
        return bool((array[(slice(None),) * axis + (index,)] > BODY_HU).any())  # a view, no copy

    first = next((k for k in range(count) if body_on(k)), None)
    if first is None:
        return 0, count
    stop = next(k + 1 for k in range(count - 1, first - 1, -1) if body_on(k))
    return first, stop
