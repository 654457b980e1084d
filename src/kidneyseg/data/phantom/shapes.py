"""The canvas the phantom is painted on and the vectorised shape primitives it is painted with.

Everything works in patient coordinates (mm, RAS+: +x towards the patient's right, +y anterior,
+z superior) on canonical (x, y, z) array axes. A shape is evaluated only inside its bounding
box: `Canvas.box` returns the voxel slices and broadcastable 1D coordinate arrays of the box, so
that a 4 cm lesion on a 512×512×400 grid costs a few hundred thousand voxel operations, not
hundreds of millions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from kidneyseg.data.phantom.tissue import Tissue


@dataclass(frozen=True)
class Grid:
    """A canonical (x, y, z) voxel grid: voxel (i, j, k) sits at origin + (i, j, k) * spacing mm."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    def axis(self, n: int) -> np.ndarray:
        return (self.origin[n] + self.spacing[n] * np.arange(self.shape[n])).astype(np.float32)

    def supersampled(self, sub: int) -> Grid:
        """The grid with `sub` samples per slice thickness along z, reaching `sub // 2` samples
        beyond the first and last slice centres; slice k's centre is sample `sub * k + sub // 2`."""
        nx, ny, nz = self.shape
        off = sub // 2
        dz = self.spacing[2] / sub
        return Grid(
            (nx, ny, sub * (nz - 1) + 1 + 2 * off),
            (self.spacing[0], self.spacing[1], dz),
            (self.origin[0], self.origin[1], self.origin[2] - off * dz),
        )


