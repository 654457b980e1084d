"""Training patches cut to short scans (`data.short_scans`, `kidneyseg.train.data.ShortScanD`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kidneyseg.config import AugmentConfig, DataConfig, PreprocessConfig
from kidneyseg.errors import KidneysegError
from kidneyseg.labels import KITS23, label_lut
from kidneyseg.predict.sliding_window import blend_windows
from kidneyseg.train.data import SHORT_SCAN_SLICES, ShortScanD, train_transforms


def _patch(depth: int = 48) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.uniform(0.1, 1.0, (1, 8, 8, depth)).astype(np.float32))
    label = torch.from_numpy(rng.integers(1, 4, (1, 8, 8, depth)).astype(np.float32))
    return {"image": image, "label": label}


def _where_prediction_puts(kept: int, depth: int) -> np.ndarray:
    """The slices of a window of `depth` that a scan `kept` slices long fills in prediction."""
    seen = []

    def run(windows: torch.Tensor, places: list) -> torch.Tensor:
        seen.append(windows[0, 0].clone())
        return windows

    blend_windows(torch.ones((1, 1, 8, 8, kept)), (8, 8, depth), (0.5, 0.5, 0.5), 1, run, "constant")
    return seen[0].any(dim=(0, 1)).numpy()


def test_a_short_scan_patch_keeps_a_run_of_slices_where_prediction_puts_a_scan_that_long():
    patch = _patch()
    cut = ShortScanD(1.0)
    lengths = set()
    for seed in range(12):
        cut.set_random_state(seed)
        out = cut(dict(patch))
        kept = out["image"].any(dim=(0, 1, 2)).numpy()
        lengths.add(int(kept.sum()))
        assert SHORT_SCAN_SLICES[0] <= kept.sum() <= SHORT_SCAN_SLICES[1]
        assert np.array_equal(kept, _where_prediction_puts(int(kept.sum()), 48))
        assert torch.equal(out["image"][..., kept], patch["image"][..., kept])
        assert torch.equal(out["label"][..., kept], patch["label"][..., kept])
        assert not out["label"][..., ~kept].any() and not out["image"][..., ~kept].any()
    assert len(lengths) > 6  # lengths are drawn, not fixed


def test_a_patch_not_drawn_and_a_patch_shallower_than_the_range_stay_scans():
    patch = _patch()
    assert torch.equal(ShortScanD(0.0)(dict(patch))["image"], patch["image"])
    shallow = _patch(depth=6)
    out = ShortScanD(1.0)(dict(shallow))
    assert 0 < int(out["image"].any(dim=(0, 1, 2)).sum()) < 6


def test_the_cut_comes_after_noise_so_what_stands_for_padding_is_zeros(tmp_path):
    from kidneyseg.data.cases import discover
    from kidneyseg.data.phantom import generate_dataset
    from kidneyseg.preprocess import preprocess_dataset

    generate_dataset(tmp_path / "ph", cases=1, seed=3, size="tiny", progress=False)
    cfg = PreprocessConfig(spacing=(6.0, 6.0, 6.0))
    folder = preprocess_dataset(discover(tmp_path / "ph"), cfg, tmp_path / "cache", progress=False)[0]
    data = DataConfig(patch_size=(16, 16, 16), samples_per_case=4, short_scans=1.0)
    aug = AugmentConfig(noise_prob=1.0, noise_std=0.1, intensity_shift_prob=1.0, intensity_shift=0.1)
    chain = train_transforms(data, aug, label_lut(KITS23, {}), cfg)
    chain.set_random_state(1)
    for patch in chain({"case": str(folder)}):
        kept = patch["image"].abs().sum(dim=(0, 1, 2)) > 0
        assert 0 < int(kept.sum()) < 16
        assert not patch["image"][..., ~kept].any() and not patch["label"][..., ~kept].any()
        assert patch["image"][..., kept].std() > 0  # the noise is there, inside the slab


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"short_scans": 1.5}, r"data.short_scans=1.5 must be in \[0, 1\]"),
        ({"short_scans": 0.3, "sampling": "slice2d"}, r"data.short_scans=0.3 cuts short 3D patches"),
    ],
)
def test_short_scans_is_a_probability_for_3d_patches(kwargs, message):
    with pytest.raises(KidneysegError, match=message):
        DataConfig(**kwargs)
