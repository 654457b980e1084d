"""Domain randomisation: re-render a phantom's image from its tissue map with random appearance.

SynthSeg (Billot et al., Medical Image Analysis 86, 2023, https://arxiv.org/abs/2107.09559)
trains only on images synthesised from label maps with random contrast, resolution, bias and
noise; since no appearance repeats, the network has to learn shape and context, and a real scan
becomes one more sample. `synthesize` does this for CT tissue maps (`kidneyseg.data.phantom`
writes one beside every case): every tissue gets a random value in Hounsfield units (half of the
time a realistic one of a random contrast phase, jittered; otherwise anything in
`RANDOM_HU`), a random within-tissue texture, a smooth additive bias (cupping, beam hardening),
random blur (resolution, partial volume) and correlated noise of random level, then the run's
HU window and a random gamma. `SynthesizeD` applies it to training patches (recipe setting
`data.synth_randomize`: the probability per patch). The ranges are documented in
docs/phantom.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai import transforms as mt
from scipy import ndimage as ndi

from kidneyseg.data.phantom.render import HU_RANGES, PHASES
from kidneyseg.data.phantom.tissue import N_TISSUES, Tissue, tissue_ids

RANDOM_HU = (-200.0, 500.0)
"""Range of a fully random tissue value (HU); air-like tissues keep their physical value."""
AIR_LIKE = (Tissue.AIR, Tissue.BOWEL_GAS, Tissue.LUNG, Tissue.OUTSIDE_FOV)
TEXTURE_SD = (0.0, 25.0)
"""Range of the within-tissue texture SD (HU), drawn per tissue."""
BIAS_HU = 40.0
"""Largest amplitude of the smooth additive bias field (HU)."""
BLUR_SIGMA = (0.0, 1.2)
"""Range of the Gaussian blur SD per axis (voxels of the training grid)."""
NOISE_SD = (0.0, 60.0)
"""Range of the image noise SD (HU), before the noise correlation filter."""
GAMMA_LOG_SD = 0.25
"""SD of log(gamma) applied to the windowed [0, 1] image."""


def random_tissue_hu(rng: np.random.Generator) -> np.ndarray:
    """One HU value per tissue id: a jittered realistic phase (half the time) or anything."""
    if rng.random() < 0.5:
        ranges = HU_RANGES[str(rng.choice(PHASES))]
        low = np.array([ranges.get(t, (0, 0))[0] for t in Tissue], dtype=np.float64)
        high = np.array([ranges.get(t, (0, 0))[1] for t in Tissue], dtype=np.float64)
        hu = low + (high - low) * rng.random(N_TISSUES) + rng.normal(0, 20, N_TISSUES)
    else:
        hu = rng.uniform(*RANDOM_HU, N_TISSUES)
    for tissue in AIR_LIKE:
        hu[tissue] = rng.uniform(-1024, -700)
    return hu.astype(np.float32)


def _smooth_field(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise with unit SD."""
    field = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return field / max(float(field.std()), 1e-6)


def _bias_field(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A smooth random field: coarse control points zoomed to the image size, in [-1, 1]."""
    coarse = rng.uniform(-1, 1, tuple(int(rng.integers(2, 5)) for _ in shape)).astype(np.float32)
    return ndi.zoom(
        coarse,
        [n / c for n, c in zip(shape, coarse.shape, strict=True)],
        order=1,
        mode="nearest",
        grid_mode=True,
    )


def synthesize(tissue: np.ndarray, hu_window: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """A random-appearance image of a tissue map, windowed to [0, 1] like the preprocessed CT.

    Args:
        tissue: `Tissue` ids on the training grid (any number of spatial dimensions).
        hu_window: the run's (low, high) HU window.
        rng: the random generator of this draw.

    Returns:
        float32 image of `tissue`'s shape in [0, 1].
    """
    ids = tissue_ids(tissue)
    shape = ids.shape
    image = random_tissue_hu(rng)[ids]
    texture_sd = rng.uniform(*TEXTURE_SD, N_TISSUES).astype(np.float32)
    image += texture_sd[ids] * _smooth_field(shape, rng.uniform(0.7, 3.0), rng)
    image += rng.uniform(0, BIAS_HU) * _bias_field(shape, rng)
    sigma = rng.uniform(*BLUR_SIGMA, len(shape))
    if sigma.max() > 0.1:
        image = ndi.gaussian_filter(image, sigma, truncate=2.5)
    noise_sd = rng.uniform(*NOISE_SD)
    if noise_sd > 0:
        noise = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), rng.uniform(0.0, 1.0))
        image += noise * (noise_sd / max(float(noise.std()), 1e-6))
    low, high = hu_window
    image = np.clip((image - low) / (high - low), 0.0, 1.0)
    return (image ** np.exp(rng.normal(0, GAMMA_LOG_SD))).astype(np.float32)


class SynthesizeD(mt.RandomizableTransform, mt.MapTransform):
    """With probability `prob`, replace `image` by `synthesize(tissue)`; drop the `tissue` key.

    Args:
        hu_window: the run's HU window (the preprocessed image is windowed with it).
        prob: probability per sample (`data.synth_randomize`).
    """

    def __init__(self, hu_window: tuple[float, float], prob: float):
        mt.RandomizableTransform.__init__(self, prob)
        mt.MapTransform.__init__(self, keys=("tissue",))
        self.hu_window = (float(hu_window[0]), float(hu_window[1]))

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        out = dict(data)
        tissue = out.pop("tissue")
        self.randomize(None)
        if self._do_transform:
            rng = np.random.default_rng(self.R.randint(0, 2**32 - 1, dtype=np.int64))
            array = synthesize(np.asarray(tissue)[0], self.hu_window, rng)
            out["image"] = torch.as_tensor(array[None])
        return out
