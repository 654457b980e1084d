"""What surrounds the abdomen in a real scan: lung bases and heart above the diaphragm, the
patient table under the back, and arms beside the body.

A network trained on abdomens cut cleanly around the kidneys meets all of these on a real scan
(a SPECT/CT or a chest-abdomen-pelvis CT runs from the lungs to the pelvis, with the arms often
down and the table always in view); painting them teaches it that air-filled lung, a bright
table edge or a muscular arm is not kidney.

The heart is four chambers of blood, each inside its muscular wall (the left ventricle's
thick, the others' thin), in a sac of epicardial fat that fills the grooves between them: an
enhancing wall around bright blood is what a kidney's cortex around its sinus looks like too, so
the network has to learn the difference from the heart itself. An arm is an upper arm (one bone)
or a forearm (two), with fat planes between its muscles, lying at a random distance from the
flank.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kidneyseg.data.phantom.body import BOWEL_CONTENTS, Body, body_scale
from kidneyseg.data.phantom.shapes import Box, Canvas, ellipsoid_level, frame
from kidneyseg.data.phantom.tissue import Tissue, tissue_set

ABOVE_DIAPHRAGM = tissue_set(
    Tissue.VISCERAL_FAT,
    Tissue.LIVER,
    Tissue.HEPATIC_VESSEL,
    Tissue.SPLEEN,
    Tissue.PANCREAS,
    Tissue.GALLBLADDER,
    Tissue.BOWEL_WALL,
    *BOWEL_CONTENTS,
)
"""Abdominal tissues that the lungs replace above the diaphragm (the wall, spine, aorta and
IVC stay)."""


@dataclass(frozen=True)
class Heart:
    """Random shape of one heart (mm, radians).

    Attributes:
        offset: shift of the heart's centre from its mean place (RAS).
        semi: semi-axes of the pericardial sac along the long axis (base to apex), the axis
            perpendicular to it in the sagittal-ish plane, and the axis towards the right ventricle.
        angle: the apex's direction in the axial plane, measured from the patient's left towards
            anterior.
        tilt: how far the apex points down.
        walls: thickness of the left ventricle's wall, the right ventricle's, the atria's.
    """

    offset: tuple[float, float, float]
    semi: tuple[float, float, float]
    angle: float
    tilt: float
    walls: tuple[float, float, float]


def sample_heart(rng: np.random.Generator) -> Heart:
    return Heart(
        offset=tuple(rng.uniform(-12, 12, 3)),
        semi=(rng.uniform(58, 72), rng.uniform(40, 50), rng.uniform(44, 56)),
        angle=float(np.radians(rng.uniform(30, 60))),
        tilt=float(np.radians(rng.uniform(15, 35))),
        walls=(rng.uniform(8, 13), rng.uniform(3, 5), rng.uniform(2, 3.5)),
    )


CHAMBERS = (
    # name: centre (long axis, perpendicular, towards the right ventricle) and semi-axes, as
    # fractions of the sac's semi-axes; wall: which of `Heart.walls`
    ("left ventricle", (0.2, 0.0, -0.35), (0.75, 0.8, 0.6), 0),
    ("right ventricle", (0.1, -0.05, 0.4), (0.7, 0.7, 0.5), 1),
    ("left atrium", (-0.6, 0.1, -0.3), (0.38, 0.6, 0.5), 2),
    ("right atrium", (-0.55, -0.05, 0.4), (0.4, 0.6, 0.5), 2),
)
"""The four chambers inside the sac; what of the sac they leave is epicardial fat."""


@dataclass(frozen=True)
class Arms:
    """Random layout of the arms beside the body (mm, radians).

    Attributes:
        radius: lateral semi-axis of an arm's cross-section.
        gap: distance between the flank and the arm's skin.
        height: the arm's centre, forwards from the body's centre, as a fraction of its
            anterior semi-axis.
        forearm: two bones (radius and ulna) instead of the humerus.
        septa: (angle, offset from the centre) of each fat plane between muscles.
    """

    radius: float
    gap: float
    height: float
    forearm: bool
    septa: tuple[tuple[float, float], ...]


def sample_arms(rng: np.random.Generator) -> Arms:
    radius = rng.uniform(32, 48)
    return Arms(
        radius=radius,
        gap=rng.uniform(0, 30),
        height=rng.uniform(-0.2, 0.4),
        forearm=bool(rng.random() < 0.5),
        septa=tuple(
            (rng.uniform(0, np.pi), rng.uniform(-0.4, 0.4) * radius) for _ in range(rng.integers(1, 4))
        ),
    )


@dataclass(frozen=True)
class Context:
    """Random layout of the non-abdominal surroundings of one patient (mm).

    Attributes:
        dome: height of the right and left diaphragmatic domes above the renal hila.
        table_gap: distance between the back and the table top (0: no table in view).
        arms: the arms beside the body (in the field of view where it reaches), or None.
        heart: the heart's shape (in view on scans that reach above the diaphragm).
    """

    dome: tuple[float, float]
    table_gap: float
    arms: Arms | None
    heart: Heart


def sample_context(rng: np.random.Generator) -> Context:
    right = rng.uniform(120, 190)
    return Context(
        dome=(right, right - rng.uniform(5, 25)),
        table_gap=rng.uniform(2, 40) if rng.random() < 0.85 else 0.0,
        arms=sample_arms(rng) if rng.random() < 0.35 else None,
        heart=sample_heart(rng),
    )


def paint_context(canvas: Canvas, body: Body, context: Context) -> None:
    """Paint lungs and heart above the diaphragm, the table and the arms (after the abdomen)."""
    _paint_thorax(canvas, body, context)
    if context.table_gap > 0:
        _paint_table(canvas, body, context.table_gap)
    if context.arms is not None:
        for side in (-1, 1):
            _paint_arm(canvas, body, context.arms, side)


def _paint_thorax(canvas: Canvas, body: Body, context: Context) -> None:
    ca, cb_ant, cb_post = body.cavity
    top = max(context.dome)
    if canvas.zs[-1] < top - 90:
        return
    box = canvas.box((-ca, -cb_post, top - 90), (ca, cb_ant, canvas.zs[-1]))
    if box is None:
        return
    dome = np.where(box.x > 0, context.dome[0], context.dome[1])  # RAS: +x is the patient's right
    lateral = (np.abs(box.x) - 0.45 * ca) / (0.55 * ca)
    # the dome falls off laterally and, deepest, into the posterior costophrenic recesses
    posterior = np.clip(-box.y / cb_post, 0, 1)
    height = dome - 35 * lateral**2 - 55 * posterior**2
    mediastinum = (np.abs(box.x + 10) < 32) & (box.y > -cb_post + 40)
    lung = (box.z > height) & ~mediastinum
    canvas.paint(box, lung, Tissue.LUNG, over=ABOVE_DIAPHRAGM)
    centre = np.array([-0.15 * ca, 0.25 * cb_ant, top + 55]) + context.heart.offset
    _paint_heart(canvas, box, box.z > height, centre, context.heart)


def _paint_heart(canvas: Canvas, box: Box, above: np.ndarray, centre: np.ndarray, heart: Heart) -> None:
    """The sac of epicardial fat, then each chamber's wall and its blood, above the diaphragm."""
    c, s = np.cos(heart.angle), np.sin(heart.angle)
    apex = np.array([-c, s, -np.tan(heart.tilt)])  # RAS: -x is the patient's left
    axes = frame(apex, [0.0, 0.0, 1.0])
    semi = np.asarray(heart.semi)
    sac, _ = ellipsoid_level(box, centre, axes, semi)
    inside = (sac < 1) & above
    canvas.paint(box, inside, Tissue.VISCERAL_FAT, over=tissue_set(Tissue.LUNG))
    # blood stays a wall's thickness inside the sac too, where the sac cuts a chamber
    walled = {
        wall: (ellipsoid_level(box, centre, axes, semi - heart.walls[wall])[0] < 1) & above
        for wall in {chamber[3] for chamber in CHAMBERS}
    }
    for _, place, size, wall in CHAMBERS:
        middle = centre + (np.asarray(place) * semi) @ axes
        outer = np.asarray(size) * semi
        level, _ = ellipsoid_level(box, middle, axes, outer)
        canvas.paint(box, (level < 1) & inside, Tissue.MYOCARDIUM, over=tissue_set(Tissue.VISCERAL_FAT))
        level, _ = ellipsoid_level(box, middle, axes, outer - heart.walls[wall])
        canvas.paint(box, (level < 1) & walled[wall], Tissue.HEART, over=tissue_set(Tissue.MYOCARDIUM))


