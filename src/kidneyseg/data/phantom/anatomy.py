"""The synthetic body around the kidneys: wall layers, spine, ribs, muscles, organs, vessels, bowel.

Positions follow normal adult anatomy at the level of the renal hila (about L1-L2) in patient
coordinates (mm, RAS+: +x towards the patient's right, +y anterior, +z superior, z = 0 at the
level of the hila): the liver fills the right upper quadrant, the spleen the left posterolateral
upper quadrant, the aorta lies just left of midline in front of the vertebral bodies with the IVC
to its right, the psoas muscles beside the vertebral bodies widen caudally, and bowel loops fill the
anterior peritoneal cavity. Below the iliac crests (near L4/L5) the bony pelvis begins (`pelvis`).
The kidneys themselves are painted by `kidney`.
"""

from __future__ import annotations

import numpy as np

from kidneyseg.data.phantom.body import ORGAN_OVER, SOFT_CAVITY, Body, body_scale
from kidneyseg.data.phantom.bowel import paint_bowel
from kidneyseg.data.phantom.pelvis import paint_pelvis
from kidneyseg.data.phantom.shapes import (
    Canvas,
    Lobes,
    ellipsoid_level,
    frame,
    paint_tube,
    random_walk,
    segment_distance,
)
from kidneyseg.data.phantom.tissue import Tissue, tissue_set


def paint_body(
    canvas: Canvas,
    body: Body,
    rng: np.random.Generator,
    fov_radius: float,
    collapsed: tuple[float, np.random.Generator] | None = None,
) -> None:
    """Paint everything but the kidneys and their lesions. `collapsed` (share, stream): each
    small-bowel loop, with that probability drawn from that stream, is collapsed (`bowel`)."""
    _paint_wall(canvas, body, fov_radius)
    _paint_spine(canvas, body)
    paint_pelvis(canvas, body)
    _paint_ribs(canvas, body)
    _paint_muscles(canvas, body)
    paint_bowel(canvas, body, rng, collapsed)
    _paint_organs(canvas, body, rng)
    _paint_vessels(canvas, body)
    _paint_mesenteric(canvas, body, rng)


def _outline_radius(canvas: Canvas, body: Body) -> np.ndarray:
    """Superellipse 'radius' of each (x, y) pixel: 1 on the body outline, homogeneous of degree 1."""
    x = canvas.xs[:, None]
    y = canvas.ys[None, :]
    b = np.where(y >= 0, np.float32(body.b_ant), np.float32(body.b_post))
    p = np.float32(body.power)
    return (np.abs(x / np.float32(body.a)) ** p + np.abs(y / b) ** p) ** (1 / p)


def _wall_profile(canvas: Canvas, body: Body) -> tuple[np.ndarray, np.ndarray]:
    """Subcutaneous fat and muscle thickness (mm) of each (x, y) pixel's direction from the centre.

    The muscle layer is thin at the linea alba, thick over the recti and the flank muscles
    (obliques, transversus) and thin posteriorly, where the back muscles are painted separately.
    """
    angle = np.degrees(np.abs(np.arctan2(canvas.xs[:, None], canvas.ys[None, :])))  # 0 = anterior midline
    muscle = body.muscle * np.interp(
        angle, [0, 2.5, 5, 20, 28, 50, 140, 160, 180], [0.25, 0.25, 1.0, 1.0, 0.6, 1.15, 1.15, 0.5, 0.5]
    )
    fat = body.fat * np.interp(angle, [0, 90, 180], [1.2, 1.0, 0.8])
    return fat.astype(np.float32), muscle.astype(np.float32)


def _paint_wall(canvas: Canvas, body: Body, fov_radius: float) -> None:
    rho = _outline_radius(canvas, body)
    outside_fov = (canvas.xs[:, None] ** 2 + canvas.ys[None, :] ** 2) > fov_radius**2
    radius = body.mean_radius
    fat, muscle = _wall_profile(canvas, body)
    fat_edge = np.float32(1 - body.skin / radius)
    muscle_edge = 1 - (body.skin + fat) / radius
    cavity_edge = muscle_edge - muscle / radius
    scale = body_scale(body, canvas.zs)
    layer = np.empty(rho.shape, dtype=np.uint8)
    for k, s in enumerate(scale):
        r = rho / s
        layer.fill(Tissue.AIR)
        layer[r < 1] = Tissue.SKIN
        layer[r < fat_edge] = Tissue.SUBCUTANEOUS_FAT
        layer[r < muscle_edge] = Tissue.MUSCLE
        layer[r < cavity_edge] = Tissue.VISCERAL_FAT
        layer[outside_fov] = Tissue.OUTSIDE_FOV
        canvas.tissue[:, :, k] = layer


