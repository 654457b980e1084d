"""The inverse of `preprocess`: labels or class scores on the preprocessed grid back to the
original CT grid. `invert_labels` and `invert_probabilities` return label maps with exactly the
original shape (so, written with the original affine, exactly the original geometry).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from kidneyseg.errors import KidneysegError
from kidneyseg.preprocess.pipeline import PreprocessMeta
from kidneyseg.preprocess.spatial import nearest_indices, sample_linear, to_canonical

if TYPE_CHECKING:
    import torch

DENSE_FRACTION = 0.25
"""`invert_probabilities` interpolates a whole chunk (grid_sample) when more than this
fraction of its voxels lie in mixed cells, where that beats per-voxel gathers (docs/preprocessing.md)."""


def _inverse_axes(meta: PreprocessMeta) -> list[tuple[slice, np.ndarray, np.ndarray]]:
    """Per canonical axis: the slice of canonical voxels that take the crop's scores, their
    nearest preprocessed indices (clipped to the crop), and their fractional positions.

    A voxel takes them when its nearest preprocessed voxel lies in the crop. Beyond a face of the
    crop that is a face of the resampled grid there is no crop to be outside of: the grid has
    `round(extent / spacing)` voxels centred on the CT, so the CT's outermost voxels may lie up to
    a quarter of a grid voxel beyond it; voxels up to half a grid voxel beyond such a face take
    the edge voxel's scores. Beyond a face inside the grid (the body crop, a `--roi kidneys`
    region) voxels stay background."""
    out = []
    for k, (lo, hi) in enumerate(meta.crop):
        x = np.arange(meta.canonical_shape[k])
        j = meta.axis_maps[k].to_target(x) - lo
        index = nearest_indices(j, hi - lo)
        low = -1.0 if lo == 0 else -0.5
        high = hi - lo + (0.0 if hi == meta.resampled_shape[k] else -0.5)
        where = np.nonzero((j >= low) & (j < high))[0]
        if len(where) == 0:
            out.append((slice(0, 0), index[:0], j[:0]))
            continue
        sl = slice(int(where[0]), int(where[-1]) + 1)
        out.append((sl, index[sl], j[sl]))
    return out


def _check_pre_shape(shape: tuple[int, ...], meta: PreprocessMeta, what: str) -> None:
    if tuple(shape) != meta.shape:
        raise KidneysegError(f"{what} shape {tuple(shape)} differs from the preprocessed grid {meta.shape}")


def invert_labels(labels_pre: np.ndarray, meta: PreprocessMeta, mode: str = "linear") -> np.ndarray:
    """Bring a label map on the preprocessed grid back to the original CT grid.

    Args:
        labels_pre: integer labels of shape `meta.shape`.
        meta: the preprocessing record.
        mode: `linear` (default): each original voxel takes the label with the largest
            trilinear weight among the 8 preprocessed voxels around it, i.e.
            `invert_probabilities` of the one-hot labels (without materialising them): smooth,
            partial-volume-aware boundaries. `nearest`: the nearest preprocessed voxel's label;
            exact when the preprocessed grid is at least as fine as the original.

    Returns:
        uint8 labels of exactly `meta.original_shape` in the original axis order (use the CT's
        affine with them); voxels outside the crop are background.
    """
    labels_pre = np.asarray(labels_pre)
    _check_pre_shape(labels_pre.shape, meta, "label map")
    if mode == "linear":
        labels_pre = labels_pre.astype(np.uint8, copy=False)
        classes = np.arange(int(labels_pre.max(initial=0)) + 1, dtype=np.uint8)

        def corner_scores(index):
            return (labels_pre[index][None] == classes[:, None]).astype(np.float32)

        def dense_slab(low, high):
            import torch

            slab = labels_pre[None, ..., low:high] == classes[:, None, None, None]
            return torch.from_numpy(slab.astype(np.float32))

        return _interpolated_argmax(labels_pre, corner_scores, dense_slab, meta)
    if mode != "nearest":
        raise ValueError(f"mode must be 'linear' or 'nearest', got {mode!r}")
    out = np.zeros(meta.original_shape, dtype=np.uint8)
    canonical = to_canonical(out, meta.permutation, meta.flips)
    axes = _inverse_axes(meta)
    block = tuple(sl for sl, _, _ in axes)
    canonical[block] = labels_pre[np.ix_(*(index for _, index, _ in axes))]
    return out


def _cells(positions: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per position on an axis of `n` voxels: the interpolation cell's low and high voxel and
    the weight of the high one (positions beyond the end voxels take the edge value)."""
    p = np.clip(positions, 0.0, n - 1)
    low = np.minimum(np.floor(p).astype(np.int64), max(n - 2, 0))
    high = np.minimum(low + 1, n - 1)
    return low, high, (p - low).astype(np.float32)


def _uniform_cells(labels: np.ndarray) -> np.ndarray:
    """True where the 2×2×2 cell whose low corner is the voxel has one label throughout."""
    low, high = labels, labels
    for axis, n in enumerate(labels.shape):
        shift = np.minimum(np.arange(n) + 1, n - 1)
        low = np.minimum(low, np.take(low, shift, axis=axis))
        high = np.maximum(high, np.take(high, shift, axis=axis))
    return low == high


