"""Validation during training runs prediction's inferer with validation's overrides, and gives the
numbers a direct MONAI call (the windows and Gaussian blending validation always used) gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from monai.metrics import compute_dice
from monai.networks.utils import one_hot

from kidneyseg.models import build_model
from kidneyseg.recipes import load_recipe
from kidneyseg.train import validation
from kidneyseg.train.data import CaseRecord
from kidneyseg.train.distributed import DistContext
from kidneyseg.train.losses import build_loss

CASES = [
    # recipe, overrides, network, image shape
    (
        "sca-unet-3d:cpu",
        ["data.patch_size=[32, 32, 16]", "inference.roi_size=[32, 32, 16]", "train.val_overlap=0.5"],
        ("sca_unet_3d", {"channels": [4, 8, 8, 8]}),
        (40, 36, 20),
    ),
    (
        "attention-unet-2d:cpu",
        ["data.patch_size=[32, 32]", "inference.roi_size=[32, 32]", "train.val_overlap=0.25"],
        ("attention_unet_2d", {"channels": [4, 8, 16]}),
        (40, 36, 5),
    ),
]


def monai_logits(net, image, roi, two_d, overlap):
    """The whole-case logits as validation computed them before it shared prediction's inferer."""
    predictor = (lambda w: net(w[..., 0])[..., None]) if two_d else net
    window = (*roi, 1) if two_d else tuple(roi)
    with torch.no_grad():
        return sliding_window_inference(
            image, window, 32 if two_d else 4, predictor, overlap=overlap, mode="gaussian"
        )


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("recipe", "overrides", "network", "shape"), CASES)
def test_validation_matches_a_direct_monai_call(one_thread, monkeypatch, recipe, overrides, network, shape):
    config = load_recipe(recipe, overrides=overrides)
    labels = config.label_map
    torch.manual_seed(0)
    net = build_model(network[0], out_channels=labels.num_classes, **network[1]).eval()
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random(shape, dtype=np.float32))[None, None]
    label = torch.from_numpy(rng.integers(0, labels.num_classes, shape))[None, None]
    two_d = config.data.sampling == "slice2d"
    inference = validation.validation_inference(config)
    assert inference.overlap == config.train.val_overlap and inference.blend == "gaussian"
    unset = validation.validation_inference(
        load_recipe(recipe, overrides=[*overrides, "train.val_overlap=null"])
    )
    assert unset.overlap == config.inference.overlap

    expected = monai_logits(net, image, config.data.patch_size, two_d, config.train.val_overlap)
    got = validation.segment_case(net, image, inference, torch.device("cpu"), amp=True)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)

    # best.pt's figure: per class, the mean Dice over the cases holding it; then the mean over
    # the classes. The second case has no voxel of the last class, so that class is its first's.
    last = labels.num_classes - 1
    cases = {"a": label, "b": torch.where(label == last, 0, label)}
    monkeypatch.setattr(validation, "load_full_case", lambda record, lut: (image, cases[record.case_id]))
    records = [CaseRecord(name, None, shape, (), (), ()) for name in cases]  # type: ignore[arg-type]
    loss_fn = build_loss(config.train, config.label_map)
    metrics = validation.validate(net, records, None, labels, loss_fn, inference, DistContext(), amp=False)
    losses = [float(loss_fn(expected, case)) for case in cases.values()]
    assert metrics["val_loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    pred = one_hot(expected.argmax(dim=1, keepdim=True), num_classes=last + 1)
    a, b = (
        compute_dice(pred, one_hot(c, num_classes=last + 1), include_background=False)[0]
        for c in cases.values()
    )
    per_class = [(x + y) / 2 for x, y in zip(a[:-1].tolist(), b[:-1].tolist(), strict=True)] + [float(a[-1])]
    for cls, d in zip(labels.foreground, per_class, strict=True):
        assert metrics[f"val_dice_{cls.name}"] == pytest.approx(d, rel=1e-6)
    assert metrics["val_dice"] == pytest.approx(float(np.mean(per_class)), rel=1e-6)
