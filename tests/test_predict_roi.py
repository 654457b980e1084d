"""Two-stage, kidney-focused prediction (`--roi kidneys`): boxes, regions, fallbacks, the run record."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from kidneyseg.config import PreprocessConfig
from kidneyseg.data.phantom import generate_case
from kidneyseg.errors import KidneysegError
from kidneyseg.io.volume import Volume, write_volume
from kidneyseg.predict import Predictor, PredictSettings
from kidneyseg.predict.pretrained import bundled_path
from kidneyseg.predict.roi import MIN_KIDNEY_ML, Located, locate, regions, restrict
from kidneyseg.preprocess import invert_probabilities, preprocess
from test_predict import TINY_3D, save_tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "tiny3d.pt", TINY_3D, seed=0)


@pytest.fixture(scope="module")
def phantom() -> Volume:
    return generate_case(1, size="small").ct  # the bundled model finds two kidneys, no more


def _meta(shape=(40, 40, 30), spacing=(3.0, 3.0, 3.0)):
    ct = Volume(np.zeros(shape, np.int16) + 40, np.diag([*spacing, 1.0]))
    return preprocess(ct, PreprocessConfig(spacing=spacing, crop_foreground=False)).meta


def test_each_kidney_component_gets_a_box_in_world_coordinates():
    meta = _meta()
    labels = np.zeros(meta.shape, np.uint8)
    labels[5:12, 10:20, 8:20] = 1  # right kidney, 7 x 10 x 12 voxels of 27 uL
    labels[25:33, 10:20, 8:20] = 2  # a "tumor" counts as kidney + masses
    labels[20, 30, 5] = 1  # speckle below MIN_KIDNEY_ML
    located = locate(labels, meta)
    assert located.fallback is None
    assert len(located.boxes_mm) == 2
    low, high = np.array(located.boxes_mm[0][0]), np.array(located.boxes_mm[0][1])
    world = np.asarray(meta.affine)
    assert np.allclose(low, world[:3, :3] @ [4.5, 9.5, 7.5] + world[:3, 3])
    assert np.allclose(high - low, [21, 30, 36])
    assert located.volumes_ml[0] == pytest.approx(7 * 10 * 12 * 0.027)


def test_no_kidney_falls_back_and_a_kidney_at_the_scan_edge_is_flagged():
    meta = _meta()
    labels = np.zeros(meta.shape, np.uint8)
    assert "no kidney found" in locate(labels, meta).fallback
    labels[5:12, 10:20, 0:12] = 1
    labels[25:33, 10:20, 8:20] = 1
    located = locate(labels, meta)
    assert located.fallback is None and located.at_edge == (True, False)
    assert [box["at_edge"] for box in located.record()["boxes_mm"]] == [True, False]


def test_regions_grow_by_the_margin_merge_and_hold_a_window_of_context():
    meta = _meta(shape=(80, 60, 50), spacing=(2.0, 2.0, 2.0))
    world = np.asarray(meta.affine)

    def box(lo, hi):  # voxel index range -> world box (voxel edges)
        return tuple((world[:3, :3] @ np.add(p, -0.5) + world[:3, 3]).tolist() for p in (lo, hi))

    boxes = (box((5, 20, 20), (15, 30, 30)), box((60, 20, 20), (70, 30, 30)))
    far = Located(boxes, (1.0, 1.0), (False, True), None)
    apart = regions(far, meta, window=(16, 16, 16), margin_mm=4.0, overlaps=(0.5,) * 3)
    assert [r.core for r in apart] == [((3, 17), (18, 32), (18, 32)), ((58, 72), (18, 32), (18, 32))]
    assert [r.whole_volume for r in apart] == [False, True]  # the second box is at the scan edge
    assert all(hi - lo >= 16 for r in apart for lo, hi in r.context)
    assert all(lo >= 0 and hi <= n for r in apart for (lo, hi), n in zip(r.context, meta.shape, strict=True))
    near = regions(far, meta, window=(16, 16, 16), margin_mm=50.0, overlaps=(0.5,) * 3)
    assert len(near) == 1 and near[0].core == ((0, 80), (0, 55), (0, 50)) and near[0].whole_volume
    # the context holds the core on the whole image's window grid: 16 + 5 steps of 8 along y
    assert near[0].context == ((0, 80), (0, 56), (0, 50))


def test_stage_2_runs_windows_of_the_whole_volume_grid(rng):
    """Each region's context is placed so that its windows are windows the whole-volume prediction
    runs on the same voxels (window-normalising networks label a window by its content), holds
    its core and at least a window, and stays inside the image, on every axis length, window,
    overlap and core position."""
    from kidneyseg.predict.roi import _on_grid
    from kidneyseg.predict.sliding_window import window_starts

    for _ in range(3000):
        window = int(rng.integers(1, 40))
        size = int(rng.integers(1, 200))
        overlap = float(rng.choice([0.0, 0.25, 0.5, 0.6, 0.8, 0.9]))
        lo = int(rng.integers(0, size))
        hi = int(rng.integers(lo + 1, size + 1))
        start, stop = _on_grid(lo, hi, window, size, overlap)
        assert 0 <= start <= lo and hi <= stop <= size
        assert stop - start >= min(window, size)
        if size > window:
            whole = set(window_starts(size, window, overlap))
            assert {start + s for s in window_starts(stop - start, window, overlap)} <= whole


def test_a_restricted_record_puts_a_part_of_the_scores_in_place(rng):
    ct = Volume(rng.integers(-100, 200, (30, 26, 20)).astype(np.int16), np.diag([1.5, 1.5, 2.5, 1.0]))
    meta = preprocess(ct, PreprocessConfig(spacing=(2.0, 2.0, 2.0), crop_foreground=False)).meta
    scores = np.zeros((3, *meta.shape), np.float32)
    scores[0] = 1.0
    box = ((4, 14), (3, 11), (5, 12))
    inside = tuple(slice(lo, hi) for lo, hi in box)
    scores[(slice(1, 3), *inside)] = rng.random((2, 10, 8, 7)) * 3
    whole = invert_probabilities(scores, meta)
    part = invert_probabilities(scores[(slice(None), *inside)], restrict(meta, box))
    assert part.shape == whole.shape and part.any()
    core = tuple(
        slice(int(lo * 2 / s) + 2, int(hi * 2 / s) - 2)
        for (lo, hi), s in zip(box, (1.5, 1.5, 2.5), strict=True)
    )
    assert np.array_equal(part[core], whole[core])
    assert not part[: int(4 * 2 / 1.5) - 1].any()


def test_body_is_the_whole_volume_and_unknown_modes_are_refused(ckpt, phantom):
    assert Predictor([ckpt], PredictSettings(roi="body", backend="torch")).predict(phantom).roi is None
    with pytest.raises(KidneysegError, match="roi must be one of"):
        Predictor([ckpt], PredictSettings(roi="liver"))
    for margin in (-1.0, float("nan"), float("inf")):
        with pytest.raises(KidneysegError, match="finite number of mm, at least 0"):
            Predictor([ckpt], PredictSettings(roi_margin_mm=margin))


def test_kidneys_mode_runs_the_network_only_in_the_boxes_and_records_them(ckpt, phantom):
    settings = PredictSettings(roi="body", backend="torch", probabilities=True)
    body = Predictor([ckpt], settings).predict(phantom)
    predictor = Predictor([ckpt], replace(settings, roi="kidneys"))
    assert predictor.roi == "kidneys" and predictor.locator is not None  # None: default when bundled
    kidneys = predictor.predict(phantom)
    record = kidneys.roi
    assert record["fallback"] is None and len(record["boxes_mm"]) >= 2
    assert 0 < kidneys.windows["total"] < body.windows["total"]
    assert record["locator_windows"]["total"] > 0
    assert {"locate", "windows", "inverse"} <= set(kidneys.seconds)
    assert kidneys.labels.shape == phantom.shape
    assert kidneys.probabilities.shape == body.probabilities.shape
    outside = np.ones(kidneys.probabilities.shape[1:], bool)
    for region in record["regions"]:
        outside[tuple(slice(lo, hi) for lo, hi in region["core"])] = False
    assert np.all(kidneys.probabilities[0][outside] == 1.0)


def test_the_bundled_model_reuses_its_own_scores_as_stage_one(phantom):
    settings = PredictSettings(backend="torch")
    predictor = Predictor([bundled_path()], settings)
    assert predictor.roi == "kidneys" and predictor.locator is None
    kidneys = predictor.predict(phantom)
    body = Predictor([bundled_path()], replace(settings, roi="body")).predict(phantom)
    assert kidneys.roi["locator"] == "this model"
    assert kidneys.windows == body.windows == kidneys.roi["locator_windows"]
    assert np.array_equal(kidneys.labels.array, body.labels.array)


def _without_one_kidney(case, side: int) -> Volume:
    """The phantom with the kidney on one side of the array painted over as fat."""
    labels, ct = case.labels.array, case.ct.array.copy()
    middle = ct.shape[2] // 2
    half = (slice(None), slice(None), slice(0, middle) if side == 0 else slice(middle, None))
    ct[half][labels[half] > 0] = -100
    return Volume(ct, case.ct.affine)


def test_long_tail_single_horseshoe_edge_and_no_kidney(ckpt):
    """Each case is handled and recorded: boxes and regions, or the fallback and why."""
    case = generate_case(1, size="small")
    predictor = Predictor([ckpt], PredictSettings(roi="kidneys", backend="torch"))

    single = predictor.predict(_without_one_kidney(case, 0)).roi
    assert single["fallback"] is None and single["regions"]

    ct = case.ct.array.copy()  # horseshoe: a bridge of kidney tissue joining the lower poles
    kidney = case.labels.array > 0
    rows = np.nonzero(kidney.any(axis=(1, 2)))[0]
    low_pole = rows[len(rows) // 4]
    cols = np.nonzero(kidney[low_pole].any(axis=0))[0]
    depth = np.nonzero(kidney[low_pole].any(axis=1))[0]
    ct[low_pole - 2 : low_pole + 2, depth.min() : depth.min() + 8, cols.min() : cols.max()] = 160
    horseshoe = predictor.predict(Volume(ct, case.ct.affine)).roi
    assert horseshoe["fallback"] is None and horseshoe["regions"]

    cut = rows[len(rows) // 2]  # the scan ends inside the kidneys
    edge = Volume(np.ascontiguousarray(case.ct.array[cut:]), case.ct.affine @ _shift(0, cut))
    probabilities = replace(predictor.settings, probabilities=True)
    kidneys = Predictor([ckpt], probabilities).predict(edge)
    body = Predictor([ckpt], replace(probabilities, roi="body")).predict(edge)
    record = kidneys.roi
    assert record["fallback"] is None and any(box["at_edge"] for box in record["boxes_mm"])
    at_edge = [r for r in record["regions"] if r["whole_volume"]]
    assert at_edge and kidneys.windows["total"] <= body.windows["total"]
    # The whole volume's logits there; their softmax over the region's slice rounds the last bit
    # of a few values unlike the softmax over the whole array (other windows would differ by far
    # more). So the same probabilities to float32 rounding, and the same labels.
    for region in at_edge:
        core = (slice(None), *(slice(lo, hi) for lo, hi in region["core"]))
        np.testing.assert_allclose(kidneys.probabilities[core], body.probabilities[core], rtol=0, atol=1e-6)
        assert np.array_equal(kidneys.probabilities[core].argmax(0), body.probabilities[core].argmax(0))

    none = _without_one_kidney(case, 1)
    none = _without_one_kidney(replace(case, ct=none), 0)
    # Without kidneys the locator may still box what it takes for kidney (today it boxes the fat
    # painted where they were); the record lists exactly what it found, or why it found nothing.
    _assert_records_what_the_locator_found(predictor.predict(none).roi, none)


def test_the_bundled_model_labels_no_kidney_in_an_empty_renal_fossa():
    """With its kidneys painted over as fat the bundled model still labels the fossae kidney, by
    their surroundings; the anatomy check leaves that fat out (and a mass it labels elsewhere,
    with no kidney to lie on)."""
    case = generate_case(1, size="small")
    none = _without_one_kidney(replace(case, ct=_without_one_kidney(case, 1)), 0)
    settings = PredictSettings(roi="body", backend="torch")
    unchecked = Predictor([bundled_path()], replace(settings, anatomy_check=False)).predict(none)
    voxel_ml = np.prod(none.spacing) / 1000
    kidney_ml = (unchecked.labels.array == 1).sum() * voxel_ml
    assert kidney_ml > 50
    checked = Predictor([bundled_path()], settings).predict(none)
    assert not checked.labels.array.any()
    fat = [e for e in checked.ruled_out if "fat or air, not kidney" in e["reason"]]
    assert sum(e["volume_ml"] for e in fat) >= kidney_ml  # every kidney voxel in a fat component
    others = [e for e in checked.ruled_out if e not in fat]
    assert all(e["reason"].startswith("no kidney") for e in others)


def _assert_records_what_the_locator_found(record: dict, ct: Volume) -> None:
    """`record` has a box with its mL for each component of the bundled locator's kidney + masses
    of at least MIN_KIDNEY_ML (counted here from its whole-volume labels), and a region for them;
    or, when there is none, the fallback and why."""
    settings = PredictSettings(roi="body", backend="torch", postprocess=False, probabilities=True)
    locator = Predictor([bundled_path()], settings).predict(ct)
    components, _ = ndimage.label(locator.probabilities.argmax(0) > 0, np.ones((3, 3, 3), bool))
    voxel_ml = abs(np.linalg.det(locator.probabilities_affine[:3, :3])) / 1000
    volumes = np.bincount(components.ravel())[1:] * voxel_ml
    kidneys = np.sort(volumes[volumes >= MIN_KIDNEY_ML])
    np.testing.assert_allclose(sorted(box["ml"] for box in record["boxes_mm"]), kidneys, atol=0.051)
    if len(kidneys):
        assert record["fallback"] is None and record["regions"]
    else:
        assert "no kidney found by stage 1" in record["fallback"] and "regions" not in record


def _shift(axis: int, voxels: int) -> np.ndarray:
    out = np.eye(4)
    out[axis, 3] = voxels
    return out


def test_run_record_has_the_roi_and_the_cli_option(ckpt, phantom, tmp_path):
    from typer.testing import CliRunner

    from kidneyseg.cli import app

    ct = write_volume(tmp_path / "ct.nii.gz", phantom)
    out = tmp_path / "out"
    args = ["predict", "-i", str(ct), "-o", str(out), "-m", str(ckpt), "--backend", "torch", "-q"]
    result = CliRunner().invoke(app, [*args, "--roi", "kidneys", "--roi-margin", "20"])
    assert result.exit_code == 0, result.output
    case = json.loads((out / "predict_run.json").read_text())["cases"][0]
    assert case["roi"]["margin_mm"] == 20.0 and case["roi"]["boxes_mm"]
    assert "locate" in case["seconds"]
    result = CliRunner().invoke(app, [*args, "--roi", "liver"])
    assert result.exit_code != 0 and "--roi must be one of" in result.output


def test_chest_ct_without_kidneys_is_handled_and_recorded(ckpt, shared_data):
    """Nothing is labelled on a CT without kidneys; the record lists what the locator took for
    kidney and each component of stage 2 that the anatomy check ruled out, with its reason."""
    from kidneyseg.io.volume import read_volume
    from kidneyseg.predict.anatomy import MAX_CHECKED

    ct = read_volume(shared_data / "real-ct" / "chest_ct_1.5mm.nii.gz")
    settings = PredictSettings(roi="kidneys", backend="torch")
    prediction = Predictor([ckpt], settings).predict(ct)
    assert prediction.labels.shape == ct.shape and not prediction.labels.array.any()
    _assert_records_what_the_locator_found(prediction.roi, ct)
    # The untrained network labels much of its regions; every component large enough to be a
    # kidney is checked (the largest MAX_CHECKED) and, since nothing is left, ruled out.
    unchecked = Predictor([ckpt], replace(settings, postprocess=False)).predict(ct).labels.array
    components, _ = ndimage.label(unchecked > 0, np.ones((3, 3, 3), bool))
    voxels = np.bincount(components.ravel())[1:]
    checked = sorted(voxels[voxels * np.prod(ct.spacing) / 1000 >= MIN_KIDNEY_ML])[::-1][:MAX_CHECKED]
    assert checked and [r["voxels"] for r in prediction.ruled_out] == checked
    assert all(r["reason"] for r in prediction.ruled_out)
