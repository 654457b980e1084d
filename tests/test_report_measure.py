"""Report measurements against analytic truth: one world-space scene sampled on many grids.

The scene is defined in world RAS+ mm, so every grid (RAS, LPS, the KiTS19 layout with
slices on array axis 0, a grid rotated about the cranio-caudal axis, anisotropic voxels)
must give the same kidneys, sides and sizes, within one voxel.
"""

from __future__ import annotations

import numpy as np
import pytest

from kidneyseg.errors import KidneysegError
from kidneyseg.io.volume import Volume
from kidneyseg.labels import KITS19
from kidneyseg.report import geometry, measure

HALF_EXTENT = np.array([85.0, 40.0, 60.0])
SPACING = (1.2, 1.0, 1.5)  # mm along the world x, y, z the grid axes are closest to
RIGHT_KIDNEY = ((45.0, 0.0, 0.0), (20.0, 25.0, 50.0))
LEFT_KIDNEY = ((-45.0, 0.0, 0.0), (20.0, 25.0, 50.0))
# name: (label, kidney side, centre, semi-axes (x, y, z) mm); lesions are painted over the kidneys.
LESIONS = {
    "sphere tumor": (2, "right", (60.0, 0.0, 30.0), (12.0, 12.0, 12.0)),
    "ellipsoid tumor": (2, "left", (-47.0, 0.0, 0.0), (8.0, 11.0, 16.0)),
    "cyst": (3, "left", (-45.0, 0.0, -35.0), (7.0, 7.0, 7.0)),
}


def _rotation_z(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])


GRIDS = {
    "RAS": np.eye(3),
    "LPS": np.diag([-1.0, -1.0, 1.0]),
    "KiTS IPL (slices on axis 0)": np.array([[0, 0, -1], [0, -1, 0], [-1, 0, 0]], dtype=float),
    "rotated 25° about z": _rotation_z(25.0),
}


def make_grid(directions: np.ndarray, spacing=SPACING, half_extent=HALF_EXTENT) -> tuple[np.ndarray, tuple]:
    """An affine whose axes point along `directions` (columns) and a shape covering the box
    ±`half_extent` mm around the world origin. Spacing follows the world axis each grid axis
    is closest to."""
    directions = np.asarray(directions, dtype=np.float64)
    closest = np.argmax(np.abs(directions), axis=0)
    steps = np.asarray(spacing)[closest]
    needed = np.abs(directions.T) @ half_extent
    shape = tuple(int(n) for n in np.ceil(2 * needed / steps) + 1)
    affine = np.eye(4)
    affine[:3, :3] = directions * steps
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return affine, shape


def world_coordinates(affine: np.ndarray, shape: tuple) -> np.ndarray:
    index = np.indices(shape, dtype=np.float32).reshape(3, -1).T
    return geometry.to_world(index, affine).reshape(*shape, 3)


def ellipsoid(world: np.ndarray, centre, semi_axes) -> np.ndarray:
    offset = (world - np.asarray(centre, np.float32)) / np.asarray(semi_axes, np.float32)
    return (offset**2).sum(-1) <= 1


def build_scene(affine, shape, lesions=LESIONS, kidneys=(RIGHT_KIDNEY, LEFT_KIDNEY), seed=0):
    """CT (HU, int16) and KiTS23 labels of the scene on the grid (`affine`, `shape`)."""
    world = world_coordinates(affine, shape)
    labels = np.zeros(shape, dtype=np.uint8)
    for centre, axes in kidneys:
        labels[ellipsoid(world, centre, axes)] = 1
    for value, _, centre, axes in lesions.values():
        labels[ellipsoid(world, centre, axes)] = value
    body = (np.abs(world[..., 0]) < 80) & (np.abs(world[..., 1]) < 36)
    hu = np.where(body, 40.0, -1000.0)
    hu[labels == 1] = 150
    hu[labels == 2] = 80
    hu[labels == 3] = 10
    hu += np.random.default_rng(seed).normal(0, 5, shape)
    return Volume(hu.astype(np.int16), affine, "ct.nii.gz"), Volume(labels, affine, "seg.nii.gz")


