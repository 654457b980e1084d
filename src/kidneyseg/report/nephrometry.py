"""R.E.N.A.L. and PADUA nephrometry of each tumor, from the kidney and tumor masks.

R.E.N.A.L. (Kutikov & Uzzo, J Urol 2009;182:844-853): Radius (maximal diameter, ≤ 4 cm 1,
> 4 and < 7 cm 2, ≥ 7 cm 3), Exophytic (≥ 50 % 1, < 50 % 2, entirely endophytic 3), Nearness
to the collecting system or sinus (≥ 7 mm 1, > 4 and < 7 mm 2, ≤ 4 mm 3), Anterior/posterior
(suffix a, p or x) and Location relative to the polar lines (entirely above the upper or below
the lower polar line 1; crossing a polar line 2; more than half between the polar lines, crossing
the axial renal midline, or entirely between the polar lines 3). Sum 4-12.

PADUA (Ficarra et al., Eur Urol 2009;56:786-793): longitudinal (polar) location (superior or
inferior 1, middle 2), exophytic rate (≥ 50 % 1, < 50 % 2, endophytic 3), renal rim (lateral 1,
medial 2), renal sinus (not involved 1, involved 2), urinary collecting system (not involved 1,
involved 2), tumor size (≤ 4 cm 1, 4.1-7 cm 2, > 7 cm 3). Sum 6-14.

The labels hold no renal sinus or collecting system, so both are derived from the kidney's
shape (docs/report.md, "Nephrometry"): the sinus is what lies inside the convex hull of the
parenchyma on each axial slice but is neither parenchyma nor lesion (the hilar notch with its
fat, vessels and pelvis), or is labelled parenchyma but has fat density on the CT (labels that
draw the kidney's outline around the sinus); the collecting system is approximated by the
sinus core, the sinus voxels at least `CORE_MM` from its border. The polar lines are the upper and
lower ends of the
sinus.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from kidneyseg.report import geometry

CORE_MM = 3.0  # the collecting-system proxy: sinus voxels at least this far inside the sinus
TOUCH_MM = 1.0  # a gap up to this counts as contact (one voxel face-to-face is 0 mm)
MIN_SINUS_ML = 0.5  # smaller hull-minus-kidney pieces are staircase slivers, not a sinus
SINUS_FAT_HU = -30.0  # below this, a voxel labelled kidney inside the hull is sinus fat
ENDOPHYTIC_BELOW = 0.01  # exophytic fraction below this: entirely endophytic


@dataclass(frozen=True)
class KidneyAnatomy:
    """What nephrometry needs of one kidney, in world mm.

    Attributes:
        sinus_points: outline points (world mm) of the derived renal sinus; empty if none.
        core_points: outline points of the sinus core (collecting-system proxy); may be empty.
        polar_lines: world z (lower, upper) of the polar lines (the sinus's ends), or the
            limits of the kidney's middle third when no sinus is found.
        centroid: the kidney's centroid (world RAS+ mm).
        midline_x: the patient's midline (world x, mm).
        sinus_ml: the derived sinus volume (mL).
        medial_edge_mm: distance from the midline of the parenchyma's most medial point.
    """

    sinus_points: np.ndarray
    core_points: np.ndarray
    polar_lines: tuple[float, float]
    centroid: np.ndarray
    midline_x: float
    sinus_ml: float
    medial_edge_mm: float


def kidney_anatomy(
    kidney: np.ndarray,
    parenchyma: np.ndarray,
    ct: np.ndarray,
    hulls: geometry.SliceHulls,
    affine: np.ndarray,
    centroid: np.ndarray,
    z_range: tuple[float, float],
    midline_x: float,
) -> KidneyAnatomy:
    """Derive the sinus, its core and the polar lines of one kidney.

    Args:
        kidney: the kidney's voxels (parenchyma and lesions) in the array `affine` maps.
        parenchyma: the kidney's parenchyma (label kidney) in the same array.
        ct: the CT (HU) on the same array: parenchyma-labelled voxels of fat density count as
            sinus (labels that include the sinus fat in the kidney).
        hulls: the per-slice convex hulls of the kidney's parenchyma, in the same array.
        affine: voxel-to-world of `kidney`.
        centroid: the kidney's centroid (world mm).
        z_range: world z (lower, upper) of the kidney's parenchyma.
        midline_x: the patient's midline (world x, mm).
    """
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(kidney))
    start = np.array([s.start for s in box])
    local = affine.copy()
    local[:3, 3] = geometry.to_world(start[None].astype(np.float64), affine)[0]
    pockets = np.zeros(kidney[box].shape, dtype=bool)  # inside the hull: not kidney, or fat
    lows, highs = [box[a].start for a in hulls.in_plane], [box[a].stop for a in hulls.in_plane]
    # Slice-first views: the in-plane axes keep their order, as `hulls` has them.
    pocket_slices = np.moveaxis(pockets, hulls.axis, 0)
    fat = parenchyma[box] & (ct[box] < SINUS_FAT_HU)
    outside_slices = np.moveaxis(~kidney[box] | fat, hulls.axis, 0)
    for i, index in enumerate(range(box[hulls.axis].start, box[hulls.axis].stop)):
        pocket_slices[i] = hulls.filled(index, lows, highs) & outside_slices[i]
    x = geometry.to_world(geometry.face_midpoints(parenchyma[box]), local)[:, 0]
    medial_edge = float(np.abs(x - midline_x).min()) if len(x) else float(abs(centroid[0] - midline_x))
    # An opening across each slice removes the one-voxel slivers between the hull and a
    # staircase outline, which would otherwise join the sinus along the whole kidney.
    in_plane = np.ones((3, 3, 3), dtype=bool)
    in_plane[[0, 2]] = False
    pockets = ndimage.binary_opening(pockets, np.moveaxis(in_plane, 0, hulls.axis))
    labelled, count = geometry.components(pockets)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    sizes = np.bincount(labelled.ravel(), minlength=count + 1)
    sizes[0] = 0
    if count == 0 or sizes.max() * voxel_ml < MIN_SINUS_ML:
        third = (z_range[1] - z_range[0]) / 3
        middle = (z_range[0] + third, z_range[1] - third)
        return KidneyAnatomy(
            np.empty((0, 3)), np.empty((0, 3)), middle, centroid, midline_x, 0.0, medial_edge
        )
    piece = int(np.argmax(sizes))
    sinus_box = ndimage.find_objects(labelled)[piece - 1]
    sinus = labelled[sinus_box] == piece
    local[:3, 3] = geometry.to_world(np.array([[s.start for s in sinus_box]], dtype=np.float64), local)[0]
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    core = ndimage.distance_transform_edt(np.pad(sinus, 1), sampling=spacing)[1:-1, 1:-1, 1:-1] >= CORE_MM
    sinus_points = geometry.to_world(geometry.face_midpoints(sinus), local)
    core_points = geometry.to_world(geometry.face_midpoints(core), local) if core.any() else np.empty((0, 3))
    z = geometry.to_world(np.argwhere(sinus).astype(np.float64), local)[:, 2]
    return KidneyAnatomy(
        sinus_points,
        core_points,
        (float(z.min()), float(z.max())),
        centroid,
        midline_x,
        round(float(sinus.sum()) * voxel_ml, 2),
        medial_edge,
    )


def score(
    tumor: np.ndarray, affine: np.ndarray, anatomy: KidneyAnatomy, size_cm: float, exophytic: float
) -> dict:
    """R.E.N.A.L. and PADUA of one tumor: each component continuous and scored.

    Args:
        tumor: the tumor's voxels, in the array `affine` maps.
        affine: voxel-to-world of `tumor`.
        anatomy: its kidney's derived anatomy.
        size_cm: the tumor's greatest dimension (the R of R.E.N.A.L., PADUA's size).
        exophytic: the share of the tumor outside the kidney's contour (0-1).
    """
    voxels = geometry.to_world(np.argwhere(tumor).astype(np.float64), affine)
    outline = geometry.to_world(geometry.face_midpoints(tumor), affine)
    sinus_gap = _gap_mm(outline, anatomy.sinus_points)
    core_gap = _gap_mm(outline, anatomy.core_points)
    lower, upper = anatomy.polar_lines
    z = voxels[:, 2]
    between = float(np.mean((z >= lower) & (z <= upper)))
    centre = voxels.mean(axis=0)
    crosses_midline = bool(z.min() < (lower + upper) / 2 < z.max())
    anterior = float(np.mean(voxels[:, 1] > anatomy.centroid[1]))
    medial = abs(centre[0] - anatomy.midline_x) < abs(anatomy.centroid[0] - anatomy.midline_x)
    r = 1 if size_cm <= 4 else 2 if size_cm < 7 else 3
    e = 3 if exophytic < ENDOPHYTIC_BELOW else 1 if exophytic >= 0.5 else 2
    n = None if sinus_gap is None else 1 if sinus_gap >= 7 else 2 if sinus_gap > 4 else 3
    if between == 0:
        location = 1
    elif between == 1 or between > 0.5 or crosses_midline:
        location = 3
    else:
        location = 2
    suffix = "a" if anterior >= 2 / 3 else "p" if anterior <= 1 / 3 else "x"
    renal = {
        "radius_cm": round(size_cm, 2),
        "r": r,
        "exophytic_fraction": round(exophytic, 3),
        "e": e,
        "nearness_mm": None if sinus_gap is None else round(sinus_gap, 1),
        "n": n,
        "anterior_fraction": round(anterior, 3),
        "a": suffix,
        "between_polar_lines_fraction": round(between, 3),
        "crosses_axial_midline": crosses_midline,
        "l": location,
        "score": None if n is None else r + e + n + location,
    }
    renal["complexity"] = _complexity(renal["score"], ((6, "low"), (9, "moderate"), (12, "high")))
    padua = _padua(size_cm, exophytic, e, medial, sinus_gap, core_gap, lower <= centre[2] <= upper)
    return {"renal": renal, "padua": padua, "sinus_found": anatomy.sinus_points.size > 0}


def _padua(
    size_cm: float,
    exophytic: float,
    e: int,
    medial: bool,
    sinus_gap: float | None,
    core_gap: float | None,
    middle: bool,
) -> dict:
    sinus = None if sinus_gap is None else 2 if sinus_gap <= TOUCH_MM else 1
    collecting = None if core_gap is None else 2 if core_gap <= TOUCH_MM else 1
    padua = {
        "polar_location": "middle" if middle else "polar",
        "polar_location_score": 2 if middle else 1,
        "exophytic_fraction": round(exophytic, 3),
        "exophytic_score": e,
        "rim": "medial" if medial else "lateral",
        "rim_score": 2 if medial else 1,
        "sinus_gap_mm": None if sinus_gap is None else round(sinus_gap, 1),
        "sinus_score": sinus,
        "collecting_system_gap_mm": None if core_gap is None else round(core_gap, 1),
        "collecting_system_score": collecting,
        "size_cm": round(size_cm, 2),
        "size_score": 1 if size_cm <= 4 else 2 if size_cm <= 7 else 3,
    }
    parts = [padua[k] for k in padua if k.endswith("_score")]
    padua["score"] = None if None in parts else sum(parts)
    padua["complexity"] = _complexity(padua["score"], ((7, "low"), (9, "intermediate"), (14, "high")))
    return padua


def _gap_mm(points: np.ndarray, targets: np.ndarray) -> float | None:
    """The smallest distance from `points` to `targets` (world mm); None without targets.

    A sample of the points gives an upper bound first, so that the exact search over all of
    them prunes every branch farther than that (a large tumor has ~10⁵ outline points)."""
    if len(targets) == 0 or len(points) == 0:
        return None
    tree = cKDTree(targets)
    bound = float(tree.query(points[:: max(1, len(points) // 200)], k=1)[0].min())
    distance, _ = tree.query(points, k=1, distance_upper_bound=bound + 1e-6)
    return float(distance.min())


def _complexity(total: int | None, bands: tuple[tuple[int, str], ...]) -> str | None:
    if total is None:
        return None
    return next(name for top, name in bands if total <= top)
