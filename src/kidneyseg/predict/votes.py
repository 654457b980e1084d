"""How sure the network was where it labelled foreground: of the whole case, and of each lesion.

`foreground_voxels` gathers, from the blended scores, every network-grid voxel whose winning class
is not background, with that class and its probability; `Votes` keeps them with the network
grid's affine, so that any mask on any grid (the label map on the CT grid, one lesion's box) can
ask which of them fall inside it:

- `Votes.mean_top`: the case's confidence, the mean winning probability over the voxels still
  labelled after post-processing;
- `Votes.sure_fraction`: one lesion's, the share of its network-grid voxels that the network gave
  the lesion's own class with probability at least `SURE` (docs/report.md, "Lesion confidence").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kidneyseg.report.geometry import box_corners, to_world

if TYPE_CHECKING:
    import torch

SURE = 0.9
"""The probability of its class at which a network-grid voxel of a lesion counts as sure."""

_BLOCK = 1 << 20
"""Votes mapped to a mask's grid at a time (bounds the temporaries on a random network's votes)."""
_MAX_INDEX = np.iinfo(np.uint16).max
_TIE_BREAK_MM = np.array([1e-3, 1e-3, 1e-3])
"""How far (RAS+ mm) each vote is moved before it is rounded to a mask voxel: a tie-breaker, far
below any voxel size and far above floating-point noise."""


def foreground_voxels(
    parts: Sequence[tuple[Sequence[int], torch.Tensor]], probabilities: bool, chunk: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The network-grid voxels whose winning class is not background, that class and its probability.

    Args:
        parts: `(start, scores)` per region predicted (the whole image, or the kidney regions):
            `scores` is `[C, X, ...]` logits (one network) or averaged probabilities (an
            ensemble) whose first voxel sits at index `start` of the network grid.
        probabilities: whether the scores are probabilities already.
        chunk: slices along X per step (bounds the temporary memory).

    Returns:
        uint16 `[N, 3]` network-grid indices, uint8 `[N]` winning classes and float32 `[N]`
        winning probabilities.
    """
    import torch

    points, winners, tops = [np.zeros((0, 3), np.uint16)], [np.zeros(0, np.uint8)], [np.zeros(0, np.float32)]
    for (origin, scores), x in ((part, x) for part in parts for x in range(0, part[1].shape[1], chunk)):
        block = scores[:, x : x + chunk].float()
        top, winner = (block if probabilities else torch.softmax(block, dim=0)).max(dim=0)
        winner = winner.numpy()
        where = np.argwhere(winner > 0)
        index = tuple(where.T)
        tops.append(top.numpy()[index])
        winners.append(winner[index].astype(np.uint8))
        where[:, 0] += x
        points.append((where + np.asarray(origin)).astype(np.uint16))
    return np.concatenate(points), np.concatenate(winners), np.concatenate(tops)


@dataclass(frozen=True)
class Votes:
    """The network's foreground voxels (`foreground_voxels`) on the grid `affine` (voxel to world).

    Attributes:
        points: uint16 `[N, 3]` network-grid indices.
        winner: uint8 `[N]` winning class of each (a value of the model's label map).
        top: float32 `[N]` its probability.
        affine: the network grid's voxel-to-world affine (RAS+, mm).
    """

    points: np.ndarray
    winner: np.ndarray
    top: np.ndarray
    affine: np.ndarray

    def _inside(self, mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """Whether each vote's centre falls in a voxel of `mask` (a grid with voxel-to-world
        `affine`) that is set: the voxel nearest to it. Only the votes within the mask's box,
        taken to the network grid, are mapped (a lesion is a small part of a random network's
        millions of votes)."""
        to_mask = np.linalg.inv(np.asarray(affine, dtype=float)) @ np.asarray(self.affine, dtype=float)
        # A vote halfway between two mask voxels (common: both grids are centred on the scan) goes
        # to the one further along +R, +A, +S: nudged in world space, so that the same CT stored
        # in another axis order or direction counts the same votes.
        to_mask[:3, 3] += np.linalg.inv(np.asarray(affine, dtype=float)[:3, :3]) @ _TIE_BREAK_MM
        in_network = to_world(box_corners([(-0.5, n - 0.5) for n in mask.shape]), np.linalg.inv(to_mask))
        low = np.clip(np.floor(in_network.min(axis=0)) - 1, 0, _MAX_INDEX).astype(np.uint16)
        high = np.clip(np.ceil(in_network.max(axis=0)) + 1, 0, _MAX_INDEX).astype(np.uint16)
        inside = np.zeros(len(self.points), bool)
        for start in range(0, len(self.points), _BLOCK):
            block = self.points[start : start + _BLOCK]
            near = np.ones(len(block), bool)
            for axis in range(3):  # compared in uint16, one axis at a time: no N x 3 temporaries
                column = block[:, axis]
                near &= (column >= low[axis]) & (column <= high[axis])
            near = np.flatnonzero(near)
            index = np.rint(to_world(block[near].astype(float), to_mask)).astype(np.intp)
            within = np.all((index >= 0) & (index < mask.shape), axis=1)
            inside[start + near[within]] = mask[tuple(index[within].T)] > 0
        return inside

    def mean_top(self, labels: np.ndarray, affine: np.ndarray) -> float | None:
        """Mean winning probability over the votes that fall in any foreground voxel of `labels`
        (so voxels that post-processing dropped do not count); None when none does."""
        kept = self._inside(labels, affine)
        return float(self.top[kept].mean()) if kept.any() else None

    def sure_fraction(self, mask: np.ndarray, affine: np.ndarray, value: int) -> float | None:
        """The share of the votes inside `mask` whose winner is class `value` with probability at
        least `SURE`; None when no vote falls inside (a lesion smaller than a network voxel)."""
        inside = self._inside(mask, affine)
        if not inside.any():
            return None
        sure = (self.winner[inside] == value) & (self.top[inside] >= SURE)
        return float(sure.mean())
