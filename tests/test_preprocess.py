"""Invertible preprocessing on tiny seeded synthetic volumes: orientation, world-correct
resampling, body crop, HU window, the inverses and bad input."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from kidneyseg.config import PreprocessConfig
from kidneyseg.errors import KidneysegError
from kidneyseg.io.volume import Volume
from kidneyseg.labels import KITS19
from kidneyseg.preprocess import PreprocessMeta, invert_labels, invert_probabilities, preprocess
from kidneyseg.preprocess.spatial import canonical_affine, orientation_transform, resampled_grid

SPACING = (1.2, 1.0, 3.0)


def _ras_case(rng: np.random.Generator, shape=(40, 48, 20), spacing=SPACING):
    """A CT-like RAS volume: air, an elliptic body (fat/soft tissue + noise), a 'kidney' blob
    labelled 1 with a 'tumor' labelled 2 inside it; returns (ct, labels) Volumes."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-20.5, 13.25, -101.0)
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    x, y, z = (
        (i - shape[0] / 2) * spacing[0],
        (j - shape[1] / 2) * spacing[1],
        (k - shape[2] / 2) * spacing[2],
    )
    body = (x / 20) ** 2 + (y / 17) ** 2 < 1
    ct = np.where(body, 40.0, -1000.0) + rng.normal(0, 10, shape)
    kidney = ((x - 6) / 6) ** 2 + ((y + 3) / 4) ** 2 + (z / 15) ** 2 < 1
    tumor = ((x - 8) / 2.5) ** 2 + ((y + 3) / 2.5) ** 2 + ((z - 4) / 6) ** 2 < 1
    ct[kidney] = 160
    ct[tumor] = 90
    labels = np.zeros(shape, np.uint8)
    labels[kidney] = 1
    labels[tumor & kidney] = 2
    return Volume(ct.astype(np.int16), affine, "ras.nii.gz"), Volume(labels, affine, "ras_seg.nii.gz")


def _reorient(volume: Volume, codes: str) -> Volume:
    """The same image in another array orientation, computed with nibabel (an independent reference)."""
    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(volume.affine), nib.orientations.axcodes2ornt(tuple(codes))
    )
    array = np.ascontiguousarray(nib.orientations.apply_orientation(volume.array, ornt))
    affine = volume.affine @ nib.orientations.inv_ornt_aff(ornt, volume.shape)
    return Volume(array, affine, f"{codes}.nii.gz")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _world(affine, index) -> np.ndarray:
    affine = np.asarray(affine)
    return affine[:3, :3] @ np.asarray(index, dtype=float) + affine[:3, 3]


@pytest.mark.parametrize("codes", ["LPS", "IPL", "SRA"])
def test_orientation_transform_matches_nibabel(rng, codes):
    ct, _ = _ras_case(rng)
    other = _reorient(ct, codes)
    perm, flips = orientation_transform(other.affine, "RAS")
    affine_c = canonical_affine(other.affine, other.shape, perm, flips)
    np.testing.assert_allclose(affine_c, ct.affine, atol=1e-9)
    assert nib.aff2axcodes(affine_c) == ("R", "A", "S")


@pytest.mark.parametrize("codes", ["LPS", "IPL"])
def test_any_orientation_gives_the_same_result(rng, codes):
    """KiTS files (IPL, slices first) and DICOM-like LPS arrays preprocess exactly like RAS."""
    ct, labels = _ras_case(rng)
    cfg = PreprocessConfig(spacing=(1.5, 1.5, 2.5))
    ref = preprocess(ct, cfg, labels)
    got = preprocess(_reorient(ct, codes), cfg, _reorient(labels, codes))
    assert got.image.shape == ref.image.shape
    np.testing.assert_allclose(got.image, ref.image, atol=1e-5)
    np.testing.assert_array_equal(got.labels, ref.labels)
    np.testing.assert_allclose(got.meta.affine, ref.meta.affine, atol=1e-9)