def invert_probabilities(
    probs: np.ndarray | torch.Tensor, meta: PreprocessMeta, chunk_slices: int = 16, batch: int = 1 << 18
) -> np.ndarray:
    """Class probabilities (or logits) on the preprocessed grid → labels on the original grid.

    The result is the arg-max of the `[C, *meta.shape]` scores interpolated trilinearly at every
    original voxel; voxels outside the crop are background (class 0). It is computed without
    interpolating most voxels: where the 8 preprocessed voxels around an original voxel share
    one arg-max, any convex combination of their scores has that arg-max too, so the label is
    read off directly; only voxels in cells that straddle a class boundary are interpolated
    (in batches of `batch`; a chunk where most cells are mixed is interpolated whole with
    `grid_sample`). Work goes `chunk_slices` canonical z slices at a time, so besides
    the input and the uint8 output, memory stays bounded by a few bytes per voxel of a chunk
    (and by `batch` interpolated voxels), however many slices the CT has.

    Returns:
        uint8 labels of exactly `meta.original_shape` (use the CT's affine with them).
    """
    import torch

    if isinstance(probs, torch.Tensor):
        probs = probs.detach().cpu().numpy()
    scores = np.asarray(probs)
    if scores.ndim != 4:
        raise KidneysegError(f"expected probabilities [C, X, Y, Z], got shape {tuple(scores.shape)}")
    _check_pre_shape(tuple(scores.shape[1:]), meta, "probabilities")
    if chunk_slices < 1 or batch < 1:
        raise ValueError("chunk_slices and batch must be at least 1")
    labels_pre = np.empty(scores.shape[1:], dtype=np.uint8)
    for x in range(0, scores.shape[1], chunk_slices):  # in slabs: argmax makes int64
        labels_pre[x : x + chunk_slices] = np.argmax(scores[:, x : x + chunk_slices], axis=0)

    def corner_scores(index):
        return scores[:, index[0], index[1], index[2]].astype(np.float32)

    def dense_slab(low, high):
        return torch.from_numpy(scores[..., low:high])

    return _interpolated_argmax(labels_pre, corner_scores, dense_slab, meta, chunk_slices, batch)


def _interpolated_argmax(
    labels_pre: np.ndarray,
    corner_scores: Callable[[tuple[np.ndarray, ...]], np.ndarray],
    dense_slab: Callable[[int, int], Any],
    meta: PreprocessMeta,
    chunk_slices: int = 16,
    batch: int = 1 << 18,
) -> np.ndarray:
    """The arg-max of trilinearly interpolated class scores at every original voxel.

    `labels_pre` is the arg-max on the preprocessed grid; `corner_scores(index)` returns the
    `[C, n]` float32 scores of the preprocessed voxels `index` (3 index arrays);
    `dense_slab(low, high)` the `[C, X, Y, high - low]` torch scores of a z slab.
    """
    out = np.zeros(meta.original_shape, dtype=np.uint8)
    canonical = to_canonical(out, meta.permutation, meta.flips)
    (sx, _, jx), (sy, _, jy), (sz, _, jz) = _inverse_axes(meta)
    if sx.stop == sx.start or sy.stop == sy.start:
        return out
    uniform = _uniform_cells(labels_pre)
    cells_x, cells_y = _cells(jx, labels_pre.shape[0]), _cells(jy, labels_pre.shape[1])
    for start in range(0, len(jz), chunk_slices):
        cells_z = _cells(jz[start : start + chunk_slices], labels_pre.shape[2])
        lows = np.ix_(cells_x[0], cells_y[0], cells_z[0])
        labels = labels_pre[lows]
        mixed = np.flatnonzero(~uniform[lows])
        if len(mixed) > DENSE_FRACTION * labels.size:  # mostly mixed cells: interpolate all at once
            low = int(cells_z[0].min())
            slab = dense_slab(low, int(cells_z[1].max()) + 1)
            z = jz[start : start + chunk_slices] - low
            labels = np.argmax(sample_linear(slab, (jx, jy, z)).numpy(), axis=0).astype(np.uint8)
            mixed = mixed[:0]
        for b in range(0, len(mixed), batch):
            voxel = np.unravel_index(mixed[b : b + batch], labels.shape)
            value = None
            for corner in np.ndindex(2, 2, 2):
                index, weight = [], np.ones(len(voxel[0]), dtype=np.float32)
                for (low, high, w), v, c in zip((cells_x, cells_y, cells_z), voxel, corner, strict=True):
                    index.append((high if c else low)[v])
                    weight *= w[v] if c else 1.0 - w[v]
                term = corner_scores(tuple(index)) * weight
                value = term if value is None else value + term
            labels[voxel] = np.argmax(value, axis=0)
        z0 = sz.start + start
        canonical[sx, sy, z0 : z0 + labels.shape[2]] = labels
    return out