@dataclass(frozen=True)
class Box:
    """Voxel slices (x, y, z) of a bounding box and its coordinates.

    The coordinates broadcast in (z, y, x) order — the memory order of the canvas arrays — so
    masks computed from them match `Canvas.view` without strided copies.
    """

    slices: tuple[slice, slice, slice]
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray

    def local(self, centre: np.ndarray, axes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Projections of (voxel - `centre`) on the rows of `axes`."""
        dx, dy, dz = self.x - centre[0], self.y - centre[1], self.z - centre[2]
        return tuple(a[0] * dx + a[1] * dy + a[2] * dz for a in axes)  # type: ignore[return-value]


class Canvas:
    """The tissue map being painted, with a per-voxel HU offset (texture) and lesion instances.

    The canvas is painted on `grid`, which has `sub` samples per slice of the `output` grid (the
    CT's) so that the image can average them over the slice profile (partial volume, see
    `kidneyseg.data.phantom.render`); the output's voxel centres are the samples `centres`.
    """

    def __init__(self, output: Grid, sub: int = 1):
        self.output = output
        self.sub = sub
        self.centres = slice(sub // 2, None, sub)
        grid = output.supersampled(sub)
        self.grid = grid
        # Fortran order: axial slices are contiguous, and the KiTS axis order (z, y, x) is a free view.
        self.tissue = np.zeros(grid.shape, dtype=np.uint8, order="F")
        self.delta = np.zeros(grid.shape, dtype=np.float32, order="F")
        self.instance = np.zeros(grid.shape, dtype=np.uint8, order="F")
        self.xs, self.ys, self.zs = (grid.axis(n) for n in range(3))

    def output_slices(self, slices: tuple[slice, slice, slice]) -> tuple[slice, slice, slice]:
        """(x, y, z) canvas slices → the output grid's slices whose voxel centres lie in them."""
        sx, sy, sz = slices
        off, sub, nz = self.sub // 2, self.sub, self.output.shape[2]
        # the first slice at or after each bound: ceil((i - off) / sub)
        lo, hi = (min(max(-((off - i) // sub), 0), nz) for i in (sz.start, sz.stop))
        return sx, sy, slice(lo, hi)

    def box(self, lo, hi) -> Box | None:
        """The part of the grid inside the world box [lo, hi] (mm), or None if it misses the grid."""
        slices = []
        for n, coords in enumerate((self.xs, self.ys, self.zs)):
            a = int(np.searchsorted(coords, min(lo[n], hi[n]), side="left"))
            b = int(np.searchsorted(coords, max(lo[n], hi[n]), side="right"))
            if b <= a:
                return None
            slices.append(slice(a, b))
        sx, sy, sz = slices
        return Box(
            (sx, sy, sz), self.xs[sx][None, None, :], self.ys[sy][None, :, None], self.zs[sz][:, None, None]
        )

    def around(self, centre, radius) -> Box | None:
        centre = np.asarray(centre, dtype=np.float64)
        radius = np.broadcast_to(np.asarray(radius, dtype=np.float64), (3,))
        return self.box(centre - radius, centre + radius)

    def around_ellipsoid(self, centre, axes: np.ndarray, semi, margin: float = 0.0) -> Box | None:
        """The tight world-aligned box of an ellipsoid (rows of `axes` scaled by `semi`) plus `margin`."""
        scaled = np.asarray(axes, dtype=np.float64) * np.asarray(semi, dtype=np.float64)[:, None]
        return self.around(centre, np.sqrt((scaled**2).sum(axis=0)) + margin)

    def paint(
        self,
        box: Box,
        mask: np.ndarray,
        tissue: Tissue,
        over: np.ndarray | None = None,
        delta: np.ndarray | float | None = None,
        instance: int | None = None,
    ) -> np.ndarray:
        """Set `tissue` where `mask` holds (and, with `over`, the current tissue is one of those).

        Args:
            box: where `mask` lies.
            mask: boolean, broadcastable to the box in (z, y, x) order.
            tissue: the tissue id to paint.
            over: boolean lookup table over tissue ids that may be painted over.
            delta: HU offset (texture) for the painted voxels; 0 if omitted.
            instance: lesion instance id to record for the painted voxels.

        Returns:
            The painted voxels (boolean, (z, y, x) box-shaped).
        """
        current = self.view(self.tissue, box)
        mask = np.broadcast_to(mask, current.shape)
        if over is not None:
            mask = mask & over[current]
        # copyto(where=) writes the strided box views without building index arrays
        np.copyto(current, np.uint8(tissue), where=mask)
        np.copyto(self.view(self.delta, box), np.float32(0.0) if delta is None else delta, where=mask)
        if instance is not None:
            np.copyto(self.view(self.instance, box), np.uint8(instance), where=mask)
        return mask

    @staticmethod
    def view(array: np.ndarray, box: Box) -> np.ndarray:
        """The box of a canvas array, in (z, y, x) order like the box's masks."""
        return array.T[box.slices[::-1]]


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3×3 rotation (rows are the frame's axes)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q.T


def frame(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Orthonormal axes (rows): `first`, `second` made orthogonal to it, and their cross product."""
    a = np.asarray(first, dtype=np.float64)
    a = a / np.linalg.norm(a)
    b = np.asarray(second, dtype=np.float64)
    b = b - a * (a @ b)
    b = b / np.linalg.norm(b)
    return np.stack([a, b, np.cross(a, b)])


@dataclass(frozen=True)
class Lobes:
    """A smooth random perturbation of a shape's surface: a sum of sinusoids of the normalised
    coordinates, so that ellipsoids become lobulated blobs."""

    directions: np.ndarray
    frequencies: np.ndarray
    phases: np.ndarray
    amplitudes: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator, amplitude: float, n: int = 4, frequency=(1.5, 4.0)) -> Lobes:
        d = rng.standard_normal((n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        return cls(
            d,
            rng.uniform(*frequency, n),
            rng.uniform(0, 2 * np.pi, n),
            rng.uniform(0.3, 1.0, n) * amplitude / n**0.5,
        )

    def __call__(self, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        out = 0.0
        for d, f, p, a in zip(self.directions, self.frequencies, self.phases, self.amplitudes, strict=True):
            out = out + np.float32(a) * np.sin(
                np.float32(f * d[0]) * u + np.float32(f * d[1]) * v + np.float32(f * d[2]) * w + np.float32(p)
            )
        return out


def ellipsoid_level(
    box: Box,
    centre,
    axes: np.ndarray,
    semi,
    lobes: Lobes | None = None,
    band: tuple[float, float] = (1.0, 1.0),
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Normalised radius of a (lobulated) ellipsoid: < 1 inside, 1 on the surface.

    The lobulation is evaluated only where the plain radius lies within its amplitude of `band`
    (the levels the caller thresholds at), which is where it can change the result.

    Returns:
        The level and the normalised local coordinates (u/a, v/b, w/c).
    """
    scaled = np.asarray(axes, dtype=np.float64) / np.asarray(semi, dtype=np.float64)[:, None]
    u, v, w = box.local(np.asarray(centre, dtype=np.float64), scaled)
    level = np.sqrt(u * u + v * v + w * w)
    if lobes is not None:
        reach = float(np.abs(lobes.amplitudes).sum())
        near = (level > band[0] - reach) & (level < band[1] + reach)
        level[near] -= lobes(u[near], v[near], w[near])
    return level, (u, v, w)


def segment_distance(box: Box, a, b) -> np.ndarray:
    """Distance (mm) of every box voxel to the segment from `a` to `b`."""
    a = np.asarray(a, dtype=np.float64)
    ab = np.asarray(b, dtype=np.float64) - a
    length2 = max(float(ab @ ab), 1e-9)
    dx, dy, dz = box.x - np.float32(a[0]), box.y - np.float32(a[1]), box.z - np.float32(a[2])
    t = (dx * np.float32(ab[0]) + dy * np.float32(ab[1]) + dz * np.float32(ab[2])) / np.float32(length2)
    np.clip(t, 0.0, 1.0, out=t)
    ex = dx - t * np.float32(ab[0])
    ey = dy - t * np.float32(ab[1])
    ez = dz - t * np.float32(ab[2])
    return np.sqrt(ex * ex + ey * ey + ez * ez)


@dataclass(frozen=True)
class WaveNoise:
    """Smooth random texture with unit variance: a sum of plane waves with random directions.

    Evaluated in world coordinates, so overlapping boxes see the same field.
    """

    vectors: np.ndarray
    phases: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator, wavelength=(6.0, 20.0), n: int = 8) -> WaveNoise:
        d = rng.standard_normal((n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        k = 2 * np.pi / rng.uniform(*wavelength, n)
        return cls(d * k[:, None], rng.uniform(0, 2 * np.pi, n))

    def __call__(self, box: Box) -> np.ndarray:
        out = 0.0
        for kv, p in zip(self.vectors, self.phases, strict=True):
            out = out + np.cos(
                np.float32(kv[0]) * box.x
                + np.float32(kv[1]) * box.y
                + np.float32(kv[2]) * box.z
                + np.float32(p)
            )
        return out * np.float32(np.sqrt(2.0 / len(self.phases)))


def random_walk(rng, start, steps, step_len, bounds_lo, bounds_hi, direction=None) -> np.ndarray:
    """A smooth random walk staying inside the box [bounds_lo, bounds_hi]."""
    points = [np.asarray(start, dtype=np.float64)]
    d = rng.standard_normal(3) if direction is None else np.asarray(direction, dtype=np.float64)
    d /= np.linalg.norm(d)
    for _ in range(steps):
        d = d + 0.8 * rng.standard_normal(3)
        d /= np.linalg.norm(d)
        nxt = points[-1] + step_len * d
        for n in range(3):
            if nxt[n] < bounds_lo[n] or nxt[n] > bounds_hi[n]:
                d[n] = -d[n]
                nxt[n] = np.clip(nxt[n], bounds_lo[n], bounds_hi[n])
        points.append(nxt)
    return np.array(points)


def paint_tube(canvas: Canvas, path, radius: float, tissue: Tissue, over: np.ndarray) -> None:
    """Paint `tissue` (over `over`) in a tube of `radius` (mm) along the polyline `path`."""
    for a, b in itertools.pairwise(np.asarray(path, dtype=np.float64)):
        box = canvas.box(np.minimum(a, b) - radius, np.maximum(a, b) + radius)
        if box is not None:
            canvas.paint(box, segment_distance(box, a, b) < radius, tissue, over=over)
