"""Domain randomisation: re-rendering phantoms from their tissue maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kidneyseg.config import AugmentConfig, DataConfig
from kidneyseg.data.phantom import generate_case, generate_dataset
from kidneyseg.data.phantom.render import HU_RANGES
from kidneyseg.data.phantom.tissue import N_TISSUES, Tissue, label_lut
from kidneyseg.data.synth import AIR_LIKE, RANDOM_HU, SynthesizeD, random_tissue_hu, synthesize
from kidneyseg.labels import KITS23


@pytest.fixture(scope="module")
def tissue() -> np.ndarray:
    return generate_case(4, size="tiny", orientation="RAS").tissue.array


def test_tissue_hu_are_random_and_air_stays_air():
    draws = np.stack([random_tissue_hu(np.random.default_rng(s)) for s in range(200)])
    assert draws.shape == (200, N_TISSUES)
    kidney = draws[:, Tissue.KIDNEY_CORTEX]
    assert kidney.min() < -50 and kidney.max() > 300  # far beyond the realistic 25-250 HU
    assert kidney.std() > 80
    for t in AIR_LIKE:
        assert (draws[:, t] <= -700).all()
    soft = np.delete(draws, list(AIR_LIKE), axis=1)
    lowest = min(
        RANDOM_HU[0], min(lo for r in HU_RANGES.values() for t, (lo, _) in r.items() if t not in AIR_LIKE)
    )
    highest = max(RANDOM_HU[1], max(hi for r in HU_RANGES.values() for hi in (v[1] for v in r.values())))
    assert soft.min() >= lowest - 100 and soft.max() <= highest + 100  # realistic ± jitter, or RANDOM_HU
    # kidney and liver are drawn independently: their order is not fixed
    assert 0.1 < np.mean(draws[:, Tissue.KIDNEY_CORTEX] > draws[:, Tissue.LIVER]) < 0.9


def test_synthesize_is_seeded_windowed_and_follows_the_tissue_map(tissue):
    a = synthesize(tissue, (-80.0, 305.0), np.random.default_rng(1))
    b = synthesize(tissue, (-80.0, 305.0), np.random.default_rng(1))
    c = synthesize(tissue, (-80.0, 305.0), np.random.default_rng(2))
    assert a.dtype == np.float32 and a.shape == tissue.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    # the image is made from the map: outside the field of view it is dark, and tissues differ
    assert np.median(a[tissue == Tissue.OUTSIDE_FOV]) < 0.05
    means = [np.mean(a[tissue == t]) for t in (Tissue.MUSCLE, Tissue.KIDNEY_CORTEX, Tissue.BONE_CORTICAL)]
    assert np.ptp(means) > 0.05


def test_synthesize_works_on_slices(tissue):
    out = synthesize(tissue[:, :, 10], (-80.0, 305.0), np.random.default_rng(0))
    assert out.shape == tissue.shape[:2] and np.isfinite(out).all()


def test_synthesized_d_replaces_the_image_with_the_given_probability(tissue):
    item = {
        "image": torch.zeros((1, *tissue.shape)),
        "label": torch.from_numpy(label_lut()[tissue][None].astype(np.int64)),
        "tissue": torch.from_numpy(tissue[None].astype(np.float32)),
    }
    never, always = SynthesizeD((-80.0, 305.0), 0.0), SynthesizeD((-80.0, 305.0), 1.0)
    always.set_random_state(0)
    out = always(item)
    assert "tissue" not in out and out["image"].shape == item["image"].shape
    assert out["image"].abs().sum() > 0
    assert torch.equal(out["label"], item["label"])
    assert torch.equal(never(item)["image"], item["image"])
    half = SynthesizeD((-80.0, 305.0), 0.5)
    half.set_random_state(0)
    replaced = [half(item)["image"].abs().sum() > 0 for _ in range(40)]
    assert 10 <= sum(replaced) <= 30


def test_lesions_keep_their_labels_through_the_training_chain(tmp_path):
    """Lesion-centred patches, deformed, then re-rendered: the tissue map moves with the label
    (nearest-neighbour), so every patch's label is still its tissue map's label, and the
    re-rendering leaves the label alone."""
    from monai import transforms as mt

    from kidneyseg.config import PreprocessConfig
    from kidneyseg.data.cases import discover
    from kidneyseg.labels import label_lut as run_lut
    from kidneyseg.preprocess import preprocess_dataset
    from kidneyseg.train.data import train_transforms

    generate_dataset(tmp_path / "ph", cases=1, seed=9, size="tiny", progress=False)  # tumors and cysts
    cfg = PreprocessConfig(spacing=(6.0, 6.0, 6.0))
    folder = preprocess_dataset(discover(tmp_path / "ph"), cfg, tmp_path / "cache", progress=False)[0]
    assert (folder / "tissue.npy").is_file()
    data = DataConfig(
        patch_size=(16, 16, 16), samples_per_case=6, synth_randomize=1.0, class_ratios=(0.0, 0.0, 1.0, 1.0)
    )
    aug = AugmentConfig(elastic_prob=1.0, elastic_sigma=(2.0, 3.0), elastic_magnitude=(5.0, 10.0))
    chain = train_transforms(data, aug, run_lut(KITS23, {}), cfg)
    synth_at = next(i for i, t in enumerate(chain.transforms) if isinstance(t, SynthesizeD))
    before = mt.Compose(chain.transforms[:synth_at])
    before.set_random_state(3)
    patches = before({"case": str(folder)})
    assert len(patches) == 6
    for patch in patches:
        tissue_ids = patch["tissue"][0].round().long().numpy()
        label = patch["label"][0].numpy()
        assert np.array_equal(label_lut()[tissue_ids], label)
        assert (label >= 2).any()  # centred on a tumor or cyst voxel
        out = chain.transforms[synth_at](patch)
        assert "tissue" not in out and torch.equal(out["label"], patch["label"])
        assert not torch.equal(out["image"], patch["image"])