def _paint_spine(canvas: Canvas, body: Body) -> None:
    yv = body.spine_y
    box = canvas.box((-55, yv - 80, max(canvas.zs[0], body.sacrum_z)), (55, yv + 25, canvas.zs[-1]))
    if box is None:
        return
    period, disc = 36.0, 8.0
    in_disc = ((box.z - body.disc_phase) % period) < disc
    level_pos = ((box.z - body.disc_phase) % period - disc) / (period - disc)  # 0..1 within a vertebra
    x, y = box.x, box.y - yv
    vb = (x / 22) ** 2 + (y / 16) ** 2
    canal_y = -16 - 11
    arch_outer = (x / 18) ** 2 + ((y - canal_y) / 15) ** 2 < 1
    canal = (x / 10) ** 2 + ((y - canal_y) / 8.5) ** 2 < 1
    # the spinous process slants caudally: deeper (more posterior) towards the vertebra's lower end
    spinous = (np.abs(x) < 3.5) & (y < canal_y - 10) & (y > canal_y - 18 - 20 * (1 - level_pos))
    taper = 1 - np.abs(x) / 80
    transverse = (np.abs(y - canal_y - 3) < 4 * taper) & (np.abs(x) < 40) & (np.abs(level_pos - 0.5) < 0.16)
    pedicle = (np.abs(x) > 6) & (np.abs(x) < 14) & (y > canal_y) & (y < -10)
    posterior = (arch_outer | spinous | transverse | pedicle) & ~in_disc
    canvas.paint(box, posterior, Tissue.BONE_CORTICAL)
    inner = ((x / 14) ** 2 + ((y - canal_y) / 11.5) ** 2 < 1) & (y < canal_y)
    marrow = inner | ((np.abs(y - canal_y - 3) < 4 * taper - 1.5) & (np.abs(x) < 38))
    canvas.paint(box, marrow & posterior, Tissue.BONE_CANCELLOUS)
    canvas.paint(box, canal, Tissue.SPINAL_CANAL)
    canvas.paint(box, (vb < 1) & ~in_disc, Tissue.BONE_CORTICAL)
    canvas.paint(box, (vb < 0.84) & ~in_disc, Tissue.BONE_CANCELLOUS)
    canvas.paint(box, (vb < 1.05) & in_disc, Tissue.DISC)


def _paint_ribs(canvas: Canvas, body: Body) -> None:
    """Ribs 7-12 as bony tubes inside the abdominal wall, descending from back to front."""
    rho = _outline_radius(canvas, body)
    radius = body.mean_radius
    rib_r = 1 - (body.skin + body.fat + 0.5 * body.muscle) / radius
    ii, jj = np.nonzero(np.abs(rho - rib_r) < 0.12)
    theta = np.arctan2(canvas.ys[jj], canvas.xs[ii])
    from_back = np.abs(np.angle(np.exp(1j * (theta + np.pi / 2)))).astype(np.float32) / np.float32(np.pi)
    r_pix = rho[ii, jj]
    scale = body_scale(body, canvas.zs)
    ribs = [(body.rib_z + 26 * n, 0.45 if n < 2 else 0.85, 110 + 15 * n) for n in range(6)]
    for k, z in enumerate(canvas.zs):
        if z < body.rib_z - 250 or z > ribs[-1][0] + 10:
            continue
        near = [(z_back, extent, drop) for z_back, extent, drop in ribs if z_back - drop - 6 < z < z_back + 6]
        if not near:
            continue
        dr = (r_pix / scale[k] - rib_r) * radius
        bone = np.zeros(len(ii), dtype=np.uint8)
        for z_back, extent, drop in near:
            dz = z - (z_back - drop * from_back)
            d2 = (dr / 3.5) ** 2 + (dz / 6.0) ** 2
            hit = (d2 < 1) & (from_back < extent)
            bone[hit] = np.where(d2[hit] < 0.35, Tissue.BONE_CANCELLOUS, Tissue.BONE_CORTICAL)
        sel = bone > 0
        if sel.any():
            canvas.tissue[ii[sel], jj[sel], k] = bone[sel]


