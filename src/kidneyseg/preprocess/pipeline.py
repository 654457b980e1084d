"""Invertible preprocessing: `preprocess` a CT (and its labels), `invert_*` a result back.

The chain is the SCA-UNet paper's (Gohil & Lad, KiTS21): canonical (RAS) orientation →
resampling to 1.62 × 1.62 × 2 mm (image trilinear, labels nearest-neighbour) → crop to the
body → HU clip to [-80, 305] and rescale to [0, 1]. Every parameter comes from
`kidneyseg.config.PreprocessConfig`.

`PreprocessMeta` records what is needed to go back: the original shape and affine, the axis
permutation/flips, the resampled grid and the crop box. `invert_labels` and
`invert_probabilities` return label maps with exactly the original shape (so, written with
the original affine, exactly the original geometry).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kidneyseg.config import PreprocessConfig
from kidneyseg.errors import KidneysegError
from kidneyseg.io.volume import Volume
from kidneyseg.labels import LabelMap
from kidneyseg.preprocess.intensity import body_box, window
from kidneyseg.preprocess.spatial import (
    AxisMap,
    canonical_affine,
    nearest_indices,
    orientation_transform,
    resample_linear,
    resample_nearest,
    resampled_grid,
    sample_linear,
    to_canonical,
)

if TYPE_CHECKING:
    import torch

META_VERSION = 1
DENSE_FRACTION = 0.25
"""`invert_probabilities` interpolates a whole chunk (grid_sample) when more than this
fraction of its voxels lie in mixed cells, where that beats per-voxel gathers (docs/preprocessing.md)."""
Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class PreprocessMeta:
    """Everything needed to map the preprocessed grid back to the original CT grid.

    Attributes:
        original_shape: shape of the CT array as read.
        original_affine: its voxel-to-world (RAS+, mm) affine, 4×4 as nested tuples.
        permutation: canonical axis `k` is original axis `permutation[k]`...
        flips: ...reversed where `flips[k]` is true.
        resampled_shape: the full resampled grid (before the crop).
        scale: per canonical axis, canonical index = scale * resampled index + offset.
        offset: see `scale`.
        crop: half-open box `((lo, hi), ...)` of the preprocessed array in the resampled grid.
        affine: voxel-to-world affine of the preprocessed array.
        spacing: its voxel size in mm (the configured target spacing).
        source: the CT's file, for messages.
    """

    original_shape: tuple[int, int, int]
    original_affine: tuple[tuple[float, ...], ...]
    permutation: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    resampled_shape: tuple[int, int, int]
    scale: tuple[float, float, float]
    offset: tuple[float, float, float]
    crop: Box
    affine: tuple[tuple[float, ...], ...]
    spacing: tuple[float, float, float]
    source: str | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of the preprocessed array."""
        return tuple(hi - lo for lo, hi in self.crop)  # type: ignore[return-value]

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        return tuple(self.original_shape[p] for p in self.permutation)  # type: ignore[return-value]

    @property
    def axis_maps(self) -> tuple[AxisMap, AxisMap, AxisMap]:
        return tuple(AxisMap(s, o) for s, o in zip(self.scale, self.offset, strict=True))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; `PreprocessMeta.from_dict` reads it back exactly."""
        return {
            "version": META_VERSION,
            "original_shape": list(self.original_shape),
            "original_affine": [list(r) for r in self.original_affine],
            "permutation": list(self.permutation),
            "flips": list(self.flips),
            "resampled_shape": list(self.resampled_shape),
            "scale": list(self.scale),
            "offset": list(self.offset),
            "crop": [list(b) for b in self.crop],
            "affine": [list(r) for r in self.affine],
            "spacing": list(self.spacing),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessMeta:
        if data.get("version") != META_VERSION:
            version = data.get("version")
            raise KidneysegError(f"preprocessing metadata version {version} is not {META_VERSION}")
        try:
            return cls(
                original_shape=tuple(int(n) for n in data["original_shape"]),
                original_affine=tuple(tuple(float(v) for v in r) for r in data["original_affine"]),
                permutation=tuple(int(p) for p in data["permutation"]),
                flips=tuple(bool(f) for f in data["flips"]),
                resampled_shape=tuple(int(n) for n in data["resampled_shape"]),
                scale=tuple(float(s) for s in data["scale"]),
                offset=tuple(float(o) for o in data["offset"]),
                crop=tuple((int(lo), int(hi)) for lo, hi in data["crop"]),
                affine=tuple(tuple(float(v) for v in r) for r in data["affine"]),
                spacing=tuple(float(s) for s in data["spacing"]),
                source=data.get("source"),
            )  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as exc:
            raise KidneysegError(f"preprocessing metadata is incomplete or malformed ({exc!r})") from None


@dataclass(frozen=True, eq=False)
class Preprocessed:
    """A preprocessed case: image float32 in [0, 1], labels and tissue map uint8 (or None), on one grid."""

    image: np.ndarray
    labels: np.ndarray | None
    meta: PreprocessMeta
    tissue: np.ndarray | None = None


def _check_labels(labels: Volume, ct: Volume, label_map: LabelMap | None) -> None:
    where = labels.source
    if labels.shape != ct.shape:
        raise KidneysegError(
            f"label map shape {labels.shape} differs from the CT's {ct.shape} ({ct.source})", where
        )
    if not labels.same_grid(ct, atol=1e-3):
        raise KidneysegError(
            f"label map geometry differs from the CT's ({ct.source}): affine "
            f"{labels.affine.round(3).tolist()} vs {ct.affine.round(3).tolist()}",
            where,
        )
    array = labels.array
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise KidneysegError("label map holds non-integer values", where)
    low, high = array.min(), array.max()
    limit = 255 if label_map is None else label_map.num_classes - 1
    if low < 0 or high > limit:
        values = np.unique(array)
        if label_map is not None:
            label_map.check_values(values.tolist(), where)
        bad = values[(values < 0) | (values > limit)].tolist()
        raise KidneysegError(f"label values {bad} are not in 0..255", where)


def _source_positions(
    permutation: tuple[int, ...],
    flips: tuple[bool, ...],
    canonical_shape: tuple[int, ...],
    maps: tuple[AxisMap, ...],
    box: Box,
) -> tuple[np.ndarray, ...]:
    """Fractional indices, per ORIGINAL array axis, of the resampled voxels inside `box`."""
    positions: list[np.ndarray] = [np.empty(0)] * 3
    for k, (lo, hi) in enumerate(box):
        x = maps[k].to_source(np.arange(lo, hi))
        if flips[k]:
            x = canonical_shape[k] - 1 - x
        positions[permutation[k]] = x
    return tuple(positions)


def _body_crop(
    ct: Volume, cfg: PreprocessConfig, perm, flips, canonical_shape, maps, resampled_shape
) -> Box | None:
    """The body box on the resampled grid (before the margin), or None if there is no body."""
    full: Box = tuple((0, n) for n in resampled_shape)  # type: ignore[assignment]
    positions = _source_positions(perm, flips, canonical_shape, maps, full)
    sampled = resample_nearest(ct.array, positions)
    mask = np.transpose(sampled > cfg.body_threshold_hu, perm)
    return body_box(mask)


def _grow(box: Box, other: Box) -> Box:
    return tuple((min(a[0], b[0]), max(a[1], b[1])) for a, b in zip(box, other, strict=True))  # type: ignore[return-value]


def preprocess(
    ct: Volume,
    cfg: PreprocessConfig | None = None,
    labels: Volume | None = None,
    label_map: LabelMap | None = None,
    tissue: Volume | None = None,
) -> Preprocessed:
    """Bring a CT (and optionally its label map) to the network's grid and intensity range.

    Args:
        ct: the CT in Hounsfield units, any orientation.
        cfg: preprocessing parameters (SCA-UNet paper defaults when None).
        labels: its reference label map on the same grid; resampled nearest-neighbour.
        label_map: if given, label values outside it are an error.
        tissue: a phantom's tissue map on the same grid; resampled nearest-neighbour.

    Returns:
        `Preprocessed(image, labels, meta)`: `image` float32 in [0, 1] on the canonical,
        resampled, cropped grid; `labels` uint8 on the same grid; `meta` to invert.

    Raises:
        KidneysegError: the label map does not match the CT or holds unknown values.
    """
    cfg = cfg or PreprocessConfig()
    if labels is not None:
        _check_labels(labels, ct, label_map)
    if tissue is not None:
        _check_labels(tissue, ct, None)
    perm, flips = orientation_transform(ct.affine, cfg.orientation)
    canonical_shape = tuple(ct.shape[p] for p in perm)
    affine_c = canonical_affine(ct.affine, ct.shape, perm, flips)
    spacing_c = tuple(float(s) for s in np.linalg.norm(affine_c[:3, :3], axis=0))
    resampled_shape, maps = resampled_grid(canonical_shape, spacing_c, cfg.spacing)
    full: Box = tuple((0, n) for n in resampled_shape)  # type: ignore[assignment]

    label_full = None
    if labels is not None:
        positions = _source_positions(perm, flips, canonical_shape, maps, full)
        label_full = np.ascontiguousarray(np.transpose(resample_nearest(labels.array, positions), perm))
    box = full
    if cfg.crop_foreground:
        body = _body_crop(ct, cfg, perm, flips, canonical_shape, maps, resampled_shape)
        if body is not None:
            margin = [math.ceil(cfg.crop_margin_mm / t - 1e-9) for t in cfg.spacing]
            box = tuple(
                (max(0, lo - m), min(n, hi + m))
                for (lo, hi), m, n in zip(body, margin, resampled_shape, strict=True)
            )  # type: ignore[assignment]
            if label_full is not None and label_full.any():
                nz = np.nonzero(label_full.any(axis=(1, 2)))[0], np.nonzero(label_full.any(axis=(0, 2)))[0]
                nz = (*nz, np.nonzero(label_full.any(axis=(0, 1)))[0])
                box = _grow(box, tuple((int(a[0]), int(a[-1]) + 1) for a in nz))  # type: ignore[arg-type]

    positions = _source_positions(perm, flips, canonical_shape, maps, box)
    image = np.ascontiguousarray(np.transpose(resample_linear(ct.array, positions), perm))
    image = window(image, cfg.hu_window)
    out_labels = None
    if label_full is not None:
        out_labels = label_full[tuple(slice(lo, hi) for lo, hi in box)].astype(np.uint8, copy=False)
        out_labels = np.ascontiguousarray(out_labels)
    out_tissue = None
    if tissue is not None:
        out_tissue = np.ascontiguousarray(
            np.transpose(resample_nearest(tissue.array, positions), perm).astype(np.uint8, copy=False)
        )

    index_map = np.eye(4)
    for k, (lo, _) in enumerate(box):
        index_map[k, k] = maps[k].scale
        index_map[k, 3] = maps[k].scale * lo + maps[k].offset
    meta = PreprocessMeta(
        original_shape=ct.shape,
        original_affine=tuple(tuple(float(v) for v in r) for r in ct.affine),
        permutation=perm,  # type: ignore[arg-type]
        flips=flips,  # type: ignore[arg-type]
        resampled_shape=resampled_shape,  # type: ignore[arg-type]
        scale=tuple(m.scale for m in maps),  # type: ignore[arg-type]
        offset=tuple(m.offset for m in maps),  # type: ignore[arg-type]
        crop=box,
        affine=tuple(tuple(float(v) for v in r) for r in affine_c @ index_map),
        spacing=tuple(float(t) for t in cfg.spacing),  # type: ignore[arg-type]
        source=ct.source,
    )
    return Preprocessed(image, out_labels, meta, out_tissue)


def _inverse_axes(meta: PreprocessMeta) -> list[tuple[slice, np.ndarray, np.ndarray]]:
    """Per canonical axis: the slice of canonical voxels whose nearest preprocessed voxel lies
    in the crop, their nearest preprocessed indices, and their fractional positions."""
    out = []
    for k, (lo, hi) in enumerate(meta.crop):
        x = np.arange(meta.canonical_shape[k])
        j = meta.axis_maps[k].to_target(x) - lo
        index, inside = nearest_indices(j, hi - lo)
        where = np.nonzero(inside)[0]
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