def _lesion(report: dict, centre) -> dict:
    return min(report["lesions"], key=lambda r: np.linalg.norm(np.subtract(r["centroid_ras_mm"], centre)))


@pytest.fixture(scope="module", params=list(GRIDS))
def scene_report(request):
    affine, shape = make_grid(GRIDS[request.param])
    ct, labels = build_scene(affine, shape)
    return measure(ct, labels)


def test_kidneys_are_found_on_the_right_sides(scene_report):
    report = scene_report
    assert report["status"] == "ok"
    assert [k["side"] for k in report["kidneys"]] == ["right", "left"]
    right, left = report["kidneys"]
    assert right["centroid_ras_mm"][0] > 30 and left["centroid_ras_mm"][0] < -30
    assert right["num_tumors"] == 1 and right["num_cysts"] == 0
    assert left["num_tumors"] == 1 and left["num_cysts"] == 1
    assert right["has_lesions"] and left["has_lesions"]
    assert report["other_components"]["count"] == 0


@pytest.mark.parametrize("name", list(LESIONS))
def test_lesion_sizes_match_the_analytic_truth(scene_report, name):
    report = scene_report
    value, side, centre, (a, b, c) = LESIONS[name]
    row = _lesion(report, centre)
    assert row["type"] == ("tumor" if value == 2 else "cyst")
    assert row["kidney"] == side
    assert np.allclose(row["centroid_ras_mm"], centre, atol=1.0)
    assert row["volume_ml"] == pytest.approx(4 / 3 * np.pi * a * b * c / 1000, rel=0.05)
    in_plane = max(SPACING[0], SPACING[1])
    assert abs(row["max_axial_diameter_cm"] * 10 - 2 * max(a, b)) <= in_plane
    assert abs(row["max_3d_diameter_cm"] * 10 - 2 * max(a, b, c)) <= max(SPACING)
    assert abs(row["cranio_caudal_extent_cm"] * 10 - 2 * c) <= SPACING[2]
    assert row["hu_mean"] == pytest.approx(80 if value == 2 else 10, abs=1.5)
    assert row["hu_sd"] == pytest.approx(5, abs=1.0)


def test_lesion_position_and_exophytic_fraction(scene_report):
    report = scene_report
    sphere = _lesion(report, LESIONS["sphere tumor"][2])
    ellipsoid_tumor = _lesion(report, LESIONS["ellipsoid tumor"][2])
    cyst = _lesion(report, LESIONS["cyst"][2])
    assert (sphere["position"], ellipsoid_tumor["position"], cyst["position"]) == (
        "upper pole",
        "interpolar",
        "lower pole",
    )
    # The sphere bulges out of the right kidney's lateral surface; the other two lie inside.
    assert 0.2 < sphere["exophytic_fraction"] < 0.8
    assert ellipsoid_tumor["exophytic_fraction"] == 0.0
    assert cyst["exophytic_fraction"] == 0.0


def test_summary(scene_report):
    report = scene_report
    summary = report["summary"]
    assert summary["kidneys_found"] == ["right", "left"]
    assert (summary["num_tumors"], summary["num_cysts"]) == (2, 1)
    tumors = [r for r in report["lesions"] if r["type"] == "tumor"]
    assert summary["largest_tumor_axial_diameter_cm"] == max(r["max_axial_diameter_cm"] for r in tumors)
    assert abs(summary["largest_tumor_axial_diameter_cm"] * 10 - 24) <= max(SPACING[:2])
    assert summary["total_tumor_volume_ml"] == pytest.approx(sum(r["volume_ml"] for r in tumors), abs=0.01)


def test_lesion_ids_order_by_volume(scene_report):
    report = scene_report
    tumors = [r for r in report["lesions"] if r["type"] == "tumor"]
    assert [r["id"] for r in tumors] == ["T1", "T2"]
    assert tumors[0]["volume_ml"] > tumors[1]["volume_ml"]