def _paint_muscles(canvas: Canvas, body: Body) -> None:
    yv = body.spine_y
    over = tissue_set(Tissue.VISCERAL_FAT, Tissue.MUSCLE, Tissue.SUBCUTANEOUS_FAT)
    back = -body.b_post + body.skin + body.fat
    for side in (-1, 1):
        # erector spinae: between the skin fat and the vertebral arch
        cy = (back + yv - 25) / 2
        box = canvas.box((side * 5, back - 5, canvas.zs[0]), (side * 75, yv - 10, canvas.zs[-1]))
        if box is not None:
            level = ((box.x - side * 38) / 32) ** 2 + ((box.y - cy) / max((yv - 25 - back) / 2 + 6, 10)) ** 2
            canvas.paint(box, level < 1, Tissue.MUSCLE, over=over)
        # quadratus lumborum: lateral to the transverse processes, below the 12th rib
        box = canvas.box((side * 40, yv - 45, canvas.zs[0]), (side * 95, yv + 5, body.rib_z + 20))
        if box is not None:
            level = ((box.x - side * 66) / 22) ** 2 + ((box.y - yv + 20) / 13) ** 2
            canvas.paint(box, level < 1, Tissue.MUSCLE, over=over)
        # psoas: appears near L1 and widens caudally, moving laterally and forwards; below the
        # iliac crest it runs forwards over the pelvic brim, medial to the iliacus, to the hip
        top = body.rib_z + 15
        box = canvas.box((side * 10, yv - 30, canvas.zs[0]), (side * 130, yv + 120, top))
        if box is not None:
            t = np.clip((top - box.z) / 160, 0, 1)
            pelvic = np.maximum(body.crest_z - box.z, 0)
            rx = 6 + 20 * t
            cx = side * (22 + rx + 6 * t + 0.2 * pelvic)
            cy = yv + 2 + 18 * t + 0.35 * pelvic
            level = ((box.x - cx) / rx) ** 2 + ((box.y - cy) / (0.85 * rx)) ** 2
            canvas.paint(box, level < 1, Tissue.MUSCLE, over=tissue_set(Tissue.VISCERAL_FAT))


def _paint_organs(canvas: Canvas, body: Body, rng: np.random.Generator) -> None:
    ca, cb_ant, cb_post = body.cavity
    yv = body.spine_y
    eye = np.eye(3)
    # liver: a large dome in the right upper quadrant and a right lobe reaching down laterally
    liver_top = rng.uniform(90, 130)
    parts = [
        ((0.42 * ca, 0.1 * cb_ant, liver_top), (0.62 * ca, 0.95 * cb_ant, 120), 0.12),
        (
            (0.62 * ca, -0.05 * cb_post, rng.uniform(-10, 20)),
            (0.3 * ca, 0.5 * cb_ant, rng.uniform(50, 80)),
            0.1,
        ),
    ]
    for centre, semi, lob in parts:
        box = canvas.around(centre, np.asarray(semi) * 1.15)
        if box is None:
            continue
        level, _ = ellipsoid_level(box, centre, eye, semi, Lobes.random(rng, lob))
        canvas.paint(box, level < 1, Tissue.LIVER, over=ORGAN_OVER)
    # portal vein branches fanning out from the hilum, hepatic veins converging on the IVC
    in_liver = tissue_set(Tissue.LIVER)
    hilum = np.array([0.3 * ca, yv + 45, 60.0])
    for _ in range(int(rng.integers(6, 10))):
        end = hilum + rng.uniform([-30, -30, -20], [0.55 * ca, 60, 70])
        paint_tube(canvas, [hilum, end], rng.uniform(3, 7), Tissue.HEPATIC_VESSEL, in_liver)
        for _ in range(2):
            tip = end + rng.normal(0, 25, 3)
            paint_tube(canvas, [end, tip], rng.uniform(2, 4), Tissue.HEPATIC_VESSEL, in_liver)
    ix, iy = body.ivc
    confluence = np.array([ix, iy, liver_top - 25])
    for angle in np.radians(rng.uniform(-15, 15) + np.array([10.0, 60.0, 120.0])):
        end = confluence + np.array([np.cos(angle) * 0.6 * ca, np.sin(angle) * 50, -rng.uniform(10, 50)])
        paint_tube(canvas, [confluence, end], rng.uniform(4, 7), Tissue.HEPATIC_VESSEL, in_liver)
    # gallbladder under the liver
    gb_centre = (0.3 * ca, 0.45 * cb_ant, rng.uniform(0, 30))
    box = canvas.around(gb_centre, 45)
    if box is not None and rng.random() < 0.8:
        axes = frame((0.3, 0.4, 1.0), (1, 0, 0))
        level, _ = ellipsoid_level(box, gb_centre, axes, (rng.uniform(30, 45), 14, 16))
        canvas.paint(
            box, level < 1, Tissue.GALLBLADDER, over=tissue_set(Tissue.LIVER, *ORGAN_OVER.nonzero()[0])
        )
    # spleen: posterolateral left upper quadrant, following the wall
    sp_centre = (-0.68 * ca, yv + rng.uniform(-5, 15), rng.uniform(55, 85))
    axes = frame((0.5, 0.8, 0.6), (1, -0.5, 0))
    semi = (rng.uniform(55, 70), rng.uniform(30, 40), rng.uniform(18, 24))
    box = canvas.around_ellipsoid(sp_centre, axes, semi, 10)
    if box is not None:
        level, _ = ellipsoid_level(box, sp_centre, axes, semi, Lobes.random(rng, 0.1))
        canvas.paint(box, level < 1, Tissue.SPLEEN, over=ORGAN_OVER)
    # stomach: left upper anterior with gas above the fluid
    st_centre = np.array([-0.35 * ca, 0.45 * cb_ant, rng.uniform(80, 110)])
    st_semi = (rng.uniform(40, 55), rng.uniform(30, 40), rng.uniform(40, 55))
    box = canvas.around(st_centre, max(st_semi) * 1.2)
    if box is not None:
        level, _ = ellipsoid_level(box, st_centre, eye, st_semi, Lobes.random(rng, 0.08))
        canvas.paint(box, level < 1, Tissue.BOWEL_WALL, over=ORGAN_OVER)
        inside = level < 1 - 4 / min(st_semi)
        gas_y = st_centre[1] + st_semi[1] * rng.uniform(-0.2, 0.8)
        content = Tissue.BOWEL_CONTRAST if rng.random() < 0.3 else Tissue.BOWEL_FLUID
        wall = tissue_set(Tissue.BOWEL_WALL)
        canvas.paint(box, inside & (box.y <= gas_y), content, over=wall)
        canvas.paint(box, inside & (box.y > gas_y), Tissue.BOWEL_GAS, over=wall)
    # pancreas: tail at the splenic hilum, body in front of the aorta, head by the duodenum
    ax, ay, _ = body.aorta
    z0 = rng.uniform(15, 40)
    pts = np.array(
        [[-0.55 * ca, yv + 20, z0 + 15], [ax, ay + 32, z0], [ax + 45, ay + 25, z0 - 20]], dtype=np.float64
    )
    paint_tube(canvas, pts, rng.uniform(9, 13), Tissue.PANCREAS, ORGAN_OVER)
    splenic_vein = pts[:2] + np.array([0.0, -13.0, 0.0])
    paint_tube(canvas, [*splenic_vein, [ax + 20, ay + 30, 30]], 4.5, Tissue.HEPATIC_VESSEL, SOFT_CAVITY)