def _paint_table(canvas: Canvas, body: Body, gap: float) -> None:
    """A curved carbon-fibre table top (a thin dense shell) under the back."""
    back = -body.b_post * float(body_scale(body, canvas.zs).max()) - gap
    half_width = 0.85 * body.a + 40
    x = canvas.xs[:, None]
    y = canvas.ys[None, :]
    curve = back + 45 * (x / half_width) ** 2  # table edges rise beside the patient
    shell = (np.abs(y - curve) < 2.5) | (np.abs(y - (curve - 25)) < 1.5)
    shell &= np.abs(x) < half_width
    air = canvas.tissue == Tissue.AIR
    canvas.tissue[air & shell[:, :, None]] = Tissue.TABLE


def _paint_arm(canvas: Canvas, body: Body, arms: Arms, side: int) -> None:
    """One arm beside the flank: skin, fat, muscles with fat planes between them, and the humerus
    or the radius and ulna (truncated by the field of view)."""
    ra = arms.radius
    cx = side * (body.a + arms.gap + ra)
    cy = arms.height * body.b_ant
    box = canvas.box((cx - ra, cy - ra, canvas.zs[0]), (cx + ra, cy + ra, canvas.zs[-1]))
    if box is None:
        return
    dx, dy = box.x - cx, box.y - cy
    r = np.sqrt((dx / ra) ** 2 + (dy / (0.85 * ra)) ** 2)
    septa = np.zeros(np.broadcast_shapes(dx.shape, dy.shape), dtype=bool)
    for angle, offset in arms.septa:
        septa |= np.abs(dx * np.cos(angle) + dy * np.sin(angle) - offset) < 1.0
    bones = ((-0.3 * ra, 7.0), (0.3 * ra, 6.0)) if arms.forearm else ((0.0, 11.0),)
    cortex = np.zeros_like(septa)
    marrow = np.zeros_like(septa)
    for y, radius in bones:
        distance = np.sqrt(dx**2 + (dy - y) ** 2)
        cortex |= distance < radius
        marrow |= distance < 0.65 * radius
    limb = r < 0.75
    layers = (
        (r < 1.0, (Tissue.AIR,), Tissue.SKIN),
        (r < 0.95, (Tissue.SKIN,), Tissue.SUBCUTANEOUS_FAT),
        (limb & ~septa, (Tissue.SUBCUTANEOUS_FAT,), Tissue.MUSCLE),
        (limb & cortex, (Tissue.MUSCLE, Tissue.SUBCUTANEOUS_FAT), Tissue.BONE_CORTICAL),
        (marrow, (Tissue.BONE_CORTICAL,), Tissue.BONE_CANCELLOUS),
    )
    for mask, under, tissue in layers:  # each layer inside the previous one, never over the FOV edge
        canvas.paint(box, mask, tissue, over=tissue_set(*under))
