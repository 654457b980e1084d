"""Sliding-window inference on the preprocessed grid, with MONAI's window placement and blending.

The one inferer of the project: prediction (`Predictor.scores`) and validation during training
(`kidneyseg.train.validation`) both run `sliding_window_scores` with an `InferenceConfig`. The
windows, their order and their Gaussian/constant blending are those of MONAI's
`sliding_window_inference` (the inferer the SCA-UNet code of Gohil & Lad uses, with overlap 0.8),
which `blend_windows` reproduces bit for bit without importing MONAI; what is added here is the
callable it runs on each batch of windows, `WindowPredictor`:

- windows whose input is constant (all air/fat below the HU window, typically at the corners of
  the body box) are computed once per value and reused: a network in eval mode maps identical
  inputs to identical outputs, so this changes nothing in the result;
- mirroring test-time augmentation (logits averaged over all flips of `mirror_axes`, as in
  nnU-Net) and ensembles (softmax probabilities averaged over the networks);
- `torch.inference_mode`, optional bfloat16 autocast on CPUs that support it (float16 autocast on
  CUDA for validation under `train.amp`);
- the networks are whatever a backend runs (`kidneyseg.predict.backends`: a PyTorch module, an
  OpenVINO-compiled network), called on tensors the same way;
- 2D networks (Rathnayaka et al., KiTS19) run on axial slices: the window is
  `(roi_x, roi_y, 1)` and the slices of a batch go through the network together.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kidneyseg.config import InferenceConfig

if TYPE_CHECKING:
    import numpy as np
    import torch

PRECISIONS = ("float32", "bfloat16", "int8")
"""What `predict --precision` offers (int8: OpenVINO only, `kidneyseg.predict.backends`)."""
AUTOCAST = {"float32": None, "bfloat16": "bfloat16", "float16": "float16", "int8": None}
"""Autocast dtype per precision; float16 is training's CUDA mixed precision, used in validation.
int8 is compiled into the OpenVINO network; PyTorch (constant windows) runs those in float32."""


@dataclass
class WindowStats:
    """How many windows were seen, run through the network, and reused (constant input)."""

    windows: int = 0
    computed: int = 0
    reused: int = 0

    def add(self, other: WindowStats) -> None:
        """Count `other`'s windows too."""
        self.windows += other.windows
        self.computed += other.computed
        self.reused += other.reused

    def counts(self) -> dict[str, int]:
        """How many windows were seen ("total"), computed and reused, for the run record."""
        return {"total": self.windows, "computed": self.computed, "reused": self.reused}


