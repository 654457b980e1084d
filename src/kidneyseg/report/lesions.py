"""Kidneys and lesions as found in the label map, and the measurement of each lesion.

Conventions (diameters, position, exophytic fraction): docs/report.md, "Definitions".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from kidneyseg.labels import SIDES
from kidneyseg.report import diameters, geometry, midline
from kidneyseg.report.checks import ReportOptions
from kidneyseg.report.hulls import SliceHulls


@dataclass(frozen=True)
class Scan:
    """Where the measured crop lies in the scan: its start index, the array's shape and, along
    each axis, the first index of the scan and one past its last (`geometry.imaged_slices`)."""

    offset: np.ndarray
    shape: tuple[int, int, int]
    low: tuple[int, int, int]
    high: tuple[int, int, int]

    @classmethod
    def of(cls, offset: np.ndarray, shape: tuple[int, int, int], axial: int, imaged: tuple[int, int]) -> Scan:
        """The scan of an array of `shape` whose slices along `axial` from `imaged[0]` to
        `imaged[1]` - 1 were imaged, measured from `offset`."""
        low, high = [0, 0, 0], list(shape)
        low[axial], high[axial] = imaged
        return cls(offset, shape, tuple(low), tuple(high))

    def cuts(self, mask: np.ndarray, box: tuple[slice, ...]) -> bool:
        """Whether the scan's edge cuts `mask`, which lies at `box` of the measured crop."""
        return geometry.touches_edge(mask, self.offset + [s.start for s in box], self.low, self.high)


@dataclass(frozen=True)
class Kidney:
    """One kidney, its masks on its own bounding box of the crop (a whole-crop mask per kidney
    was 0.24 GiB each on a 512 × 512 × 1000 scan)."""

    side: str
    box: tuple[slice, ...]  # where `mask`, `parenchyma` and `contour` lie in the crop
    mask: np.ndarray  # kidney + masses of this kidney
    parenchyma: np.ndarray  # its voxels labelled kidney
    centroid: np.ndarray  # world RAS+ mm
    z_range: tuple[float, float]  # world z of its parenchyma (or of the whole kidney without any)
    contour: SliceHulls  # convex hull of its parenchyma on each axial slice
    across_midline: float = 0.0  # share of a whole component's voxels beyond the midline

    def parenchyma_hu_median(self, hu: np.ndarray) -> float | None:
        """Median of `hu` (the CT on `box`) over the parenchyma one voxel in from its outline (the
        outline mixes with fat and lesions), over all of it when that leaves none; None without."""
        core = ndimage.binary_erosion(self.parenchyma)
        inside = core if core.any() else self.parenchyma
        return round(_median(hu[inside]), 1) if inside.any() else None

    def overlap(self, box: tuple[slice, ...], mask: np.ndarray) -> int:
        """How many voxels of `mask`, itself the sub-array `box` of the crop, lie in this kidney."""
        common = [
            slice(max(a.start, b.start), min(a.stop, b.stop)) for a, b in zip(box, self.box, strict=True)
        ]
        if any(s.start >= s.stop for s in common):
            return 0
        mine = tuple(
            slice(s.start - k.start, s.stop - k.start) for s, k in zip(common, self.box, strict=True)
        )
        theirs = tuple(slice(s.start - m.start, s.stop - m.start) for s, m in zip(common, box, strict=True))
        return int(np.count_nonzero(self.mask[mine] & mask[theirs]))


