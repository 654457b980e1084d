"""Training cases cut to short scans (`data.short_scans`, `kidneyseg.train.data.ShortScanD`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kidneyseg.config import AugmentConfig, DataConfig, PreprocessConfig
from kidneyseg.errors import KidneysegError
from kidneyseg.labels import KITS23, label_lut
from kidneyseg.predict.sliding_window import blend_windows
from kidneyseg.train.data import SHORT_KEY, SHORT_SCAN_SLICES, ShortScanD, train_transforms


def _case(depth: int = 90) -> dict[str, torch.Tensor]:
    """A case whose image says which slice each voxel lies in."""
    image = torch.arange(1, depth + 1, dtype=torch.float32).expand(1, 8, 8, depth).clone()
    label = torch.zeros((1, 8, 8, depth))
    label[..., 60:80] = 1  # a kidney in slices 60-79
    return {"image": image, "label": label}


def _where_prediction_puts(kept: int, depth: int) -> np.ndarray:
    """The slices of a window `depth` deep that a scan `kept` slices long fills in prediction."""
    seen = []

    def run(windows: torch.Tensor, places: list) -> torch.Tensor:
        seen.append(windows[0, 0].clone())
        return windows

    blend_windows(torch.ones((1, 1, 8, 8, kept)), (8, 8, depth), (0.5, 0.5, 0.5), 1, run, "constant")
    return seen[0].any(dim=(0, 1)).numpy()


def test_a_case_cut_short_is_a_run_of_its_slices_drawn_anywhere_along_it():
    case = _case()
    cut = ShortScanD(1.0, ("image", "label"))
    firsts, lengths, with_kidney = set(), set(), 0
    for seed in range(40):
        cut.set_random_state(seed)
        out = cut(dict(case))
        kept = out[SHORT_KEY]
        slices = out["image"][0, 0, 0].numpy()
        assert SHORT_SCAN_SLICES[0] <= kept <= SHORT_SCAN_SLICES[1] and len(slices) == kept
        assert np.array_equal(slices, np.arange(slices[0], slices[0] + kept))  # one run, in order
        assert torch.equal(out["label"][0, 0, 0], case["label"][0, 0, 0, int(slices[0]) - 1 :][:kept])
        firsts.add(int(slices[0]))
        lengths.add(kept)
        with_kidney += bool(out["label"].any())
    assert len(firsts) > 20 and len(lengths) > 15  # drawn, not fixed
    assert 5 < with_kidney < 35  # a slab of this case holds its kidney sometimes, not always


def test_a_case_not_drawn_stays_whole_and_says_so():
    case = _case()
    out = ShortScanD(0.0, ("image", "label"))(dict(case))
    assert out[SHORT_KEY] == 0 and torch.equal(out["image"], case["image"])


def _patches(tmp_path, short_scans: float, aug: AugmentConfig, depth: int):
    """Patches of a tiny phantom 35 slices deep at 6 mm."""
    from kidneyseg.data.cases import discover
    from kidneyseg.data.phantom import generate_dataset
    from kidneyseg.preprocess import preprocess_dataset

    generate_dataset(tmp_path / "ph", cases=1, seed=3, size="tiny", progress=False)
    cfg = PreprocessConfig(spacing=(6.0, 6.0, 6.0))
    folder = preprocess_dataset(discover(tmp_path / "ph"), cfg, tmp_path / "cache", progress=False)[0]
    data = DataConfig(patch_size=(16, 16, depth), samples_per_case=4, short_scans=short_scans)
    chain = train_transforms(data, aug, label_lut(KITS23, {}), cfg)
    patches = []
    for seed in range(3):
        chain.set_random_state(seed)
        patches.extend(chain({"case": str(folder)}))
    return patches


def test_a_short_patch_holds_its_slab_where_prediction_puts_it_with_zeros_after_noise(tmp_path):
    aug = AugmentConfig(noise_prob=1.0, noise_std=0.1, intensity_shift_prob=1.0, intensity_shift=0.1)
    for patch in _patches(tmp_path, 1.0, aug, depth=48):  # deeper than any slab: always padded
        assert SHORT_KEY not in patch
        kept = (patch["image"] != 0).any(dim=(0, 1, 2)).numpy()
        assert SHORT_SCAN_SLICES[0] <= kept.sum() < 35
        assert np.array_equal(kept, _where_prediction_puts(int(kept.sum()), 48))
        assert not patch["label"][..., ~kept].any()
        assert patch["image"][..., kept].std() > 0  # the noise is there, inside the slab


def test_the_padding_moves_with_the_slab_when_the_elastic_deformation_moves_it(tmp_path):
    """Zeros where the deformation put the padding, not where `SpatialPadd` had: the slab's
    voxels and its kidney kept, the padding that moved into the old slab's place zeroed."""
    aug = AugmentConfig(
        elastic_prob=1.0,
        elastic_magnitude=(0.0, 0.0),
        elastic_translate=(0.0, 0.0, 8.0),
        elastic_rotate=(0.0, 0.0, 0.0),
        elastic_scale=(0.0, 0.0, 0.0),
        noise_prob=1.0,
        noise_std=0.1,
    )
    moved = 0
    for patch in _patches(tmp_path, 1.0, aug, depth=48):
        kept = (patch["image"] != 0).any(dim=(0, 1, 2)).numpy()
        run = np.flatnonzero(kept)
        assert SHORT_SCAN_SLICES[0] <= len(run) < 35 and np.array_equal(run, np.arange(run[0], run[-1] + 1))
        assert (patch["image"][..., kept] != 0).all()  # noise over the whole slab: none of it zeroed
        assert not patch["label"][..., ~kept].any()
        moved += not np.array_equal(kept, _where_prediction_puts(len(run), 48))
    assert moved >= 6  # translated by up to 8 slices, most slabs left their centred place


def test_without_short_scans_patches_are_whole(tmp_path):
    for patch in _patches(tmp_path, 0.0, AugmentConfig(), depth=16):
        assert SHORT_KEY not in patch
        assert (patch["image"] != 0).any(dim=(0, 1, 2)).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"short_scans": 1.5}, r"data.short_scans=1.5 must be in \[0, 1\]"),
        ({"short_scans": 0.3, "sampling": "slice2d"}, r"data.short_scans=0.3 cuts short 3D patches"),
        (
            {"short_scans": 0.3, "class_ratios": (0.0, 1.0, 1.0, 1.0)},
            r"data.class_ratios=\[0.0, 1.0, 1.0, 1.0\] with data.short_scans must weigh background above 0",
        ),
    ],
)
def test_short_scans_is_a_probability_for_3d_patches_with_background_patches(kwargs, message):
    with pytest.raises(KidneysegError, match=message):
        DataConfig(**kwargs)
