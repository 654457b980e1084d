"""The patient's midline and the check that the anatomy fits the header, from one spine locator.

- **Spine** (`survey`): the vertebral column is the bone (above `BONE_HU`) deep in the trunk (at
  least `MIN_DEPTH_MM` from the air around it: not ribs under the skin, not an arm beside the
  body, even one lying against the flank, nor the table under it) that lies near the same place on
  the most axial slices. On the CT subsampled to about `GRID_MM`, the share of slices with such
  bone within `SMOOTH_MM` of each in-plane point, smoothed over `SMOOTH_MM`, peaks on the column;
  the spine is the centre of the region around the peak above half of it. Ribs run obliquely
  through the slices, the pelvis covers only its own slices, and contrast-filled aorta and bowel
  mostly stay below 400 HU (a contrast pool denser than that on as many slices, an arterial-phase
  aorta or the heart of a CT angiogram, can be taken for it where the spine's bone is faint,
  docs/report.md). It is found when the peak reaches `MIN_SHARE`.
- **Midline** (`find_midline`): the spine's x when it is found (`source` "spine"); else the
  body's x centroid when the body (CT > `BODY_HU`) lies whole across the field of view on nearly
  every slice ("body"); else the scanner's x = 0, which CT centres on the patient, when it lies
  well inside the image ("scanner"); else the body's centroid, which cannot be trusted ("none":
  the report warns `midline_unknown`). Only a spine or whole-body midline may split a kidney
  component that crosses it, and only at a narrow isthmus (`component_sides`).
- **Orientation** (`orientation_problem`): lying supine or prone, with a header that says so, the
  spine lies in the back half of the body (world -y, posterior), straight behind the trunk's
  centroid. Found clearly in front of the body's centre (`spine_in_front`), the data are rotated
  against the header (a prone scan written as supine): `ORIENTATION_MESSAGE`. Found to one side of
  it (`rolled`: the direction from the trunk's centroid to the spine more than `ROLL_LIMIT_DEG`
  from straight behind), the patient lies on the side or the image's axes do not match its
  header, and sides from the header's x fail from about 70 degrees (both kidneys on one side of
  the spine's x): `ROLLED_MESSAGE`. Should bone at the body's side still be taken for the spine
  (a very thick arm against the flank), the midline lies at the side and the same warning says
  to check the sides. Left-right mirrors cannot be told this way.

World coordinates are RAS+ mm, as in `kidneyseg.report.measure`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from kidneyseg.io.volume import Volume
from kidneyseg.report import geometry

GRID_MM = 3.0
MAX_SLICES = 96
"""At most this many axial slices are read (every k-th): the column is long, the check cheap."""
BODY_HU = -300.0
PADDING_HU = -1500.0
"""Below this a voxel is padding outside the reconstruction circle, not air (air is -1000 HU)."""
BONE_HU = 400.0
MIN_DEPTH_MM = 35.0
"""A vertebral body lies 50 mm or more from the skin; the humerus of an arm lying against the flank
(the arm then joins the trunk) 20-35 mm. Was 20: the real DICOM slab with an arm moved 1.4 mm in
took the humerus for the spine (midline x = -200 mm), and a tiny phantom's spine lay 12 mm off."""
SMOOTH_MM = 15.0
MIN_SHARE = 0.3
"""The spine is found when this share of the slices has deep bone within `SMOOTH_MM` of the same
point: 0.47 on the shared low-dose CT (4 mm, the faintest bone), 0.50 on the chest CT (its lungs
reach the field's edge, so the spine's depth is read to them), 0.68 or more on phantoms, 1.0 on
the shared DICOM series; 0.22 where a reconstruction circle leaves the spine out of that CT."""
MIN_SLICES = 5
WHOLE_SHARE = 0.9
"""The body lies whole across the field of view when no lateral end of it touches the field's edge
on at least this share of its slices."""
SCANNER_MARGIN = 0.2
"""x = 0 is used only when it lies this share of the image's width inside either side."""
FRONT_LIMIT = 0.55
"""The spine is in front of the body's centre beyond this fraction of the body's depth (0 back, 1
front); a supine abdomen has its spinal column at 0.15-0.45."""
SPLITTING_SOURCES = ("spine", "body")
SPLIT_SHARE = 0.15
WAIST_MM = 8.0
WAIST_SHARE = 0.5
"""A component split at the midline has there at most this share of the cross-section it has on
the less full side (`_has_waist`): a horseshoe's isthmus 5-20 %, one kidney lying across it 100 %."""
ROLL_LIMIT_DEG = 45.0
"""The spine lies to one side of the trunk's centroid when its direction from it is more than this
from straight behind: the shared low-dose CT 3 degrees, the DICOM slab 16 (the chest CT: its trunk is
cut, not read), 33 of 40 phantoms -0.3 to 0.2; the low-dose CT turned by 30/45/60/90 degrees about
the long axis under its header reads 34/50/65/93. Sides fail from about 70 degrees."""
MIN_ROLL_OFFSET_MM = 20.0
"""The roll is read only when the spine lies at least this far from the trunk's centroid (50 mm
on the shared low-dose CT): closer, its direction is noise."""
MISFIT = "the anatomy does not fit the header's orientation"
"""The start of every orientation warning (`ORIENTATION_MESSAGE`, `ROLLED_MESSAGE`)."""
ORIENTATION_MESSAGE = (
    f"{MISFIT}: the spine lies in front of the body's "
    "centre; check the orientation (a prone scan stored as supine, or a flipped image)"
)
ROLLED_MESSAGE = (
    f"{MISFIT}: the spine lies to one side of the body's centre; check the orientation and the sides "
    "(a patient lying on the side, image axes that do not match the header, or an arm against the "
    "flank taken for the spine): right and left may be wrong"
)
RIGHT, LEFT, SPLIT = 1, 2, 3
"""Per-component sides of `component_sides` (`Sides.side`)."""


