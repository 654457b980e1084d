"""Sampling and losses: the 2 % background-slice sampler, label mapping, the V-Net Dice loss."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from kidneyseg.config import TrainConfig
from kidneyseg.errors import KidneysegError
from kidneyseg.labels import KITS19, KITS23, label_lut
from kidneyseg.train.data import epoch_seed
from kidneyseg.train.losses import build_loss, region_matrix
from kidneyseg.train.samples import SliceEpochSampler

KEEP = list(range(0, 300, 3))  # 100 foreground slices
OPTIONAL = [i for i in range(300) if i % 3]  # 200 background-only slices


def test_slice_sampler_keeps_all_foreground_and_redraws_2_percent_background():
    sampler = SliceEpochSampler(KEEP, OPTIONAL, 0.02, seed=5)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        idx = list(sampler)
        assert len(idx) == len(sampler) == 100 + math.ceil(200 * 0.02)
        assert set(KEEP) <= set(idx)
        background = set(idx) - set(KEEP)
        assert len(background) == 4 and background <= set(OPTIONAL)
        epochs.append(idx)
    assert epochs[0] != epochs[1]  # a fresh draw and order every epoch
    sampler.set_epoch(1)
    assert list(sampler) == epochs[1]  # an epoch is reproducible on its own (exact resume)
    assert list(SliceEpochSampler(KEEP, OPTIONAL, 0.02, seed=6)) != epochs[0]


def test_slice_sampler_splits_an_epoch_across_ranks():
    shards = [SliceEpochSampler(KEEP, OPTIONAL, 0.02, seed=1, rank=r, world=3) for r in range(3)]
    for s in shards:
        s.set_epoch(2)
    parts = [list(s) for s in shards]
    assert len({len(p) for p in parts}) == 1  # same number of steps on every rank
    whole = SliceEpochSampler(KEEP, OPTIONAL, 0.02, seed=1)
    whole.set_epoch(2)
    assert set().union(*map(set, parts)) == set(whole)


def test_epoch_seeds_are_distinct_and_stable():
    seeds = {epoch_seed(0, e, r, s) for e in range(5) for r in range(2) for s in range(4)}
    assert len(seeds) == 40
    # Exact resume: a new process gets the same seeds.
    code = "from kidneyseg.train.data import epoch_seed; print(epoch_seed(3, 1), epoch_seed(3, 7, 1, 2))"
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert fresh.stdout.split() == [str(epoch_seed(3, 1)), str(epoch_seed(3, 7, 1, 2))]


def test_label_lut_maps_and_rejects():
    lut = label_lut(KITS19, {3: 1})
    assert lut[[0, 1, 2, 3]].tolist() == [0, 1, 2, 1]
    with pytest.raises(KidneysegError, match="target value 3 is not a class of the kits19"):
        label_lut(KITS19, {2: 3})
    assert label_lut(KITS23, {})[3] == 3


def test_dice_squared_is_the_vnet_form():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 6)
    labels = torch.randint(0, 3, (2, 1, 5, 6))
    p = torch.softmax(logits, 1)
    g = torch.nn.functional.one_hot(labels[:, 0], 3).permute(0, 3, 1, 2).float()
    dims = (2, 3)
    expected = (1 - 2 * (p * g).sum(dims) / ((p**2).sum(dims) + (g**2).sum(dims))).mean()
    got = build_loss(TrainConfig(loss="dice_squared"), KITS23)(logits, labels)
    assert float(got) == pytest.approx(float(expected), abs=1e-4)
    plain = build_loss(TrainConfig(loss="dice"), KITS23)(logits, labels)
    assert abs(float(plain) - float(expected)) > 1e-3  # the squares matter
    with pytest.raises(KidneysegError, match=r"train\.loss='focal' is not one of"):
        TrainConfig(loss="focal")


def test_dice_ce_adds_cross_entropy():
    torch.manual_seed(1)
    logits = torch.randn(1, 4, 4, 4, 4)
    labels = torch.randint(0, 4, (1, 1, 4, 4, 4))
    ce = torch.nn.functional.cross_entropy(logits, labels[:, 0])
    total = build_loss(TrainConfig(loss="dice_ce"), KITS23)(logits, labels)
    dice = build_loss(TrainConfig(loss="dice"), KITS23)(logits, labels)
    assert float(total) == pytest.approx(float(dice + ce), abs=1e-5)
    assert np.isfinite(float(total))
    weighted = build_loss(TrainConfig(loss="dice_ce", ce_weight=0.1), KITS23)(logits, labels)
    assert float(weighted) == pytest.approx(float(dice + 0.1 * ce), abs=1e-5)
    with pytest.raises(KidneysegError, match="ce_weight"):
        TrainConfig(loss="dice_ce", ce_weight=-1.0)


def test_region_loss_is_dice_over_the_kits_regions_plus_cross_entropy():
    torch.manual_seed(2)
    logits = torch.randn(2, 4, 5, 6, 4)
    labels = torch.randint(0, 4, (2, 1, 5, 6, 4))
    p = torch.softmax(logits, 1)
    g = torch.nn.functional.one_hot(labels[:, 0], 4).movedim(-1, 1).float()
    dice = []
    for members in ([1, 2, 3], [2, 3], [2]):  # kidney + masses, masses, tumor
        pr, gr = p[:, members].sum(1), g[:, members].sum(1)
        inter, total = (pr * gr).sum((1, 2, 3)), (pr + gr).sum((1, 2, 3))
        dice.append(1 - (2 * inter + 1e-5) / (total + 1e-5))
    ce = torch.nn.functional.cross_entropy(logits, labels[:, 0])
    expected = torch.stack(dice).mean() + 0.1 * ce
    got = build_loss(TrainConfig(loss="dice_ce_regions", ce_weight=0.1), KITS23)(logits, labels)
    assert float(got) == pytest.approx(float(expected), abs=1e-5)
    exclusive = build_loss(TrainConfig(loss="dice_ce", ce_weight=0.1), KITS23)(logits, labels)
    assert abs(float(got) - float(exclusive)) > 1e-3
    # Calling a tumor a cyst costs only the tumor region; exclusive classes pay it twice.
    truth = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    truth[..., 1:3, 1:3, 1:3] = 2
    as_cyst = torch.nn.functional.one_hot(torch.where(truth[:, 0] == 2, 3, 0), 4).movedim(-1, 1).float() * 40
    right = torch.nn.functional.one_hot(truth[:, 0], 4).movedim(-1, 1).float() * 40
    regions = build_loss(TrainConfig(loss="dice_ce_regions", ce_weight=0.0), KITS23)
    classes = build_loss(TrainConfig(loss="dice_ce", ce_weight=0.0), KITS23)
    assert float(regions(right, truth)) == pytest.approx(0.0, abs=1e-4)
    assert float(regions(as_cyst, truth)) == pytest.approx(1 / 3, abs=1e-3)
    assert float(classes(as_cyst, truth)) == pytest.approx(2 / 4, abs=1e-3)


def test_kits19_regions_count_the_tumor_once():
    assert region_matrix(KITS19).tolist() == [[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]
    assert region_matrix(KITS23).tolist() == [[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 1, 0]]
