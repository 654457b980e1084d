"""How the phantom's tissues look in CT: their attenuation (HU) per contrast phase, and the CT
image formation.

The anatomy modules paint tissue ids into a `uint8` map plus an HU offset map (texture); this
module turns that into a CT image: a per-case HU value for every tissue (drawn from the ranges in
`HU_RANGES`, which depend on the contrast phase), partial volume (the HU of a map painted on a grid
finer than the slices, averaged over the slice sensitivity profile), the scanner's in-plane point
spread function, and spatially correlated quantum noise. The ranges and their sources are listed in
docs/phantom.md.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from kidneyseg.data.phantom.shapes import WaveNoise
from kidneyseg.data.phantom.tissue import N_TISSUES, Tissue

PHASES = ("noncontrast", "corticomedullary", "nephrographic", "excretory")
PHASE_P = (0.3, 0.25, 0.3, 0.15)
"""KiTS19/21 cases are late-arterial (corticomedullary), KiTS23 adds nephrographic ones; CT in the
wild is often unenhanced (and so is the low-dose CT of a SPECT/CT), and urography adds the
excretory phase with a dense collecting system. `PHASE_P` are the phases' shares of the phantoms."""

# (low, high) HU of each tissue's mean value, drawn once per case. Sources in docs/phantom.md.
_COMMON: dict[Tissue, tuple[float, float]] = {
    Tissue.AIR: (-1000, -990),
    Tissue.SKIN: (20, 50),
    Tissue.SUBCUTANEOUS_FAT: (-110, -85),
    Tissue.MUSCLE: (45, 65),
    Tissue.VISCERAL_FAT: (-105, -80),
    Tissue.GALLBLADDER: (0, 20),
    Tissue.BOWEL_GAS: (-1000, -960),
    Tissue.BOWEL_FLUID: (0, 25),
    Tissue.BOWEL_CONTRAST: (180, 400),
    Tissue.BOWEL_FECES: (-60, 40),
    Tissue.BONE_CORTICAL: (600, 1100),
    Tissue.BONE_CANCELLOUS: (140, 280),
    Tissue.DISC: (70, 110),
    Tissue.SPINAL_CANAL: (5, 25),
    Tissue.SINUS_FAT: (-100, -70),
    Tissue.TUMOR_NECROSIS: (10, 30),
    Tissue.TUMOR_CALCIFICATION: (250, 700),
    Tissue.CYST: (0, 18),
    Tissue.OUTSIDE_FOV: (-1024, -1024),
    Tissue.LUNG: (-900, -780),
    Tissue.TABLE: (-400, 200),
}
_CONTRAST: dict[Tissue, tuple[float, float]] = {Tissue.RENAL_PELVIS: (5, 25), Tissue.CYST_SEPTUM: (40, 90)}
HU_RANGES: dict[str, dict[Tissue, tuple[float, float]]] = {
    "noncontrast": {
        **_COMMON,
        Tissue.LIVER: (50, 70),
        Tissue.HEPATIC_VESSEL: (35, 50),
        Tissue.SPLEEN: (40, 55),
        Tissue.PANCREAS: (30, 50),
        Tissue.BOWEL_WALL: (30, 50),
        Tissue.AORTA: (35, 55),
        Tissue.IVC: (35, 55),
        Tissue.HEART: (35, 55),
        Tissue.MYOCARDIUM: (35, 55),
        Tissue.KIDNEY_CORTEX: (25, 45),
        Tissue.KIDNEY_MEDULLA: (20, 40),
        Tissue.RENAL_PELVIS: (0, 20),
        Tissue.TUMOR: (20, 50),
        Tissue.CYST_SEPTUM: (25, 50),
        Tissue.ADRENAL: (10, 40),
    },
    "corticomedullary": {
        **_COMMON,
        **_CONTRAST,
        Tissue.HEART: (150, 300),
        Tissue.MYOCARDIUM: (80, 160),
        Tissue.ADRENAL: (50, 100),
        Tissue.LIVER: (60, 100),
        Tissue.HEPATIC_VESSEL: (120, 190),
        Tissue.SPLEEN: (100, 160),
        Tissue.PANCREAS: (100, 150),
        Tissue.BOWEL_WALL: (80, 140),
        Tissue.AORTA: (200, 350),
        Tissue.IVC: (100, 190),
        Tissue.KIDNEY_CORTEX: (150, 250),
        Tissue.KIDNEY_MEDULLA: (60, 120),
        Tissue.TUMOR: (70, 150),
    },
    "nephrographic": {
        **_COMMON,
        **_CONTRAST,
        Tissue.HEART: (130, 200),
        Tissue.MYOCARDIUM: (80, 150),
        Tissue.ADRENAL: (50, 90),
        Tissue.LIVER: (100, 140),
        Tissue.HEPATIC_VESSEL: (150, 210),
        Tissue.SPLEEN: (110, 150),
        Tissue.PANCREAS: (90, 130),
        Tissue.BOWEL_WALL: (90, 140),
        Tissue.AORTA: (150, 230),
        Tissue.IVC: (130, 190),
        Tissue.KIDNEY_CORTEX: (140, 210),
        Tissue.KIDNEY_MEDULLA: (130, 200),
        Tissue.TUMOR: (60, 120),
    },
    "excretory": {
        **_COMMON,
        Tissue.LIVER: (80, 120),
        Tissue.HEPATIC_VESSEL: (100, 150),
        Tissue.SPLEEN: (90, 120),
        Tissue.PANCREAS: (70, 110),
        Tissue.BOWEL_WALL: (70, 110),
        Tissue.AORTA: (100, 160),
        Tissue.IVC: (100, 150),
        Tissue.HEART: (100, 150),
        Tissue.MYOCARDIUM: (70, 130),
        Tissue.KIDNEY_CORTEX: (110, 180),
        Tissue.KIDNEY_MEDULLA: (120, 200),
        Tissue.RENAL_PELVIS: (300, 1500),
        Tissue.TUMOR: (45, 100),
        Tissue.CYST_SEPTUM: (50, 100),
        Tissue.ADRENAL: (40, 80),
    },
}
TEXTURE_HU: dict[Tissue, float] = {
    Tissue.SPLEEN: 12.0,
    Tissue.BOWEL_WALL: 12.0,
    Tissue.LIVER: 5.0,
    Tissue.KIDNEY_CORTEX: 14.0,
    Tissue.KIDNEY_MEDULLA: 14.0,
    Tissue.PANCREAS: 10.0,
    Tissue.MUSCLE: 5.0,
    Tissue.LUNG: 40.0,
}
"""Amplitude (HU) of the smooth texture added to whole organs (arterial-phase splenic
heterogeneity, bowel mucosal enhancement, lobulated pancreas, lung vessels)."""


