"""Real KiTS19 reference masks (odd IPL affines, 0.5-5 mm slices) through preprocess + inverse.

The masks are preprocessed as labels of a CT-like volume built around them (air outside an
elliptic body that contains the kidneys, so the body crop is exercised), brought back with
`invert_labels`, written with the CT's geometry and read back: shape and affine must be
exactly the original's, and the kidney Dice against the original at least 0.97.
"""

from __future__ import annotations

import numpy as np
import pytest

from kidneyseg.config import PreprocessConfig
from kidneyseg.io.volume import Volume, read_volume, write_labels
from kidneyseg.labels import KITS19
from kidneyseg.preprocess import invert_labels, invert_probabilities, preprocess

FAST_CASES = ("case_00004", "case_00011", "case_00002")  # 4 mm, 5 mm and 1 mm slices
SLOW_CASES = tuple(f"case_{i:05d}" for i in range(0, 210, 7))


def _ct_around(labels: Volume) -> Volume:
    """A CT-like volume on the mask's grid: -1000 HU air, a 40 HU elliptic body (in the two
    in-plane axes) that contains the labelled organs, 150 HU kidney, 90 HU tumor."""
    array = labels.array
    slice_axis = int(np.argmax(labels.spacing))
    plane = [a for a in range(3) if a != slice_axis]
    grids = np.ogrid[tuple(slice(0, n) for n in array.shape)]
    r2 = sum(((grids[a] - array.shape[a] / 2) / (0.47 * array.shape[a])) ** 2 for a in plane)
    ct = np.where(r2 < 1, np.int16(40), np.int16(-1000))
    ct = np.where(array == 1, np.int16(150), np.where(array == 2, np.int16(90), ct))
    return Volume(ct.astype(np.int16), labels.affine, labels.source)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _round_trip(path, tmp_path, write: bool):
    labels = read_volume(path)
    pre = preprocess(_ct_around(labels), PreprocessConfig(), labels, KITS19)
    assert pre.labels.shape == pre.image.shape
    back = invert_labels(pre.labels, pre.meta)
    assert back.shape == labels.shape
    if write:  # written with the CT's geometry and read back: exactly the original grid
        written = read_volume(write_labels(tmp_path / "back.nii.gz", back, labels))
        assert written.shape == labels.shape
        np.testing.assert_array_equal(written.affine, labels.affine)
        np.testing.assert_array_equal(written.array, back)
    return np.asarray(labels.array), back, pre


@pytest.mark.parametrize("case", FAST_CASES)
def test_kits19_mask_round_trip(shared_data, tmp_path, case):
    path = shared_data / "kits19" / case / "segmentation.nii.gz"
    original, back, pre = _round_trip(path, tmp_path, write=case == FAST_CASES[0])
    assert _dice(original == 1, back == 1) >= 0.97
    assert _dice(original > 0, back > 0) >= 0.97
    # The body crop removed air but no labelled voxel.
    assert np.prod(pre.meta.shape) < np.prod(pre.meta.resampled_shape)
    assert int((back > 0).sum()) == pytest.approx(int((original > 0).sum()), rel=0.05)


def test_kits19_probabilities_round_trip(shared_data):
    """Scores interpolated back (the predictor's path) recover the kidneys as well."""
    labels = read_volume(shared_data / "kits19" / "case_00004" / "segmentation.nii.gz")
    pre = preprocess(_ct_around(labels), PreprocessConfig(), labels, KITS19)
    scores = np.stack([pre.labels == c for c in range(3)]).astype(np.float32)
    back = invert_probabilities(scores, pre.meta, chunk_slices=8)
    assert back.shape == labels.shape
    assert _dice(np.asarray(labels.array) == 1, back == 1) >= 0.97


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW_CASES)
def test_kits19_mask_round_trip_many(shared_data, tmp_path, case):
    original, back, _ = _round_trip(shared_data / "kits19" / case / "segmentation.nii.gz", tmp_path, True)
    assert _dice(original == 1, back == 1) >= 0.97
