"""Phantoms around real anatomy: kidneys, tumors and cysts from real KiTS label maps.

`real_scene` reads one label map (e.g. ../shared/data/kits19/case_XXXXX/segmentation.nii.gz, whose
odd affines put the slices on axis 0: `read_volume` keeps them exact), brings it to canonical RAS
axes, crops it cranio-caudally around the kidneys and, for the `small`/`tiny` sizes, resamples it
nearest-neighbour to the preset's spacing. The synthetic body is placed around the kidneys: the
spine midway between them (or at the scan centre if only one kidney is annotated), the vertebral
bodies at the kidneys' antero-posterior level. The annotated voxels are painted last and over
everything, so the phantom's labels are exactly the real ones on the output grid (plus synthetic
cysts when the map has no cyst label, as KiTS19 does not; and kidney where `tumors_as_kidney`
paints a tumor as kidney).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kidneyseg.data.phantom.anatomy import paint_body
from kidneyseg.data.phantom.body import sample_body
from kidneyseg.data.phantom.kidney import (
    CYST_COUNT_P,
    KIDNEY_OVER,
    LESION_OVER,
    KidneyRecord,
    LesionRecord,
    Scene,
)
from kidneyseg.data.phantom.render import (
    TUMOR_ENHANCEMENT_HU,
    samples_per_slice,
    tumor_delta,
)
from kidneyseg.data.phantom.shapes import Canvas, Grid, Lobes, WaveNoise, ellipsoid_level, random_rotation
from kidneyseg.data.phantom.tissue import Tissue
from kidneyseg.errors import KidneysegError

MARGIN_MM = (40.0, 90.0)
"""Cranio-caudal margin kept above and below the annotated kidneys (random in this range)."""
CORTEX_MM = 6.0


def anatomy_files(folder: Path) -> list[Path]:
    """The label maps of a KiTS-style folder: `case_*/segmentation.nii.gz` (also under `data/` or
    `dataset/`), or else the `.nii.gz` files directly in it.

    Raises:
        KidneysegError: the folder does not exist or holds no label maps.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise KidneysegError("anatomy folder does not exist", folder)
    for root in (folder, folder / "data", folder / "dataset"):
        files = sorted(root.glob("case_*/segmentation.nii.gz"))
        if files:
            return files
    files = sorted(p for p in folder.glob("*.nii.gz") if p.is_file())
    if not files:
        raise KidneysegError(
            "no label maps found: expected case_XXXXX/segmentation.nii.gz (KiTS layout) or *.nii.gz files",
            folder,
        )
    return files