class WindowPredictor:
    """Maps a batch of windows `[B, 1, X, Y, Z]` to scores `[B, C, X, Y, Z]`.

    With one network the scores are logits (averaged over mirrored copies when `mirror_axes`
    is set); with several, softmax probabilities averaged over the networks.

    Args:
        networks: networks in eval mode (PyTorch modules or a backend's compiled networks, called
            on a batch of windows), all predicting the same classes.
        spatial_dims: 3 for volumetric networks, 2 for slice networks (then `Z` is 1).
        mirror_axes: spatial axes (0 = x, 1 = y, 2 = z) to mirror for test-time augmentation;
            every combination of flips is evaluated.
        precision: "float32", or "bfloat16" to run PyTorch convolutions under CPU/CUDA autocast
            (an `OpenVINONetwork` has its precision compiled in), or "float16" (CUDA autocast,
            as training's `train.amp`); "int8" (an int8 `OpenVINONetwork`) runs PyTorch in float32.
        reuse_constant: compute each constant window value only once.
        constant_networks: the networks that compute constant windows (default: `networks`).
            A constant window is an ill-conditioned input for instance normalisation: its
            features have (almost) no variance, so each norm layer amplifies rounding differences
            and the output depends on the exact arithmetic. With another backend's `networks`, passing the
            PyTorch modules here keeps those windows exactly as PyTorch (and MONAI) computes them.
        classes: how many scores the networks give per voxel; needed only to skip windows
            (`sliding_window_scores(within=...)`).
    """

    def __init__(
        self,
        networks: Sequence[torch.nn.Module],
        spatial_dims: int = 3,
        mirror_axes: Sequence[int] = (),
        precision: str = "float32",
        reuse_constant: bool = True,
        constant_networks: Sequence[torch.nn.Module] | None = None,
        classes: int | None = None,
    ):
        if precision not in AUTOCAST:
            raise ValueError(f"precision must be one of {tuple(AUTOCAST)}, got {precision!r}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if any(a not in range(spatial_dims) for a in mirror_axes):
            raise ValueError(f"mirror axes {tuple(mirror_axes)} must be in 0..{spatial_dims - 1}")
        self.networks = list(networks)
        self.constant_networks = list(constant_networks) if constant_networks is not None else self.networks
        if len(self.constant_networks) != len(self.networks):
            raise ValueError("constant_networks must be as many as networks")
        self.spatial_dims = spatial_dims
        self.classes = classes
        self.precision = precision
        self.reuse_constant = reuse_constant
        axes = sorted(set(mirror_axes))
        self.flips = [
            tuple(a + 2 for a in combo)
            for n in range(len(axes) + 1)
            for combo in itertools.combinations(axes, n)
        ]
        self.stats = WindowStats()
        self._constant: dict[float, torch.Tensor] = {}

    def _run(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        import torch

        if self.spatial_dims == 2:
            x = x[..., 0]
        dtype = AUTOCAST[self.precision]
        with torch.autocast(
            x.device.type, dtype=getattr(torch, dtype or "float32"), enabled=dtype is not None
        ):
            y = net(x)
        y = y.float()
        return y[..., None] if self.spatial_dims == 2 else y

    def _scores(self, x: torch.Tensor, networks: Sequence[torch.nn.Module]) -> torch.Tensor:
        import torch

        total = None
        for net in networks:
            logits = None
            for dims in self.flips:
                out = self._run(net, torch.flip(x, dims)) if dims else self._run(net, x)
                out = torch.flip(out, dims) if dims else out
                logits = out if logits is None else logits.add_(out)
            if len(self.flips) > 1:
                logits /= len(self.flips)
            if len(networks) == 1:
                return logits
            probs = torch.softmax(logits, dim=1)
            total = probs if total is None else total.add_(probs)
        return total / len(networks)

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.inference_mode():
            self.stats.windows += windows.shape[0]
            if not self.reuse_constant:
                self.stats.computed += windows.shape[0]
                return self._scores(windows, self.networks)
            flat = windows.reshape(windows.shape[0], -1)
            low, high = flat.amin(dim=1).tolist(), flat.amax(dim=1).tolist()
            varied: list[int] = []
            new_constant: dict[float, int] = {}  # constant value not seen before -> first window
            for i, (lo, hi) in enumerate(zip(low, high, strict=True)):
                if lo != hi:
                    varied.append(i)
                elif lo not in self._constant and lo not in new_constant:
                    new_constant[lo] = i
            out_parts: dict[int, torch.Tensor] = {}
            if varied:
                out_parts.update(zip(varied, self._scores(windows[varied], self.networks), strict=True))
            if new_constant:
                first = list(new_constant.values())
                computed = self._scores(windows[first], self.constant_networks)
                for value, scores in zip(new_constant, computed, strict=True):
                    self._constant[value] = scores
            self.stats.computed += len(varied) + len(new_constant)
            self.stats.reused += windows.shape[0] - len(varied) - len(new_constant)
            return torch.stack(
                [out_parts[i] if i in out_parts else self._constant[low[i]] for i in range(len(low))]
            )


def window_roi(roi_size: Sequence[int], spatial_dims: int) -> tuple[int, int, int]:
    """The 3D window for a network's patch size: `(x, y, 1)` for a 2D network's slices."""
    roi = tuple(int(r) for r in roi_size)
    if spatial_dims == 2:
        if len(roi) == 3 and roi[2] == 1:
            return roi  # type: ignore[return-value]
        if len(roi) != 2:
            raise ValueError(f"a 2D network needs a 2-value roi_size, got {roi}")
        return (roi[0], roi[1], 1)
    if len(roi) != 3:
        raise ValueError(f"a 3D network needs a 3-value roi_size, got {roi}")
    return roi  # type: ignore[return-value]


def count_windows(shape: Sequence[int], roi: Sequence[int], overlaps: Sequence[float]) -> int:
    """How many windows `blend_windows` (as MONAI's `sliding_window_inference`) places on an image
    of `shape`: `window_starts` along each axis, the image padded up to the window where smaller."""
    return math.prod(
        len(window_starts(max(size, r), r, o)) for size, r, o in zip(shape, roi, overlaps, strict=True)
    )


def boxes_meet(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> bool:
    """Whether boxes `((lo, hi), ...)` (half-open index ranges) share a voxel."""
    return all(lo_a < hi_b and lo_b < hi_a for (lo_a, hi_a), (lo_b, hi_b) in zip(a, b, strict=True))


def _meets(spans: Sequence[slice], before: Sequence[int], boxes: Sequence[Sequence[tuple[int, int]]]) -> bool:
    """Whether a window (MONAI's slices on the image padded by `before`) overlaps one of `boxes`."""
    window = [(s.start - b, s.stop - b) for s, b in zip(spans, before, strict=True)]
    return any(boxes_meet(window, box) for box in boxes)


def sliding_window_scores(
    image: np.ndarray | torch.Tensor,
    predictor: WindowPredictor,
    inference: InferenceConfig,
    progress: bool = False,
    within: Sequence[Sequence[tuple[int, int]]] | None = None,
) -> torch.Tensor:
    """Blend window scores over a preprocessed image `[X, Y, Z]` into `[C, X, Y, Z]` float32.

    Args:
        image: the preprocessed image (float32, canonical axes); a tensor stays on its device.
        predictor: runs the network(s) on a batch of windows.
        inference: the window size (the training patch size, 2 values for a 2D network), overlap,
            blending ("gaussian": MONAI's, sigma 0.125 × window) and windows (3D) or slices (2D)
            per forward pass; its `mirror_axes` are the predictor's business.
        progress: show a progress bar over the windows.
        within: boxes `((x0, x1), (y0, y1), (z0, z1))` of the image: only the windows that
            overlap one of them run, the others count as zeros. Inside the boxes every voxel is
            blended from all the windows that hold it, so the scores there are those of the
            whole image (bit for bit with one window per pass; a pass holding fewer windows may
            round its last bit differently); elsewhere they mean nothing.
    """
    import torch
    from tqdm import tqdm

    roi = window_roi(inference.roi_size, predictor.spatial_dims)
    overlaps = window_overlaps(inference.overlap, predictor.spatial_dims)
    if within is not None and predictor.classes is None:
        raise ValueError("skipping windows needs the predictor's number of classes")
    tensor = torch.as_tensor(image, dtype=torch.float32)[None, None]
    shape = tensor.shape[2:]
    # MONAI pads an image smaller than the window evenly; its window slices are on that padding.
    before = [max(r - n, 0) // 2 for r, n in zip(roi, shape, strict=True)]
    total = count_windows(shape, roi, overlaps)
    with tqdm(total=total, desc="windows", unit="window", disable=not progress, leave=False) as bar:

        def counted(windows: torch.Tensor, where: list[tuple[slice, ...]]) -> torch.Tensor:
            needed = [
                i for i, spans in enumerate(where) if within is None or _meets(spans[2:], before, within)
            ]
            if len(needed) == windows.shape[0]:
                out = predictor(windows)
            else:
                out = torch.zeros((windows.shape[0], predictor.classes, *windows.shape[2:]))
                if needed:
                    out[needed] = predictor(windows[needed])
            bar.update(windows.shape[0])
            return out

        with torch.inference_mode():
            scores = blend_windows(tensor, roi, overlaps, inference.sw_batch_size, counted, inference.blend)
    return scores[0]


def window_step(size: int, roi: int, overlap: float) -> int:
    """How far apart MONAI's windows start along one axis of `size` voxels (at least `roi`):
    `int(roi × (1 - overlap))` voxels (at least 1), or `roi` where one window fills the axis."""
    return roi if roi == size else max(int(roi * (1 - overlap)), 1)


def window_overlaps(overlap: float, spatial_dims: int) -> tuple[float, float, float]:
    """The overlap along each axis of the 3D window: none across the slices of a 2D network."""
    return (overlap, overlap, 0.0) if spatial_dims == 2 else (overlap,) * 3


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Where MONAI's windows start along one axis of `size` voxels (at least `roi`): every
    `window_step` voxels, the last one flush with the end."""
    step = window_step(size, roi, overlap)
    return [min(i * step, size - roi) for i in range(math.ceil((size - roi) / step) + 1)]


def importance_map(roi: Sequence[int], blend: str, sigma_scale: float = 0.125) -> torch.Tensor:
    """MONAI's window weights: ones ("constant") or a Gaussian of sigma `sigma_scale` × the window
    per axis centred on the window ("gaussian"), clamped below at its minimum or 0.001."""
    import torch

    if blend == "constant":
        weights = torch.ones(tuple(roi), dtype=torch.float)
    elif blend == "gaussian":
        for axis, size in enumerate(roi):
            x = torch.arange(start=-(size - 1) / 2.0, end=(size - 1) / 2.0 + 1, dtype=torch.float)
            x = torch.exp(x**2 / (-2 * (size * sigma_scale) ** 2))
            weights = weights.unsqueeze(-1) * x[(None,) * axis] if axis else x
    else:
        raise ValueError(f"blend must be 'gaussian' or 'constant', got {blend!r}")
    return torch.clamp_(weights, min=max(torch.min(weights).item(), 0.001))


def blend_windows(
    image: torch.Tensor,
    roi: Sequence[int],
    overlaps: Sequence[float],
    batch: int,
    run: Callable[[torch.Tensor, list[list[slice]]], torch.Tensor],
    blend: str,
) -> torch.Tensor:
    """MONAI's `sliding_window_inference` (1.x) as this project calls it, without importing MONAI
    (which imports all of itself, seconds of a prediction's start-up): the same windows in the same
    order, the same weights and the same sums, so the same scores bit for bit (tests/test_predict.py).

    Args:
        image: `[1, 1, *spatial]` float32, padded evenly with zeros where smaller than `roi`.
        roi: the window.
        overlaps: per axis, as MONAI's `overlap`.
        batch: windows per call of `run`.
        run: scores `[B, C, *roi]` of windows `[B, 1, *roi]`, also given the windows' places
            (MONAI's `with_coord`: `[batch slice, channel slice, *spatial slices]` each).
        blend: "gaussian" or "constant".

    Returns:
        The blended scores `[1, C, *spatial]`.
    """
    import torch
    import torch.nn.functional as F

    size = image.shape[2:]
    pads = [max(r - n, 0) for r, n in zip(roi, size, strict=True)]
    if any(pads):
        image = F.pad(image, [p for pad in reversed(pads) for p in (pad // 2, pad - pad // 2)])
    padded = image.shape[2:]
    starts = [window_starts(n, r, o) for n, r, o in zip(padded, roi, overlaps, strict=True)]
    places = [
        [slice(0, 1), slice(None), *(slice(a, a + r) for a, r in zip(corner, roi, strict=True))]
        for corner in itertools.product(*starts)
    ]
    weights = importance_map(roi, blend)[None, None]
    counts = torch.zeros((1, 1, *padded), dtype=image.dtype)
    for place in places:
        counts[(slice(None), slice(None), *place[2:])] += weights
    scores = None
    for first in range(0, len(places), batch):
        chosen = places[first : first + batch]
        windows = (
            torch.cat([image[tuple(place)] for place in chosen]) if batch > 1 else image[tuple(chosen[0])]
        )
        out = run(windows, chosen) * weights
        if scores is None:
            scores = torch.zeros((1, out.shape[1], *padded), dtype=image.dtype)
        for place, window in zip(chosen, out, strict=True):
            scores[tuple(place)] += window
    scores /= counts
    return scores[(..., *(slice(p // 2, p // 2 + n) for p, n in zip(pads, size, strict=True)))]
