"""Prediction: sliding windows, geometry back to the CT, post-processing, DICOM SEG, input checks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from kidneyseg.checkpoint import build_model_from_config, save_checkpoint
from kidneyseg.config import InferenceConfig, ModelConfig, PreprocessConfig, RunConfig
from kidneyseg.errors import KidneysegError
from kidneyseg.io.formats import ImageHeader, read_header
from kidneyseg.io.volume import Volume, read_volume
from kidneyseg.labels import KITS23
from kidneyseg.predict.api import segment
from kidneyseg.predict.checks import check_air_level, check_hounsfield, check_memory, estimate_memory
from kidneyseg.predict.postprocess import absorb_lesion_islands, keep_largest_components
from kidneyseg.predict.predictor import CPU_3D_BATCH, Predictor, PredictSettings
from kidneyseg.predict.sliding_window import WindowPredictor, sliding_window_scores

TINY_3D = RunConfig(
    labels="kits23",
    preprocess=PreprocessConfig(spacing=(6.0, 6.0, 6.0)),
    model=ModelConfig("sca_unet_3d", {"channels": [4, 8, 16, 16]}),
    inference=InferenceConfig(roi_size=(32, 32, 16), overlap=0.5, sw_batch_size=4),
)
TINY_2D = RunConfig(
    labels="kits19",
    preprocess=PreprocessConfig(spacing=(6.0, 6.0, 6.0)),
    model=ModelConfig("attention_unet_2d", {"channels": [4, 8, 16]}),
    inference=InferenceConfig(roi_size=(32, 32), overlap=0.5, sw_batch_size=8),
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def save_tiny(path: Path, config: RunConfig, seed: int) -> Path:
    torch.manual_seed(seed)
    net = build_model_from_config(config)
    return save_checkpoint(path, model_state=net.state_dict(), config=config)


@pytest.fixture(scope="module")
def ckpt3d(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "tiny3d.pt", TINY_3D, seed=0)


@pytest.fixture(scope="module")
def ckpt2d(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "tiny2d.pt", TINY_2D, seed=1)


def small_net(out_channels: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1),
        torch.nn.InstanceNorm3d(4),
        torch.nn.ReLU(),
        torch.nn.Conv3d(4, out_channels, 1),
    ).eval()


def body_image(rng: np.random.Generator, shape=(40, 36, 30)) -> np.ndarray:
    """A [0, 1] image: zeros (air) around a random block in one corner."""
    image = np.zeros(shape, np.float32)
    image[:18, :20, :14] = rng.random((18, 20, 14), dtype=np.float32)
    return image


# --- sliding windows ---------------------------------------------------------------------------


def test_constant_windows_are_reused_and_change_nothing(rng):
    from monai.inferers import sliding_window_inference

    net = small_net()
    image = body_image(rng)
    predictor = WindowPredictor([net], spatial_dims=3)
    ours = sliding_window_scores(image, predictor, InferenceConfig((16, 16, 8), overlap=0.5, sw_batch_size=3))
    with torch.inference_mode():
        reference = sliding_window_inference(
            torch.from_numpy(image)[None, None], (16, 16, 8), 3, net, overlap=0.5, mode="gaussian"
        )[0]
    assert predictor.stats.reused > predictor.stats.computed / 2
    assert predictor.stats.windows == predictor.stats.reused + predictor.stats.computed
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "roi", "overlaps", "batch", "blend"),
    [
        ((40, 36, 30), (16, 16, 8), (0.5,) * 3, 1, "gaussian"),
        ((40, 36, 30), (16, 16, 8), (0.8,) * 3, 3, "gaussian"),
        ((23, 9, 30), (16, 16, 8), (0.25, 0.5, 0.8), 2, "constant"),  # padded along y, odd sizes
        ((40, 36, 5), (20, 24, 1), (0.5, 0.5, 0.0), 4, "gaussian"),  # a 2D network's slices
        ((16, 16, 8), (16, 16, 8), (0.8,) * 3, 1, "gaussian"),  # one window
    ],
)
def test_blended_windows_are_monais_bit_for_bit(rng, shape, roi, overlaps, batch, blend):
    """`blend_windows` places, weights and sums the windows as MONAI's `sliding_window_inference`,
    which it replaces so that predicting does not import MONAI."""
    from monai.inferers import sliding_window_inference

    from kidneyseg.predict.sliding_window import blend_windows

    image = torch.from_numpy(rng.random(shape, dtype=np.float32))[None, None]
    calls = {"ours": [], "monai": []}

    def scores(who):
        def run(windows, where):
            calls[who].append([[(s.start, s.stop) for s in spans] for spans in where])
            return torch.cat([windows * 2 - 0.3, windows.square(), -windows], dim=1)

        return run

    with torch.inference_mode():
        ours = blend_windows(image, roi, overlaps, batch, scores("ours"), blend)
        monai = sliding_window_inference(
            image, roi, batch, scores("monai"), overlap=overlaps, mode=blend, with_coord=True
        )
    assert calls["ours"] == calls["monai"]
    assert ours.shape == (1, 3, *shape)
    assert torch.equal(ours, monai)


@pytest.mark.parametrize(
    ("roi", "overlap", "dims"),
    [((16, 16, 8), 0.5, 3), ((16, 16, 8), 0.8, 3), ((64, 8, 8), 0.25, 3), ((20, 24), 0.5, 2)],
)
def test_progress_bar_counts_the_windows_monai_places(rng, roi, overlap, dims):
    from kidneyseg.predict.sliding_window import count_windows, window_roi

    net = small_net() if dims == 3 else torch.nn.Conv2d(1, 3, 3, padding=1).eval()
    image = body_image(rng)
    predictor = WindowPredictor([net], spatial_dims=dims, reuse_constant=False)
    sliding_window_scores(image, predictor, InferenceConfig(roi, overlap=overlap, sw_batch_size=4))
    overlaps = (overlap, overlap, 0.0) if dims == 2 else (overlap,) * 3
    assert count_windows(image.shape, window_roi(roi, dims), overlaps) == predictor.stats.windows


@pytest.mark.parametrize(
    ("roi", "dims", "boxes"),
    [
        ((16, 16, 8), 3, [((2, 9), (20, 30), (3, 7))]),
        ((16, 16, 8), 3, [((0, 5), (0, 4), (0, 30)), ((33, 40), (30, 36), (25, 30))]),
        ((16, 48, 8), 3, [((10, 20), (5, 10), (12, 20))]),  # the window is wider than the image: padded
        ((20, 24), 2, [((4, 12), (6, 18), (2, 5))]),
    ],
)
def test_windows_over_boxes_give_the_whole_image_scores_there(rng, roi, dims, boxes):
    torch.manual_seed(0)
    net = small_net() if dims == 3 else torch.nn.Conv2d(1, 3, 3, padding=1).eval()
    image = rng.random((40, 36, 30), dtype=np.float32)
    # One window per pass (as 3D runs on CPU): a pass of fewer windows rounds differently (1 ulp).
    inference = InferenceConfig(roi, overlap=0.5, sw_batch_size=1)
    whole = WindowPredictor([net], spatial_dims=dims, classes=3)
    expected = sliding_window_scores(image, whole, inference)
    part = WindowPredictor([net], spatial_dims=dims, classes=3)
    got = sliding_window_scores(image, part, inference, within=boxes)
    assert 0 < part.stats.windows < whole.stats.windows
    for box in boxes:
        inside = (slice(None), *(slice(lo, hi) for lo, hi in box))
        assert torch.equal(got[inside], expected[inside])
    with pytest.raises(ValueError, match="number of classes"):
        sliding_window_scores(image, WindowPredictor([net], spatial_dims=dims), inference, within=boxes)


def test_2d_network_runs_slice_by_slice(rng):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.Tanh()).eval()
    image = rng.random((20, 24, 7), dtype=np.float32)
    inference = InferenceConfig((20, 24), sw_batch_size=3)
    scores = sliding_window_scores(image, WindowPredictor([net], spatial_dims=2), inference)
    with torch.inference_mode():
        slices = torch.from_numpy(image).permute(2, 0, 1)[:, None]  # z, 1, x, y
        expected = net(slices).permute(1, 2, 3, 0)  # C, x, y, z
    assert scores.shape == (3, 20, 24, 7)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-6)


def test_mirroring_averages_flipped_logits(rng):
    net = small_net()
    x = torch.from_numpy(rng.random((1, 1, 12, 10, 8), dtype=np.float32))
    got = WindowPredictor([net], mirror_axes=(0, 2))(x)
    with torch.inference_mode():
        expected = (
            sum(torch.flip(net(torch.flip(x, d)), d) if d else net(x) for d in [(), (2,), (4,), (2, 4)]) / 4
        )
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_ensemble_averages_probabilities(rng):
    a, b = small_net(seed=0), small_net(seed=1)
    x = torch.from_numpy(rng.random((2, 1, 8, 8, 8), dtype=np.float32))
    got = WindowPredictor([a, b])(x)
    with torch.inference_mode():
        expected = (torch.softmax(a(x), 1) + torch.softmax(b(x), 1)) / 2
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.sum(1), torch.ones(2, 8, 8, 8))


def test_the_device_is_a_name_or_a_torch_device(ckpt3d, monkeypatch):
    """A `torch.device` is taken as before (found by a review: "'torch.device' object has no
    attribute 'startswith'" once the device was resolved by name); CUDA without CUDA is one line."""
    assert Predictor([ckpt3d], device=torch.device("cpu")).device == "cpu"
    assert Predictor([ckpt3d], device="auto").device == ("cuda:0" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(KidneysegError, match="device 'cuda' asked for, but torch sees no CUDA device"):
        Predictor([ckpt3d], device="cuda")


def test_an_ensemble_of_one_network_twice_votes_as_that_network(ckpt3d):
    """An ensemble's scores are probabilities already: its votes and confidence are the single
    network's (softmax taken once, not twice; windows blend probabilities, not logits, so not
    to the last digit)."""
    from kidneyseg.data.phantom import generate_case

    ct = generate_case(3, size="tiny").ct
    one = Predictor([ckpt3d]).predict(ct)
    two = Predictor([ckpt3d, ckpt3d]).predict(ct)
    assert len(one.votes.top) > 100
    assert abs(len(one.votes.top) - len(two.votes.top)) <= len(one.votes.top) // 1000  # float near-ties
    assert two.votes.top.mean() == pytest.approx(one.votes.top.mean(), abs=0.01)
    assert two.confidence == pytest.approx(one.confidence, abs=0.01)


def test_bfloat16_stays_close_to_float32(rng):
    net = small_net()
    x = torch.from_numpy(rng.random((1, 1, 16, 16, 8), dtype=np.float32))
    full = WindowPredictor([net])(x)
    half = WindowPredictor([net], precision="bfloat16")(x)
    assert half.dtype == torch.float32
    assert (full.argmax(1) == half.argmax(1)).float().mean() > 0.9
    assert (full - half).abs().max() < 0.1


# --- geometry back to the CT -------------------------------------------------------------------


def _reorient(volume: Volume, codes: str) -> Volume:
    current = nib.orientations.io_orientation(volume.affine)
    transform = nib.orientations.ornt_transform(current, nib.orientations.axcodes2ornt(tuple(codes)))
    array = nib.orientations.apply_orientation(volume.array, transform)
    affine = volume.affine @ nib.orientations.inv_ornt_aff(transform, volume.shape)
    return Volume(np.ascontiguousarray(array), affine, volume.source)


@pytest.mark.parametrize("orientation", ["LPS", "IPL", "RAS"])
def test_labels_have_the_ct_grid_whatever_the_orientation(ckpt3d, orientation):
    from kidneyseg.data.phantom import generate_case

    ct = generate_case(3, size="tiny", orientation=orientation).ct
    prediction = Predictor([ckpt3d]).predict(ct)
    assert prediction.labels.shape == ct.shape
    np.testing.assert_array_equal(prediction.labels.affine, ct.affine)
    assert prediction.labels.array.dtype == np.uint8
    assert set(np.unique(prediction.labels.array)) <= {0, 1, 2, 3}
    assert prediction.windows["computed"] > 0


def test_prediction_follows_the_anatomy_not_the_array_order(ckpt3d):
    """The same CT stored in two axis orders gets the same labels at the same world positions."""
    from kidneyseg.data.phantom import generate_case

    ct = generate_case(5, size="tiny", orientation="LPS").ct
    other = _reorient(ct, "IPR")
    # The whole volume: with --roi kidneys the locator's boxes, too, may end one voxel apart.
    predictor = Predictor([ckpt3d], PredictSettings(roi="body"))
    labels = predictor.predict(ct).labels
    labels_other = _reorient(predictor.predict(other).labels, "LPS")
    assert len(np.unique(labels.array)) > 1
    # The network sees the same canonical grid, but the body crop may end one voxel apart (a thin
    # table edge sampled from the other side), which moves the windows: labels agree at the same
    # world positions but for near-ties of this briefly trained network.
    assert (labels_other.array != labels.array).mean() < 0.005
    fg, fg_other = labels.array > 0, labels_other.array > 0
    assert 2 * (fg & fg_other).sum() / (fg.sum() + fg_other.sum()) > 0.99


def test_2d_checkpoint_predicts_on_the_ct_grid(ckpt2d):
    from kidneyseg.data.phantom import generate_case

    ct = generate_case(2, size="tiny", orientation="PIR").ct
    predictor = Predictor([ckpt2d], PredictSettings(mirror_axes=(0, 1, 2)))
    assert predictor.inference.mirror_axes == (0, 1)
    prediction = predictor.predict(ct)
    assert prediction.labels.shape == ct.shape
    np.testing.assert_array_equal(prediction.labels.affine, ct.affine)
    assert set(np.unique(prediction.labels.array)) <= {0, 1, 2}


def test_probabilities_are_on_the_network_grid(ckpt3d):
    from kidneyseg.data.phantom import generate_case

    ct = generate_case(4, size="tiny").ct
    prediction = Predictor([ckpt3d], PredictSettings(probabilities=True)).predict(ct)
    probs = prediction.probabilities
    assert probs.shape[0] == 4
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    spacing = np.linalg.norm(prediction.probabilities_affine[:3, :3], axis=0)
    np.testing.assert_allclose(spacing, TINY_3D.preprocess.spacing)


def test_ensemble_of_checkpoints_must_agree_on_preprocessing(ckpt3d, tmp_path):
    other = RunConfig(
        preprocess=PreprocessConfig(spacing=(5.0, 5.0, 5.0)), model=TINY_3D.model, inference=TINY_3D.inference
    )
    path = save_tiny(tmp_path / "other.pt", other, seed=3)
    with pytest.raises(KidneysegError, match="preprocessing"):
        Predictor([ckpt3d, path])


def test_real_ct_files_keep_their_geometry(ckpt3d, shared_data):
    predictor = Predictor([ckpt3d])
    for path in (shared_data / "real-ct" / "chest_ct_1.5mm.nii.gz", shared_data / "real-ct" / "dicom_series"):
        ct = read_volume(path)
        labels = predictor.predict(ct).labels
        assert labels.shape == ct.shape
        np.testing.assert_array_equal(labels.affine, ct.affine)


# --- post-processing ---------------------------------------------------------------------------


def test_postprocessing_keeps_the_two_largest_kidney_components():
    labels = np.zeros((40, 30, 20), np.uint8)
    labels[2:12, 2:12, 2:12] = 1  # kidney A
    labels[5:8, 5:8, 12:15] = 2  # tumor touching kidney A: kept
    labels[25:33, 15:25, 5:15] = 1  # kidney B
    labels[30:33, 2:5, 2:5] = 1  # island on the spleen: removed
    labels[38:40, 28:30, 18:20] = 3  # stray cyst: removed
    out = keep_largest_components(labels)
    expected = labels.copy()
    expected[30:33, 2:5, 2:5] = 0
    expected[38:40, 28:30, 18:20] = 0
    np.testing.assert_array_equal(out, expected)
    assert labels[30, 2, 2] == 1  # the input is untouched
    np.testing.assert_array_equal(keep_largest_components(np.zeros((4, 4, 4), np.uint8)), 0)


def test_small_lesion_islands_take_the_class_around_them():
    labels = np.zeros((24, 20, 20), np.uint8)
    labels[2:18, 2:18, 2:18] = 1  # kidney
    labels[5, 5, 5] = 3  # a one-voxel cyst in the kidney: kidney
    labels[8:13, 8:13, 8:13] = 3  # a 125-voxel cyst: kept
    labels[10, 10, 10] = 2  # a tumor voxel inside it: cyst
    labels[21, 10, 10], labels[21, 11:14, 10] = 2, 3  # small tumor and cyst touching only each other
    labels[21:23, 2:4, 2:4] = 2  # a lone 8-voxel tumor (no foreground around it): kidney
    out = labels.copy()
    absorbed = absorb_lesion_islands(out, voxel_ml=0.5, min_ml=5.0, lesions=(2, 3), kidney=1)
    expected = labels.copy()
    expected[5, 5, 5] = expected[21, 10, 10] = 1
    expected[10, 10, 10] = 3
    expected[21:23, 2:4, 2:4] = expected[21, 11:14, 10] = 1  # nothing else touches them: kidney
    np.testing.assert_array_equal(out, expected)
    assert absorbed == [
        {"class": 2, "to": 1, "islands": 2, "volume_ml": 4.5},
        {"class": 2, "to": 3, "islands": 1, "volume_ml": 0.5},
        {"class": 3, "to": 1, "islands": 2, "volume_ml": 2.0},
    ]
    unchanged = labels.copy()
    assert absorb_lesion_islands(unchanged, voxel_ml=0.5, min_ml=0.0, lesions=(2, 3), kidney=1) == []
    np.testing.assert_array_equal(unchanged, labels)


def test_prediction_absorbs_the_lesion_islands_its_model_or_settings_say(ckpt3d, tmp_path):
    from kidneyseg.data.phantom import generate_case

    ct = generate_case(4, size="tiny").ct
    every = Predictor([ckpt3d], PredictSettings(roi="body", absorb_islands_ml=0.0)).predict(ct)
    lesions = np.isin(every.labels.array, (2, 3))
    assert lesions.any() and every.absorbed == ()
    huge = InferenceConfig(roi_size=(32, 32, 16), overlap=0.5, absorb_islands_ml=1e9)
    chosen = save_tiny(tmp_path / "chosen.pt", replace(TINY_3D, inference=huge), seed=0)
    prediction = Predictor([chosen], PredictSettings(roi="body")).predict(ct)  # the model's 1e9 mL
    np.testing.assert_array_equal(prediction.labels.array, np.where(lesions, 1, every.labels.array))
    absorbed_ml = sum(a["volume_ml"] for a in prediction.absorbed)
    assert absorbed_ml == pytest.approx(lesions.sum() * np.prod(ct.spacing) / 1000, rel=1e-3)
    overridden = Predictor([chosen], PredictSettings(roi="body", absorb_islands_ml=0.0)).predict(ct)
    np.testing.assert_array_equal(overridden.labels.array, every.labels.array)
    _, report = segment(ct, model=chosen, report=True, roi="body")  # the report says what was absorbed
    assert report["inputs"]["absorbed_islands"] == list(prediction.absorbed)
    assert "absorbed_islands" in [w["code"] for w in report["warnings"]]


def test_exported_weights_keep_the_network_and_history_and_take_inference_changes(tmp_path):
    from kidneyseg.checkpoint import load_checkpoint
    from kidneyseg.predict.pretrained import export_weights

    torch.manual_seed(0)
    net = build_model_from_config(TINY_3D)
    engine = {"epoch": 7, "best_dice": 0.5, "optimizer": {"lr": 0.1}, "data_dir": "/home/someone/data"}
    state = net.state_dict()
    run = save_checkpoint(tmp_path / "best.pt", model_state=state, config=TINY_3D, extra_state=engine)
    shipped = load_checkpoint(export_weights(run, tmp_path / "shipped.pt", absorb_islands_ml=1.5))
    assert shipped.config == replace(TINY_3D, inference=replace(TINY_3D.inference, absorb_islands_ml=1.5))
    assert shipped.extra == {"epoch": 7, "best_dice": 0.5}
    assert all(torch.equal(shipped.model_state[k], v) for k, v in state.items())


def _absorbed_one_by_one(labels: np.ndarray, voxel_ml: float, min_ml: float) -> np.ndarray:
    """Each small island's class from the voxels touching it, one island at a time."""
    from scipy import ndimage

    ball = np.ones((3, 3, 3), bool)
    islands = []
    for value in (2, 3):
        components, count = ndimage.label(labels == value, structure=ball)
        masks = [components == i for i in range(1, count + 1)]
        islands += [mask for mask in masks if mask.sum() * voxel_ml < min_ml]
    small = np.any(islands, axis=0) if islands else np.zeros(labels.shape, bool)
    out = labels.copy()
    for island in islands:
        around = labels[ndimage.binary_dilation(island, ball) & ~small & (labels > 0)]
        out[island] = np.bincount(around).argmax() if around.size else 1
    return out


@pytest.mark.parametrize("seed", range(6))
def test_absorbing_small_lesions_matches_one_island_at_a_time(seed):
    """Random lesion blobs on a random kidney, apart enough that no voxel touches two islands."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    labels = (ndimage.gaussian_filter(rng.random((30, 28, 26)), 2) > 0.5).astype(np.uint8)
    for x, y, z in np.ndindex(6, 6, 6):
        blob = (slice(5 * x, 5 * x + rng.integers(1, 4)), slice(5 * y, 5 * y + rng.integers(1, 4)))
        labels[(*blob, slice(5 * z, 5 * z + rng.integers(1, 4)))] = rng.choice([0, 2, 3])
    expected = _absorbed_one_by_one(labels, 0.2, 2.0)
    out = labels.copy()
    absorb_lesion_islands(out, voxel_ml=0.2, min_ml=2.0, lesions=(2, 3), kidney=1)
    assert (out != labels).any()
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out > 0, labels > 0)


# --- DICOM SEG ---------------------------------------------------------------------------------


def _dicom_copy(source: Path, target: Path, study: str, series: str) -> Path:
    """The real series with study/series UIDs filled in (the shared files are anonymised)."""
    import pydicom

    target.mkdir(parents=True, exist_ok=True)
    for f in sorted(source.iterdir()):
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.save_as(target / f.name)
    return target


@pytest.fixture(scope="module")
def dicom_series(shared_data, tmp_path_factory) -> Path:
    from pydicom.uid import generate_uid

    return _dicom_copy(
        shared_data / "real-ct" / "dicom_series",
        tmp_path_factory.mktemp("dicom") / "ct",
        generate_uid(),
        generate_uid(),
    )


def test_dicom_seg_references_the_source_series_and_reads_back(dicom_series, tmp_path):
    import highdicom as hd
    import pydicom

    from kidneyseg.predict.dicom_seg import write_dicom_seg

    ct = read_volume(dicom_series)
    labels = np.zeros(ct.shape, np.uint8)
    labels[100:200, 150:260, 4:12] = 1
    labels[120:150, 170:190, 6:9] = 2
    labels[300:320, 300:330, 10:11] = 3
    path = write_dicom_seg(tmp_path / "seg.dcm", ct.with_array(labels), KITS23)
    seg = hd.seg.segread(path)
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in ct.dicom_files]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["kidney", "tumor", "cyst"]
    uids = [s.file_meta.MediaStorageSOPInstanceUID for s in sources]
    back = seg.get_pixels_by_source_instance(uids, combine_segments=True)  # (slice, row, column)
    np.testing.assert_array_equal(np.transpose(back, (2, 1, 0)), labels)


def test_dicom_seg_refuses_series_without_uids(shared_data, tmp_path):
    from kidneyseg.predict.dicom_seg import write_dicom_seg

    ct = read_volume(shared_data / "real-ct" / "dicom_series")
    with pytest.raises(KidneysegError, match="StudyInstanceUID"):
        write_dicom_seg(tmp_path / "seg.dcm", ct.with_array(np.zeros(ct.shape, np.uint8)), KITS23)
    assert not list(tmp_path.iterdir())


# --- input checks ------------------------------------------------------------------------------


def test_hounsfield_check(rng):
    ct = rng.integers(-1024, 700, (20, 20, 10)).astype(np.int16)
    assert check_hounsfield(ct) is None
    with pytest.raises(KidneysegError, match="already normalised"):
        check_hounsfield(rng.random((8, 8, 8), dtype=np.float32))
    with pytest.raises(KidneysegError, match="not CT in Hounsfield"):
        check_hounsfield(ct.astype(np.int32) + 1024)
    no_air = check_hounsfield(np.clip(ct, -200, None))
    assert no_air.code == "no_air" and "no air" in no_air.message
    with pytest.raises(KidneysegError, match="goes above 50000"):
        check_hounsfield(ct.astype(np.int64) * 100000)
    with pytest.raises(KidneysegError, match=r"values down to -3e\+38: no CT .* goes below -50000"):
        check_hounsfield(np.where(ct > 0, ct, -3e38).astype(np.float32))
    assert check_hounsfield(np.where(ct > -1000, ct, -32768).astype(np.int16)) is None  # padding
    body = np.full((20, 20, 10), 40, np.int16)
    body[:4], body[-2:] = -1000, 1200  # air around the body, and bone
    assert check_hounsfield(body) is None
    inverted = check_hounsfield(-body)
    assert inverted.code == "inverted_hu" and "as if air and bone were swapped" in inverted.message
    crop = np.full((30, 24, 35), 40, np.int16)  # a tight crop around a kidney: soft tissue, a
    crop[:3, :3] = 1100  # rib (1.3 %), a little bowel gas (0.1 %), no air around the body
    crop[-1, -1, :25] = -800
    assert check_hounsfield(crop) is None  # was: "above +500 HU (1%) than below -500 HU (0%)"


def test_a_ct_whose_air_is_far_below_minus_1000_is_refused_but_padding_is_not(rng):
    from scipy import ndimage

    body = rng.normal(40, 20, (48, 48, 20))
    body[:, :10] = rng.normal(-1000, 20, (48, 10, 20))  # air in front of the patient
    body[:, 18:30] = rng.normal(-850, 30, (48, 12, 20))  # lung, inside the body
    padded = body.copy()
    padded[:, 36:] = -3024  # outside the scanner's field of view: a quarter of the image, below the air
    x, y = np.mgrid[:256, :256] - 128  # a body wider than the field of view: no air, only padding
    cut = rng.normal(40, 20, (256, 256, 32))
    cut[x**2 + y**2 > 128**2] = -3024
    smeared = ndimage.zoom(cut, (0.625, 0.625, 1), order=1)  # resampled: padding blends into the body
    for ct in (body, padded, np.clip(body, -1024, None), smeared):
        check_air_level(ct.astype(np.int16))
    tenths = body * 10
    with pytest.raises(KidneysegError, match=r"the air in the image lies at about -[89]\d{3},"):
        check_air_level(tenths.astype(np.int32))
    with pytest.raises(KidneysegError, match=r"the air in the image lies at about -[89]\d{3},"):
        check_air_level(np.clip(tenths, -10240, None))  # half its air one value, left out as padding
    check_air_level(np.clip(body, -200, None))  # no air at all: nothing to decide


def test_memory_estimate_grows_with_the_case_and_refuses_too_large(tmp_path):
    cfg = PreprocessConfig()
    kits = estimate_memory(ImageHeader((512, 512, 200), (0.8, 0.8, 2.5), 2), cfg, 4)
    long = estimate_memory(ImageHeader((512, 512, 600), (0.8, 0.8, 2.5), 2), cfg, 4)
    assert 2**30 < kits < long
    huge = estimate_memory(ImageHeader((4000, 4000, 3000), (0.5, 0.5, 0.5), 2), cfg, 4)
    assert huge > 4000 * 4000 * 3000 * 2
    with pytest.raises(KidneysegError, match="needs about"):
        check_memory(tmp_path / "huge.nii", huge, available=24 * 2**30)
    check_memory(tmp_path / "kits.nii", kits, available=24 * 2**30)


def test_post_processing_fits_the_memory_estimate_per_voxel(rng):
    """Post-processing speckled labels is a prediction's peak per original voxel (issue 19: with
    np.bincount and np.isin it took 17 bytes a voxel where the estimate allowed 6); absorbing the
    lesion islands of what it kept, too."""
    import tracemalloc

    from kidneyseg.predict.checks import PER_ORIGINAL_VOXEL

    shape = (128, 96, 48)
    labels = ((rng.random(shape) < 0.3) * rng.integers(1, 4, shape)).astype(np.uint8)
    keep_largest_components(labels[:8, :8, :8])  # imports SciPy outside the traced memory
    absorb_lesion_islands(labels[:8, :8, :8].copy(), 1.0, 2.0, (2, 3), 1)
    tracemalloc.start()
    try:
        kept = keep_largest_components(labels)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        absorbed = kept.copy()
        absorb_lesion_islands(absorbed, voxel_ml=0.03, min_ml=1.0, lesions=(2, 3), kidney=1)
        peak_absorbing = tracemalloc.get_traced_memory()[1] - 2 * kept.nbytes  # both maps aside
    finally:
        tracemalloc.stop()
    assert (kept != labels).any()  # many small components were dropped: the worst case
    assert (absorbed != kept).mean() > 0.05  # thousands of lesion islands absorbed
    assert labels.nbytes + peak <= PER_ORIGINAL_VOXEL * labels.size
    assert labels.nbytes + peak_absorbing <= PER_ORIGINAL_VOXEL * labels.size


PEAK_OF_PREDICT = """
import sys
from kidneyseg.cli import main
peak_file = sys.argv[1]
sys.argv = ["kidneyseg", "predict", *sys.argv[2:]]
try:
    main()
finally:  # VmHWM: this process's own peak (ru_maxrss can carry the forking parent's over exec)
    with open("/proc/self/status") as status, open(peak_file, "w") as f:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
        f.write(str(kib * 1024))
"""


def test_memory_estimate_is_above_the_measured_peak(tmp_path, rng):
    """The pre-check's estimate bounds the peak resident memory of a real `kidneyseg predict`
    (fresh process) on noisy CT whose labels come out speckled, on the network's own grid."""
    import os
    import subprocess
    import sys

    config = replace(
        TINY_3D,
        preprocess=PreprocessConfig(spacing=(2.0, 2.0, 2.0)),
        inference=InferenceConfig(roi_size=(64, 64, 32), overlap=0.0, sw_batch_size=1),
    )
    ckpt = save_tiny(tmp_path / "native.pt", config, seed=0)
    array = np.full((128, 128, 96), -1000, np.int16)
    array[16:112, 24:104] = rng.integers(-110, 190, (96, 80, 96), dtype=np.int16)
    ct = tmp_path / "ct.nii"
    nib.save(nib.Nifti1Image(array, np.diag([2.0, 2.0, 2.0, 1.0])), ct)
    peak_file = tmp_path / "peak"
    args = [peak_file, "-i", ct, "-o", tmp_path / "out", "-m", ckpt, "-q", "--backend", "torch"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", PEAK_OF_PREDICT, *map(str, args)], check=True, env=env)
    peak = int(peak_file.read_text())
    estimate = estimate_memory(read_header(ct), config.preprocess, KITS23.num_classes)
    assert peak <= estimate, (peak / 2**30, estimate / 2**30)


def huge_header_file(path: Path) -> Path:
    """A NIfTI file whose header claims 4000 × 4000 × 3000 voxels (no voxel data follows)."""
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 3000))
    header.set_data_dtype(np.int16)
    header.set_zooms((0.5, 0.5, 0.5))
    header.set_sform(np.diag([0.5, 0.5, 0.5, 1.0]), code=1)
    path.write_bytes(header.binaryblock + b"\0" * 4)
    return path