def test_exophytic_fraction_extremes():
    affine, shape = make_grid(np.eye(3), spacing=(1.5, 1.5, 2.0), half_extent=np.array([90.0, 45.0, 70.0]))
    kidney = ((45.0, 0.0, 0.0), (15.0, 20.0, 45.0))
    lesions = {
        "inside": (2, "right", (45.0, 0.0, 20.0), (6.0, 6.0, 6.0)),
        # centred 9 mm beyond the lateral surface (x = 60): most of it outside
        "outside": (2, "right", (69.0, 0.0, -15.0), (10.0, 10.0, 10.0)),
    }
    report = measure(*build_scene(affine, shape, lesions, kidneys=(kidney,)))
    assert _lesion(report, lesions["inside"][2])["exophytic_fraction"] == 0.0
    assert _lesion(report, lesions["outside"][2])["exophytic_fraction"] > 0.85


def test_touching_kidneys_are_split_at_the_midline():
    """A horseshoe kidney: both lower poles joined by an isthmus across the midline."""
    affine, shape = make_grid(np.eye(3), spacing=(1.5, 1.5, 2.0), half_extent=np.array([90.0, 45.0, 70.0]))
    ct, labels = build_scene(affine, shape, lesions={})
    world = world_coordinates(affine, shape)
    isthmus = (np.abs(world[..., 0]) < 40) & (np.abs(world[..., 1]) < 8) & (np.abs(world[..., 2] + 38) < 6)
    array = labels.array.copy()
    array[isthmus] = 1
    assert geometry.components(array > 0)[1] == 1
    report = measure(ct, labels.with_array(array))
    right, left = report["kidneys"]
    assert (right["side"], left["side"]) == ("right", "left")
    assert right["volume_ml"] == pytest.approx(left["volume_ml"], rel=0.05)
    assert right["centroid_ras_mm"][0] > 20 and left["centroid_ras_mm"][0] < -20
    assert report["other_components"]["count"] == 0


def test_single_kidney_and_a_stray_fragment():
    affine, shape = make_grid(np.diag([-1.0, -1.0, 1.0]), spacing=(1.5, 1.5, 2.0))
    lesions = {"fragment": (1, "left", (-75.0, 25.0, 45.0), (4.0, 4.0, 4.0))}
    report = measure(*build_scene(affine, shape, lesions, kidneys=(LEFT_KIDNEY,)))
    assert report["summary"]["kidneys_found"] == ["left"]
    assert report["other_components"]["count"] == 1
    assert report["other_components"]["volume_ml"] == pytest.approx(4 / 3 * np.pi * 64 / 1000, rel=0.25)


def test_empty_segmentation_gives_a_report_that_says_so():
    affine, shape = make_grid(np.eye(3), spacing=(3.0, 3.0, 3.0))
    ct, labels = build_scene(affine, shape, lesions={}, kidneys=())
    report = measure(ct, labels)
    assert report["status"] == "empty"
    assert "no kidney, tumor or cyst" in report["message"]
    assert report["kidneys"] == [] and report["lesions"] == []
    assert report["summary"]["num_tumors"] == 0
    assert report["summary"]["largest_tumor_axial_diameter_cm"] is None


@pytest.fixture(scope="module")
def small_scene():
    affine, shape = make_grid(np.eye(3), spacing=(3.0, 3.0, 3.0))
    return build_scene(affine, shape)


def test_label_map_on_another_grid_is_refused(small_scene):
    ct, labels = small_scene
    shifted = labels.affine.copy()
    shifted[:3, 3] += 5.0
    with pytest.raises(KidneysegError, match=r"seg\.nii\.gz: label map geometry .* differs from the CT"):
        measure(ct, Volume(labels.array, shifted, "seg.nii.gz"))
    with pytest.raises(KidneysegError, match=r"seg\.nii\.gz: label map shape"):
        measure(ct, Volume(labels.array[:-1], labels.affine, "seg.nii.gz"))