UNENHANCED_HU: dict[Tissue, float] = {
    Tissue.KIDNEY_CORTEX: 30,
    Tissue.KIDNEY_MEDULLA: 30,
    Tissue.LIVER: 55,
    Tissue.HEPATIC_VESSEL: 40,
    Tissue.SPLEEN: 45,
    Tissue.PANCREAS: 40,
    Tissue.BOWEL_WALL: 40,
    Tissue.IVC: 40,
    Tissue.HEART: 40,
    Tissue.MYOCARDIUM: 45,
}
"""Attenuation before contrast (blood 40 HU); enhancement is added on top of these."""
ENHANCEMENT_RATIO: dict[str, dict[Tissue, tuple[float, float]]] = {
    "noncontrast": {},
    "corticomedullary": {
        Tissue.KIDNEY_CORTEX: (0.5, 0.85),
        Tissue.KIDNEY_MEDULLA: (0.12, 0.35),
        Tissue.LIVER: (0.05, 0.2),
        Tissue.HEPATIC_VESSEL: (0.3, 0.6),
        Tissue.SPLEEN: (0.25, 0.5),
        Tissue.PANCREAS: (0.25, 0.45),
        Tissue.BOWEL_WALL: (0.2, 0.4),
        Tissue.IVC: (0.3, 0.6),
        Tissue.MYOCARDIUM: (0.35, 0.6),
    },
    "nephrographic": {
        Tissue.KIDNEY_CORTEX: (0.75, 1.15),
        Tissue.KIDNEY_MEDULLA: (0.7, 1.1),
        Tissue.LIVER: (0.3, 0.6),
        Tissue.HEPATIC_VESSEL: (0.8, 1.1),
        Tissue.SPLEEN: (0.45, 0.75),
        Tissue.PANCREAS: (0.35, 0.6),
        Tissue.BOWEL_WALL: (0.35, 0.6),
        Tissue.IVC: (0.7, 1.0),
        Tissue.MYOCARDIUM: (0.35, 0.6),
    },
    "excretory": {
        Tissue.KIDNEY_CORTEX: (0.9, 1.3),
        Tissue.KIDNEY_MEDULLA: (1.0, 1.4),
        Tissue.LIVER: (0.5, 0.8),
        Tissue.SPLEEN: (0.6, 0.9),
        Tissue.IVC: (0.8, 1.0),
        Tissue.MYOCARDIUM: (0.3, 0.55),
    },
}
"""Enhancement of each perfused tissue as a fraction of the aorta's (aorta − 40 HU): organs of a
patient whose aorta enhances strongly enhance strongly too (one cardiac output, one contrast dose)."""