def test_grid_has_target_spacing_and_covers_the_same_extent(rng):
    ct, _ = _ras_case(rng)
    cfg = PreprocessConfig(spacing=(1.62, 1.62, 2.0), crop_foreground=False)
    pre = preprocess(ct, cfg)
    affine = np.asarray(pre.meta.affine)
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), cfg.spacing, atol=1e-12)
    assert pre.image.dtype == np.float32 and pre.image.shape == pre.meta.resampled_shape
    # The centres of the two fields of view coincide and their extents differ by < 1 voxel.
    for axis in range(3):
        n_old, n_new = ct.shape[axis], pre.image.shape[axis]
        centre_old = _world(ct.affine, [(n - 1) / 2 for n in ct.shape])
        centre_new = _world(affine, [(n - 1) / 2 for n in pre.image.shape])
        np.testing.assert_allclose(centre_new, centre_old, atol=1e-9)
        assert abs(n_new * cfg.spacing[axis] - n_old * SPACING[axis]) <= cfg.spacing[axis] / 2 + 1e-9


def test_a_physical_point_stays_put_oblique_and_flipped():
    """A smooth blob centred on a world point is found at that point after preprocessing, also for
    an oblique, flipped, permuted affine (positions read through `meta.affine`)."""
    angle = np.deg2rad(7.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    direction = rotation @ np.array([[0, 0, -1], [0, -1, 0], [-1, 0, 0]], dtype=float)  # IPL-like
    spacing = (2.5, 0.9, 0.8)
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing
    affine[:3, 3] = (30.0, 40.0, 12.0)
    shape = (24, 64, 60)
    index = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1).reshape(-1, 3)
    world = index @ affine[:3, :3].T + affine[:3, 3]
    point = world.mean(axis=0) + np.array([1.3, -2.1, 3.7])
    blob = np.exp(-((world - point) ** 2).sum(1) / (2 * 5.0**2)).reshape(shape)
    ct = Volume((-40 + 300 * blob).astype(np.float32), affine)
    pre = preprocess(ct, PreprocessConfig(spacing=(1.62, 1.62, 2.0), crop_foreground=False))
    weight = np.clip(pre.image * 385 - 80 + 40, 0, None)  # back to HU above the -40 floor
    grids = np.meshgrid(*(np.arange(n) for n in pre.image.shape), indexing="ij")
    centroid_index = np.array([(g * weight).sum() / weight.sum() for g in grids])
    np.testing.assert_allclose(_world(pre.meta.affine, centroid_index), point, atol=0.1)


def test_invert_labels_is_exact_when_upsampling(rng):
    """Every original voxel maps back to itself (finer target grid), in any orientation."""
    ct, labels = _ras_case(rng)
    cfg = PreprocessConfig(spacing=(0.9, 0.7, 2.0))
    for codes in ("RAS", "LPS", "IPL"):
        ct_o, labels_o = _reorient(ct, codes), _reorient(labels, codes)
        pre = preprocess(ct_o, cfg, labels_o)
        back = invert_labels(pre.labels, pre.meta, mode="nearest")
        assert back.shape == labels_o.shape and back.dtype == np.uint8
        np.testing.assert_array_equal(back, labels_o.array)


def test_invert_probabilities_is_chunk_independent_and_accepts_tensors(rng):
    ct, labels = _ras_case(rng)
    pre = preprocess(
        _reorient(ct, "IPL"), PreprocessConfig(spacing=(2.0, 2.0, 4.0)), _reorient(labels, "IPL")
    )
    one_hot = np.stack([pre.labels == c for c in range(3)]).astype(np.float32)
    probs = one_hot + rng.normal(0, 0.05, one_hot.shape).astype(np.float32)
    results = [invert_probabilities(probs, pre.meta, chunk_slices=n) for n in (1, 5, 1000)]
    results.append(invert_probabilities(torch.from_numpy(probs), pre.meta, chunk_slices=3))
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    original = _reorient(labels, "IPL").array
    assert results[0].shape == original.shape
    # A 12 × 8 × 30 mm 'kidney' on a 2 × 2 × 4 mm grid: interpolated class scores recover it
    # better than nearest-neighbour labels do.
    nearest = invert_labels(pre.labels, pre.meta, mode="nearest")
    assert _dice(results[0] > 0, original > 0) > _dice(nearest > 0, original > 0) > 0.75
    # The default label inverse is the one-hot score inverse, without the one-hot array.
    one_hot_back = invert_probabilities(one_hot, pre.meta, chunk_slices=4)
    np.testing.assert_array_equal(invert_labels(pre.labels, pre.meta), one_hot_back)
    with pytest.raises(ValueError, match="mode"):
        invert_labels(pre.labels, pre.meta, mode="cubic")


