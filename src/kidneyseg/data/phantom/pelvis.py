"""The bony pelvis below the iliac crests: sacrum, iliac wings with the iliacus and gluteal
muscles, and, lowest, the acetabula and femoral heads (patient coordinates as in `anatomy`;
sizes and levels with their sources in docs/phantom.md).

The levels follow the spine painted by `anatomy`: the lumbar column ends at the L5/S1 disc
(`Body.sacrum_z`), the crests lie at the L4/L5 disc (`Body.crest_z`).
"""

from __future__ import annotations

import numpy as np

from kidneyseg.data.phantom.body import Body, body_scale
from kidneyseg.data.phantom.shapes import Canvas
from kidneyseg.data.phantom.tissue import Tissue, tissue_set

PELVIS_OVER = tissue_set(Tissue.SUBCUTANEOUS_FAT, Tissue.MUSCLE, Tissue.VISCERAL_FAT)
SACRUM_MM = 95.0
"""Height of the sacrum (S1-S5) along the body axis."""


def paint_pelvis(canvas: Canvas, body: Body) -> None:
    """The bony pelvis below the iliac crests (near L4/L5): iliac wings, sacrum and, at the lowest
    slices, the acetabula and femoral heads, with the iliacus and gluteal muscles on the wings.

    Each iliac wing is a curved plate around the iliac fossa (which faces antero-medially): in
    every axial slice an arc of an ellipse centred in front of it, running from the sacroiliac joint
    beside the sacral ala to the anterior superior iliac spine, its crest highest postero-laterally,
    thick at the crest, behind the joint and, lower down, in the body of the ilium over the
    acetabulum; below the sacroiliac joint the greater sciatic notch cuts the posterior part away.
    """
    if canvas.zs[0] > body.crest_z:
        return
    yv, crest = body.spine_y, body.crest_z
    ca = body.cavity[0] * float(body_scale(body, np.array([crest]))[0])
    centre_y = yv + 65.0
    radius0 = 0.95 * ca - 20.0  # the fossa's lateral reach: the crest lies in the flank muscles
    bottom = crest - 165.0
    sacrum_top = body.sacrum_z
    for side in (-1, 1):  # RAS: +x is the patient's right
        box = canvas.box((side * 10, yv - 75, bottom), (side * (radius0 + 70), yv + 115, crest + 1))
        if box is None:
            continue
        depth = crest - box.z  # (z, 1, 1)
        dx = side * box.x - 20.0
        dy = (box.y - centre_y) / 0.9
        rho = np.sqrt(dx * dx + dy * dy)  # (1, y, x): elliptic distance from the fossa's centre
        theta = np.degrees(np.arctan2(dy, dx))  # 0 lateral, negative posterior
        radius = radius0 * (1 - 0.25 * np.clip(depth / 130, 0, 1))
        out = rho - radius  # mm outwards (lateral / posterior) of the fossa's surface
        below_crest = depth - 0.45 * np.abs(theta + 30)  # the crest falls to both spines
        anterior = 10 - 40 * np.clip((depth - 30) / 80, 0, 1)
        sciatic_notch = box.z < sacrum_top - 55  # below S2/S3: no sacroiliac joint
        posterior = np.where(sciatic_notch, -40.0, -72.0)
        arc = (theta <= anterior) & (theta >= posterior) & (below_crest >= 0)
        thick = (
            5
            + 8 * np.exp(-below_crest / 8)
            + 12 * np.clip((-theta - 50) / 20, 0, 1)
            + 25 * np.clip((depth - 60) / 50, 0, 1)
        )
        sacral = sacrum_top - box.z
        ala = 50 * (1 - 0.75 * np.clip(sacral / SACRUM_MM, 0, 1)) + 2.5
        beside = (side * box.x > ala) | (sacral < 0) | (sacral > SACRUM_MM)  # the joint space
        canvas.paint(box, arc & (out > -18) & (out < 0), Tissue.MUSCLE, over=PELVIS_OVER)  # iliacus
        gluteal = (theta < 5) & (theta > -75) & (below_crest > -5) & (out > 0) & (out < thick + 22)
        canvas.paint(box, gluteal, Tissue.MUSCLE, over=PELVIS_OVER)
        wing = arc & (out >= 0) & (out < thick) & beside
        canvas.paint(box, wing, Tissue.BONE_CORTICAL, over=PELVIS_OVER)
        canvas.paint(
            box,
            wing & (out > 2) & (out < thick - 2) & (below_crest > 2),
            Tissue.BONE_CANCELLOUS,
            over=tissue_set(Tissue.BONE_CORTICAL),
        )
        # the posterior ilium behind the sacroiliac joint, from the posterior superior iliac spine
        # down to S2/S3: a thick bar from beside the ala backwards and medially
        ex, ey = -side * 16.0, -26.0
        px, py = box.x - side * 56.0, box.y - (yv - 24)
        t = np.clip((px * ex + py * ey) / (ex * ex + ey * ey), 0, 1)
        bar = np.hypot(px - t * ex, py - t * ey)
        behind = (below_crest > 3) & (sacral < 55) & beside
        canvas.paint(box, behind & (bar < 9), Tissue.BONE_CORTICAL, over=PELVIS_OVER)
        canvas.paint(box, behind & (bar < 6.5), Tissue.BONE_CANCELLOUS, over=tissue_set(Tissue.BONE_CORTICAL))
    _paint_sacrum(canvas, body)
    _paint_hips(canvas, body, radius0)