def find_kidneys(
    labels: np.ndarray, kidney_value: int, affine: np.ndarray, line: midline.Midline
) -> tuple[list[Kidney], int, int]:
    """The kidney on each side: its largest component (or half of a split one) that holds kidney
    voxels (a lesion apart from every kidney is not one); and the number and voxel count of the
    other components.

    Works on per-component voxel counts, so that a prediction with thousands of stray
    specks costs no more than one with none; only the kidneys become masks, each on its own
    bounding box.
    """
    sides = midline.component_sides(labels > 0, affine, line)
    labelled, count, sizes, right_sizes = sides.labelled, sides.count, sides.sizes, sides.right_sizes
    kidney = labels == kidney_value
    in_kidney = geometry.voxel_counts(labelled, count, within=kidney)
    if (sides.side == midline.SPLIT).any():  # only a split component needs its halves' counts
        in_right_kidney = geometry.voxel_counts(labelled, count, within=kidney & sides.right)
    # Candidates: (side, voxels, component, half, kidney voxels) with half = the side kept of a
    # split component.
    candidates = []
    for component in range(1, count + 1):
        if sides.side[component] == midline.SPLIT:
            left = (
                sizes[component] - right_sizes[component],
                in_kidney[component] - in_right_kidney[component],
            )
            candidates += [("right", right_sizes[component], component, "right", in_right_kidney[component])]
            candidates += [("left", left[0], component, "left", left[1])]
            continue
        side = "right" if sides.side[component] == midline.RIGHT else "left"
        candidates.append((side, sizes[component], component, None, in_kidney[component]))
    kidneys, other_voxels = [], 0
    boxes = ndimage.find_objects(labelled)
    for side in SIDES:
        on_side = sorted((c for c in candidates if c[0] == side), key=lambda c: (c[4] == 0, -c[1]))
        if on_side and on_side[0][4]:
            _, _, component, half, _ = on_side[0]
            box = boxes[component - 1]
            region = labelled[box] == component
            if half is not None:
                region &= sides.right[box] if half == "right" else ~sides.right[box]
            own = np.logical_and(region, labels[box] == kidney_value, order="C")  # slices taken fast
            local = geometry.crop_affine(affine, box)
            kidneys.append(
                Kidney(
                    side,
                    box,
                    region,
                    own,
                    geometry.to_world(geometry.centroid_index(region)[None], local)[0],
                    geometry.cranio_caudal_range_mm(own if own.any() else region, local),
                    SliceHulls(own, geometry.slice_axis(affine)),
                    sides.across(component),
                )
            )
            other_voxels += sum(int(c[1]) for c in on_side[1:])
        else:
            other_voxels += sum(int(c[1]) for c in on_side)
    return kidneys, len(candidates) - len(kidneys), other_voxels


def measure_lesions(
    labels: np.ndarray,
    value: int,
    class_name: str,
    kidneys: list[Kidney],
    ct: np.ndarray,
    affine: np.ndarray,
    scan: Scan,
    options: ReportOptions,
    finish: Callable[[dict, np.ndarray, np.ndarray], None] | None = None,
) -> tuple[list[dict], list[dict], list[dict]]:
    """The rows of the lesions of one class by decreasing volume; the fragments below the minimum
    size (`{type, volume_ml, max_3d_diameter_cm}`), left out; and the lesions beyond the
    `options.max_lesions` largest (`{type, volume_ml}`), not measured. `finish(row, mask, affine
    of the mask)`, if given, completes each row while its lesion's mask exists: no mask outlives
    the measurement of its lesion.

    Fragments below the minimum volume and lesions beyond the largest are counted from their
    voxel counts alone, so that a prediction with thousands of specks costs little more than
    one without. The class's mask (`labels == value`) is made here and dropped once its
    components are labelled, so that it is not held while the lesions are measured.
    """
    mask = labels == value
    labelled, count = geometry.components(mask)
    del mask
    if count == 0:
        return [], [], []
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    sizes = geometry.voxel_counts(labelled, count)
    large = np.flatnonzero(sizes * voxel_ml >= options.min_lesion_volume_ml)
    large = large[large > 0]
    large = large[np.argsort(-sizes[large], kind="stable")]
    small = [
        {"type": class_name, "volume_ml": round(float(n) * voxel_ml, 4), "max_3d_diameter_cm": None}
        for n in sizes[1:]
        if n * voxel_ml < options.min_lesion_volume_ml
    ]
    unmeasured = [
        {"type": class_name, "volume_ml": round(float(sizes[n]) * voxel_ml, 4)}
        for n in large[options.max_lesions :]
    ]
    boxes = ndimage.find_objects(labelled)

    def lesion_row(number: int) -> dict:
        """Lesion `number`'s row, completed by `finish` unless it is too small. Its mask lives only here."""
        box = tuple(
            slice(max(0, s.start - 1), min(n, s.stop + 1))
            for s, n in zip(boxes[number - 1], labelled.shape, strict=True)
        )
        lesion = labelled[box] == number
        local = geometry.crop_affine(affine, box)
        row = _measure_lesion(lesion, local, class_name, ct[box][lesion], box, kidneys, options.nephrometry)
        if row["axial_slice_index"] is not None:
            row["axial_slice_index"] += int(scan.offset[geometry.slice_axis(affine)])
        row["incomplete"] = scan.cuts(lesion, box)
        if finish is not None and not _too_small(row, options):
            finish(row, lesion, local)
        return row

    measured = []  # (voxels, row)
    for number in large[: options.max_lesions]:
        row = lesion_row(int(number))
        if _too_small(row, options):
            small.append({k: row[k] for k in ("type", "volume_ml", "max_3d_diameter_cm")})
        else:
            measured.append((int(sizes[number]), row))
    measured.sort(key=lambda m: (-m[0], *m[1]["centroid_ras_mm"]))  # ties: by place, not array order
    rows = [row for _, row in measured]
    for index, row in enumerate(rows, start=1):
        row["id"] = f"{class_name[0].upper()}{index}"
    return rows, small, unmeasured