def test_header_is_read_without_the_voxels(tmp_path):
    header = read_header(huge_header_file(tmp_path / "huge.nii"))
    assert header.shape == (4000, 4000, 3000)
    assert header.spacing == (0.5, 0.5, 0.5)
    assert header.itemsize == 2


def test_cpu_caps_3d_windows_per_pass_unless_asked(ckpt3d, ckpt2d):
    assert Predictor([ckpt3d]).inference.sw_batch_size == min(TINY_3D.inference.sw_batch_size, CPU_3D_BATCH)
    assert Predictor([ckpt3d], PredictSettings(sw_batch_size=6)).inference.sw_batch_size == 6
    assert Predictor([ckpt2d]).inference.sw_batch_size == TINY_2D.inference.sw_batch_size


def test_non_finite_scores_stop_the_case(ckpt3d):
    from kidneyseg.data.phantom import generate_case

    class Broken(torch.nn.Module):
        spatial_dims = 3

        def forward(self, x):
            return torch.full((x.shape[0], 4, *x.shape[2:]), float("nan"))

    predictor = Predictor([ckpt3d], PredictSettings(backend="torch"))
    predictor.compiled = predictor.torch_networks = [Broken()]
    ct = generate_case(3, size="tiny").ct
    with pytest.raises(KidneysegError, match="network produced NaN or infinite scores"):
        predictor.predict(ct)


