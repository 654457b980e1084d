"""Geometry of preprocessing: canonical orientation, the resampled grid, separable resampling.

The SCA-UNet paper (Gohil & Lad, KiTS21) brings every CT to RAS orientation and a voxel size
of 1.62 × 1.62 × 2 mm before training. Here this happens in two exact steps:

1. *Canonical orientation*: a pure permutation/flip of the array axes chosen from the affine
   (nibabel's `io_orientation`), so no voxel is interpolated.
2. *Resampling* to the target spacing on a grid whose voxels have exactly the target size and
   whose extent is centred on the original extent. Along each canonical axis the original
   (canonical) voxel index `x` and the resampled index `j` are related by `x = scale * j +
   offset`, with `scale = target / original spacing`. Because the grids share direction
   cosines, trilinear interpolation factorises into three 1D linear interpolations, and
   nearest-neighbour sampling into one gather per axis: both are done axis by axis here,
   which also makes it cheap to resample only a crop of the grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AxisMap:
    """Canonical index `x` of resampled index `j` along one axis: `x = scale * j + offset`."""

    scale: float
    offset: float

    def to_source(self, j: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(j, dtype=np.float64) + self.offset

    def to_target(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.offset) / self.scale


def orientation_transform(affine: np.ndarray, codes: str = "RAS") -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """The axis permutation and flips that bring an array with `affine` to orientation `codes`.

    Returns:
        `(permutation, flips)`: canonical axis `k` is original axis `permutation[k]`,
        reversed where `flips[k]` is true.
    """
    import nibabel as nib

    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(tuple(codes))
    )
    permutation = [0, 0, 0]
    flips = [False, False, False]
    for source_axis, (target_axis, flip) in enumerate(ornt):
        permutation[int(target_axis)] = source_axis
        flips[int(target_axis)] = bool(flip < 0)
    return tuple(permutation), tuple(flips)


def to_canonical(array: np.ndarray, permutation: tuple[int, ...], flips: tuple[bool, ...]) -> np.ndarray:
    """A view of `array` in canonical axis order (no copy); writable if `array` is."""
    view = np.transpose(array, permutation)
    for axis, flip in enumerate(flips):
        if flip:
            view = np.flip(view, axis)
    return view


def canonical_affine(
    affine: np.ndarray, shape: tuple[int, ...], permutation: tuple[int, ...], flips: tuple[bool, ...]
) -> np.ndarray:
    """The voxel-to-world affine of `to_canonical(array, permutation, flips)`."""
    index_map = np.zeros((4, 4))
    index_map[3, 3] = 1.0
    for k, (axis, flip) in enumerate(zip(permutation, flips, strict=True)):
        if flip:
            index_map[axis, k] = -1.0
            index_map[axis, 3] = shape[axis] - 1
        else:
            index_map[axis, k] = 1.0
    return np.asarray(affine, dtype=np.float64) @ index_map


def resampled_grid(
    shape: tuple[int, ...], spacing: tuple[float, ...], target: tuple[float, ...]
) -> tuple[tuple[int, ...], tuple[AxisMap, ...]]:
    """The grid of voxel size `target` covering the extent of `shape` × `spacing`.

    The number of voxels per axis is `round(extent / target)` (at least 1), and the new grid is
    centred on the old one: the centre of the old extent is the centre of the new extent, so
    the physical field of view is kept to within half a target voxel on each side.
    """
    new_shape = []
    maps = []
    for n, s, t in zip(shape, spacing, target, strict=True):
        m = max(1, round(n * s / t))
        scale = t / s
        new_shape.append(m)
        maps.append(AxisMap(scale, (n - 1) / 2.0 - scale * (m - 1) / 2.0))
    return tuple(new_shape), tuple(maps)


def nearest_indices(positions: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest voxel of each (fractional) index position on an axis of length `n`.

    Returns the indices clipped to `[0, n)` and a mask of positions that lie within the
    axis' extent `[-0.5, n - 0.5]`.
    """
    rounded = np.floor(positions + 0.5).astype(np.int64)
    inside = (rounded >= 0) & (rounded < n)
    return np.clip(rounded, 0, n - 1), inside


def resample_axis_linear(tensor, dim: int, positions: np.ndarray):
    """Linear interpolation of a torch tensor along `dim` at fractional index `positions`.

    Positions beyond the first/last voxel centre take the edge value. Integer input is
    promoted to float32 only after the gather, so a full-size float copy of the input is
    never made.
    """
    import torch

    n = tensor.shape[dim]
    positions = np.clip(np.asarray(positions, dtype=np.float64), 0.0, n - 1)
    if n == 1:
        index = torch.zeros(len(positions), dtype=torch.int64, device=tensor.device)
        return tensor.index_select(dim, index).to(torch.float32)
    low = np.minimum(np.floor(positions).astype(np.int64), n - 2)
    weight_shape = [1] * tensor.ndim
    weight_shape[dim] = len(positions)
    weight = torch.from_numpy((positions - low).astype(np.float32)).reshape(weight_shape).to(tensor.device)
    low_t = torch.from_numpy(low).to(tensor.device)
    a = tensor.index_select(dim, low_t).to(torch.float32)
    b = tensor.index_select(dim, low_t + 1).to(torch.float32)
    return torch.lerp(a, b, weight)


def resample_linear(array: np.ndarray, positions: tuple[np.ndarray, ...]) -> np.ndarray:
    """Trilinear resampling of `array` at the separable grid `positions` (one array per axis).

    Axes are processed in the order that shrinks the data most first. `array` may have any
    positive strides (Fortran order from nibabel is fine); it is not copied. Returns float32.
    """
    import torch

    tensor = torch.from_numpy(array)
    order = sorted(range(array.ndim), key=lambda d: len(positions[d]) / array.shape[d])
    for dim in order:
        tensor = resample_axis_linear(tensor, dim, positions[dim])
    if tensor.dtype != torch.float32:
        tensor = tensor.to(torch.float32)
    return tensor.numpy()


def resample_nearest(array: np.ndarray, positions: tuple[np.ndarray, ...]) -> np.ndarray:
    """Nearest-neighbour resampling at the separable grid `positions` (labels stay labels)."""
    index = [nearest_indices(p, n)[0] for p, n in zip(positions, array.shape, strict=True)]
    return array[np.ix_(*index)]
