"""Two-stage, kidney-focused prediction (`--roi kidneys`): where the kidneys are, and where the
user's network runs.

A kidney fills a few percent of an abdominal CT, so most windows of a whole-volume prediction
cannot hold one. Stage 1 runs the bundled pretrained model (`kidneyseg.predict.pretrained`, 3 mm
grid) over the whole CT; every 26-connected component of its kidney + masses label of at least
`MIN_KIDNEY_ML` gives a box, recorded in world coordinates. Stage 2 runs the user's network with
its own settings only in each box grown by a margin (the "core"); its windows cover the core and
at least one window of image (the "context", placed so that its windows are windows of the
whole-volume prediction), and only the core's scores are kept.
Outside the cores the label is background. When stage 1 finds no kidney, the case falls back to
the whole volume. A component that touches the edge of the scan (the kidney may be cut, and the
locator had no context beyond it) falls back to the whole volume for its region only: every
window of the whole-volume prediction that overlaps its core runs, so inside that core the
scores are exactly the whole volume's. Both are recorded. This is the idea of TotalSegmentator's
ROI crop and nnU-Net's cascade, with the margin measured (docs/prediction.md).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from kidneyseg.predict.sliding_window import boxes_meet, window_step
from kidneyseg.preprocess import PreprocessMeta
from kidneyseg.report.geometry import box_corners, to_world

ROIS = ("kidneys", "body")
MARGIN_MM = 30.0
"""Margin around each stage-1 box. It covers every kidney + mass the bundled locator left outside
its boxes on the phantoms measured, and the 90th percentile of how far a KiTS19 tumor reaches
beyond its kidney's box if the locator saw none of the tumor (benchmarks/roi_margin.py)."""
MIN_KIDNEY_ML = 5.0
"""Smallest stage-1 component taken for a kidney (smaller ones are speckle)."""
Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class Located:
    """Stage 1's result: kidney boxes in world coordinates, or why the whole volume is used.

    Attributes:
        boxes_mm: per component, `(low, high)` RAS corners (mm) of its voxels' extent.
        volumes_ml: per component, its volume.
        at_edge: per component, whether it touches the edge of the scan (its region then gets
            the whole-volume windows).
        fallback: why stage 2 runs on the whole volume (None: it runs in the boxes).
    """

    boxes_mm: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]
    volumes_ml: tuple[float, ...]
    at_edge: tuple[bool, ...]
    fallback: str | None

    def record(self) -> dict:
        """JSON-ready, for the run record."""
        return {
            "boxes_mm": [
                {
                    "low": [round(v, 1) for v in lo],
                    "high": [round(v, 1) for v in hi],
                    "ml": round(ml, 1),
                    "at_edge": edge,
                }
                for (lo, hi), ml, edge in zip(self.boxes_mm, self.volumes_ml, self.at_edge, strict=True)
            ],
            "fallback": self.fallback,
        }


@dataclass(frozen=True)
class Region:
    """Where stage 2 runs, on the user's preprocessed grid: `context` holds `core`, whose scores
    count. `whole_volume`: the core holds a box at the edge of the scan, and its scores are the
    whole volume's (every whole-volume window overlapping it runs; `context` is unused)."""

    core: Box
    context: Box
    whole_volume: bool = False

    @property
    def core_in_context(self) -> tuple[slice, ...]:
        pairs = zip(self.core, self.context, strict=True)
        return tuple(slice(c0 - x0, c1 - x0) for (c0, c1), (x0, _) in pairs)


def slices(box: Box) -> tuple[slice, ...]:
    """Index a box of an array: `array[slices(box)]`."""
    return tuple(slice(lo, hi) for lo, hi in box)


def locate(labels: np.ndarray, meta: PreprocessMeta, min_ml: float = MIN_KIDNEY_ML) -> Located:
    """Kidney boxes from stage 1's labels on its preprocessed grid (`meta`'s), or the fallback.

    Args:
        labels: stage 1's arg-max on its grid (0 = background).
        meta: stage 1's preprocessing record (its grid's affine and crop).
        min_ml: smallest component kept.
    """
    from scipy import ndimage

    components, count = ndimage.label(labels > 0, structure=np.ones((3, 3, 3), dtype=bool))
    voxel_ml = float(np.prod(meta.spacing)) / 1000.0
    sizes = np.bincount(components.ravel(), minlength=count + 1) * voxel_ml
    affine = np.asarray(meta.affine)
    boxes, volumes, at_edge = [], [], []
    for index, found in enumerate(ndimage.find_objects(components), start=1):
        if found is None or sizes[index] < min_ml:
            continue
        world = to_world(box_corners([(s.start - 0.5, s.stop - 0.5) for s in found]), affine)
        boxes.append((tuple(world.min(axis=0).tolist()), tuple(world.max(axis=0).tolist())))
        volumes.append(float(sizes[index]))
        at_edge.append(any(s.start == 0 or s.stop == n for s, n in zip(found, labels.shape, strict=True)))
    fallback = None
    if not boxes:
        fallback = f"no kidney found by stage 1 (no component of at least {min_ml:g} mL)"
    return Located(tuple(boxes), tuple(volumes), tuple(at_edge), fallback)