def test_votes_give_the_case_confidence_and_each_lesions_sure_fraction():
    import torch

    from kidneyseg.predict.votes import SURE, Votes, foreground_voxels

    logits = torch.zeros(4, 40, 3, 3)
    logits[1, :20] = 10.0  # kidney, almost certain
    logits[2, 20:30] = 1.0  # tumor, narrowly
    p_kidney = torch.softmax(torch.tensor([0.0, 10, 0, 0]), 0)[1].item()
    p_tumor = torch.softmax(torch.tensor([0.0, 0, 1, 0]), 0)[2].item()
    assert p_tumor < SURE < p_kidney
    points, winner, top = foreground_voxels([((0, 0, 0), logits)], probabilities=False, chunk=7)
    assert sorted(set(points[:, 0])) == list(range(30)) and len(points) == 30 * 9
    assert np.array_equal(winner, np.where(points[:, 0] < 20, 1, 2))
    probs = torch.softmax(logits, 0)
    halves = foreground_voxels([((0, 0, 0), probs[:, :25]), ((25, 0, 0), probs[:, 25:])], probabilities=True)
    assert np.array_equal(halves[0], points) and np.array_equal(halves[1], winner)
    assert np.allclose(halves[2], top)

    # labels on a grid twice as fine, shifted by one network voxel along X
    affine = np.diag([0.5, 0.5, 0.5, 1.0])
    network_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    network_affine[0, 3] = -1.0
    votes = Votes(points, winner, top, network_affine)
    labels = np.zeros((80, 6, 6), np.uint8)
    labels[: 2 * 31] = 1  # all labelled; network slice 0 (a kidney slice) falls outside this grid
    assert votes.mean_top(labels, affine) == pytest.approx((19 * p_kidney + 10 * p_tumor) / 29, rel=1e-5)
    # a "lesion" over network slices 15-24: five sure kidney slices and five narrow tumor slices
    lesion = np.zeros_like(labels)
    lesion[2 * 14 : 2 * 24] = 1  # network slice k lies at index 2 (k - 1) of this grid
    assert votes.sure_fraction(lesion, affine, 2) == 0.0  # the tumor votes are below SURE
    assert votes.sure_fraction(lesion, affine, 1) == pytest.approx(0.5)
    # the same lesion as a box of its own: the box's affine places it
    box_affine = affine.copy()
    box_affine[:3, 3] = affine[:3, :3] @ [28, 0, 0]
    assert votes.sure_fraction(lesion[28:48], box_affine, 1) == pytest.approx(0.5)
    assert votes.sure_fraction(np.zeros_like(labels), affine, 1) is None
    at_sure = Votes(points, winner, np.full_like(top, SURE), network_affine)  # exactly SURE counts as sure
    assert at_sure.sure_fraction(lesion, affine, 2) == pytest.approx(0.5)
    labels[: 2 * 21] = 0  # post-processing dropped the kidney: only the narrow tumor is left
    assert votes.mean_top(labels, affine) == pytest.approx(p_tumor, rel=1e-5)
    assert votes.mean_top(np.zeros_like(labels), affine) is None


def test_votes_count_the_same_whichever_way_the_mask_is_stored():
    from kidneyseg.predict.votes import Votes

    rng = np.random.default_rng(0)
    points = np.argwhere(np.ones((10, 10, 10), bool)).astype(np.uint16)  # a vote every 3 mm, at 0, 3, 6, ...
    winner = rng.integers(1, 4, len(points)).astype(np.uint8)
    top = rng.random(len(points)).astype(np.float32)
    votes = Votes(points, winner, top, np.diag([3.0, 3.0, 3.0, 1.0]))
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = 1.0  # mask voxels centred at 1, 3, 5, ... mm: the votes at 6, 18, ... mm fall halfway
    mask = rng.random((14, 14, 14)) > 0.4
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, mask.shape[0] - 1  # the same mask stored mirrored along X
    for value in (1, 2, 3):
        as_stored = votes.sure_fraction(mask, affine, value)
        assert as_stored == votes.sure_fraction(mask[::-1], affine @ flip, value)
        assert as_stored == votes.sure_fraction(
            np.ascontiguousarray(mask.transpose(2, 0, 1)), affine[:, [2, 0, 1, 3]], value
        )