def _canonical(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The label map on RAS array axes and its affine, checked to be a kidney label map."""
    import nibabel as nib

    from kidneyseg.io.volume import read_volume

    volume = read_volume(path)
    if volume.array.dtype.kind not in "iu" and not np.array_equal(volume.array, np.round(volume.array)):
        raise KidneysegError("not a label map: the values are not integers", path)
    low, high = float(volume.array.min()), float(volume.array.max())
    labels = np.asarray(volume.array).astype(np.uint8) if low >= 0 and high <= 3 else None
    if labels is None or not (labels == 1).any():
        raise KidneysegError(
            f"not a KiTS label map: values {low:g} to {high:g}, expected 0-3 with kidney (1) present", path
        )
    ornt = nib.orientations.io_orientation(volume.affine)
    array = nib.orientations.apply_orientation(labels, ornt)
    affine = volume.affine @ nib.orientations.inv_ornt_aff(ornt, labels.shape)
    return np.asfortranarray(array), affine


def _target_grid(affine: np.ndarray, shape, z_range: tuple[int, int], preset, rng) -> Grid:
    """The output grid (world coordinates)."""
    spacing = np.abs(np.diag(affine)[:3])
    origin = affine[:3, 3]
    z0, z1 = z_range
    if preset.in_plane == shape[0] == shape[1]:  # full size: keep the real grid
        new_spacing = spacing.copy()
        new_shape = np.array([shape[0], shape[1], z1 - z0])
    else:
        fov = spacing[:2] * np.array(shape[:2])
        pixel = float(np.clip(fov.max() / preset.in_plane, *preset.spacing))
        extent = (z1 - z0) * spacing[2]
        if preset.slices:
            nz = preset.slices
            thickness = extent / nz
        else:
            thickness = float(rng.choice(preset.thickness))
            nz = max(int(np.ceil(extent / thickness)), 1)
        new_spacing = np.array([pixel, pixel, thickness])
        new_shape = np.array([preset.in_plane, preset.in_plane, nz])
    centre = origin + spacing * (np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2, (z0 + z1 - 1) / 2]))
    new_origin = centre - new_spacing * (new_shape - 1) / 2
    return Grid(tuple(int(n) for n in new_shape), tuple(float(s) for s in new_spacing), tuple(new_origin))


def _source_index(grid: Grid, affine: np.ndarray) -> list[np.ndarray]:
    """Per axis of `grid`, the nearest voxel index of the source whose (diagonal) affine is `affine`."""
    spacing = np.abs(np.diag(affine)[:3])
    origin = affine[:3, 3]
    return [
        np.rint(
            (grid.origin[n] + grid.spacing[n] * np.arange(grid.shape[n]) - origin[n]) / spacing[n]
        ).astype(int)
        for n in range(3)
    ]


def _sample_nearest(array: np.ndarray, index: list[np.ndarray]) -> np.ndarray:
    """Nearest-neighbour resampling by index arrays; outside the source it is background."""
    ranges = zip(index, array.shape, strict=True)
    if all(len(i) and i[0] >= 0 and i[-1] < n and np.all(np.diff(i) == 1) for i, n in ranges):
        return array[tuple(slice(int(i[0]), int(i[-1]) + 1) for i in index)]  # the same grid, cropped
    out = np.zeros(tuple(len(i) for i in index), dtype=array.dtype, order="F")
    valid = [(i >= 0) & (i < n) for i, n in zip(index, array.shape, strict=True)]
    src = array[np.ix_(*(i[v] for i, v in zip(index, valid, strict=True)))]
    out[np.ix_(*(np.nonzero(v)[0] for v in valid))] = src
    return out


def real_scene(
    folder: Path,
    preset,
    rng: np.random.Generator,
    phase: str,
    chest_mm: float = 0.0,
    index: int | None = None,
    as_kidney: tuple[float, np.random.Generator] | None = None,
    mirrored: bool = False,
    collapsed: tuple[float, np.random.Generator] | None = None,
) -> Scene:
    """Paint a synthetic body around the kidneys and lesions of one real label map of `folder`:
    the `index`-th (cycling), or one drawn from `rng` when None (`chest_mm` more above the
    cranial margin for a chest-abdomen scan); its tumors show their enhancement in `phase`
    (`tumor_delta`). `as_kidney` (share, stream): each tumor, with that probability drawn from
    that stream, is painted and labelled as kidney instead (`tumors_as_kidney`). `mirrored`: the
    label map is mirrored left to right first. `collapsed`: as `paint_body`'s."""
    from scipy import ndimage as ndi

    files = anatomy_files(folder)
    path = files[int(rng.integers(len(files))) if index is None else index % len(files)]
    labels, affine = _canonical(path)
    if mirrored:  # RAS array axes: axis 0 runs from the patient's left to right
        labels = np.asfortranarray(labels[::-1])
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3])), atol=1e-3 * np.abs(affine).max()):
        raise KidneysegError("oblique label maps are not supported as phantom anatomy", path)
    spacing = np.abs(np.diag(affine)[:3])
    # Crop cranio-caudally around the annotation, then fit the preset's slice cap.
    z_any = np.nonzero(labels.any(axis=(0, 1)))[0]
    margin = rng.uniform(*MARGIN_MM, size=2) / spacing[2]
    z0 = max(int(z_any[0] - margin[0]), 0)
    z1 = min(int(z_any[-1] + margin[1]) + 1, labels.shape[2]) + round(chest_mm / spacing[2])
    if z1 - z0 > preset.max_slices:  # trim the margins, never the annotation
        excess = z1 - z0 - preset.max_slices
        z0 = min(z0 + excess // 2, int(z_any[0]))
        z1 = max(z1 - (excess - excess // 2), int(z_any[-1]) + 1)
    output = _target_grid(affine, labels.shape, (z0, z1), preset, rng)
    sub = samples_per_slice(output.spacing[2])
    grid = output.supersampled(sub)  # the real mask is sampled where the canvas is painted
    real = _sample_nearest(labels, _source_index(grid, affine))

    # Patient frame: spine midway between the kidneys, z = 0 at their mean centroid.
    bounds = _bounds(real > 0)
    if bounds is None:
        raise KidneysegError(
            "no kidney left on the phantom's grid (annotation outside the field of view)", path
        )
    components, _ = ndi.label(real[bounds] > 0)
    sizes = np.bincount(components.ravel())[1:]
    kept = [int(i) + 1 for i in np.argsort(sizes)[::-1][:2] if sizes[i] > 0.1 * sizes.max()]
    start = np.array([b.start for b in bounds])
    world_axes = [grid.origin[k] + grid.spacing[k] * np.arange(grid.shape[k]) for k in range(3)]
    centroids = [
        np.array([world_axes[k][round(c) + start[k]] for k, c in enumerate(com)])
        for com in ndi.center_of_mass(components > 0, components, kept)
    ]
    mid_x = (centroids[0][0] + centroids[1][0]) / 2 if len(centroids) == 2 else float(np.mean(world_axes[0]))
    kidney_y = float(np.mean([c[1] for c in centroids]))
    kidney_z = float(np.mean([c[2] for c in centroids]))
    fov = output.spacing[0] * output.shape[0]
    body = sample_body(rng, width=float(np.clip(fov / rng.uniform(1.1, 1.3), 270, 380)))
    body_y = kidney_y - body.spine_y - rng.uniform(-6, 10)
    shift = np.array([mid_x, body_y, kidney_z])
    canvas = Canvas(Grid(output.shape, output.spacing, tuple(np.asarray(output.origin) - shift)), sub)
    paint_body(canvas, body, rng, fov / 2 * 1.02, collapsed)

    side_of = np.where(canvas.xs > 0, 1, 0)  # RAS: +x is the patient's right
    kidneys, lesions = _paint_real(canvas, real, bounds, side_of, phase, rng, as_kidney)
    source = (
        f"{Path(path).parent.name}/{Path(path).name}" if path.parent.name.startswith("case_") else path.name
    )
    return Scene(canvas, body, kidneys, lesions, shift, source)


def _bounds(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The bounding box of a 3D mask (from its projections), or None if it is empty."""
    slices = []
    for axis in range(3):
        hits = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        if not len(hits):
            return None
        slices.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(slices)  # type: ignore[return-value]


def tumors_as_kidney(local: np.ndarray, share: float, stream: np.random.Generator) -> np.ndarray:
    """The voxels of a label box's tumors (26-connected, one draw from `stream` each) that are
    painted as kidney with probability `share`: the kidney keeps the outline of a tumor-bearing
    one, a bulge or a hump, with no tumor in it, as a pseudotumor (a column of Bertin, a
    dromedary hump) has; over real shapes alone, every bulge holds a tumor (docs/phantom.md,
    "Tumors painted as kidney")."""
    from scipy import ndimage as ndi

    groups, count = ndi.label(local == 2, structure=np.ones((3, 3, 3), dtype=bool))
    chosen = np.flatnonzero(stream.random(count) < share) + 1
    return np.isin(groups, chosen)


def _paint_real(
    canvas: Canvas,
    real: np.ndarray,
    bounds,
    side_of: np.ndarray,
    phase: str,
    rng: np.random.Generator,
    as_kidney: tuple[float, np.random.Generator] | None = None,
):
    """Paint perirenal fat, cortex/medulla, real tumors (and cysts) over everything; add synthetic
    cysts when the map has none; `as_kidney` (`real_scene`) paints some tumors as kidney. Returns
    the kidney and lesion records."""
    from scipy import ndimage as ndi

    spacing = canvas.grid.spacing
    pad = int(np.ceil(10.0 / min(spacing)))
    sl = tuple(
        slice(max(b.start - pad, 0), min(b.stop + pad, n)) for b, n in zip(bounds, real.shape, strict=True)
    )
    box = canvas.box(
        [canvas.xs[sl[0].start], canvas.ys[sl[1].start], canvas.zs[sl[2].start]],
        [canvas.xs[sl[0].stop - 1], canvas.ys[sl[1].stop - 1], canvas.zs[sl[2].stop - 1]],
    )
    sl = box.slices
    local = np.ascontiguousarray(real[sl].T)  # (z, y, x), like the box's masks
    foreground = local > 0
    zyx = tuple(reversed(spacing))
    fat = ndi.distance_transform_edt(~foreground, sampling=zyx) < 8.0  # perirenal fat, 8 mm
    canvas.paint(box, fat, Tissue.VISCERAL_FAT, over=KIDNEY_OVER)
    depth = ndi.distance_transform_edt(foreground, sampling=zyx).astype(np.float32)
    hidden = tumors_as_kidney(local, *as_kidney) if as_kidney else np.zeros(local.shape, dtype=bool)
    kidney = (local == 1) | hidden
    canvas.paint(box, kidney, Tissue.KIDNEY_CORTEX)
    texture = WaveNoise.random(rng, wavelength=(8, 14))(box)
    canvas.paint(box, kidney & (depth > CORTEX_MM) & (texture > 0.2), Tissue.KIDNEY_MEDULLA)
    start = np.array([s.start for s in sl])
    kidney_records = []
    comps, _ = ndi.label(foreground)
    for i, obj in enumerate(ndi.find_objects(comps), start=1):
        if obj is None or (comps[obj] == i).sum() * np.prod(spacing) < 5000:  # < 5 mL: a fragment
            continue
        xyz = _global_slices(obj, start)
        side = "right" if side_of[(xyz[0].start + xyz[0].stop) // 2] else "left"
        kidney_records.append(KidneyRecord(side, xyz))
    lesions: list[LesionRecord] = []
    for lesion, kind in (((local == 2) & ~hidden, "tumor"), (local == 3, "cyst")):
        # One lesion per 26-connected component, as evaluate and report count them; its
        # 6-connected parts are painted one by one, each with its own draws, as before.
        comps, _ = ndi.label(lesion)
        groups, _ = ndi.label(lesion, structure=np.ones((3, 3, 3), dtype=bool))
        first = len(lesions)
        for obj in ndi.find_objects(groups):
            side = "right" if side_of[start[0] + (obj[2].start + obj[2].stop) // 2] else "left"
            lesions.append(LesionRecord(kind, side, _global_slices(obj, start)))
        for i, obj in enumerate(ndi.find_objects(comps), start=1):
            mask = np.zeros(local.shape, dtype=bool)
            mask[obj] = comps[obj] == i
            instance = first + int(groups[obj][mask[obj]][0])
            if kind == "cyst":
                canvas.paint(box, mask, Tissue.CYST, instance=instance)
                continue
            delta = tumor_delta(rng.uniform(*TUMOR_ENHANCEMENT_HU), texture, phase)
            canvas.paint(box, mask, Tissue.TUMOR, delta=delta, instance=instance)
            deepest = float(depth[mask].max())
            if rng.random() < 0.7 and deepest > 12:
                core = mask & (depth + 4 * texture > 0.55 * deepest)
                canvas.paint(box, core, Tissue.TUMOR_NECROSIS, delta=6 * texture)
    if not (local == 3).any():
        lesions.extend(_add_cysts(canvas, kidney, start, side_of, len(lesions), rng))
    return tuple(kidney_records), tuple(lesions)


def _global_slices(local: tuple[slice, ...], start: np.ndarray) -> tuple[slice, slice, slice]:
    """(x, y, z) canvas slices of a (z, y, x) object box found in a sub-box starting at `start`."""
    z, y, x = local
    return (
        slice(start[0] + x.start, start[0] + x.stop),
        slice(start[1] + y.start, start[1] + y.stop),
        slice(start[2] + z.start, start[2] + z.stop),
    )


def _add_cysts(
    canvas: Canvas, kidney: np.ndarray, start: np.ndarray, side_of: np.ndarray, first: int, rng
) -> list[LesionRecord]:
    """0-3 synthetic cortical cysts centred on random kidney surface voxels (`kidney`: a (z, y, x)
    mask of the sub-box whose (x, y, z) corner is `start`)."""
    from scipy import ndimage as ndi

    surface = np.argwhere(kidney & ~ndi.binary_erosion(kidney))
    records = []
    count = int(rng.choice(4, p=CYST_COUNT_P))
    for _ in range(count if len(surface) else 0):
        k, j, i = surface[int(rng.integers(len(surface)))] + start[::-1]
        centre = np.array([canvas.xs[i], canvas.ys[j], canvas.zs[k]], dtype=np.float64)
        r = float(np.clip(np.exp(rng.normal(np.log(11), 0.5)), 4, 30))
        semi = (r, r * rng.uniform(0.8, 1.0), r * rng.uniform(0.8, 1.0))
        axes = random_rotation(rng)
        box = canvas.around_ellipsoid(centre, axes, semi, 1.0)
        if box is None:
            continue
        level, _ = ellipsoid_level(box, centre, axes, semi, Lobes.random(rng, 0.015))
        painted = canvas.paint(
            box, level < 1, Tissue.CYST, over=LESION_OVER, instance=first + len(records) + 1
        )
        if painted.any():
            side = "right" if side_of[i] else "left"
            records.append(LesionRecord("cyst", side, box.slices, 2 * max(semi)))
    return records