@pytest.mark.parametrize("dense_fraction", [0.0, 2.0])  # always / never interpolate whole chunks
def test_invert_probabilities_equals_dense_trilinear_argmax(rng, monkeypatch, dense_fraction):
    """Against an independent dense reference: every original voxel's world position mapped
    into the preprocessed grid, each class interpolated with scipy (order 1), then arg-max."""
    from scipy import ndimage

    from kidneyseg.preprocess import inverse

    monkeypatch.setattr(inverse, "DENSE_FRACTION", dense_fraction)
    ct, labels = _ras_case(rng)
    ct_o = _reorient(ct, "IPL")
    pre = preprocess(ct_o, PreprocessConfig(spacing=(2.0, 1.7, 4.5)), _reorient(labels, "IPL"))
    smooth = ndimage.gaussian_filter(rng.normal(size=(4, *pre.meta.shape)), (0, 1.5, 1.5, 1.0))
    scores = (smooth + 0.3 * np.stack([pre.labels == c for c in range(4)])).astype(np.float32)
    index = np.stack(np.meshgrid(*(np.arange(n) for n in ct_o.shape), indexing="ij"), -1).reshape(-1, 3)
    world = np.c_[index, np.ones(len(index))] @ ct_o.affine.T
    pre_index = (world @ np.linalg.inv(np.asarray(pre.meta.affine)).T)[:, :3]
    inside = np.all((pre_index > -0.5) & (pre_index < np.array(pre.meta.shape) - 0.5), axis=1)
    dense = np.stack([ndimage.map_coordinates(s, pre_index.T, order=1, mode="nearest") for s in scores])
    expected = np.where(inside, np.argmax(dense, axis=0), 0).reshape(ct_o.shape)
    got = invert_probabilities(scores, pre.meta, chunk_slices=3, batch=100)
    assert (got != expected).mean() < 1e-4  # float32 rounding at exact ties only
    assert len(np.unique(got)) == 4
    half = invert_probabilities(torch.from_numpy(scores).half(), pre.meta)
    assert (half != got).mean() < 0.01
    one_hot = np.stack([pre.labels == c for c in range(3)]).astype(np.float32)
    np.testing.assert_array_equal(
        invert_labels(pre.labels, pre.meta), invert_probabilities(one_hot, pre.meta, batch=50)
    )


def test_invert_probabilities_equals_labels_when_upsampling(rng):
    ct, labels = _ras_case(rng)
    pre = preprocess(ct, PreprocessConfig(spacing=(0.6, 0.5, 1.5)), labels)
    one_hot = np.stack([pre.labels == c for c in range(3)]).astype(np.float32)
    np.testing.assert_array_equal(invert_probabilities(one_hot, pre.meta, chunk_slices=4), labels.array)


def test_outermost_planes_beyond_the_grid_take_the_edge_voxels_scores(rng):
    """0.5 mm slices on a 2 mm grid: round(13 mm / 2 mm) = 6 voxels, 0.5 mm short of the CT at
    each end, so the first and last slices lie beyond the grid's faces (within half a grid voxel)
    and take the edge voxels' scores. Beyond the body crop (faces inside the grid) stays background."""
    ct, _ = _ras_case(rng, shape=(40, 48, 26), spacing=(1.2, 1.0, 0.5))
    for crop in (True, False):
        pre = preprocess(ct, PreprocessConfig(spacing=(1.62, 1.62, 2.0), crop_foreground=crop))
        assert pre.meta.resampled_shape[2] == 6 and pre.meta.crop[2] == (0, 6)
        kidney = np.ones(pre.meta.shape, np.uint8)
        scores = np.stack([1 - kidney, kidney]).astype(np.float32)
        for back in (
            invert_probabilities(scores, pre.meta),
            invert_labels(kidney, pre.meta),
            invert_labels(kidney, pre.meta, mode="nearest"),
        ):
            assert back[:, :, 0].any() and back[:, :, -1].any()
            np.testing.assert_array_equal(back, np.repeat(back[:, :, 13:14], 26, axis=2))
            if crop:  # the body crop leaves air in-plane out
                assert pre.meta.crop[0][0] > 0 and not back[0].any() and not back[:, 0].any()
            else:
                assert back.all()