def sample_hu(phase: str, rng: np.random.Generator) -> np.ndarray:
    """One HU value per tissue id for one case.

    Unperfused tissues are drawn uniformly from the phase's ranges; perfused ones get the aorta's
    enhancement times a random `ENHANCEMENT_RATIO`, kept inside their `HU_RANGES`.
    """
    ranges = HU_RANGES[phase]
    low = np.array([ranges[t][0] for t in Tissue], dtype=np.float64)
    high = np.array([ranges[t][1] for t in Tissue], dtype=np.float64)
    hu = low + (high - low) * rng.random(N_TISSUES)
    aortic_gain = hu[Tissue.AORTA] - 40.0
    for tissue, (lo, hi) in ENHANCEMENT_RATIO[phase].items():
        value = UNENHANCED_HU[tissue] + rng.uniform(lo, hi) * aortic_gain
        hu[tissue] = np.clip(value, *ranges[tissue])
    return hu.astype(np.float32)


TUMOR_ENHANCEMENT_HU = (-35.0, 25.0)
"""Per-tumor offset from its phase's viable-tumor range: clear-cell RCC enhances strongly,
papillary weakly."""
TUMOR_TEXTURE_HU = {"contrast": 22.0, "noncontrast": 6.0}
"""Amplitude (HU) of a viable tumor's heterogeneity (a smooth random field of unit scale): mostly
heterogeneous enhancement, so much less without contrast."""


def tumor_delta(enhancement: float, texture: np.ndarray, phase: str) -> np.ndarray:
    """A viable tumor's HU offsets in `phase`: its enhancement offset and texture. Both are
    enhancement, so without contrast there is no offset and little texture: the tumor keeps its
    unenhanced range, denser than a simple cyst (Bosniak 2019: a homogeneous mass of -9 to 20 HU
    at unenhanced CT is a benign cyst)."""
    if phase == "noncontrast":
        return TUMOR_TEXTURE_HU["noncontrast"] * texture
    return enhancement + TUMOR_TEXTURE_HU["contrast"] * texture


THICK_SLICE_MM = 1.5
"""Slices thicker than this are rendered from two samples per slice thickness (partial volume
across the slice); thinner ones, as thin as the in-plane pixels, from their centres."""


def samples_per_slice(thickness: float) -> int:
    """How many samples per slice thickness the tissue map is painted with (`Canvas.sub`)."""
    return 2 if thickness > THICK_SLICE_MM else 1