@dataclass(frozen=True)
class Midline:
    """The patient's midline: its world x (mm) and what it came from ("spine", "body",
    "scanner" or "none": nothing trusted)."""

    x: float
    source: str

    @property
    def splits(self) -> bool:
        """Whether a kidney component crossing this midline may be split at it."""
        return self.source in SPLITTING_SOURCES


@dataclass(frozen=True)
class Survey:
    """What `survey` reads from the CT: the spine's world x and y (None when not found), its place
    across the body's depth (0 back, 1 front; None when the body is cut front or back), the
    body's world x centroid, whether the body lies whole across the field of view, and the
    spine's direction from the trunk's centroid in the axial plane (`roll_deg`: 0 straight
    behind, negative towards the patient's right, ±180 in front; None without a spine, with the
    trunk cut by the field of view, or the spine closer than `MIN_ROLL_OFFSET_MM` to it)."""

    spine_xy: tuple[float, float] | None
    spine_depth_fraction: float | None
    body_x: float
    body_whole_across: bool
    image_x_range: tuple[float, float]
    roll_deg: float | None


def _centred_sample(array: np.ndarray, stride: list[int]) -> tuple[np.ndarray, tuple[slice, ...], np.ndarray]:
    """`array` every `stride` voxels, the samples centred in it so that the same image with
    flipped axes gives the same world points (was: half a voxel off where the voxels left over,
    (n - 1) mod stride, are odd, as for 512 voxels at any stride from 2 to 6). Along such an axis a
    sample lies between two voxels and is their mean (of 2, 4 or 8 voxels in all). Returns the
    sample, the box of its first voxels and the shift (in voxels, 0 or 0.5 per axis) of its
    points from them."""
    start = [(n - 1) % k // 2 for n, k in zip(array.shape, stride, strict=True)]
    halves = [(n - 1) % k % 2 for n, k in zip(array.shape, stride, strict=True)]
    box = tuple(slice(b, None, k) for b, k in zip(start, stride, strict=True))
    if not any(halves):
        return np.asarray(array[box]), box, np.zeros(3)
    views = [
        np.asarray(array[tuple(slice(b + d, None, k) for b, d, k in zip(start, shift, stride, strict=True))])
        for shift in itertools.product(*((0, 1) if h else (0,) for h in halves))
    ]
    common = tuple(slice(0, n) for n in np.min([v.shape for v in views], axis=0))
    sample = np.mean([v[common].astype(np.float32) for v in views], axis=0)
    return sample, box, 0.5 * np.array(halves)


def survey(ct: Volume) -> Survey:
    """Locate the spine and the body on `ct` (Hounsfield units), subsampled to about `GRID_MM`."""
    axial = geometry.slice_axis(ct.affine)
    stride = [max(1, round(float(GRID_MM / s))) for s in ct.spacing]
    stride[axial] = max(stride[axial], -(-ct.shape[axial] // MAX_SLICES))
    # Samples centred in the image and odd, centred windows: the same CT in another axis order
    # (flipped axes) gives the same world points (was: two samples' shift with an even window).
    sample, box, shift = _centred_sample(ct.array, stride)
    sample = np.moveaxis(sample, axial, 0)
    order = [axial, *(a for a in range(3) if a != axial)]
    affine = geometry.crop_affine(ct.affine, box)
    affine[:3, 3] += ct.affine[:3, :3] @ shift
    affine[:3, :3] = affine[:3, order]  # the sample's axes: axial first
    sampling = [ct.spacing[a] * stride[a] for a in order[1:]]
    lateral = 1 + int(np.argmax(np.abs(affine[0, 1:3])))
    reach = [2 * max(1, round(float(SMOOTH_MM / s / 2))) + 1 for s in sampling]
    bone = np.zeros(sample.shape[1:])
    trunks = np.zeros(sample.shape[1:], dtype=bool)
    body_slices, whole, count, total = 0, 0, 0, np.zeros(3)
    for values in sample:
        body = _trunk(values)
        if body is None:
            continue
        body_slices += 1
        trunks |= body
        depth = ndimage.distance_transform_edt(body, sampling=sampling) if not body.all() else np.inf
        bone += ndimage.maximum_filter((values > BONE_HU) & (depth >= MIN_DEPTH_MM), reach)
        whole += not _cut_across(body, values > PADDING_HU, lateral - 1)
        count += int(body.sum())
        total[1:] += [float(np.sum(np.nonzero(body)[a])) for a in range(2)]
    corners = geometry.to_world(geometry.box_corners([(0, n - 1) for n in sample.shape]), affine)
    x_range = (float(corners[:, 0].min()), float(corners[:, 0].max()))
    centre = total / max(count, 1)
    centre[0] = (sample.shape[0] - 1) / 2
    body_x = float(geometry.to_world(centre[None], affine)[0, 0]) if count else sum(x_range) / 2
    spine = _spine(bone / max(body_slices, 1), reach) if body_slices >= MIN_SLICES else None
    spine_xy, fraction, roll = None, None, None
    whole_across = whole >= WHOLE_SHARE * max(body_slices, 1)
    if spine is not None:
        point = geometry.to_world(np.array([[centre[0], *spine]]), affine)[0]
        spine_xy = (float(point[0]), float(point[1]))
        fraction = _depth_fraction(trunks, spine, affine)
        if whole_across and fraction is not None:
            roll = _roll(point - geometry.to_world(centre[None], affine)[0])
    return Survey(spine_xy, fraction, body_x, whole_across, x_range, roll)


def _roll(offset: np.ndarray) -> float | None:
    """The direction (degrees) of the world `offset` from the trunk's centroid to the spine: 0
    straight behind (-y), negative towards the patient's right (+x); None when it is shorter than
    `MIN_ROLL_OFFSET_MM`."""
    dx, dy = float(offset[0]), float(offset[1])
    if np.hypot(dx, dy) < MIN_ROLL_OFFSET_MM:
        return None
    return float(np.degrees(np.arctan2(-dx, -dy)))


def _trunk(values: np.ndarray) -> np.ndarray | None:
    """The largest body region (CT > `BODY_HU`, holes filled) of an axial slice: the trunk, not an
    arm beside it or the table under it; None for a slice without body."""
    regions, count = ndimage.label(ndimage.binary_fill_holes(values > BODY_HU))
    if not count:
        return None
    return regions == 1 + int(np.argmax(ndimage.sum_labels(regions > 0, regions, range(1, count + 1))))


def _cut_across(body: np.ndarray, view: np.ndarray, axis: int) -> bool:
    """Whether a lateral end of the body (its first or last voxel along the in-plane `axis` closest
    to world x) touches the edge of the field of view (the image's or the padding's)."""
    present = np.flatnonzero(body.any(axis=1 - axis))
    for end, step in ((present[0], -1), (present[-1], 1)):
        beyond = end + step
        if not 0 <= beyond < body.shape[axis]:
            return True
        line = np.take(body, end, axis=axis)
        if np.any(line & ~np.take(view, beyond, axis=axis)):
            return True
    return False


def _spine(share: np.ndarray, reach: list[int]) -> np.ndarray | None:
    """In-plane sample index of the spine's centre from the share of slices on which each point is
    deep bone near it, or None when no column reaches `MIN_SHARE`; `reach`: `SMOOTH_MM` in samples
    (odd)."""
    smooth = ndimage.uniform_filter(share, reach)
    peak = float(smooth.max())
    if peak < MIN_SHARE:
        return None
    regions, _ = ndimage.label(smooth >= peak / 2)
    region = regions == regions[np.unravel_index(np.argmax(smooth), smooth.shape)]
    return np.asarray(ndimage.center_of_mass(smooth * region))


def _depth_fraction(trunks: np.ndarray, spine: np.ndarray, affine: np.ndarray) -> float | None:
    """Where the spine lies across the trunk's depth (`trunks`: on any slice) along the in-plane
    axis closest to world y: 0 at the back (-y), 1 at the front; None when the trunk reaches that
    axis's ends (cut)."""
    axis = int(np.argmax(np.abs(affine[1, 1:3])))
    line = np.take(trunks, round(float(spine[1 - axis])), axis=1 - axis)
    present = np.flatnonzero(line)
    if not present.size or present[0] == 0 or present[-1] == line.size - 1:
        return None
    back, front = (present[0], present[-1]) if affine[1, 1 + axis] > 0 else (present[-1], present[0])
    return float((spine[axis] - back) / (front - back))


def find_midline(found: Survey) -> Midline:
    """The patient's midline from a `survey` (module docstring)."""
    if found.spine_xy is not None:
        return Midline(found.spine_xy[0], "spine")
    if found.body_whole_across:
        return Midline(found.body_x, "body")
    low, high = found.image_x_range
    margin = SCANNER_MARGIN * (high - low)
    if low + margin < 0.0 < high - margin:
        return Midline(0.0, "scanner")
    return Midline(found.body_x, "none")


def spine_in_front(found: Survey) -> bool:
    """Whether the spine lies clearly in front of the body's centre (`FRONT_LIMIT`)."""
    return found.spine_depth_fraction is not None and found.spine_depth_fraction > FRONT_LIMIT


def rolled(found: Survey) -> bool:
    """Whether the spine lies to one side of the trunk's centroid (`ROLL_LIMIT_DEG`) without lying
    in front of it (`spine_in_front` says that)."""
    return found.roll_deg is not None and abs(found.roll_deg) > ROLL_LIMIT_DEG and not spine_in_front(found)


def orientation_problem(found: Survey) -> str | None:
    """`ORIENTATION_MESSAGE` when the spine lies in front of the body's centre, `ROLLED_MESSAGE`
    when it lies to one side of it, else None."""
    if spine_in_front(found):
        return ORIENTATION_MESSAGE
    return ROLLED_MESSAGE if rolled(found) else None


def orientation_warning(ct: Volume) -> str | None:
    """`orientation_problem`'s message, naming the image."""
    problem = orientation_problem(survey(ct))
    return f"{ct.source or 'image'}: {problem}" if problem else None


@dataclass(frozen=True)
class Sides:
    """The side of each 26-connected component of a mask (`component_sides`): `labelled` (1..count),
    `side` per component (`RIGHT`, `LEFT` or `SPLIT`; index 0 unused, uint8), their voxel counts in
    all and right of the midline, and `right` (the voxels right of the midline)."""

    labelled: np.ndarray
    count: int
    side: np.ndarray
    sizes: np.ndarray
    right_sizes: np.ndarray
    right: np.ndarray

    def left(self) -> np.ndarray:
        """Which voxels of the mask go to the patient's left: those of `LEFT` components and, of a
        `SPLIT` one, those left of the midline (a uint8 look-up per voxel, no int64 copy)."""
        voxel_side = self.side[self.labelled]
        return (voxel_side == LEFT) | ((voxel_side == SPLIT) & ~self.right)

    def across(self, component: int) -> float:
        """The share of a whole component's voxels on the other side of the midline than its own."""
        beyond = (
            self.right_sizes[component]
            if self.side[component] == LEFT
            else (self.sizes[component] - self.right_sizes[component])
        )
        return float(beyond / max(self.sizes[component], 1)) if self.side[component] != SPLIT else 0.0


def right_of(x: float, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """Which voxels have a world x above `x` (lie to the patient's right of it), slab by slab."""
    out = np.empty(shape, dtype=bool)
    for start in range(0, shape[0], geometry.SLAB):
        rows = out[start : start + geometry.SLAB]
        row = np.asarray(affine[0], dtype=np.float64).copy()
        row[3] += row[0] * start  # the slab's first index is 0 in its own grid
        rows[...] = geometry.grid_map(row, rows.shape) > x
    return out


def component_sides(mask: np.ndarray, affine: np.ndarray, line: Midline) -> Sides:
    """The side of each 26-connected component of `mask` (on the grid `affine` maps: pass the
    foreground's bounding box, the cost is per voxel). The largest component with at least
    `SPLIT_SHARE` of its voxels on each side is split at the midline when it is two kidneys joined
    by a narrow isthmus there (`_has_waist`: a horseshoe kidney, touching kidneys) and the midline
    may split (`Midline.splits`); any other goes whole to the side holding most of it."""
    labelled, count = geometry.components(mask)
    right = right_of(line.x, mask.shape, affine)
    sizes = geometry.voxel_counts(labelled, count)
    right_sizes = geometry.voxel_counts(labelled, count, within=right)
    share_right = right_sizes / np.maximum(sizes, 1)
    side = np.where(share_right >= 0.5, RIGHT, LEFT).astype(np.uint8)
    largest = int(np.argmax(sizes[1:])) + 1 if count else 0
    crosses = bool(count) and SPLIT_SHARE <= share_right[largest] <= 1 - SPLIT_SHARE
    if crosses and line.splits and _has_waist(labelled, largest, affine, line.x):
        side[largest] = SPLIT
    return Sides(labelled, count, side, sizes, right_sizes, right)


def _has_waist(labelled: np.ndarray, component: int, affine: np.ndarray, x: float) -> bool:
    """Whether the component's cross-section at the midline (its voxels within half a band of it,
    bands `WAIST_MM` or two voxels wide along world x) is at most `WAIST_SHARE` of its largest
    cross-section on the less full side: two kidney masses joined by an isthmus, not one kidney
    lying across the midline."""
    box = ndimage.find_objects(labelled, max_label=component)[component - 1]
    local = geometry.crop_affine(affine, box)
    width = max(WAIST_MM, 2 * float(np.abs(local[0, :3]).sum()))
    counts: dict[int, int] = {}
    for start in range(box[0].start, box[0].stop, geometry.SLAB):
        part = (slice(start, min(start + geometry.SLAB, box[0].stop)), *box[1:])
        points = np.argwhere(labelled[part] == component) + [s.start for s in part]
        bands = np.floor((geometry.to_world(points, affine)[:, 0] - x) / width + 0.5).astype(np.int64)
        for band, n in zip(*np.unique(bands, return_counts=True), strict=True):
            counts[int(band)] = counts.get(int(band), 0) + int(n)
    right = max((n for band, n in counts.items() if band > 0), default=0)
    left = max((n for band, n in counts.items() if band < 0), default=0)
    return counts.get(0, 0) <= WAIST_SHARE * min(right, left)
