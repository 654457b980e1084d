"""Invertible preprocessing: `preprocess` a CT (and its labels), `invert_*` a result back.

The chain is the SCA-UNet paper's (Gohil & Lad, KiTS21): canonical (RAS) orientation →
resampling to 1.62 × 1.62 × 2 mm (image trilinear, labels nearest-neighbour) → crop to the
body → HU clip to [-80, 305] and rescale to [0, 1]. Every parameter comes from
`kidneyseg.config.PreprocessConfig`.

`PreprocessMeta` records what is needed to go back: the original shape and affine, the axis
permutation/flips, the resampled grid and the crop box; `kidneyseg.preprocess.inverse` goes
back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from kidneyseg.config import PreprocessConfig
from kidneyseg.errors import KidneysegError
from kidneyseg.io.volume import Volume
from kidneyseg.labels import LabelMap, check_label_values
from kidneyseg.preprocess.intensity import body_box, window
from kidneyseg.preprocess.spatial import (
    AxisMap,
    canonical_affine,
    orientation_transform,
    resample_linear,
    resample_nearest,
    resampled_grid,
)

META_VERSION = 1
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
    check_label_values(labels.array, label_map, where)


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


def _crop_box(body: Box, cfg: PreprocessConfig, shape: tuple[int, ...], labels: np.ndarray | None) -> Box:
    """The body box with `cfg.crop_margin_mm` added, grown to hold every labelled voxel."""
    margin = [math.ceil(cfg.crop_margin_mm / t - 1e-9) for t in cfg.spacing]
    box = tuple((max(0, lo - m), min(n, hi + m)) for (lo, hi), m, n in zip(body, margin, shape, strict=True))
    if labels is not None and labels.any():
        nz = [np.nonzero(labels.any(axis=axes))[0] for axes in ((1, 2), (0, 2), (0, 1))]
        box = _grow(box, tuple((int(a[0]), int(a[-1]) + 1) for a in nz))  # type: ignore[arg-type]
    return box  # type: ignore[return-value]


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
            box = _crop_box(body, cfg, resampled_shape, label_full)

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