def render_ct(
    tissue: np.ndarray,
    delta: np.ndarray,
    hu: np.ndarray,
    axes: tuple[np.ndarray, np.ndarray, np.ndarray],
    noise_sd: float,
    rng: np.random.Generator,
    sub: int = 1,
) -> np.ndarray:
    """Form the CT image (int16 HU) from a tissue map on canonical (x, y, z) axes.

    Args:
        tissue: tissue ids, shape (nx, ny, nz'), painted with `sub` samples per slice
            (`Canvas.grid`; nz' = sub * (nz - 1) + 1 + 2 * (sub // 2) for nz slices).
        delta: per-voxel HU offsets (texture) added to the tissue's value; overwritten.
        hu: HU per tissue id (`sample_hu`).
        axes: the painted grid's x, y and z coordinates (mm), evenly spaced.
        noise_sd: standard deviation of the image noise in HU.
        rng: the case's random generator.
        sub: samples per slice; slice k's centre is sample `sub * k + sub // 2`.

    Partial volume: the HU (not the tissue ids) are averaged over the slice sensitivity profile,
    a Gaussian of FWHM = one slice thickness (contiguous slices overlap a little), sampled `sub`
    times per slice, so an organ edge inside a thick slice gives a value between the two tissues'.
    The in-plane point spread function is a Gaussian of 0.5 mm sigma (≈ 1.2 mm FWHM, a standard
    abdominal kernel); noise is white noise filtered in-plane into the mid-frequency band of
    filtered back-projection (a ramp-like noise power spectrum), independent per slice.
    """
    image = delta
    image += hu[tissue]
    _add_organ_texture(image, tissue, axes, rng)
    image = _slice_profile(image, sub)
    spacing = tuple(
        float(a[1] - a[0]) * f if len(a) > 1 else 1.0 for a, f in zip(axes, (1, 1, sub), strict=True)
    )
    outside = tissue[:, :, sub // 2 :: sub] == Tissue.OUTSIDE_FOV
    ndi.gaussian_filter(image, (0.5 / spacing[0], 0.5 / spacing[1], 0), output=image, truncate=2.0)
    image += _slice_noise(image.shape, spacing, noise_sd, rng)
    image[outside] = hu[Tissue.OUTSIDE_FOV]
    np.clip(image, -1024, 3071, out=image)
    return np.rint(image).astype(np.int16)


def _add_organ_texture(image: np.ndarray, tissue: np.ndarray, axes, rng: np.random.Generator) -> None:
    """Add `TEXTURE_HU`-scaled smooth noise to the voxels of the textured organs."""
    amplitude = np.zeros(N_TISSUES, dtype=np.float32)
    for t, a in TEXTURE_HU.items():
        amplitude[t] = a
    noise = WaveNoise.random(rng, wavelength=(8, 25))
    # a plane wave factorises: cos(k·r + p) = Re(e^{i kx x} e^{i ky y} e^{i (kz z + p)}), so each
    # slice's field is one small complex matrix product
    ex = np.exp(1j * np.outer(axes[0], noise.vectors[:, 0]))
    ey = np.exp(1j * np.outer(axes[1], noise.vectors[:, 1]))
    ez = np.exp(1j * (np.outer(axes[2], noise.vectors[:, 2]) + noise.phases))
    scale = np.sqrt(2.0 / len(noise.phases))
    for k in range(tissue.shape[2]):
        weight = amplitude[tissue[:, :, k]]
        if weight.any():
            field = ((ex * ez[k]) @ ey.T).real * scale
            image[:, :, k] += weight * field.astype(np.float32)


def _slice_profile(image: np.ndarray, sub: int) -> np.ndarray:
    """The slices of `image` (painted with `sub` samples per slice, Fortran order): each sample
    weighted by a Gaussian slice sensitivity profile of FWHM = `sub` samples around the slice
    centre, out to one slice thickness either side (the edge samples repeated beyond the grid).

    Written in place over the first slices of `image` (a slice's samples lie at or after its own
    index, so only the one sample the next slice still needs is kept aside when `sub` is 1);
    returns that view.
    """
    n = image.shape[2]
    off = sub // 2
    count = (n - 1 - 2 * off) // sub + 1
    taps = np.arange(-sub, sub + 1)
    weights = np.exp(-0.5 * (taps * 2.355 / sub) ** 2)
    weights = (weights / weights.sum()).astype(np.float32)
    kept: dict[int, np.ndarray] = {}
    for k in range(count):
        total = np.zeros(image.shape[:2], dtype=np.float32)
        for tap, weight in zip(sub * k + off + taps, weights, strict=True):
            i = min(max(int(tap), 0), n - 1)
            total += weight * kept.get(i, image[:, :, i])
        if sub == 1:  # the next slice's profile still reaches this sample
            kept = {k: image[:, :, k].copy()}
        image[:, :, k] = total
    return image[:, :, :count]


def _slice_noise(
    shape: tuple[int, ...], spacing: tuple[float, float, float], sd: float, rng: np.random.Generator
) -> np.ndarray:
    """Correlated noise, independent per slice: random crops of one large band-passed 2D field.

    Filtering one 2D field and cropping it at random offsets (with random flips) per slice costs a
    few 2D filters instead of one 3D filter over the whole volume, with the same per-slice
    statistics.
    """
    nx, ny, nz = shape
    field_shape = (2 * nx, 2 * ny)
    white = rng.standard_normal(field_shape, dtype=np.float32)
    fine = ndi.gaussian_filter(white, (0.45 / spacing[0], 0.45 / spacing[1]))
    coarse = ndi.gaussian_filter(fine, (2.0 / spacing[0], 2.0 / spacing[1]))
    band = fine - 0.7 * coarse
    band = np.asfortranarray(band * (sd / float(band.std())))  # x-contiguous crops, like the slices
    out = np.empty(shape, dtype=np.float32, order="F")
    ox = rng.integers(0, nx + 1, nz)
    oy = rng.integers(0, ny + 1, nz)
    flips = rng.integers(0, 4, nz)
    for k in range(nz):
        crop = band[ox[k] : ox[k] + nx, oy[k] : oy[k] + ny]
        if flips[k] & 1:
            crop = crop[::-1]
        if flips[k] & 2:
            crop = crop[:, ::-1]
        out[:, :, k] = crop
    return out
