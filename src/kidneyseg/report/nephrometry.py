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
sinus core, the sinus voxels whose centre lies at least `CORE_MM` from its border (the faces of the
voxels outside it). The polar lines are the upper and lower ends of the sinus's outline. Sizes are
in mm, not voxels, so that the same kidney on a finer or a coarser grid gives the same anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from kidneyseg.report import geometry
from kidneyseg.report.hulls import SliceHulls

CORE_MM = 3.0  # the collecting-system proxy: sinus voxels at least this far inside the sinus
TOUCH_MM = 1.0  # a gap up to this counts as contact (one voxel face-to-face is 0 mm)
MIN_SINUS_ML = 0.5  # smaller hull-minus-kidney pieces are staircase slivers, not a sinus
SLIVER_MM = 1.25  # the in-plane opening's radius: narrower gaps between hull and outline are no sinus
SINUS_FAT_HU = -30.0  # below this, a voxel labelled kidney inside the hull is sinus fat
ENDOPHYTIC_BELOW = 0.01  # exophytic fraction below this: entirely endophytic
MAX_SINUS_OUTLINE_PER_KIDNEY_VOXEL = 0.25
"""A derived sinus with more outline points (voxel faces) than this per voxel of its kidney is
the sponge of a fragmented segmentation (2.6 on a random network's speckle), not a sinus
(at most 0.11 over 53 KiTS19 reference masks, docs/report.md); measuring it would cost
~50 bytes per point."""


@dataclass(frozen=True)
class KidneyAnatomy:
    """What nephrometry needs of one kidney, in world mm.

    Attributes:
        sinus_outline: the outline points (world mm) of the derived renal sinus as a k-d tree
            built once for all of the kidney's tumors; None if no sinus is found.
        core_outline: likewise for the sinus core (collecting-system proxy).
        polar_lines: world z (lower, upper) of the polar lines (the sinus's ends), or the
            limits of the kidney's middle third when no sinus is found.
        centroid: the kidney's centroid (world RAS+ mm).
        midline_x: the patient's midline (world x, mm).
        sinus_ml: the derived sinus volume (mL).
        medial_edge_mm: distance from the midline of the parenchyma's most medial point.
    """

    sinus_outline: cKDTree | None
    core_outline: cKDTree | None
    polar_lines: tuple[float, float]
    centroid: np.ndarray
    midline_x: float
    sinus_ml: float
    medial_edge_mm: float


