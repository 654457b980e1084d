"""Lesion pasting: a fresh random tumor or cyst painted onto a kidney of a training patch.

A network trained on a few hundred phantoms learns their few hundred tumors and cysts by heart
(docs/pretrained.md, "Lesions learned phantom by phantom"): it segments them on its training
phantoms far better than on new ones. Pasting lesions gives it one it has never seen in many
patches, with the phantom generator's own sizes, positions, shapes and appearance
(`kidneyseg.data.phantom.kidney.sample_lesion` and `paint_lesion`), in the spirit of the
synthetic tumors of Hu et al. (CVPR 2023, https://arxiv.org/abs/2303.14869).

The patch's tissue map (which travels with the label through the spatial transforms, as for
`data.synth_randomize`) says where the kidneys are and what a lesion may replace. The kidney
frame a lesion is placed in (centre, axes towards the upper pole and the hilum, semi-axes) is
estimated from the kidney's voxels in the patch. The label follows the painted tissues; the
image gets the lesion's values in Hounsfield units for the contrast phase its kidney cortex
shows, blended in with the patch's own noise kept (so the pasted lesion is as noisy as the rest
of the patch). Recipe setting `data.synth_lesions`: the probability per 3D patch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai import transforms as mt
from scipy import ndimage as ndi

from kidneyseg.data.phantom.kidney import Kidney, paint_lesion, sample_lesion
from kidneyseg.data.phantom.render import HU_RANGES, PHASES, sample_hu
from kidneyseg.data.phantom.shapes import Canvas, Grid, Lobes
from kidneyseg.data.phantom.tissue import KIDNEY_TISSUES, Tissue, label_lut, tissue_ids, tissue_set

MIN_KIDNEY_ML = 5.0
"""Kidneys with less than this in the patch get no lesion (too little to place one on)."""
TUMOR_SHARE = 0.5
"""Share of pasted lesions that are tumors; the rest are cysts."""
NOISE_SCALE_VOXELS = 1.0
"""The patch image minus its Gaussian blur of this SD is the noise the pasted lesion keeps."""
EDGE_BLUR_VOXELS = 0.6
"""SD of the blur that gives the pasted lesion's edge its partial volume."""


def kidney_frame(
    mask: np.ndarray, sinus: np.ndarray, spacing: np.ndarray, rng: np.random.Generator
) -> Kidney:
    """A kidney (centre, axes, semi-axes in mm) fitted to one kidney's voxels.

    The first axis is the longest principal axis (pole to pole); the second points at the
    renal sinus's voxels (`sinus`) where the patch shows them, so that lesions stay out of the
    hilum as the generator keeps them; the semi-axes are those of the solid ellipsoid with the
    voxels' variance along each axis.
    """
    points = np.argwhere(mask) * spacing
    centre = points.mean(axis=0)
    covariance = np.cov((points - centre).T)
    _, vectors = np.linalg.eigh(covariance)
    first = vectors[:, 2]
    hilum = vectors[:, 1]
    sinus_points = np.argwhere(sinus) * spacing
    if len(sinus_points):
        towards = sinus_points.mean(axis=0) - centre
        towards -= first * (towards @ first)
        if np.linalg.norm(towards) > 1e-3:
            hilum = towards / np.linalg.norm(towards)
    axes = np.stack([first, hilum, np.cross(first, hilum)])
    semi = tuple(float(np.sqrt(5.0 * max(a @ covariance @ a, 1.0))) for a in axes)
    # the side is the generator's bookkeeping only; a lesion's place does not depend on it
    return Kidney("left", centre, axes, semi, Lobes.random(rng, 0.0), np.zeros((0, 3)))  # type: ignore[arg-type]


def cortex_phase(image: np.ndarray, tissue: np.ndarray, hu_window: tuple[float, float]) -> str:
    """The contrast phase whose kidney-cortex range lies nearest the patch's cortex (median HU)."""
    low, high = hu_window
    cortex = image[tissue == Tissue.KIDNEY_CORTEX]
    if cortex.size == 0:
        return PHASES[0]
    hu = low + float(np.median(cortex)) * (high - low)
    return min(PHASES, key=lambda p: abs(sum(HU_RANGES[p][Tissue.KIDNEY_CORTEX]) / 2 - hu))


