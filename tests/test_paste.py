"""Lesion pasting: a fresh random tumor or cyst painted onto a kidney of a training patch."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from kidneyseg.config import DataConfig
from kidneyseg.data.paste import PasteLesionsD, paste_lesion
from kidneyseg.data.phantom import generate_case
from kidneyseg.data.phantom.kidney import LESION_OVER
from kidneyseg.data.phantom.render import HU_RANGES
from kidneyseg.data.phantom.tissue import CYST_TISSUES, TUMOR_TISSUES, Tissue, label_lut
from kidneyseg.errors import KidneysegError
from kidneyseg.labels import KITS23
from kidneyseg.labels import label_lut as run_lut
from kidneyseg.preprocess.intensity import window

HU_WINDOW = (-80.0, 305.0)


@pytest.fixture(scope="module")
def case():
    """A tiny phantom (6.8 mm voxels) as a training patch: windowed image, classes, tissues."""
    phantom = generate_case(4, size="tiny", orientation="RAS")
    tissue = phantom.tissue.array.astype(np.uint8)
    image = window(np.asarray(phantom.ct.array, dtype=np.float32), HU_WINDOW)
    return image, label_lut()[tissue].astype(np.int64), tissue, tuple(phantom.tissue.spacing)


def _pasted(case, seed: int):
    image, label, tissue, spacing = (np.array(a) if isinstance(a, np.ndarray) else a for a in case)
    ok = paste_lesion(
        image, label, tissue, spacing, HU_WINDOW, run_lut(KITS23, {}), np.random.default_rng(seed)
    )
    return ok, image, label, tissue


def test_pasted_lesions_follow_the_generator_and_keep_label_and_tissue_consistent(case):
    image0, _, tissue0, _ = case
    kinds = set()
    for seed in range(12):
        ok, image, label, tissue = _pasted(case, seed)
        assert ok
        changed = tissue != tissue0
        assert changed.any()
        assert np.array_equal(label, label_lut()[tissue])  # the label follows the painted tissues
        assert LESION_OVER[tissue0[changed]].all()  # only what the generator lets a lesion replace
        assert np.isin(tissue[changed], [*TUMOR_TISSUES, *CYST_TISSUES]).all()
        new = label[changed]
        kinds.update({"tumor" if v == 2 else "cyst" for v in np.unique(new)})
        # the lesion lies on a kidney: in it or within a voxel of it
        kidney = np.isin(tissue0, [Tissue.KIDNEY_CORTEX, Tissue.KIDNEY_MEDULLA, Tissue.RENAL_PELVIS])
        assert (changed & ndi.binary_dilation(kidney)).any()
        # the image changed around the lesion only (edge blur of under a voxel, then 3 SDs)
        far = np.ones_like(changed)
        far[tuple(slice(max(i.min() - 3, 0), i.max() + 4) for i in np.nonzero(changed))] = False
        assert np.array_equal(image[far], image0[far])
        cyst = tissue == Tissue.CYST
        if (cyst & changed).sum() >= 8:  # a pasted cyst is water-dense (or hyperdense, Bosniak II)
            hu = HU_WINDOW[0] + float(np.median(image[cyst & changed])) * (HU_WINDOW[1] - HU_WINDOW[0])
            assert HU_RANGES["noncontrast"][Tissue.CYST][0] - 40 < hu < 60 + 40
    assert kinds == {"tumor", "cyst"}


def test_a_patch_without_kidney_is_left_alone(case):
    image, label, tissue, spacing = case
    far = np.array(tissue)
    far[np.isin(far, [Tissue.KIDNEY_CORTEX, Tissue.KIDNEY_MEDULLA, Tissue.RENAL_PELVIS])] = Tissue.MUSCLE
    copies = np.array(image), np.array(label), np.array(far)
    assert not paste_lesion(*copies, spacing, HU_WINDOW, run_lut(KITS23, {}), np.random.default_rng(0))
    assert np.array_equal(copies[0], image) and np.array_equal(copies[2], far)


def test_the_transform_pastes_with_its_probability_and_is_seeded(case):
    import torch

    image, label, tissue, spacing = case
    item = {
        "image": torch.from_numpy(image[None]),
        "label": torch.from_numpy(label[None].astype(np.float32)),  # as the elastic transform leaves it
        "tissue": torch.from_numpy(tissue[None].astype(np.float32)),
    }
    never = PasteLesionsD(0.0, spacing, HU_WINDOW, run_lut(KITS23, {}))
    assert never(dict(item)) == item
    runs = []
    for _ in range(2):
        always = PasteLesionsD(1.0, spacing, HU_WINDOW, run_lut(KITS23, {}))
        always.set_random_state(5)
        runs.append(always(dict(item)))
    assert torch.equal(runs[0]["label"], runs[1]["label"]) and torch.equal(runs[0]["image"], runs[1]["image"])
    assert not torch.equal(runs[0]["label"], item["label"])
    assert all(runs[0][k].dtype == item[k].dtype for k in item)  # batches collate pasted and plain patches


def test_lesion_pasting_needs_3d_patches():
    with pytest.raises(KidneysegError, match=r"data.synth_lesions=0.5 pastes lesions into 3D patches"):
        DataConfig(sampling="slice2d", synth_lesions=0.5)