def test_body_crop_keeps_the_largest_component_with_margin(rng):
    ct, labels = _ras_case(rng)
    array = ct.array.copy()
    array[:3, :3, :] = 500  # a separate bright object in a corner (a scanner table, say)
    ct = ct.with_array(array)
    cfg = PreprocessConfig(spacing=SPACING, crop_margin_mm=0.0)
    pre = preprocess(ct, cfg, labels)
    body = ct.array > cfg.body_threshold_hu
    body[:3, :3, :] = False
    expected = [(int(np.nonzero(body.any(axis=tuple(a for a in range(3) if a != k)))[0][[0, -1]][0]),
                 int(np.nonzero(body.any(axis=tuple(a for a in range(3) if a != k)))[0][-1]) + 1)
                for k in range(3)]  # fmt: skip
    assert [tuple(b) for b in pre.meta.crop] == expected  # same spacing: the grid is the original's
    assert int((pre.labels > 0).sum()) == int((labels.array > 0).sum())
    wider = preprocess(ct, PreprocessConfig(spacing=SPACING, crop_margin_mm=2.5))
    for (lo, hi), (wlo, whi), n, s in zip(pre.meta.crop, wider.meta.crop, ct.shape, SPACING, strict=True):
        m = int(np.ceil(2.5 / s))
        assert (wlo, whi) == (max(0, lo - m), min(n, hi + m))
    uncropped = preprocess(ct, PreprocessConfig(spacing=SPACING, crop_foreground=False))
    assert uncropped.image.shape == ct.shape


def test_crop_grows_to_keep_labels_outside_the_body(rng):
    ct, labels = _ras_case(rng)
    array = labels.array.copy()
    array[1, 1, 1] = 1  # a labelled voxel in the air
    pre = preprocess(ct, PreprocessConfig(spacing=SPACING), labels.with_array(array))
    body_only = preprocess(ct, PreprocessConfig(spacing=SPACING), labels)
    assert body_only.meta.crop[0][0] > 1 and body_only.meta.crop[1][0] > 1
    assert pre.meta.crop[0][0] == 1 and pre.meta.crop[1][0] == 1
    assert int((pre.labels > 0).sum()) == int((array > 0).sum())
    np.testing.assert_array_equal(invert_labels(pre.labels, pre.meta), array)