def _merge(boxes: list[tuple[list[list[int]], bool]]) -> list[tuple[list[list[int]], bool]]:
    """Union boxes (each with its at-the-edge flag) that intersect, until none do."""
    merged = True
    while merged:
        merged = False
        for i, j in itertools.combinations(range(len(boxes)), 2):
            (a, edge_a), (b, edge_b) = boxes[i], boxes[j]
            if boxes_meet(a, b):
                union = [[min(p[0], q[0]), max(p[1], q[1])] for p, q in zip(a, b, strict=True)]
                boxes[i] = (union, edge_a or edge_b)
                del boxes[j]
                merged = True
                break
    return boxes


def regions(
    located: Located,
    meta: PreprocessMeta,
    window: Sequence[int],
    margin_mm: float,
    overlaps: Sequence[float],
) -> list[Region]:
    """Stage 2's regions on the user's preprocessed grid (`meta`'s) for stage 1's boxes.

    Each box, grown by `margin_mm`, becomes a core (cores that intersect are merged, and a merged
    core holding a box at the edge of the scan is `whole_volume`); its context holds the core
    and at least one `window` per axis (or the whole axis), inside the image, placed on the
    whole image's window grid (`_on_grid`, with the windows `overlaps` per axis).
    """
    inverse = np.linalg.inv(np.asarray(meta.affine))
    shape = meta.shape
    cores = []
    for (low, high), edge in zip(located.boxes_mm, located.at_edge, strict=True):
        index = to_world(box_corners(list(zip(low, high, strict=True))), inverse)
        lo, hi = index.min(axis=0), index.max(axis=0)
        pad = [margin_mm / s for s in meta.spacing]
        core = [
            [max(0, math.floor(a - p + 0.5)), min(n, math.ceil(b + p + 0.5))]
            for a, b, p, n in zip(lo, hi, pad, shape, strict=True)
        ]
        if all(lo < hi for lo, hi in core):
            cores.append((core, edge))
    out = []
    for core, edge in _merge(cores):
        context = tuple(
            _on_grid(lo, hi, w, n, o) for (lo, hi), w, n, o in zip(core, window, shape, overlaps, strict=True)
        )
        out.append(Region(tuple(map(tuple, core)), context, edge))  # type: ignore[arg-type]
    return out


def _on_grid(lo: int, hi: int, window: int, size: int, overlap: float) -> tuple[int, int]:
    """The span of an axis of `size` voxels that holds [lo, hi) and whose windows are windows of
    the whole axis: it starts where one of those starts (a multiple of the step) and is a window
    plus whole steps long, or runs to the end of the axis (whose last window, flush with the end,
    the whole axis has too). Stage 2 then runs windows the whole-volume prediction runs, each
    with the same input, rather than windows placed elsewhere, which networks normalising each
    window's features (instance norm) label a little differently."""
    if size <= window:
        return 0, size
    step = window_step(size, window, overlap)
    start = min(lo, size - window) // step * step
    stop = start + window + max(0, math.ceil((hi - start - window) / step)) * step
    return start, min(stop, size)


def restrict(meta: PreprocessMeta, box: Box) -> PreprocessMeta:
    """The preprocessing record of the sub-array `box` of the preprocessed image: inverting scores
    of that sub-array with it puts them in place on the CT grid, background elsewhere."""
    shift = np.eye(4)
    shift[:3, 3] = [lo for lo, _ in box]
    crop = tuple((c0 + lo, c0 + hi) for (c0, _), (lo, hi) in zip(meta.crop, box, strict=True))
    affine = np.asarray(meta.affine) @ shift
    return replace(meta, crop=crop, affine=tuple(tuple(float(v) for v in row) for row in affine))  # type: ignore[arg-type]