def _paint_sacrum(canvas: Canvas, body: Body) -> None:
    """S1-S5: a wedge under the lumbar column, tilted backwards (the sacral slope) and curving
    forwards at its tip, as wide as the alae at S1 (≈ 10 cm) and tapering to S5, with the sacral canal."""
    top, yv = body.sacrum_z, body.spine_y
    box = canvas.box((-55, yv - 80, top - SACRUM_MM), (55, yv + 20, top))
    if box is None:
        return
    f = np.clip((top - box.z) / SACRUM_MM, 0, 1)  # 0 at S1, 1 at the tip
    centre = yv - 4 - SACRUM_MM * (0.7 * f - 0.38 * f * f)
    width = 50 * (1 - 0.75 * f)
    half = 20 * (1 - 0.5 * f)
    x, y = box.x, box.y - centre

    def inside(inset: float) -> np.ndarray:
        w = np.maximum(width - inset, 1.0)
        r = (x / w) ** 2
        return r * r + (y / (np.maximum(half - inset, 1.0) * (1 - 0.4 * np.minimum(r, 1)))) ** 2 < 1

    canvas.paint(box, inside(0.0), Tissue.BONE_CORTICAL, over=PELVIS_OVER)
    canvas.paint(box, inside(2.5), Tissue.BONE_CANCELLOUS, over=tissue_set(Tissue.BONE_CORTICAL))
    canal = (x / (10 * (1 - 0.6 * f))) ** 2 + ((y + 0.35 * half) / (5 * (1 - 0.5 * f))) ** 2 < 1
    canvas.paint(box, canal, Tissue.SPINAL_CANAL, over=tissue_set(Tissue.BONE_CANCELLOUS))


def _paint_hips(canvas: Canvas, body: Body, reach: float) -> None:
    """Femoral heads (≈ 47 mm across) in the acetabula, whose roofs are the lowest part of the ilium."""
    for side in (-1, 1):
        centre = np.array([side * (20 + 0.72 * reach), body.spine_y + 55, body.crest_z - 140])
        box = canvas.around(centre, 33)
        if box is None:
            continue
        dx, dy, dz = box.x - centre[0], box.y - centre[1], box.z - centre[2]
        r = np.sqrt(dx * dx + dy * dy + dz * dz)
        cup = (r > 25.5) & (r < 32) & (dz > -10) & (side * dx < 14)  # open laterally and downwards
        canvas.paint(box, cup, Tissue.BONE_CORTICAL, over=PELVIS_OVER)
        canvas.paint(
            box, (r > 27.5) & (r < 30) & cup, Tissue.BONE_CANCELLOUS, over=tissue_set(Tissue.BONE_CORTICAL)
        )
        canvas.paint(box, r < 23.5, Tissue.BONE_CORTICAL, over=PELVIS_OVER)
        canvas.paint(box, r < 21.5, Tissue.BONE_CANCELLOUS, over=tissue_set(Tissue.BONE_CORTICAL))
