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
    monkeypatch.setattr(validation, "load_full_case", lambda record, lut: (image, label))
    two_d = config.data.sampling == "slice2d"
    inference = validation.validation_inference(config)
    assert inference.overlap == config.train.val_overlap and inference.blend == "gaussian"

    expected = monai_logits(net, image, config.data.patch_size, two_d, config.train.val_overlap)
    got = validation.segment_case(net, image, inference, torch.device("cpu"), amp=True)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

    loss_fn = build_loss(config.train)
    record = CaseRecord("case_00000", None, shape, (), (), ())  # type: ignore[arg-type]
    metrics = validation.validate(net, [record], None, labels, loss_fn, inference, DistContext(), amp=False)
    assert metrics["val_loss"] == pytest.approx(float(loss_fn(expected, label)), rel=1e-5)
    k = labels.num_classes
    pred = one_hot(expected.argmax(dim=1, keepdim=True), num_classes=k)
    dice = compute_dice(pred, one_hot(label, num_classes=k), include_background=False)[0]
    for cls, d in zip(labels.foreground, dice.tolist(), strict=True):
        assert metrics[f"val_dice_{cls.name}"] == pytest.approx(d, rel=1e-6)
    assert metrics["val_dice"] == pytest.approx(float(np.mean(dice.tolist())), rel=1e-6)
