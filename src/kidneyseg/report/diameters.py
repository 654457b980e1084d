"""Diameters of binary masks in world millimetres, measured on their outline (the midpoints of
their boundary faces, `kidneyseg.report.geometry`): the largest in-plane (Feret) diameter over a
mask's slices, as a radiologist measures a tumor on the axial images, and the largest 3D one.
Only the hull of the outline can hold a diameter's ends, so each is found from the first and last
outline point of every line of voxels and the convex hull of those."""

from __future__ import annotations

import contextlib

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from kidneyseg.report.geometry import line_extremes_by_axis, slice_axis, to_world

HULL_BATCH = 1 << 15
"""Outline points gathered before their convex hull replaces them (0.8 MB of coordinates): a few
hull computations per lesion, and bounded memory for a large one."""


def hull_vertices(points: np.ndarray) -> np.ndarray:
    """The points of (n, d) `points` on their convex hull (all of them for a flat or small set):
    every distance and extreme of the set is one between these."""
    if len(points) <= 64:
        return points
    with contextlib.suppress(QhullError):
        return points[ConvexHull(points).vertices]
    return points


def max_distance(points: np.ndarray) -> float:
    """The largest distance between two of `points` (n, d), computed on their convex hull."""
    points = hull_vertices(np.asarray(points, dtype=np.float64))
    if len(points) < 2:
        return 0.0
    best = 0.0
    for start in range(0, len(points), 1024):
        block = points[start : start + 1024]
        d2 = ((block[:, None, :] - points[None, :, :]) ** 2).sum(-1)
        best = max(best, float(d2.max()))
    return float(np.sqrt(best))


def max_axial_diameter_mm(mask: np.ndarray, affine: np.ndarray) -> tuple[float, int]:
    """The largest in-plane (Feret) diameter of `mask` over its axial slices, in mm.

    Slices are taken across `slice_axis(affine)`; each slice's outline is projected on the
    world plane perpendicular to the cranio-caudal axis (world x, y), which for the usual
    axial acquisitions is the slice plane itself.

    Returns:
        The diameter in mm and the array index (along the slice axis) of the slice where it
        was found (-1 for an empty mask).
    """
    return max_planar_diameter_mm(mask, affine, normal=2)


class _PlanarOutlines:
    """The outline points of a mask on each of its slices across the array axis closest to world
    axis `normal`, projected on the world plane perpendicular to it, gathered part by part."""

    def __init__(self, affine: np.ndarray, normal: int):
        self.axis = slice_axis(affine, normal)
        self.in_plane = tuple(a for a in range(3) if a != self.axis)
        self.keep = [a for a in range(3) if a != normal]
        self.outlines: dict[int, list[np.ndarray]] = {}

    def add(self, points: np.ndarray, world: np.ndarray) -> None:
        """In-plane outline points (index coordinates, `line_extremes_by_axis`) and the same in world mm."""
        world_xy = world[:, self.keep]
        index = points[:, self.axis].astype(np.int64)
        order = np.argsort(index, kind="stable")
        slices, starts = np.unique(index[order], return_index=True)
        for i, chosen in zip(slices, np.split(order, starts[1:]), strict=True):
            self.outlines.setdefault(int(i), []).append(world_xy[chosen])

    def widest(self) -> tuple[float, int]:
        """The largest diameter over the slices, and its slice (-1 when there is none).

        A slice's diameter is at most the diagonal of its outline's extent: slices are measured
        from the largest diagonal down, until no other can beat the best (ties: the lowest index).
        """
        points = {index: np.concatenate(parts) for index, parts in self.outlines.items()}
        bounds = {i: float(np.linalg.norm(p.max(axis=0) - p.min(axis=0))) for i, p in points.items()}
        best, best_slice = 0.0, -1
        for index in sorted(points, key=lambda i: (-bounds[i], i)):
            if bounds[index] < best:
                break
            diameter = max_distance(points[index])
            if diameter > best or (diameter == best and index < best_slice):
                best, best_slice = diameter, index
        return best, best_slice


class _Extent:
    """The largest distance between outline points and their world z range, gathered part by part
    (kept as the hull of the points so far every `HULL_BATCH` points)."""

    def __init__(self):
        self.kept, self.waiting, self.lows, self.highs = np.empty((0, 3)), [], [], []

    def add(self, world: np.ndarray) -> None:
        self.lows.append(float(world[:, 2].min()))
        self.highs.append(float(world[:, 2].max()))
        self.waiting.append(world)
        if sum(len(w) for w in self.waiting) > HULL_BATCH:
            self.kept = hull_vertices(np.concatenate([self.kept, *self.waiting]))
            self.waiting = []

    def result(self) -> tuple[float, tuple[float, float]]:
        """The diameter and (inferior, superior) z; 0 and NaNs when nothing was added."""
        if not self.lows:
            return 0.0, (float("nan"), float("nan"))
        return max_distance(np.concatenate([self.kept, *self.waiting])), (min(self.lows), max(self.highs))


def max_planar_diameter_mm(mask: np.ndarray, affine: np.ndarray, normal: int) -> tuple[float, int]:
    """Like `max_axial_diameter_mm` for the planes perpendicular to world axis `normal`
    (0: sagittal, 1: coronal, 2: axial), sliced across the array axis closest to it."""
    planes = _PlanarOutlines(affine, normal)
    for _, points in line_extremes_by_axis(mask, planes.in_plane):
        planes.add(points, to_world(points, affine))
    return planes.widest()


def lesion_outline_mm(mask: np.ndarray, affine: np.ndarray) -> tuple[float, int, float, tuple[float, float]]:
    """`max_axial_diameter_mm`, `max_3d_diameter_mm` and `cranio_caudal_range_mm` from one walk
    over the outline: (axial diameter, its slice, 3D diameter, (inferior, superior) z)."""
    planes, extent = _PlanarOutlines(affine, 2), _Extent()
    for axis, points in line_extremes_by_axis(mask):
        world = to_world(points, affine)
        extent.add(world)
        if axis in planes.in_plane:
            planes.add(points, world)
    return (*planes.widest(), *extent.result())


def max_3d_diameter_mm(mask: np.ndarray, affine: np.ndarray) -> float:
    """The largest distance between two points of the mask's outline, in mm (found on the hull of
    its outline points); 0 for an empty mask."""
    extent = _Extent()
    for _, points in line_extremes_by_axis(mask):
        extent.add(to_world(points, affine))
    return extent.result()[0]
