"""What surrounds the abdomen in a real scan: lung bases and heart above the diaphragm, the
patient table under the back, and arms beside the body.

A network trained on abdomens cut cleanly around the kidneys meets all of these on a real scan
(a SPECT/CT or a chest-abdomen-pelvis CT runs from the lungs to the pelvis, with the arms often
down and the table always in view); painting them teaches it that air-filled lung, a bright
table edge or a muscular arm is not kidney.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kidneyseg.data.phantom.body import BOWEL_CONTENTS, Body, body_scale
from kidneyseg.data.phantom.shapes import Canvas
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
class Context:
    """Random layout of the non-abdominal surroundings of one patient (mm).

    Attributes:
        dome: height of the right and left diaphragmatic domes above the renal hila.
        table_gap: distance between the back and the table top (0: no table in view).
        arms: whether the arms lie beside the body (in the field of view where it reaches).
        arm_radius: lateral semi-axis of an arm's cross-section.
    """

    dome: tuple[float, float]
    table_gap: float
    arms: bool
    arm_radius: float


def sample_context(rng: np.random.Generator) -> Context:
    right = rng.uniform(120, 190)
    return Context(
        dome=(right, right - rng.uniform(5, 25)),
        table_gap=rng.uniform(2, 40) if rng.random() < 0.85 else 0.0,
        arms=bool(rng.random() < 0.35),
        arm_radius=rng.uniform(32, 48),
    )


def paint_context(canvas: Canvas, body: Body, context: Context) -> None:
    """Paint lungs and heart above the diaphragm, the table and the arms (after the abdomen)."""
    _paint_thorax(canvas, body, context)
    if context.table_gap > 0:
        _paint_table(canvas, body, context.table_gap)
    if context.arms:
        for side in (-1, 1):
            _paint_arm(canvas, body, context, side)


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
    centre = np.array([-0.15 * ca, 0.25 * cb_ant, top + 55])
    level = ((box.x - centre[0]) / (0.45 * ca)) ** 2 + ((box.y - centre[1]) / (0.6 * cb_ant)) ** 2
    level = level + ((box.z - centre[2]) / 70) ** 2
    heart = (level < 1) & (box.z > height)
    canvas.paint(box, heart, Tissue.HEART, over=tissue_set(Tissue.LUNG, Tissue.VISCERAL_FAT))


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


def _paint_arm(canvas: Canvas, body: Body, context: Context, side: int) -> None:
    """One arm beside the flank: skin, fat, muscle and the humerus (truncated by the field of view)."""
    ra = context.arm_radius
    cx = side * (body.a + 15 + ra)
    cy = 0.1 * body.b_ant
    box = canvas.box((cx - ra, cy - ra, canvas.zs[0]), (cx + ra, cy + ra, canvas.zs[-1]))
    if box is None:
        return
    r = np.sqrt(((box.x - cx) / ra) ** 2 + ((box.y - cy) / (0.85 * ra)) ** 2)
    bone = np.sqrt((box.x - cx) ** 2 + (box.y - cy) ** 2)
    layers = (
        (r < 1.0, Tissue.AIR, Tissue.SKIN),
        (r < 0.95, Tissue.SKIN, Tissue.SUBCUTANEOUS_FAT),
        (r < 0.75, Tissue.SUBCUTANEOUS_FAT, Tissue.MUSCLE),
        (bone < 11, Tissue.MUSCLE, Tissue.BONE_CORTICAL),
        (bone < 7.5, Tissue.BONE_CORTICAL, Tissue.BONE_CANCELLOUS),
    )
    for mask, under, tissue in layers:  # each layer inside the previous one, never over the FOV edge
        canvas.paint(box, mask, tissue, over=tissue_set(under))
