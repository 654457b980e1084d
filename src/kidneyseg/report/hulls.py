"""The convex hull of a region on each of its slices, for testing which voxels lie inside it: the
kidney's contour on each axial slice (the sinus and the nephrometry of `kidneyseg.report.nephrometry`
are found inside it)."""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull


class SliceHulls:
    """The 2D convex hull of a region's voxels (as squares) on each slice across `axis`, each
    computed once, on demand, for testing which voxels lie inside them.

    Convexity survives any affine map, so the test is done in index space. Voxels on slices
    where the region is empty are outside.
    """

    CORNERS = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])

    def __init__(self, region: np.ndarray, axis: int):
        self.region = region
        self.axis = axis
        self.in_plane = [a for a in range(3) if a != axis]
        self._equations: dict[int, np.ndarray | None] = {}
        self._box: tuple[slice, slice] | None = None

    def _in_plane_box(self) -> tuple[slice, slice]:
        """The region's bounding box in the slice plane: each slice's hull is found inside it."""
        if self._box is None:
            spans = []
            for a in self.in_plane:
                hits = np.flatnonzero(self.region.any(axis=tuple(b for b in range(3) if b != a)))
                spans.append(slice(int(hits[0]), int(hits[-1]) + 1) if len(hits) else slice(0, 0))
            self._box = (spans[0], spans[1])
        return self._box

    def _hull(self, index: int) -> np.ndarray | None:
        if index not in self._equations:
            box = self._in_plane_box()
            plane = np.take(self.region, index, axis=self.axis)[box]
            rows = np.flatnonzero(plane.any(axis=1))
            if len(rows) == 0:
                self._equations[index] = None
            else:
                # Every pixel lies between the first and the last of its row: those make the hull.
                ends = plane[rows]
                first = ends.argmax(axis=1)
                last = ends.shape[1] - 1 - ends[:, ::-1].argmax(axis=1)
                pixels = np.stack([np.tile(rows, 2), np.concatenate([first, last])], 1).astype(np.float64)
                pixels += [box[0].start, box[1].start]
                outline = (pixels[:, None, :] + self.CORNERS[None]).reshape(-1, 2)
                self._equations[index] = ConvexHull(np.unique(outline, axis=0)).equations
        return self._equations[index]

    def contains(self, points: np.ndarray) -> np.ndarray:
        """For each voxel index in `points` (n, 3): inside the hull on its own slice? (Points on
        slices beyond the region's array are outside.)"""
        inside = np.zeros(len(points), dtype=bool)
        order = np.argsort(points[:, self.axis], kind="stable")
        slices, starts = np.unique(points[order, self.axis], return_index=True)
        for index, chosen in zip(slices, np.split(order, starts[1:]), strict=True):
            if not 0 <= index < self.region.shape[self.axis]:
                continue
            equations = self._hull(int(index))
            if equations is not None:
                queries = points[chosen][:, self.in_plane].astype(np.float64)
                inside[chosen] = (queries @ equations[:, :2].T + equations[:, 2] <= 1e-9).all(axis=1)
        return inside

    def filled(self, index: int, lows, highs) -> np.ndarray:
        """The voxels of slice `index` inside its hull, over in-plane index ranges [lows, highs):
        a boolean (highs - lows) plane, filled row by row from the hull's half-planes."""
        rows = np.arange(lows[0], highs[0], dtype=np.float64)
        cols = np.arange(lows[1], highs[1], dtype=np.float64)
        equations = self._hull(index)
        if equations is None:
            return np.zeros((len(rows), len(cols)), dtype=bool)
        a, b, c = equations[:, 0], equations[:, 1], equations[:, 2]
        limit = 1e-9 - (rows[:, None] * a[None] + c[None])  # b · col <= limit, per row and half-plane
        up, down = b > 1e-12, b < -1e-12
        upper = np.where(up, limit / np.where(up, b, 1.0), np.inf).min(axis=1)
        lower = np.where(down, limit / np.where(down, b, 1.0), -np.inf).max(axis=1)
        valid = np.where(up | down, True, limit >= 0).all(axis=1)
        return valid[:, None] & (cols[None] >= lower[:, None]) & (cols[None] <= upper[:, None])