def _paint_mesenteric(canvas: Canvas, body: Body, rng: np.random.Generator) -> None:
    """Superior mesenteric artery and vein with branches into the mesentery, and the portal vein."""
    ax, ay, ar = body.aorta
    ca, cb_ant, _ = body.cavity
    fat = SOFT_CAVITY
    sma = np.array(
        [[ax, ay + ar, 35], [ax + 4, ay + 32, 15], [ax + 8, ay + 42, -50], [ax + 12, ay + 48, -130]]
    )
    smv = sma + np.array([16, 2, 0])
    smv[0] = [ax + 20, ay + 30, 30]
    paint_tube(canvas, sma, 3.5, Tissue.AORTA, fat)
    paint_tube(canvas, smv, 5.5, Tissue.HEPATIC_VESSEL, fat)
    paint_tube(canvas, [smv[0], [0.3 * ca, body.spine_y + 45, 60]], 7.0, Tissue.HEPATIC_VESSEL, fat)
    lo = np.array([-0.6 * ca, ay + 20, -170.0])
    hi = np.array([0.6 * ca, 0.85 * cb_ant, 30.0])
    for trunk, radius, tissue in ((sma, 1.8, Tissue.AORTA), (smv, 2.5, Tissue.HEPATIC_VESSEL)):
        for _ in range(int(rng.integers(4, 8))):
            t = rng.uniform(1, len(trunk) - 1)
            i = int(t)
            start = trunk[i] + (t - i) * (trunk[min(i + 1, len(trunk) - 1)] - trunk[i])
            steps = int(rng.integers(3, 6))
            path = random_walk(rng, start, steps, rng.uniform(15, 25), lo, hi, direction=(0, 1, -0.5))
            paint_tube(canvas, path, radius, tissue, fat)


def _paint_vessels(canvas: Canvas, body: Body) -> None:
    ax, ay, ar = body.aorta
    ix, iy = body.ivc
    zhi = float(canvas.zs[-1])
    bif = -95.0
    over = tissue_set(*ORGAN_OVER.nonzero()[0], Tissue.LIVER, Tissue.PANCREAS, Tissue.MUSCLE)
    for (x, y, r), tissue, top in (((ax, ay, ar), Tissue.AORTA, zhi), ((ix, iy, 13.0), Tissue.IVC, 110.0)):
        a = np.array([x, y, bif])
        b = np.array([x, y, max(min(top, zhi), bif)])
        box = canvas.box(a - r, b + r)
        if box is not None:
            canvas.paint(box, segment_distance(box, a, b) < r, tissue, over=over)
        for side in (-1, 1):  # common iliac vessels
            c = np.array([x + side * 45, y - 10, bif - 90])
            rr = 0.7 * r
            box = canvas.box(np.minimum(a, c) - rr, np.maximum(a, c) + rr)
            if box is not None:
                canvas.paint(box, segment_distance(box, a, c) < rr, tissue, over=over)