def test_labels_outside_the_label_map_are_refused(small_scene):
    ct, labels = small_scene
    array = labels.array.copy()
    array[0, 0, 0] = 5
    with pytest.raises(KidneysegError, match=r"seg\.nii\.gz: label values \[5\] are not in the kits23"):
        measure(ct, labels.with_array(array))
    with pytest.raises(KidneysegError, match=r"label values \[3\] are not in the kits19"):
        measure(ct, labels, KITS19)
    with pytest.raises(KidneysegError, match="non-integer"):
        measure(ct, labels.with_array(labels.array + np.float32(0.5)))


def test_lesions_without_any_kidney_are_refused(small_scene):
    ct, labels = small_scene
    array = labels.array.copy()
    array[array == 1] = 0
    with pytest.raises(KidneysegError, match="no kidney at all"):
        measure(ct, labels.with_array(array))


def test_outline_diameters_are_edge_to_edge():
    """The outline runs through the midpoints of boundary voxel faces: extents along the grid
    axes are exact (voxel count × spacing); a rectangle's corners are cut by half a voxel."""
    mask = np.zeros((14, 10, 3), dtype=bool)
    mask[2:12, 2:8, 1] = True  # 10 × 6 voxels on slice 1
    affine = np.diag([0.7, 1.3, 4.0, 1.0])
    diameter, index = geometry.max_axial_diameter_mm(mask, affine)
    assert index == 1
    assert diameter == pytest.approx(max(np.hypot(9 * 0.7, 6 * 1.3), np.hypot(10 * 0.7, 5 * 1.3)))
    line = np.zeros((3, 3, 12), dtype=bool)
    line[1, 1, 2:9] = True  # 7 voxels along z
    assert geometry.max_3d_diameter_mm(line, affine) == pytest.approx(7 * 4.0)
    low, high = geometry.cranio_caudal_range_mm(line, affine)
    assert high - low == pytest.approx(7 * 4.0)
    assert geometry.max_axial_diameter_mm(line, affine)[0] == pytest.approx(1.3)


def test_slice_axis_follows_the_affine():
    kits = np.array([[0, 0, -0.92, 0], [0, -0.92, 0, 0], [-0.5, 0, 0, 0], [0, 0, 0, 1]])
    assert geometry.slice_axis(kits) == 0
    assert geometry.slice_axis(np.diag([-0.8, -0.8, 3.0, 1.0])) == 2
    assert geometry.max_distance(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])) == pytest.approx(
        np.hypot(3, 3)
    )


def test_axial_diameter_of_random_ellipses_is_within_one_voxel():
    """Discretised ellipses at random sizes, angles, sub-voxel offsets and pixel aspect ratios."""
    rng = np.random.default_rng(7)
    errors = []
    for _ in range(60):
        spacing = np.array([rng.uniform(0.5, 1.0), 0.0])
        spacing[1] = spacing[0] * rng.uniform(0.7, 1.3)
        a = rng.uniform(3, 30)
        b = a * rng.uniform(0.5, 1.0)
        angle = rng.uniform(0, np.pi)
        n = int(2 * a / spacing.min()) + 8
        i, j = np.meshgrid(np.arange(n) - n / 2 + rng.uniform(0, 1), np.arange(n) - n / 2 + rng.uniform(0, 1))
        x, y = i.T * spacing[0], j.T * spacing[1]
        u = x * np.cos(angle) + y * np.sin(angle)
        v = -x * np.sin(angle) + y * np.cos(angle)
        mask = ((u / a) ** 2 + (v / b) ** 2 <= 1)[:, :, None]
        diameter, _ = geometry.max_axial_diameter_mm(mask, np.diag([*spacing, 3.0, 1.0]))
        errors.append((diameter - 2 * a) / spacing.max())
    errors = np.array(errors)
    assert np.all(np.abs(errors) <= 1.0)
    assert abs(errors.mean()) < 0.6
