"""Recipes: the papers' settings as data, variants as overrides of the same file."""

from __future__ import annotations

import math

import pytest

from kidneyseg.errors import KidneysegError
from kidneyseg.labels import get_label_map
from kidneyseg.plaindata import to_dict
from kidneyseg.recipes import list_recipes, load_recipe, parse_spec, recipe_document
from kidneyseg.train.build import resolve_model_config


def test_all_four_recipes_are_packaged():
    assert list_recipes() == ["attention-unet-2d", "residual-unet-3d", "sca-unet-3d", "unet-2d"]


@pytest.mark.parametrize("name", ["attention-unet-2d", "residual-unet-3d", "sca-unet-3d", "unet-2d"])
@pytest.mark.parametrize("variant", [None, "cpu"])
def test_every_recipe_resolves_to_a_consistent_config(name, variant):
    config = load_recipe(name, variant)
    label_map = get_label_map(config.labels)
    resolved = resolve_model_config(config)
    assert resolved.model.kwargs["out_channels"] == label_map.num_classes
    assert config.train.recipe == f"{name}{':' + variant if variant else ''}@1"
    # a variant changes values, never the recipe's structure
    assert set(to_dict(load_recipe(name))) == set(to_dict(config))


def test_sca_unet_3d_follows_the_paper():
    c = load_recipe("sca-unet-3d")
    assert c.labels == "kits23" and c.data.annotation == "AND"
    assert c.preprocess.spacing == (1.62, 1.62, 2.0) and c.preprocess.hu_window == (-80.0, 305.0)
    assert c.data.patch_size == (128, 128, 64)  # 64x128x128 z-first, RAS axis order
    assert (c.data.pos, c.data.neg) == (1.0, 1.0)
    assert (c.data.cache, c.data.cache_rate, c.data.replace_rate) == ("smart", 0.4, 0.5)
    assert (c.train.loss, c.train.optimizer, c.train.lr, c.train.epochs) == ("dice_ce", "adamw", 1e-3, 300)
    a = c.train.augment
    assert a.elastic_prob == 0.5 and a.elastic_sigma == (5.0, 8.0) and a.elastic_magnitude == (50.0, 150.0)
    assert a.elastic_translate == (10.0, 10.0, 5.0)
    assert a.elastic_rotate == pytest.approx((math.pi / 36, math.pi / 36, math.pi))
    assert (a.intensity_shift, a.intensity_shift_prob, a.noise_std, a.noise_prob) == (0.1, 0.25, 0.1, 0.25)
    assert c.data.val_fraction == 0.1 and c.train.val_every == 1
    assert "10e-4" in recipe_document("sca-unet-3d")["recipe"]["notes"]


def test_residual_unet_3d_differs_in_model_and_patch_only():
    sca, res = to_dict(load_recipe("sca-unet-3d")), to_dict(load_recipe("residual-unet-3d"))
    assert res["model"]["name"] == "residual_unet_3d" and res["data"]["patch_size"] == [160, 160, 64]
    for d in (sca, res):
        d.pop("model")
        d["data"].pop("patch_size")
        d["inference"].pop("roi_size")
        d["train"].pop("recipe")
    assert sca == res


def test_attention_unet_2d_follows_the_paper():
    c = load_recipe("attention-unet-2d")
    assert c.labels == "kits19" and c.data.label_mapping == {3: 1}
    assert c.data.sampling == "slice2d" and c.data.background_slice_fraction == 0.02
    assert (c.train.loss, c.train.optimizer, c.train.lr, c.train.scheduler) == (
        "dice_squared",
        "adam",
        1e-3,
        "plateau",
    )
    assert c.train.augment.shift_prob > 0 and c.train.augment.flip_prob > 0
    assert c.data.val_fraction == 0.2
    assert load_recipe("unet-2d").model.name == "unet_2d"


@pytest.mark.parametrize("recipe", ["attention-unet-2d", "unet-2d"])
def test_the_2d_cpu_variants_train_all_four_classes(recipe):
    c = load_recipe(recipe, "cpu")  # the variant's `label_mapping: {}` clears the paper's {3: 1}
    assert c.labels == "kits23" and c.data.label_mapping == {}


def test_variant_selection_and_errors():
    assert parse_spec("sca-unet-3d:cpu") == ("sca-unet-3d", "cpu")
    assert load_recipe("sca-unet-3d:cpu") == load_recipe("sca-unet-3d", "cpu")
    with pytest.raises(KidneysegError, match="but --variant is"):
        load_recipe("sca-unet-3d:cpu", "gpu")
    with pytest.raises(KidneysegError, match="has no variant 'huge'"):
        load_recipe("sca-unet-3d", "huge")
    with pytest.raises(KidneysegError, match="did you mean 'sca-unet-3d'"):
        load_recipe("sca-unet3d")
    with pytest.raises(KidneysegError, match="did you mean 'epochs'"):
        load_recipe("sca-unet-3d", overrides=["train.epoch=3"])
    assert load_recipe("sca-unet-3d:cpu", overrides=["train.epochs=7"]).train.epochs == 7


def test_a_model_that_does_not_fit_the_sampling_is_refused():
    config = load_recipe("sca-unet-3d", overrides=["model.name=unet_2d"])
    with pytest.raises(KidneysegError, match=r"is 2D but data\.sampling='patch3d'"):
        resolve_model_config(config)
    config = load_recipe("sca-unet-3d", overrides=["model.kwargs.out_channels=3"])
    with pytest.raises(KidneysegError, match="out_channels=3 but the kits23 label map has 4"):
        resolve_model_config(config)
    config = load_recipe("sca-unet-3d", overrides=["data.patch_size=[64, 64, 48]"])
    with pytest.raises(
        KidneysegError, match=r"inference\.roi_size \[128, 128, 64\] must equal data\.patch_size"
    ):
        resolve_model_config(config)


def test_a_variant_extends_another():
    cpu, transfer = load_recipe("sca-unet-3d:cpu"), load_recipe("sca-unet-3d:transfer")
    assert transfer.preprocess == cpu.preprocess and transfer.model == cpu.model
    assert transfer.data.patch_size == cpu.data.patch_size and transfer.train.ce_weight == cpu.train.ce_weight
    assert cpu.data.synth_randomize == 0 and transfer.data.synth_randomize > 0
    assert len(transfer.data.class_ratios) == get_label_map(transfer.labels).num_classes
    assert transfer.train.epochs != cpu.train.epochs


def test_variants_extending_in_a_cycle_are_refused(monkeypatch):
    import kidneyseg.recipes as recipes

    doc = {"recipe": {"name": "x"}, "config": {}, "variants": {"a": {"extends": "b"}, "b": {"extends": "a"}}}
    monkeypatch.setattr(recipes, "recipe_document", lambda name: doc)
    with pytest.raises(KidneysegError, match="cycle"):
        recipes.recipe_data("x:a")
    doc["variants"] = {"a": {"extends": "missing"}}
    with pytest.raises(KidneysegError, match="no variant 'missing'"):
        recipes.recipe_data("x:a")


@pytest.mark.parametrize("variant", [None, "cpu"])
def test_unet_2d_extends_the_attention_recipe_and_differs_only_in_its_network(variant):
    base, plain = to_dict(load_recipe("attention-unet-2d", variant)), to_dict(load_recipe("unet-2d", variant))
    assert plain["model"]["name"] == "unet_2d" and base["model"]["name"] == "attention_unet_2d"
    for config in (base, plain):
        config["model"].pop("name")
        config["train"].pop("recipe")
    assert plain == base
