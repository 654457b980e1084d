"""Post-processing of predicted label maps: keep the kidneys, drop stray islands.

A person has at most two kidneys, and every KiTS class (kidney, tumor, cyst) lies in or on a
kidney. So foreground islands that are not connected to the two largest connected components
of the union of all foreground classes (KiTS's "kidney and masses" region) are false positives,
typically on the spleen, liver or bowel that share kidney HU. nnU-Net applies the same idea
("remove all but the largest component" per region) when it improves validation Dice; whether
it does here is measured in docs/prediction.md. `keep_kidneys` also skips components that the CT
around them rules out as kidneys (`kidneyseg.predict.anatomy`).

`absorb_lesion_islands` then gives lesion islands too small to trust the class around them (a
model's `inference.absorb_islands_ml`; nnU-Net likewise chooses its post-processing per model on
validation cases): kidney + masses stays as it is, only which class holds those voxels changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from kidneyseg.evaluate.surface import bounding_box
from kidneyseg.labels import LabelMap, lesion_classes
from kidneyseg.predict.anatomy import MAX_CHECKED, AnatomyCheck
from kidneyseg.report.geometry import SLAB, slice_axis, voxel_counts

if TYPE_CHECKING:
    from kidneyseg.io.volume import Volume


def post_process(
    labels: np.ndarray, ct: Volume, label_map: LabelMap, air_hu: float | None, absorb_islands_ml: float
) -> tuple[np.ndarray, list[dict[str, Any]], list[dict[str, Any]]]:
    """A prediction's post-processing on the CT grid: `keep_kidneys` (checking each component
    against the CT, air below `air_hu`, unless that is None), then `absorb_lesion_islands`.

    Returns:
        The labels, the components the CT ruled out, and the lesion islands absorbed (with class
        names).
    """
    kidney = label_map.value("kidney")
    check = (
        None if air_hu is None else AnatomyCheck(ct.array, ct.spacing, slice_axis(ct.affine), air_hu, kidney)
    )
    labels, ruled_out = keep_kidneys(labels, check=check)
    masses = lesion_classes(label_map).get("masses", ())
    voxel_ml = float(np.prod(ct.spacing)) / 1000.0
    absorbed = absorb_lesion_islands(labels, voxel_ml, absorb_islands_ml, masses, kidney)
    names = label_map.names
    return labels, ruled_out, [a | {"class": names[a["class"]], "to": names[a["to"]]} for a in absorbed]


def keep_largest_components(labels: np.ndarray, keep: int = 2) -> np.ndarray:
    """Zero every foreground voxel outside the `keep` largest 26-connected foreground components.

    Args:
        labels: integer label map (0 = background), any shape with 3 dimensions.
        keep: how many components to keep (2: the two kidneys).

    Returns:
        A new label map; classes inside kept components are unchanged.
    """
    return keep_kidneys(labels, keep)[0]


def keep_kidneys(
    labels: np.ndarray, keep: int = 2, check: AnatomyCheck | None = None
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Keep the `keep` largest 26-connected foreground components that `check` does not rule out.

    Args:
        labels: integer label map (0 = background), any shape with 3 dimensions.
        keep: how many components to keep (2: the two kidneys).
        check: the CT-based checks of `kidneyseg.predict.anatomy`, or None for size alone.

    Returns:
        A new label map (classes inside kept components unchanged), and for each component a
        check ruled out: its voxel count and volume (mL), bounding box (voxel indices) and the reason.
    """
    from scipy import ndimage

    foreground = labels > 0
    if not foreground.any():
        return labels.copy(), []
    # Work inside the bounding box of the foreground: on a full CT this is a small part.
    box = ndimage.find_objects(foreground.astype(np.uint8))[0]
    components, count = ndimage.label(foreground[box], structure=np.ones((3, 3, 3), dtype=bool))
    out = labels.copy()
    if count <= keep and check is None:
        return out, []
    # Counted slab by slab, and dropped through a per-component table rather than np.isin: both
    # np.bincount and np.isin make an 8-byte copy of every voxel's component number, which was
    # the peak memory of a whole prediction on long scans (docs/prediction.md).
    sizes = voxel_counts(components, count)
    sizes[0] = 0
    drop = np.ones(count + 1, dtype=bool)
    drop[0] = False
    order = [int(i) for i in np.argsort(sizes)[::-1] if sizes[i]]
    ruled_out: list[dict[str, Any]] = []
    if check is None:
        drop[order[:keep]] = False
    else:
        kept = 0
        for i in [i for i in order if sizes[i] >= check.min_voxels][:MAX_CHECKED]:
            mask = components == i  # its box from this mask: find_objects would scan every label
            place = bounding_box(mask)
            whole = tuple(slice(p.start + b.start, p.stop + b.start) for p, b in zip(place, box, strict=True))
            reason = check.reason(mask[place], labels[whole], whole)
            if reason is None:
                drop[i] = False
                kept += 1
                if kept == keep:
                    break
            else:
                ruled_out.append(
                    {
                        "voxels": int(sizes[i]),
                        "volume_ml": round(int(sizes[i]) * check.voxel_ml, 2),
                        "box": [[s.start, s.stop] for s in whole],
                        "reason": reason,
                    }
                )
    np.copyto(out[box], 0, where=drop[components])
    return out, ruled_out