def test_hu_window_clips_and_rescales():
    values = np.array([-1000.0, -80.0, 112.5, 305.0, 3000.0])
    array = np.repeat(values, 8)[:, None, None] * np.ones((1, 4, 4))
    ct = Volume(array.astype(np.float32), np.eye(4))
    pre = preprocess(ct, PreprocessConfig(spacing=(1.0, 1.0, 1.0), crop_foreground=False))
    np.testing.assert_allclose(pre.image[::8, 0, 0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    other = preprocess(
        ct, PreprocessConfig(spacing=(1.0, 1.0, 1.0), crop_foreground=False, hu_window=(-1000, 0))
    )
    np.testing.assert_allclose(other.image[::8, 0, 0], [0.0, 0.92, 1.0, 1.0, 1.0], atol=1e-6)


def test_meta_round_trips_through_json(rng):
    ct, labels = _ras_case(rng)
    pre = preprocess(_reorient(ct, "IPL"), PreprocessConfig(), _reorient(labels, "IPL"))
    again = PreprocessMeta.from_dict(json.loads(json.dumps(pre.meta.to_dict())))
    assert again == pre.meta
    np.testing.assert_array_equal(invert_labels(pre.labels, again), invert_labels(pre.labels, pre.meta))
    with pytest.raises(KidneysegError, match="version"):
        PreprocessMeta.from_dict({**pre.meta.to_dict(), "version": 99})
    with pytest.raises(KidneysegError, match="malformed"):
        PreprocessMeta.from_dict({k: v for k, v in pre.meta.to_dict().items() if k != "crop"})


def test_flipped_views_and_fortran_arrays_are_read_correctly(rng):
    ct, labels = _ras_case(rng)
    ref = preprocess(ct, PreprocessConfig(), labels)
    for array in (np.asfortranarray(ct.array), ct.array[::-1, :, ::-1][::-1, :, ::-1]):
        got = preprocess(ct.with_array(array), PreprocessConfig(), labels)
        np.testing.assert_allclose(got.image, ref.image, atol=2e-5)  # float32 grid coordinates
    flipped = np.flip(ct.array, 0)
    affine = ct.affine @ nib.orientations.inv_ornt_aff([[0, -1], [1, 1], [2, 1]], ct.shape)
    got = preprocess(Volume(flipped, affine), PreprocessConfig())
    np.testing.assert_allclose(got.image, ref.image, atol=1e-5)


def test_resampled_grid_rounds_the_extent():
    shape, maps = resampled_grid((100, 7, 1), (0.8, 2.5, 3.0), (1.62, 1.62, 2.0))
    assert shape == (49, 11, 2)
    for (n, s, t), m, k in zip([(100, 0.8, 1.62), (7, 2.5, 1.62), (1, 3.0, 2.0)], maps, shape, strict=True):
        assert m.scale == pytest.approx(t / s)
        assert m.to_source((k - 1) / 2) == pytest.approx((n - 1) / 2)


def test_label_problems_are_reported_with_the_file(rng):
    ct, labels = _ras_case(rng)
    with pytest.raises(KidneysegError, match=r"ras_seg\.nii\.gz: label map shape"):
        preprocess(ct, PreprocessConfig(), Volume(labels.array[:-1], labels.affine, labels.source))
    shifted = labels.affine.copy()
    shifted[0, 3] += 5
    with pytest.raises(KidneysegError, match=r"ras_seg\.nii\.gz: label map geometry differs"):
        preprocess(ct, PreprocessConfig(), Volume(labels.array, shifted, labels.source))
    bad = labels.array.copy()
    bad[0, 0, 0] = 3
    with pytest.raises(KidneysegError, match=r"ras_seg\.nii\.gz: label values \[3\] are not in the kits19"):
        preprocess(ct, PreprocessConfig(), labels.with_array(bad), KITS19)
    with pytest.raises(KidneysegError, match="non-integer"):
        preprocess(ct, PreprocessConfig(), labels.with_array(labels.array + np.float32(0.5)))
    with pytest.raises(KidneysegError, match="-1"):
        preprocess(ct, PreprocessConfig(), labels.with_array(labels.array.astype(np.int16) - 1))


def test_inverse_refuses_arrays_of_the_wrong_shape(rng):
    ct, labels = _ras_case(rng)
    pre = preprocess(ct, PreprocessConfig(), labels)
    with pytest.raises(KidneysegError, match="differs from the preprocessed grid"):
        invert_labels(pre.labels[1:], pre.meta)
    with pytest.raises(KidneysegError, match="differs from the preprocessed grid"):
        invert_probabilities(np.zeros((3, 2, 2, 2), np.float32), pre.meta)
    with pytest.raises(KidneysegError, match=r"\[C, X, Y, Z\]"):
        invert_probabilities(np.zeros(pre.meta.shape, np.float32), pre.meta)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spacing": (0.0, 1.0, 1.0)}, "spacing"),
        ({"spacing": (-1.0, 1.0, 1.0)}, "spacing"),
        ({"spacing": (float("nan"), 1.0, 1.0)}, "spacing"),
        ({"hu_window": (300.0, -80.0)}, "hu_window"),
        ({"orientation": "RAR"}, "orientation"),
        ({"crop_margin_mm": -1.0}, "crop_margin_mm"),
    ],
)
def test_config_rejects_invalid_values(kwargs, message):
    with pytest.raises(KidneysegError, match=message):
        PreprocessConfig(**kwargs)


def test_volume_rejects_degenerate_spacing():
    for affine in (np.diag([0.0, 1, 1, 1]), np.diag([np.nan, 1, 1, 1])):
        with pytest.raises(KidneysegError, match=r"spacing|affine"):
            Volume(np.zeros((4, 4, 4), np.int16), affine, "bad.nii.gz")
    with pytest.raises(KidneysegError, match="3D"):
        Volume(np.zeros((4, 4), np.int16), np.eye(4), "flat.nii.gz")
