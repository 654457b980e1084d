"""Kidneys (cortex, medullary pyramids, sinus fat, pelvis, hilar vessels) and their lesions.

A kidney is a lobulated ellipsoid (length 10.2-13.8 cm, width 5.8-8 cm, thickness 4.6-6.6 cm, so
that its extents and median volume match tumor-free KiTS19 training kidneys' (benchmarks/kidney_sizes.py),
and a large kidney is no sign of a tumor) with a hilar notch facing antero-medially, its long axis
tilted so that the upper pole is more medial and posterior (normal adult anatomy). Inside it: a
5-7 mm cortex, medullary pyramids radiating from the sinus, sinus fat and the renal pelvis. Labels
follow the KiTS annotation rule "all parenchyma and the non-fat tissue within the hilum" (Heller
et al., arXiv:1904.00445): cortex, medulla and pelvis are kidney; sinus fat is background.

Tumors are lobulated ellipsoids of 1-10 cm with heterogeneous enhancement and (when larger than
2.5 cm, usually) a necrotic core, centred between the middle of the kidney and just outside its
surface, so that many are partly exophytic. Cysts are smooth water-density ellipsoids of 0.8-6 cm
with a sharp margin, mostly cortical and exophytic.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from kidneyseg.data.phantom.body import ORGAN_OVER, Body
from kidneyseg.data.phantom.render import TUMOR_ENHANCEMENT_HU, tumor_delta
from kidneyseg.data.phantom.shapes import Canvas, Lobes, WaveNoise, ellipsoid_level, frame, segment_distance
from kidneyseg.data.phantom.tissue import Tissue, tissue_set

KIDNEY_OVER = tissue_set(
    *ORGAN_OVER.nonzero()[0],
    Tissue.LIVER,
    Tissue.HEPATIC_VESSEL,
    Tissue.SPLEEN,
    Tissue.PANCREAS,
    Tissue.GALLBLADDER,
    Tissue.MUSCLE,
)
LESION_OVER = tissue_set(
    *KIDNEY_OVER.nonzero()[0],
    Tissue.KIDNEY_CORTEX,
    Tissue.KIDNEY_MEDULLA,
    Tissue.RENAL_PELVIS,
    Tissue.SINUS_FAT,
)
TUMOR_COUNT_P = (0.15, 0.5, 0.25, 0.1)
CYST_COUNT_P = (0.4, 0.3, 0.2, 0.1)


@dataclass(frozen=True)
class KidneyRecord:
    """What the ground truth needs of a kidney: its side, the voxel box (x, y, z slices) holding it
    and, for synthetic kidneys, the designed length (mm)."""

    side: str
    slices: tuple[slice, slice, slice]
    nominal_length: float | None = None


@dataclass(frozen=True)
class LesionRecord:
    """What the ground truth needs of a lesion (instance id = position + 1 in `Scene.lesions`): its
    kind, side, the voxel box (x, y, z slices) holding it and, if synthetic, its designed diameter."""

    kind: str
    side: str
    slices: tuple[slice, slice, slice]
    nominal_diameter: float | None = None


@dataclass(frozen=True)
class Scene:
    """A painted phantom: the canvas, the body, kidney and lesion records, and the translation
    from patient coordinates to world (scanner) coordinates."""

    canvas: Canvas
    body: Body
    kidneys: tuple[KidneyRecord, ...]
    lesions: tuple[LesionRecord, ...]
    shift: np.ndarray
    source: str | None = None


@dataclass(frozen=True)
class Kidney:
    """One kidney: side, centre (mm), axes (rows: to the upper pole, to the hilum, third), semi-axes."""

    side: str
    centre: np.ndarray
    axes: np.ndarray
    semi: tuple[float, float, float]
    lobes: Lobes
    pyramids: np.ndarray


@dataclass(frozen=True)
class Lesion:
    """A tumor or cyst: centre (mm), axes, semi-axes and its appearance parameters."""

    kind: str
    side: str
    centre: np.ndarray
    axes: np.ndarray
    semi: tuple[float, float, float]
    lobes: Lobes
    enhancement: float
    necrosis: float
    calcified: bool = False
    septa: int = 0


def _pyramids(rng: np.random.Generator) -> np.ndarray:
    """Directions (normalised kidney coordinates) of 8-12 medullary pyramids, away from the hilum."""
    n = int(rng.integers(8, 13))
    d = rng.standard_normal((n * 3, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    d = d[d[:, 1] < 0.4][:n]
    return d


def sample_kidneys(body: Body, rng: np.random.Generator) -> list[Kidney]:
    """Both kidneys, paravertebral, the right one lower (displaced by the liver)."""
    kidneys = []
    for side, sign in (("right", 1.0), ("left", -1.0)):
        a, b, c = rng.uniform(51, 69), rng.uniform(29, 40), rng.uniform(23, 33)
        z = rng.uniform(-15, 5) if side == "right" else rng.uniform(5, 25)
        centre = np.array([sign * rng.uniform(62, 78), body.spine_y + rng.uniform(-6, 10), z])
        medial = -sign
        tilt_cor, tilt_sag = np.radians(rng.uniform(8, 20)), np.radians(rng.uniform(8, 20))
        long_axis = np.array([medial * np.sin(tilt_cor), -np.sin(tilt_sag), 1.0])
        turn = np.radians(rng.uniform(25, 45))
        hilum_dir = np.array([medial * np.cos(turn), np.sin(turn), 0.0])
        kidneys.append(
            Kidney(
                side, centre, frame(long_axis, hilum_dir), (a, b, c), Lobes.random(rng, 0.04), _pyramids(rng)
            )
        )
    return kidneys


def kidney_record(canvas: Canvas, kidney: Kidney) -> KidneyRecord:
    box = canvas.around_ellipsoid(kidney.centre, kidney.axes, kidney.semi, 2 * max(canvas.output.spacing))
    slices = box.slices if box is not None else (slice(0, 0),) * 3
    return KidneyRecord(kidney.side, slices, 2 * kidney.semi[0])


def hilum_point(kidney: Kidney) -> np.ndarray:
    return kidney.centre + kidney.axes[1] * kidney.semi[1] * 0.9


def renal_vein_path(body: Body, kidney: Kidney) -> list[np.ndarray]:
    """The renal vein from the hilum to the IVC (the left one crossing in front of the aorta)."""
    ax, ay, _ = body.aorta
    ix, iy = body.ivc
    h = hilum_point(kidney)
    if kidney.side == "left":
        return [h, np.array([ax - 8, ay + 16, h[2]]), np.array([ix, iy, h[2] + 3])]
    return [h, np.array([ix, iy, h[2]])]


def paint_renal_vessels(canvas: Canvas, body: Body, kidneys: list[Kidney]) -> None:
    """Renal veins to the IVC and renal arteries from the aorta."""
    ax, ay, _ = body.aorta
    over = tissue_set(*ORGAN_OVER.nonzero()[0], Tissue.PANCREAS, Tissue.MUSCLE)
    for kidney in kidneys:
        h = hilum_point(kidney)
        vein = renal_vein_path(body, kidney)
        artery = [h - np.array([0, 6, 4]), np.array([ax, ay, h[2] + 8])]
        for path, r, tissue in ((vein, 5.0, Tissue.IVC), (artery, 3.0, Tissue.AORTA)):
            for a, b in itertools.pairwise(path):
                box = canvas.box(np.minimum(a, b) - r, np.maximum(a, b) + r)
                if box is not None:
                    canvas.paint(box, segment_distance(box, a, b) < r, tissue, over=over)


def paint_thrombus(
    canvas: Canvas, body: Body, kidney: Kidney, instance: int, rng: np.random.Generator
) -> None:
    """Venous tumor thrombus: tumor filling the renal vein from the hilum, in some patients on
    into the IVC (labelled tumor, as KiTS23 does; venous invasion in ≈ 4-10 % of renal cell
    carcinomas, Kaufman et al., J Urol 2000)."""
    path = renal_vein_path(body, kidney)
    reach = rng.uniform(0.4, 1.0)
    if reach > 0.9:  # into the IVC, upwards
        path = [*path, path[-1] + np.array([0.0, 0.0, rng.uniform(15, 60)])]
    lengths = [float(np.linalg.norm(b - a)) for a, b in itertools.pairwise(path)]
    left = reach * sum(lengths)
    veins = tissue_set(Tissue.IVC)
    for (a, b), length in zip(itertools.pairwise(path), lengths, strict=True):
        if left <= 0:
            break
        end = a + (b - a) * min(1.0, left / max(length, 1e-6))
        left -= length
        r = 4.5
        box = canvas.box(np.minimum(a, end) - r, np.maximum(a, end) + r)
        if box is not None:
            canvas.paint(box, segment_distance(box, a, end) < r, Tissue.TUMOR, over=veins, instance=instance)


def paint_adrenals(canvas: Canvas, kidneys: list[Kidney]) -> None:
    """An adrenal gland over each upper pole, antero-medial: two thin limbs (an inverted V)."""
    over = tissue_set(*ORGAN_OVER.nonzero()[0])
    for kidney in kidneys:
        pole = kidney.centre + kidney.axes[0] * kidney.semi[0]
        medial = np.array([-np.sign(kidney.centre[0]), 0.0, 0.0])
        top = pole + medial * 12 + np.array([0.0, 8.0, 18.0])
        for spread in (-0.5, 0.5):
            direction = np.array([0.0, spread, -1.0]) / np.hypot(spread, 1.0)
            end = top + direction * 28
            box = canvas.box(np.minimum(top, end) - 3, np.maximum(top, end) + 3)
            if box is not None:
                canvas.paint(box, segment_distance(box, top, end) < 2.5, Tissue.ADRENAL, over=over)


def paint_kidney(canvas: Canvas, kidney: Kidney) -> None:
    _, b, c = kidney.semi
    margin = 18.0
    box = canvas.around_ellipsoid(kidney.centre, kidney.axes, kidney.semi, margin)
    if box is None:
        return
    mean_r = (b + c) / 2
    cortex_depth = 1 - 6.0 / mean_r
    fat_level = 1 + margin * 0.6 / mean_r
    level, (u, v, w) = ellipsoid_level(
        box, kidney.centre, kidney.axes, kidney.semi, kidney.lobes, band=(cortex_depth, fat_level)
    )
    canvas.paint(box, level < fat_level, Tissue.VISCERAL_FAT, over=KIDNEY_OVER)
    notch = (u / 0.32) ** 2 + ((v - 1.0) / 0.55) ** 2 + (w / 0.5) ** 2 < 1
    kidney_mask = (level < 1) & ~notch
    over = tissue_set(*KIDNEY_OVER.nonzero()[0])
    canvas.paint(box, kidney_mask, Tissue.KIDNEY_CORTEX, over=over)
    sinus = (u / 0.6) ** 2 + ((v - 0.3) / 0.45) ** 2 + (w / 0.55) ** 2 < 1
    medulla = kidney_mask & (level < cortex_depth) & ~sinus
    pu, pv, pw = u[medulla], v[medulla], w[medulla]
    norm = np.sqrt(pu * pu + pv * pv + pw * pw) + np.float32(1e-6)
    best = np.zeros_like(norm)
    for d in kidney.pyramids:
        np.maximum(best, np.float32(d[0]) * pu + np.float32(d[1]) * pv + np.float32(d[2]) * pw, out=best)
    medulla[medulla] = best > np.float32(np.cos(np.radians(22))) * norm
    kidney_tissue = tissue_set(Tissue.KIDNEY_CORTEX)
    canvas.paint(box, medulla, Tissue.KIDNEY_MEDULLA, over=kidney_tissue)
    canvas.paint(box, sinus & kidney_mask, Tissue.SINUS_FAT, over=kidney_tissue)
    pelvis = (u / 0.32) ** 2 + ((v - 0.62) / 0.32) ** 2 + (w / 0.3) ** 2 < 1
    canvas.paint(
        box,
        pelvis & (kidney_mask | notch),
        Tissue.RENAL_PELVIS,
        over=tissue_set(*over.nonzero()[0], Tissue.SINUS_FAT, Tissue.KIDNEY_CORTEX),
    )


def sample_lesions(kidneys: list[Kidney], rng: np.random.Generator) -> list[Lesion]:
    """0-3 tumors and 0-3 cysts on random kidneys, not overlapping each other."""
    n_tumors = int(rng.choice(4, p=TUMOR_COUNT_P))
    n_cysts = int(rng.choice(4, p=CYST_COUNT_P))
    lesions: list[Lesion] = []
    for kind, count in (("tumor", n_tumors), ("cyst", n_cysts)):
        for _ in range(count):
            for _attempt in range(30):
                lesion = sample_lesion(kind, kidneys[int(rng.integers(len(kidneys)))], rng)
                if all(
                    np.linalg.norm(lesion.centre - o.centre) > max(lesion.semi) + max(o.semi) + 3
                    for o in lesions
                ):
                    lesions.append(lesion)
                    break
    return lesions


def sample_lesion(kind: str, kidney: Kidney, rng: np.random.Generator) -> Lesion:
    """One tumor or cyst on `kidney`: size, position (not in the hilum), shape and appearance."""
    if kind == "tumor":
        diameter = float(np.clip(np.exp(rng.normal(np.log(38), 0.6)), 5, 150))
        depth = rng.uniform(0.3, 1.05)
    else:
        diameter = float(np.clip(np.exp(rng.normal(np.log(22), 0.55)), 5, 80))
        depth = rng.uniform(0.75, 1.1)
    while True:
        n = rng.standard_normal(3)
        n /= np.linalg.norm(n)
        if n[1] < 0.5:  # not in the hilum
            break
    local = n * np.asarray(kidney.semi) * depth
    centre = kidney.centre + kidney.axes.T @ local
    r = diameter / 2
    semi = (r, r * rng.uniform(0.8, 1.0), r * rng.uniform(0.8, 1.0))
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    lobes = Lobes.random(rng, 0.08 if kind == "tumor" else 0.015)
    necrosis = rng.uniform(0.35, 0.7) if kind == "tumor" and diameter > 25 and rng.random() < 0.7 else 0.0
    if kind == "tumor":
        enhancement = rng.uniform(*TUMOR_ENHANCEMENT_HU)
    else:  # 1 cyst in 10 is hyperdense (proteinaceous or haemorrhagic, Bosniak II)
        enhancement = rng.uniform(30, 60) if rng.random() < 0.1 else 0.0
    calcified = kind == "tumor" and rng.random() < 0.15
    septa = int(rng.integers(1, 4)) if kind == "cyst" and diameter > 20 and rng.random() < 0.25 else 0
    return Lesion(kind, kidney.side, centre, q.T, semi, lobes, enhancement, necrosis, calcified, septa)


def paint_lesion(
    canvas: Canvas, lesion: Lesion, instance: int, phase: str, rng: np.random.Generator
) -> LesionRecord:
    """Paint a lesion: a cyst (with its septa), or a tumor whose enhancement shows in `phase`
    (`tumor_delta`), with necrotic core and calcifications."""
    box = canvas.around_ellipsoid(lesion.centre, lesion.axes, lesion.semi, 0.15 * max(lesion.semi))
    if box is None:
        return LesionRecord(lesion.kind, lesion.side, (slice(0, 0),) * 3, 2 * max(lesion.semi))
    record = LesionRecord(lesion.kind, lesion.side, box.slices, 2 * max(lesion.semi))
    band = (lesion.necrosis - 0.15, 1.0) if lesion.necrosis > 0 else (1.0, 1.0)
    level, _ = ellipsoid_level(box, lesion.centre, lesion.axes, lesion.semi, lesion.lobes, band=band)
    inside = level < 1
    if lesion.kind == "cyst":
        canvas.paint(box, inside, Tissue.CYST, over=LESION_OVER, delta=lesion.enhancement, instance=instance)
        _paint_septa(canvas, box, lesion, inside, rng)
        return record
    texture = WaveNoise.random(rng, wavelength=(5, 16))(box)
    canvas.paint(
        box,
        inside,
        Tissue.TUMOR,
        over=LESION_OVER,
        delta=tumor_delta(lesion.enhancement, texture, phase),
        instance=instance,
    )
    if lesion.necrosis > 0:
        core = inside & (level + 0.12 * texture < lesion.necrosis)
        canvas.paint(box, core, Tissue.TUMOR_NECROSIS, over=tissue_set(Tissue.TUMOR), delta=6 * texture)
    if lesion.calcified:  # punctate or coarse calcifications (10-20 % of renal cell carcinomas)
        spots = WaveNoise.random(rng, wavelength=(3, 8))(box)
        canvas.paint(box, inside & (spots > 1.6), Tissue.TUMOR_CALCIFICATION, over=TUMOR_INSIDE)
    return record


TUMOR_INSIDE = tissue_set(Tissue.TUMOR, Tissue.TUMOR_NECROSIS)


def _paint_septa(canvas: Canvas, box, lesion: Lesion, inside: np.ndarray, rng: np.random.Generator) -> None:
    """Thin (≈ 1.5 mm) septa across a cyst: planes through it (Bosniak II-IIF)."""
    for _ in range(lesion.septa):
        normal = rng.standard_normal(3)
        normal /= np.linalg.norm(normal)
        offset = rng.uniform(-0.5, 0.5) * min(lesion.semi)
        d = (
            normal[0] * (box.x - lesion.centre[0])
            + normal[1] * (box.y - lesion.centre[1])
            + normal[2] * (box.z - lesion.centre[2])
        )
        half = max(0.75, 0.5 * max(canvas.output.spacing))  # at least one voxel thick on coarse grids
        canvas.paint(
            box, inside & (np.abs(d - offset) < half), Tissue.CYST_SEPTUM, over=tissue_set(Tissue.CYST)
        )