def kidney_anatomy(
    kidney: np.ndarray,
    parenchyma: np.ndarray,
    ct: np.ndarray,
    hulls: SliceHulls,
    affine: np.ndarray,
    centroid: np.ndarray,
    z_range: tuple[float, float],
    midline_x: float,
    derive_sinus: bool = True,
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
        derive_sinus: False: only the medial edge; the kidney is given no sinus.
    """
    box = geometry.bounding_box(kidney, kidney.shape, pad=0)
    local = geometry.crop_affine(affine, box)
    medial_edge = geometry.sagittal_gap_mm(parenchyma[box], local, midline_x)
    medial_edge = float(abs(centroid[0] - midline_x)) if medial_edge is None else medial_edge
    third = (z_range[1] - z_range[0]) / 3
    without_sinus = KidneyAnatomy(
        None, None, (z_range[0] + third, z_range[1] - third), centroid, midline_x, 0.0, medial_edge
    )
    if not derive_sinus:
        return without_sinus
    pockets = np.zeros(kidney[box].shape, dtype=bool)  # inside the hull: not kidney, or fat
    lows, highs = [box[a].start for a in hulls.in_plane], [box[a].stop for a in hulls.in_plane]
    # Slice-first views: the in-plane axes keep their order, as `hulls` has them.
    pocket_slices, kidney_slices, parenchyma_slices, ct_slices = (
        np.moveaxis(a, hulls.axis, 0) for a in (pockets, kidney[box], parenchyma[box], ct[box])
    )
    for i, index in enumerate(range(box[hulls.axis].start, box[hulls.axis].stop)):
        outside = ~kidney_slices[i] | (parenchyma_slices[i] & (ct_slices[i] < SINUS_FAT_HU))
        pocket_slices[i] = hulls.filled(index, lows, highs) & outside
    # An opening across each slice removes the slivers between the hull and a staircase outline,
    # which would otherwise join the sinus along the whole kidney: a disk of `SLIVER_MM` (at least
    # a voxel's four neighbours), so that a finer grid of the same outline keeps no more of them.
    voxel = np.linalg.norm(affine[:3, :3], axis=0)
    in_plane = np.where(np.arange(3) == hulls.axis, np.inf, voxel)
    reach = max(SLIVER_MM, 1.001 * float(in_plane.min()))  # at least the four neighbours in the slice
    pockets = ndimage.binary_opening(pockets, _ball(in_plane, reach))
    labelled, count = geometry.components(pockets)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    sizes = geometry.voxel_counts(labelled, count)
    sizes[0] = 0
    if count == 0 or sizes.max() * voxel_ml < MIN_SINUS_ML:
        return without_sinus
    piece = int(np.argmax(sizes))
    sinus_box = ndimage.find_objects(labelled)[piece - 1]
    sinus = labelled[sinus_box] == piece
    if geometry.face_count(sinus) > MAX_SINUS_OUTLINE_PER_KIDNEY_VOXEL * np.count_nonzero(kidney):
        return without_sinus
    local = geometry.crop_affine(local, sinus_box)
    core = _core(sinus, voxel)
    sinus_outline = cKDTree(geometry.outline_points(sinus, local))
    core_outline = cKDTree(geometry.outline_points(core, local)) if core.any() else None
    return KidneyAnatomy(
        sinus_outline,
        core_outline,
        geometry.cranio_caudal_range_mm(sinus, local),
        centroid,
        midline_x,
        round(float(sinus.sum()) * voxel_ml, 2),
        medial_edge,
    )


def _ball(spacing: np.ndarray, radius_mm: float, to_faces: bool = False) -> np.ndarray:
    """The voxel offsets closer than `radius_mm` to the centre; none along an axis of infinite
    spacing. With `to_faces` an offset counts by the nearest point of its voxel instead of its
    centre: eroding by it keeps the voxels whose centre is at least `radius_mm` from every voxel
    outside, edge to edge."""
    half = 0.5 if to_faces else 0.0
    reach = [0 if np.isinf(d) else int(radius_mm / d + half) for d in spacing]
    index = np.meshgrid(*(np.arange(-r, r + 1) for r in reach), indexing="ij")
    lengths = (
        np.maximum(np.abs(i) - half, 0) * (0.0 if np.isinf(d) else d)
        for i, d in zip(index, spacing, strict=True)
    )
    return sum(v**2 for v in lengths) < radius_mm**2


def _core(sinus: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """The collecting-system proxy: the sinus voxels whose centre lies at least `CORE_MM` from the
    sinus's border, edge to edge (the faces of the voxels outside: on 5 mm slices a voxel next to
    one outside is 2.5 mm from the border, not 5); where the sinus is too thin for any, its
    deepest voxels, those at least r deep for the largest r in steps of half the finest voxel size
    that keeps any (the pelvis lies in the middle of the sinus fat)."""
    step = float(spacing.min()) / 2
    radius = CORE_MM
    while radius > 0:
        core = ndimage.binary_erosion(sinus, _ball(spacing, radius, to_faces=True), border_value=0)
        if core.any():
            return core
        radius -= step
    return sinus.copy()


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
    lower, upper = anatomy.polar_lines
    between, anterior, z = 0, 0, []
    for points in geometry.voxel_slabs(tumor):
        world = geometry.to_world(points, affine)
        between += int(np.count_nonzero((world[:, 2] >= lower) & (world[:, 2] <= upper)))
        anterior += int(np.count_nonzero(world[:, 1] > anatomy.centroid[1]))
        z.append(_extremes(world[:, 2]))
    voxels = int(np.count_nonzero(tumor))
    between, anterior, z = between / voxels, anterior / voxels, np.concatenate(z)
    centre = geometry.to_world(geometry.centroid_index(tumor)[None], affine)[0]
    crosses_midline = bool(z.min() < (lower + upper) / 2 < z.max())
    sinus_gap = _gap_mm(tumor, affine, anatomy.sinus_outline)
    core_gap = _gap_mm(tumor, affine, anatomy.core_outline)
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
    return {"renal": renal, "padua": padua, "sinus_found": anatomy.sinus_outline is not None}


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


def _gap_mm(mask: np.ndarray, affine: np.ndarray, tree: cKDTree | None) -> float | None:
    """The smallest distance from the outline of `mask` to the points of `tree` (world mm); None
    without them.

    Each slab of outline points is searched only within the best distance found so far (a large
    tumor has ~10⁵ outline points), starting from a sample of the first slab."""
    if tree is None or not mask.any():
        return None
    best = np.inf
    for points in geometry.face_midpoint_slabs(mask):
        world = geometry.to_world(points, affine)
        if np.isinf(best):
            best = float(tree.query(world[:: max(1, len(world) // 200)], k=1)[0].min())
        distance, _ = tree.query(world, k=1, distance_upper_bound=best + 1e-6)
        best = min(best, float(distance.min()))
    return best


def _extremes(values: np.ndarray) -> np.ndarray:
    """The smallest and largest of `values`."""
    return np.array([values.min(), values.max()])


def _complexity(total: int | None, bands: tuple[tuple[int, str], ...]) -> str | None:
    if total is None:
        return None
    return next(name for top, name in bands if total <= top)
