"""Synthetic abdominal CT (unenhanced or in a contrast phase) with reference labels, in the KiTS23 layout.

`generate_case(seed)` builds one phantom: a random adult body (wall layers, spine, ribs, muscles,
liver, spleen, stomach, pancreas, bowel with gas and contents, aorta, IVC and renal vessels), two
kidneys with cortex, medullary pyramids, sinus fat and pelvis, 0-3 tumors and 0-3 cysts, rendered
in a random contrast phase with partial volume across the slices and correlated noise.
`kidneyseg.data.phantom.dataset.generate_dataset` writes cases to disk with their ground truth.

With `anatomy=DIR` the kidneys, tumors (and cysts, if annotated) come from real KiTS label maps
and the body is synthesised around them (see `real`). What the phantoms model, the HU
table with its sources and their limits are described in docs/phantom.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kidneyseg.data.phantom.anatomy import paint_body
from kidneyseg.data.phantom.body import Body, sample_body
from kidneyseg.data.phantom.context import paint_context, sample_context
from kidneyseg.data.phantom.kidney import (
    Scene,
    kidney_record,
    paint_adrenals,
    paint_kidney,
    paint_lesion,
    paint_renal_vessels,
    paint_thrombus,
    sample_kidneys,
    sample_lesions,
)
from kidneyseg.data.phantom.options import (
    KITS_ORIENTATION,
    PhantomOptions,
    SizePreset,
    check_chest,
    check_size,
)
from kidneyseg.data.phantom.render import PHASE_P, PHASES, render_ct, sample_hu, samples_per_slice
from kidneyseg.data.phantom.shapes import Canvas, Grid
from kidneyseg.data.phantom.tissue import Tissue, label_lut
from kidneyseg.io.volume import Volume


@dataclass(frozen=True)
class PhantomCase:
    """One generated case: the CT (int16 HU), its labels (uint8, KiTS23 values), the truth and the
    tissue map (uint8 `Tissue` ids on the CT's grid: every tissue the generator painted, from which
    `kidneyseg.data.synth` re-renders the image with random appearance).

    `truth` holds the seed, size, contrast phase, geometry, both kidneys (side, volume) and every
    lesion (kind, side, centre in world RAS mm, diameters in mm, volume in mL), measured on the
    label map as written.
    """

    ct: Volume
    labels: Volume
    truth: dict
    tissue: Volume


def _sample_grid(preset: SizePreset, body: Body, rng: np.random.Generator, chest_mm: float = 0.0) -> Grid:
    """The scan's grid: a field of view that usually holds the body (1 in 10 cuts its flanks), and
    a cranio-caudal range placed anywhere from mostly above to mostly below the renal hila (z = 0),
    so some scans end inside a kidney; `chest_mm` more above it for a chest-abdomen scan."""
    fov = body.width * (rng.uniform(0.85, 1.0) if rng.random() < 0.1 else rng.uniform(1.08, 1.4))
    pixel = float(np.clip(fov / preset.in_plane, *preset.spacing))
    extent = rng.uniform(*preset.extent)
    if preset.slices:
        nz = preset.slices
        thickness = (extent + chest_mm) / nz
    else:
        thickness = float(rng.choice(preset.thickness))
        nz = min(round((extent + chest_mm) / thickness), preset.max_slices)
    n = preset.in_plane
    centre = np.array([rng.uniform(-10, 10), rng.uniform(-15, 15)])
    below = rng.uniform(0.15, 0.3) if rng.random() < 0.1 else rng.uniform(0.35, 0.65)
    z_lo = -(nz * thickness - chest_mm) * below
    origin = (centre[0] - pixel * (n - 1) / 2, centre[1] - pixel * (n - 1) / 2, z_lo)
    return Grid((n, n, nz), (pixel, pixel, thickness), origin)


CHEST_MM = (120.0, 250.0)
"""Extra cranial coverage (mm) of a chest-abdomen scan: through the lungs and the whole heart."""


def chest_extension(seed: int, chest: float) -> float:
    """A case's extra cranial coverage: `CHEST_MM` with probability `chest`, else 0. Drawn from a
    stream of its own, so that `chest` changes no other draw of any case."""
    rng = np.random.default_rng([seed, 1])
    return float(rng.uniform(*CHEST_MM)) if rng.random() < check_chest(chest) else 0.0


THROMBUS_P = 0.1
"""Share of tumors over 4 cm that grow into the renal vein (and sometimes the IVC)."""
DOSE_NOISE_HU = {"high": (6.0, 12.0), "routine": (12.0, 20.0), "low": (25.0, 50.0)}
"""Noise SD (HU) at 0.8 × 0.8 × 2.5 mm in a 32 cm wide patient per dose level (docs/phantom.md)."""
DOSE_P = (0.15, 0.55, 0.3)


def _noise_sd(body: Body, spacing: tuple[float, float, float], rng: np.random.Generator) -> tuple[str, float]:
    """A dose level and its noise SD, which grows with patient size and shrinks with voxel volume
    (a 0.8 × 0.8 × 2.5 mm reference)."""
    dose = str(rng.choice(list(DOSE_NOISE_HU), p=DOSE_P))
    reference = rng.uniform(*DOSE_NOISE_HU[dose]) * (body.a / 160) ** 1.5
    return dose, float(np.clip(reference * (1.6 / float(np.prod(spacing))) ** 0.25, 3, 60))


def _reorient(array: np.ndarray, affine: np.ndarray, orientation: str) -> tuple[np.ndarray, np.ndarray]:
    """Re-lay a canonical RAS (x, y, z) array and its affine out in `orientation`."""
    import nibabel as nib

    ornt = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(("R", "A", "S")), nib.orientations.axcodes2ornt(tuple(orientation))
    )
    out = nib.orientations.apply_orientation(array, ornt)
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, array.shape)
    return out, new_affine


def _feret(points: np.ndarray) -> float:
    """Largest distance between two of `points` (mm), via the convex hull when there are many."""
    if len(points) < 2:
        return 0.0
    if len(points) > 64:
        from scipy.spatial import ConvexHull, QhullError

        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:  # all points on a plane or a line: the extreme points still bound it
            lo, hi = points.argmin(axis=0), points.argmax(axis=0)
            points = points[np.unique(np.concatenate([lo, hi]))]
    diff = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((diff**2).sum(-1)).max())


def _measure_truth(scene: Scene, labels: np.ndarray) -> dict:
    """Ground truth measured on the canonical label map (on the output grid), in world RAS mm."""
    canvas = scene.canvas
    spacing = np.asarray(canvas.output.spacing)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    origin = np.asarray(canvas.output.origin) + scene.shift
    instance = canvas.instance[:, :, canvas.centres]
    kidney_truth = []
    for kidney in scene.kidneys:
        sl = canvas.output_slices(kidney.slices)
        idx = np.argwhere(labels[sl] == 1)
        entry: dict = {"side": kidney.side, "volume_ml": round(len(idx) * voxel_ml, 3)}
        if len(idx):
            start = np.array([s.start for s in sl])
            entry["centre_mm"] = [round(float(c), 2) for c in (idx.mean(axis=0) + start) * spacing + origin]
        if kidney.nominal_length is not None:
            entry["nominal_length_mm"] = round(kidney.nominal_length, 1)
        kidney_truth.append(entry)
    lesion_truth = []
    # Each lesion's voxels over the whole map, one pass per class: a venous thrombus
    # (`paint_thrombus`) carries its tumor's instance beyond the tumor's box.
    whole = {v: np.bincount(instance[labels == v], minlength=len(scene.lesions) + 1) for v in (2, 3)}
    for index, lesion in enumerate(scene.lesions, start=1):
        sl = canvas.output_slices(lesion.slices)
        value = 2 if lesion.kind == "tumor" else 3
        idx = np.argwhere((instance[sl] == index) & (labels[sl] == value))
        if len(idx) == 0:
            continue
        beyond = int(whole[value][index]) - len(idx)
        points = (idx + np.array([s.start for s in sl])) * spacing + origin
        axial = max(_feret(points[idx[:, 2] == k][:, :2]) for k in np.unique(idx[:, 2]))
        entry = {
            "id": len(lesion_truth) + 1,
            "kind": lesion.kind,
            "side": lesion.side,
            "centre_mm": [round(float(c), 2) for c in points.mean(axis=0)],
            "diameter_mm": round(_feret(points), 2),
            "axial_diameter_mm": round(axial, 2),
            "volume_ml": round(len(idx) * voxel_ml, 3),
            "voxels": len(idx),
        }
        if lesion.nominal_diameter is not None:
            entry["nominal_diameter_mm"] = round(lesion.nominal_diameter, 2)
        if beyond:
            entry["thrombus_ml"] = round(beyond * voxel_ml, 3)
            entry["thrombus_voxels"] = beyond
        lesion_truth.append(entry)
    return {"kidneys": kidney_truth, "lesions": lesion_truth}


def _synthetic_scene(
    preset: SizePreset,
    rng: np.random.Generator,
    phase: str,
    chest_mm: float = 0.0,
    collapsed: tuple[float, np.random.Generator] | None = None,
) -> Scene:
    body = sample_body(rng)
    grid = _sample_grid(preset, body, rng, chest_mm)
    canvas = Canvas(grid, samples_per_slice(grid.spacing[2]))
    kidneys = sample_kidneys(body, rng)
    fov_radius = canvas.grid.spacing[0] * canvas.grid.shape[0] / 2 * 1.02
    paint_body(canvas, body, rng, fov_radius, collapsed)
    paint_renal_vessels(canvas, body, kidneys)
    paint_adrenals(canvas, kidneys)
    for kidney in kidneys:
        paint_kidney(canvas, kidney)
    sampled = sample_lesions(kidneys, rng)
    lesions = [paint_lesion(canvas, lesion, i, phase, rng) for i, lesion in enumerate(sampled, start=1)]
    for i, lesion in enumerate(sampled, start=1):
        if lesion.kind == "tumor" and max(lesion.semi) > 20 and rng.random() < THROMBUS_P:
            paint_thrombus(canvas, body, next(k for k in kidneys if k.side == lesion.side), i, rng)
    shift = np.array([0.0, rng.uniform(-30, 30), rng.uniform(-600, -100)])
    records = tuple(kidney_record(canvas, k) for k in kidneys)
    return Scene(canvas, body, records, tuple(lesions), shift)


def generate_case(
    seed: int,
    size: str = "small",
    anatomy: Path | None = None,
    orientation: str = KITS_ORIENTATION,
    chest: float = 0.0,
    anatomy_index: int | None = None,
    tumors_as_kidney: float = 0.0,
    mirror: float = 0.0,
    collapsed_bowel: float = 0.0,
) -> PhantomCase:
    """Generate one phantom CT case with its reference labels and ground truth.

    Args:
        seed: the same seed gives identical arrays, affines and truth.
        size: `full` (KiTS-like: 512×512 at 0.6-1.0 mm, 0.5-5 mm slices), `small` (176×176 at
            1.8-2.5 mm, 2.5-3.5 mm slices, for CPU training and the demo) or `tiny` (64×64×32 at
            4.5-7 mm, for unit tests).
        anatomy: a folder of real KiTS label maps (e.g. KiTS19's `data/`); kidneys and tumors are
            taken from one of them (chosen by `seed`, or the `anatomy_index`-th in sorted order,
            cycling), the body is synthesised around them.
        orientation: axis codes of the written arrays, e.g. `IPL` (KiTS files: slices first),
            `RAS` or `LPS`.
        chest: the probability that the scan also covers the chest up through the heart, as a
            chest-abdomen scan does (`CHEST_MM` more cranially).
        tumors_as_kidney: with `anatomy`, the probability that each real tumor is painted and
            labelled as kidney (`real.tumors_as_kidney`), drawn from a stream of its own: a case
            that keeps all its tumors is exactly the case without it.
        mirror: with `anatomy`, the probability that the label map is mirrored left to right (its
            right kidney becomes the left), drawn from a stream of its own as `tumors_as_kidney`:
            a network takes a mirrored outline for a new one (docs/phantom.md).
        collapsed_bowel: the probability that each small-bowel loop is collapsed, a solid
            enhancing cord with no lumen (as most jejunum lies on CT), drawn from a stream of its
            own: at 0 the case is exactly the case without it (docs/phantom.md).

    Raises:
        KidneysegError: unknown size or orientation, or an unusable anatomy folder.
    """
    options = PhantomOptions(anatomy, orientation, chest, tumors_as_kidney, mirror, collapsed_bowel)
    return generate_case_on(check_size(size), seed, options, size, anatomy_index)


def generate_case_on(
    preset: SizePreset,
    seed: int,
    options: PhantomOptions | None = None,
    size_name: str = "custom",
    anatomy_index: int | None = None,
) -> PhantomCase:
    """`generate_case` on a grid of your own, e.g. exactly 512×512×200 voxels for a benchmark:
    `generate_case_on(SizePreset(512, (0.8, 0.8), (), (300, 300), slices=200), seed=0)`;
    `options` holds the other settings (None: the defaults), `size_name` goes into the truth."""
    options = options or PhantomOptions()
    anatomy = options.anatomy
    chest_mm = chest_extension(seed, options.chest)
    share = options.tumors_as_kidney
    as_kidney = (share, np.random.default_rng([seed, 2])) if share > 0 else None
    mirrored = options.mirror > 0 and np.random.default_rng([seed, 3]).random() < options.mirror
    collapsed = (
        (options.collapsed_bowel, np.random.default_rng([seed, 4])) if options.collapsed_bowel else None
    )
    rng = np.random.default_rng(seed)
    phase = str(rng.choice(PHASES, p=PHASE_P))
    if anatomy is not None:
        from kidneyseg.data.phantom.real import real_scene

        scene = real_scene(
            anatomy, preset, rng, phase, chest_mm, anatomy_index, as_kidney, mirrored, collapsed
        )
    else:
        scene = _synthetic_scene(preset, rng, phase, chest_mm, collapsed)
    paint_context(scene.canvas, scene.body, sample_context(rng))
    canvas = scene.canvas
    grid = canvas.output
    tissue = canvas.tissue[:, :, canvas.centres]  # the voxel centres: what the labels annotate
    labels = label_lut()[tissue]
    truth = _measure_truth(scene, labels)
    hu = sample_hu(phase, rng)
    dose, noise_sd = _noise_sd(scene.body, grid.spacing, rng)
    orientation = options.orientation
    tissue, _ = _reorient(tissue, np.eye(4), orientation)
    axes = (canvas.xs, canvas.ys, canvas.zs)
    ct = render_ct(canvas.tissue, canvas.delta, hu, axes, noise_sd, rng, canvas.sub)
    affine = np.diag([*grid.spacing, 1.0])
    affine[:3, 3] = np.asarray(grid.origin) + scene.shift
    ct, out_affine = _reorient(ct, affine, orientation)
    labels, _ = _reorient(labels, affine, orientation)
    counts = {k: sum(1 for les in truth["lesions"] if les["kind"] == k) for k in ("tumor", "cyst")}
    truth = {
        "seed": int(seed),
        "size": size_name,
        "anatomy": scene.source,
        "phase": phase,
        "orientation": orientation,
        "shape": list(ct.shape),
        "spacing_mm": [round(float(s), 4) for s in np.linalg.norm(out_affine[:3, :3], axis=0)],
        "dose": dose,
        "noise_sd_hu": round(noise_sd, 2),
        "chest_mm": round(chest_mm, 1),
        "tumors_as_kidney": options.tumors_as_kidney,
        "mirror": options.mirror,
        "mirrored": bool(mirrored),
        "collapsed_bowel": options.collapsed_bowel,
        "hu": {t.name.lower(): round(float(hu[t]), 1) for t in Tissue},
        "counts": counts,
        **truth,
    }
    return PhantomCase(
        Volume(ct, out_affine, f"phantom seed {seed}"),
        Volume(labels, out_affine),
        truth,
        Volume(np.ascontiguousarray(tissue), out_affine),
    )
