"""Bowel of the synthetic body: colon (ascending, transverse, descending) along the flanks and
below the liver, and small-bowel loops on random walks in the anterior cavity, each a tube of
enhancing wall around its contents, or, optionally, collapsed (no lumen: the folded wall fills
it, as much of the jejunum lies on CT). Painted by `anatomy.paint_body`.
"""

from __future__ import annotations

import itertools

import numpy as np

from kidneyseg.data.phantom.body import BOWEL_CONTENTS, ORGAN_OVER, Body
from kidneyseg.data.phantom.shapes import Canvas, WaveNoise, paint_tube, random_walk, segment_distance
from kidneyseg.data.phantom.tissue import Tissue, tissue_set


def _lumen(
    canvas: Canvas,
    path: np.ndarray,
    radius: float,
    content: Tissue,
    gas_level: float,
    feces: WaveNoise,
    offset: float = 0.0,
):
    """Paint a bowel loop along `path` (points, mm): a 2.5 mm enhancing wall around the lumen,
    gas above `gas_level` (fraction of the diameter) and `content` below; `offset` (HU) is the
    dilution of oral contrast and shifts contrast only (fluid stays water, gas air)."""
    over_wall = ORGAN_OVER
    lumen_over = tissue_set(Tissue.BOWEL_WALL)
    boxes = []
    for a, b in itertools.pairwise(path):
        lo = np.minimum(a, b) - radius
        hi = np.maximum(a, b) + radius
        box = canvas.box(lo, hi)
        if box is None:
            continue
        d = segment_distance(box, a, b)
        canvas.paint(box, d < radius, Tissue.BOWEL_WALL, over=over_wall)
        boxes.append((box, d, a, b))
    for box, d, a, b in boxes:
        inside = d < radius - 2.5
        top = max(a[1], b[1]) + radius
        level = top - gas_level * 2 * radius
        gas = inside & (box.y > level)
        if content == Tissue.BOWEL_FECES:
            texture = feces(box)
            canvas.paint(box, inside & (texture > 0.9), Tissue.BOWEL_GAS, over=lumen_over)
            canvas.paint(
                box, inside & ~(texture > 0.9), Tissue.BOWEL_FECES, over=lumen_over, delta=35 * texture
            )
        else:
            delta = offset if content == Tissue.BOWEL_CONTRAST else 0.0
            canvas.paint(box, inside & ~gas, content, over=lumen_over, delta=delta)
        canvas.paint(box, gas, Tissue.BOWEL_GAS, over=lumen_over)


def paint_bowel(
    canvas: Canvas,
    body: Body,
    rng: np.random.Generator,
    collapsed: tuple[float, np.random.Generator] | None = None,
) -> None:
    """Colon and small-bowel loops. `collapsed` (share, stream): each small-bowel loop, with that
    probability drawn from that stream, is collapsed: no lumen, the folded enhancing wall fills a
    tube of 0.5-0.7 of its radius, a solid cord much as a kidney's parenchyma looks;
    `rng` is drawn from as for an open loop, so the rest of the case is the case without it."""
    ca, cb_ant, _ = body.cavity
    yv = body.spine_y
    feces = WaveNoise.random(rng, wavelength=(5, 14))
    zlo, zhi = float(canvas.zs[0]), float(canvas.zs[-1])
    front = body.aorta[1] + 10
    # colon: ascending (right flank), transverse (anterior, below the liver), descending (left flank)
    colon_r = rng.uniform(17, 26)
    flank = 0.72 * ca
    asc = np.array([[flank, yv + 35, -160], [flank * 0.95, yv + 45, -80], [flank * 0.9, yv + 55, 10]])
    trans = np.array(
        [[flank * 0.85, yv + 70, 25], [0, 0.75 * cb_ant, rng.uniform(-20, 40)], [-flank * 0.85, yv + 65, 70]]
    )
    desc = np.array([[-flank * 0.95, yv + 35, 70], [-flank, yv + 30, -40], [-flank * 0.9, yv + 40, -160]])
    # positive oral contrast in about two thirds of patients, diluted differently in each loop
    oral = rng.random() < 0.65
    for path in (asc, trans, desc):
        content = (Tissue.BOWEL_FECES, Tissue.BOWEL_CONTRAST, Tissue.BOWEL_FLUID)[
            int(rng.choice(3, p=[0.7, 0.15, 0.15]))
        ]
        if content == Tissue.BOWEL_CONTRAST and not oral:
            content = Tissue.BOWEL_FLUID
        _lumen(canvas, path, colon_r, content, rng.uniform(0.0, 0.5), feces, rng.uniform(-130, 100))
    # small bowel: loops in the anterior central cavity below the liver
    lo = np.array([-0.65 * ca, front, max(zlo, -170.0)])
    hi = np.array([0.65 * ca, 0.85 * cb_ant, min(zhi, 40.0)])
    if np.all(hi > lo):
        for _ in range(int(rng.integers(18, 28))):
            start = lo + (hi - lo) * rng.random(3)
            path = random_walk(rng, start, int(rng.integers(7, 13)), rng.uniform(14, 22), lo, hi)
            content = BOWEL_CONTENTS[int(rng.choice(3, p=[0.4, 0.4, 0.2]))]
            if content == Tissue.BOWEL_CONTRAST and not oral:
                content = Tissue.BOWEL_FLUID
            gas = rng.uniform(0.0, 0.6) * (rng.random() < 0.4)
            radius, offset = rng.uniform(9, 14), rng.uniform(-130, 100)
            if collapsed is not None and collapsed[1].random() < collapsed[0]:
                wall = radius * collapsed[1].uniform(0.5, 0.7)
                paint_tube(canvas, path, wall, Tissue.BOWEL_WALL, ORGAN_OVER)
            else:
                _lumen(canvas, path, radius, content, gas, feces, offset)