def paste_lesion(
    image: np.ndarray,
    label: np.ndarray,
    tissue: np.ndarray,
    spacing: tuple[float, float, float],
    hu_window: tuple[float, float],
    lut: np.ndarray,
    rng: np.random.Generator,
) -> bool:
    """Paint one random tumor or cyst onto a random kidney of a patch, in place.

    Args:
        image: the windowed patch, (x, y, z) in [0, 1].
        label: the patch's training classes (after the run's `lut`), (x, y, z).
        tissue: the patch's tissue ids, (x, y, z), uint8.
        spacing: the training grid's spacing (mm).
        hu_window: the run's HU window (the image is windowed with it).
        lut: phantom label value → training class.
        rng: the random generator of this draw.

    Returns:
        Whether a lesion was painted (False where the patch holds too little kidney, or the
        lesion drawn falls outside the patch).
    """
    step = np.asarray(spacing, dtype=np.float64)
    kidney_tissue = tissue_set(*KIDNEY_TISSUES)[tissue]
    components, count = ndi.label(kidney_tissue)
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:] * float(np.prod(step)) / 1000.0
    candidates = np.nonzero(sizes >= MIN_KIDNEY_ML)[0]
    if candidates.size == 0:
        return False
    mask = components == int(rng.choice(candidates)) + 1
    near = ndi.binary_dilation(mask, iterations=3)
    kidney = kidney_frame(mask, near & (tissue == Tissue.SINUS_FAT), step, rng)
    kind = "tumor" if rng.random() < TUMOR_SHARE else "cyst"
    canvas = Canvas(Grid(tuple(tissue.shape), tuple(float(s) for s in step), (0.0, 0.0, 0.0)))  # type: ignore[arg-type]
    canvas.tissue[...] = tissue
    phase = cortex_phase(image, tissue, hu_window)
    paint_lesion(canvas, sample_lesion(kind, kidney, rng), 1, phase, rng)
    changed = canvas.tissue != tissue
    if not changed.any():
        return False
    painted = canvas.tissue[changed]
    label[changed] = lut[label_lut()[painted]]
    low, high = hu_window
    hu = sample_hu(phase, rng)
    lesion = (hu[painted] + canvas.delta[changed] - low) / (high - low)
    step_change = np.zeros(image.shape, dtype=np.float32)
    step_change[changed] = lesion - ndi.gaussian_filter(image, NOISE_SCALE_VOXELS)[changed]
    image += ndi.gaussian_filter(step_change, EDGE_BLUR_VOXELS)
    np.clip(image, 0.0, 1.0, out=image)
    tissue[changed] = painted
    return True


class PasteLesionsD(mt.RandomizableTransform, mt.MapTransform):
    """With probability `prob`, paste one random lesion onto a kidney of the patch
    (`paste_lesion`); `image`, `label` and `tissue` change together.

    Args:
        prob: probability per patch (`data.synth_lesions`).
        spacing: the training grid's spacing (mm).
        hu_window: the run's HU window.
        lut: phantom label value → training class (`kidneyseg.labels.label_lut`).
    """

    def __init__(
        self, prob: float, spacing: tuple[float, ...], hu_window: tuple[float, float], lut: np.ndarray
    ):
        mt.RandomizableTransform.__init__(self, prob)
        mt.MapTransform.__init__(self, keys=("tissue",))
        self.spacing = tuple(float(s) for s in spacing)
        self.hu_window = (float(hu_window[0]), float(hu_window[1]))
        self.lut = np.asarray(lut, dtype=np.int64)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        self.randomize(None)
        if not self._do_transform:
            return data
        rng = np.random.default_rng(self.R.randint(0, 2**32 - 1, dtype=np.int64))
        image = data["image"][0].detach().cpu().numpy().astype(np.float32)
        label = data["label"][0].detach().cpu().numpy().astype(np.int64)
        tissue = tissue_ids(data["tissue"][0].detach().cpu().numpy())
        if not paste_lesion(image, label, tissue, self.spacing, self.hu_window, self.lut, rng):  # type: ignore[arg-type]
            return data
        out = dict(data)
        for key, array in (("image", image), ("label", label), ("tissue", tissue)):
            out[key] = data[key].clone()  # keeps the tensor's type and dtype for collation
            out[key][0] = torch.from_numpy(array.astype(np.float32))
        return out