def absorb_lesion_islands(
    labels: np.ndarray, voxel_ml: float, min_ml: float, lesions: tuple[int, ...], kidney: int
) -> list[dict[str, Any]]:
    """Relabel, in place, every 26-connected island of a lesion class smaller than `min_ml` with
    the foreground class (any non-zero value) most of the voxels touching it hold, ties to the
    lower value, or `kidney` when none touches it. Voxels of other small islands and background
    do not vote; a voxel touching two islands votes for the one numbered last (cyst islands are
    numbered after tumor islands, in the order of `lesions`).

    Args:
        labels: integer label map (0 = background), changed in place.
        voxel_ml: the volume of a voxel (mL).
        min_ml: islands below this volume are relabelled (0: none).
        lesions: the lesion classes' values (tumor, cyst).
        kidney: the kidney class's value.

    Returns:
        Per lesion class and the class its islands took: how many islands and their volume (mL).
    """
    from scipy import ndimage

    if min_ml <= 0:
        return []
    structure = np.ones((3, 3, 3), dtype=bool)
    lesion = np.zeros(labels.shape, dtype=bool)
    for value in lesions:  # np.isin would take 4 bytes a voxel
        lesion |= labels == value
    found = bounding_box(lesion)
    del lesion
    if found is None:
        return []
    box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in found)
    part = labels[box]
    islands = np.zeros(part.shape, dtype=np.int32)
    kinds, voxels = [np.zeros(1, dtype=part.dtype)], [np.zeros(1, dtype=np.int32)]  # per island
    for value in lesions:
        components, count = ndimage.label(part == value, structure=structure)
        sizes = voxel_counts(components, count)
        chosen = np.flatnonzero(sizes[1:] * voxel_ml < min_ml) + 1
        numbers = np.zeros(count + 1, dtype=np.int32)
        numbers[chosen] = np.arange(len(chosen)) + sum(len(k) for k in kinds)
        kinds.append(np.full(len(chosen), value, dtype=part.dtype))
        voxels.append(sizes[chosen].astype(np.int32))  # each under min_ml: far below 2**31 voxels
        for start in range(0, part.shape[0], SLAB):  # at once, the looked-up numbers: 4 more bytes a voxel
            islands[start : start + SLAB] += numbers[components[start : start + SLAB]]
        del components, numbers
    kind, size = np.concatenate(kinds), np.concatenate(voxels)
    del kinds, voxels
    if len(kind) == 1:
        return []
    # 4 bytes per island and class: a count per island alone would cost 8 bytes (np.bincount's).
    votes = np.zeros((int(part.max()) + 1, len(kind)), dtype=np.int32)
    for start in range(0, part.shape[0], SLAB):  # slab by slab: the filter's and masks' copies stay small
        lo, stop = max(start - 1, 0), start + SLAB
        near = ndimage.maximum_filter(islands[lo : stop + 1], footprint=structure, mode="constant")
        near = near[start - lo : start - lo + SLAB]
        here = part[start:stop]
        shell = (here > 0) & (islands[start:stop] == 0) & (near > 0)
        np.add.at(votes, (here[shell], near[shell]), 1)
    votes[0] = 0
    taken = np.where(votes.any(axis=0), votes.argmax(axis=0), kidney).astype(part.dtype)
    del votes
    for start in range(0, part.shape[0], SLAB):
        here, number = part[start : start + SLAB], islands[start : start + SLAB]
        np.copyto(here, taken[number], where=number > 0)
    summary = []
    for k, t in sorted({(int(k), int(t)) for k, t in zip(kind[1:], taken[1:], strict=True)}):
        which = (kind == k) & (taken == t)
        ml = round(float(size[which].sum()) * voxel_ml, 3)
        summary.append({"class": k, "to": t, "islands": int(which.sum()), "volume_ml": ml})
    return summary