def _too_small(row: dict, options: ReportOptions) -> bool:
    return row["max_3d_diameter_cm"] * 10 < options.min_lesion_diameter_mm


def _measure_lesion(
    lesion: np.ndarray,
    local: np.ndarray,
    class_name: str,
    hu: np.ndarray,
    box: tuple[slice, ...],
    kidneys: list[Kidney],
    place: bool,
) -> dict:
    """One lesion's row; its position along its kidney and exophytic fraction only if `place`."""
    voxel_ml = abs(float(np.linalg.det(local[:3, :3]))) / 1000.0
    axis = geometry.slice_axis(local)
    centroid = geometry.to_world(geometry.centroid_index(lesion)[None], local)[0]
    kidney, apart = _assign(lesion, box, centroid, kidneys)
    axial_mm, axial_slice, diameter_mm, (z_low, z_high) = diameters.lesion_outline_mm(lesion, local)
    mean, sd = _mean_sd(hu)
    row = {
        "id": "",
        "type": class_name,
        "kidney": kidney.side if kidney else None,
        "apart_from_kidney": apart,
        "volume_ml": round(int(np.count_nonzero(lesion)) * voxel_ml, 3),
        "max_axial_diameter_cm": round(axial_mm / 10, 2),
        "max_3d_diameter_cm": round(diameter_mm / 10, 2),
        "cranio_caudal_extent_cm": round((z_high - z_low) / 10, 2),
        "hu_mean": round(mean, 1),
        "hu_sd": round(sd, 1),
        "hu_median": round(_median(hu), 1),
        "position": None,
        "position_fraction": None,
        "exophytic_fraction": None,
        "centroid_ras_mm": rounded(centroid, 1),
        "axial_slice_index": axial_slice + box[axis].start if axial_slice >= 0 else None,
    }
    if kidney is not None and place:
        row.update(_place_in_kidney(lesion, box, centroid, kidney))
    return row


def _assign(
    lesion: np.ndarray, box: tuple[slice, ...], centroid: np.ndarray, kidneys: list[Kidney]
) -> tuple[Kidney | None, bool]:
    """The kidney holding most of the lesion's voxels, else the one with the nearest centroid;
    and whether the lesion lies apart from the kidneys (in none of their components: a stray
    label, or on a kidney fragment that is not the kidney of its side)."""
    if not kidneys:
        return None, True
    overlaps = [k.overlap(box, lesion) for k in kidneys]
    if max(overlaps) > 0:
        return kidneys[int(np.argmax(overlaps))], False
    return min(kidneys, key=lambda k: float(np.linalg.norm(k.centroid - centroid))), True


def _place_in_kidney(
    lesion: np.ndarray, box: tuple[slice, ...], centroid: np.ndarray, kidney: Kidney
) -> dict:
    """Position along the kidney by thirds of its cranio-caudal extent, and the exophytic
    fraction: the share of lesion voxels outside the convex hull of the kidney's parenchyma
    on their own axial slice."""
    z_low, z_high = kidney.z_range
    fraction = float(np.clip((z_high - centroid[2]) / max(z_high - z_low, 1e-6), 0.0, 1.0))
    position = "upper pole" if fraction < 1 / 3 else "lower pole" if fraction > 2 / 3 else "interpolar"
    offset = np.array(
        [s.start - k.start for s, k in zip(box, kidney.box, strict=True)]
    )  # into the kidney's box
    inside = sum(int(kidney.contour.contains(p + offset).sum()) for p in geometry.voxel_slabs(lesion))
    return {
        "position": position,
        "position_fraction": round(fraction, 3),
        "exophytic_fraction": round(1.0 - inside / int(np.count_nonzero(lesion)), 3),
    }


def _mean_sd(values: np.ndarray, chunk: int = 1 << 20) -> tuple[float, float]:
    """Mean and standard deviation in float64, a chunk at a time: numpy's `std` makes a float64
    copy of every value (0.24 GiB for a random network's 31-million-voxel "lesion")."""
    mean = float(values.mean(dtype=np.float64))
    with np.errstate(over="ignore"):  # an SD beyond float64 (values of +-1e200) is inf, written as null
        squares = sum(
            float(np.square(values[i : i + chunk] - mean).sum()) for i in range(0, len(values), chunk)
        )
    return mean, math.sqrt(squares / len(values))


def _median(values: np.ndarray) -> float:
    """The median, its two middle values averaged in float64: `np.median` averages them in the
    values' own type, which overflows for float32 values near its limit."""
    middle = (len(values) - 1) // 2, len(values) // 2
    low, high = np.partition(values, middle)[list(middle)]
    return (float(low) + float(high)) / 2


def rounded(values, digits: int) -> list[float]:
    return [round(float(v), digits) for v in values]
