"""Typed, frozen configuration: building from plain data, validation, overrides, YAML."""

from __future__ import annotations

import dataclasses

import pytest

from kidneyseg.config import PreprocessConfig, RunConfig
from kidneyseg.errors import KidneysegError
from kidneyseg.plaindata import apply_overrides, deep_merge, dump_yaml, from_dict, load_yaml, to_dict


def test_defaults_are_the_sca_unet_papers():
    cfg = PreprocessConfig()
    assert cfg.orientation == "RAS" and cfg.spacing == (1.62, 1.62, 2.0) and cfg.hu_window == (-80.0, 305.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.spacing = (1.0, 1.0, 1.0)  # type: ignore[misc]


def test_round_trip_through_yaml(tmp_path):
    cfg = from_dict(PreprocessConfig, {"spacing": [1, 1, 2.5], "crop_foreground": False})
    assert cfg.spacing == (1.0, 1.0, 2.5) and isinstance(cfg.spacing[0], float) and not cfg.crop_foreground
    path = tmp_path / "preprocess.yaml"
    path.write_text(dump_yaml(cfg))
    assert from_dict(PreprocessConfig, load_yaml(path)) == cfg


def test_unknown_keys_and_wrong_types_are_refused_with_a_hint():
    with pytest.raises(KidneysegError, match="did you mean 'spacing'"):
        from_dict(PreprocessConfig, {"spacng": [1, 1, 1]})
    with pytest.raises(KidneysegError, match="expected 3 values"):
        from_dict(PreprocessConfig, {"spacing": [1, 1]})
    with pytest.raises(KidneysegError, match="expected bool"):
        from_dict(PreprocessConfig, {"crop_foreground": "yes"})
    with pytest.raises(KidneysegError, match="spacing"):
        from_dict(PreprocessConfig, {"spacing": [0, 1, 1]})


def test_overrides_and_merge():
    data = to_dict(PreprocessConfig())
    changed = apply_overrides({"preprocess": data}, ["preprocess.hu_window=[-100, 300]"])
    assert from_dict(PreprocessConfig, changed["preprocess"]).hu_window == (-100.0, 300.0)
    assert data["hu_window"] == [-80.0, 305.0]  # the input is not mutated
    with pytest.raises(KidneysegError, match="must look like"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(KidneysegError, match="not a config section"):
        apply_overrides({"a": 1}, ["a.b=2"])
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def test_run_config_nests_sections(tmp_path):
    run = from_dict(RunConfig, {"preprocess": {"spacing": [2, 2, 2]}})
    assert run.preprocess.spacing == (2.0, 2.0, 2.0)
    with pytest.raises(KidneysegError, match="no such config file"):
        load_yaml(tmp_path / "absent.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(KidneysegError, match="must hold a mapping"):
        load_yaml(tmp_path / "list.yaml")


def test_numbers_are_read_as_yaml_1_2_reads_them():
    """YAML 1.1 (PyYAML's default) reads `5e-4` as a string (it was refused: "expected float, got
    '5e-4'"), `0123` as octal 83 and `1:30` as 90 in base 60, silently changing a split seed or an
    epoch count (found by a hostile run); `yes` is a boolean there. Overrides and files read them
    as YAML 1.2 does: decimal, a string where it is not a number, and only true/false as booleans."""
    from kidneyseg.recipes import load_recipe

    config = load_recipe(
        "sca-unet-3d:cpu",
        overrides=["train.lr=5e-4", "train.weight_decay=1E-5", "data.split_seed=0123", "train.epochs=010"],
    )
    assert (config.train.lr, config.train.weight_decay) == (5e-4, 1e-5)
    assert (config.data.split_seed, config.train.epochs) == (123, 10)
    assert load_recipe("sca-unet-3d:cpu", overrides=["train.epochs=0x10"]).train.epochs == 16
    for override, message in (
        ("train.lr=abc", "expected float, got 'abc'"),
        ("train.epochs=1:30", "expected int, got '1:30'"),
        ("train.amp=yes", "expected bool, got 'yes'"),
    ):
        with pytest.raises(KidneysegError, match=message):
            load_recipe("sca-unet-3d:cpu", overrides=[override])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=-1", "train.lr=-1.0 must be positive and finite"),
        ("train.lr=0", "train.lr=0.0 must be positive and finite"),
        ("train.epochs=0", "train.epochs=0 must be >= 1"),
        ("train.epochs=-1", "train.epochs=-1 must be >= 1"),
        ("train.seed=-3", "train.seed=-3 must be >= 0"),
        ("data.split_seed=-1", "data.split_seed=-1 must be >= 0"),
        (
            "model.kwargs.channels=[0, 0, 0, 0]",
            r"model.kwargs.channels=\[0, 0, 0, 0\] must be a list of positive",
        ),
        ("model.kwargs.strides=[2, 0, 2]", r"model.kwargs.strides=\[2, 0, 2\] must be a list of positive"),
        ("model.kwargs.in_channels=2", "model.kwargs.in_channels=2 must be 1: a CT has one channel"),
        ("train.loss=dice_c", "train.loss='dice_c' is not one of dice_ce, dice_squared, dice"),
        ("train.optimizer=adamax", "train.optimizer='adamax' is not one of adamw, adam, sgd"),
        ("train.scheduler=step", "train.scheduler='step' is not one of none, plateau, cosine"),
        ("train.val_every=0", "train.val_every=0 must be >= 1"),
        ("train.weight_decay=-0.1", "train.weight_decay=-0.1 must be >= 0"),
        ("data.sampling=patch2d", "data.sampling='patch2d' is not one of patch3d, slice2d"),
        ("data.cache=disk", "data.cache='disk' is not one of smart, full, none"),
        ("data.layout=kits20", "data.layout='kits20' is not one of auto, kits19"),
        ("data.annotation=XOR", "data.annotation='XOR' is not one of AND, MAJ, OR"),
        ("data.slice_filter=cyst", "data.slice_filter='cyst' is not one of foreground, tumor"),
        ("inference.blend=mean", "inference.blend='mean' is not one of gaussian, constant"),
        ("labels=kits21", "labels='kits21' is not one of kits19, kits23"),
        ("data.cache_rate=0", r"data.cache_rate=0.0 must be in \(0, 1\]"),
        ("data.batch_size=0", "data.batch_size=0 must be >= 1"),
        ("data.patch_size=[32, 0, 16]", r"data.patch_size=\[32, 0, 16\] must be positive"),
        ("inference.overlap=1", r"inference.overlap=1.0 must be in \[0, 1\)"),
        ("data.synth_randomize=1.5", r"data.synth_randomize=1.5 must be in \[0, 1\]"),
        (
            "data.class_ratios=[1, -1, 1, 1]",
            r"data.class_ratios=\[1.0, -1.0, 1.0, 1.0\] must be non-negative",
        ),
        # Found by a hostile review: MONAI tracebacks, or values silently changing the run.
        ("data.replace_rate=0", r"data.replace_rate=0.0 must be in \(0, 1\]"),
        ("data.label_mapping={a: 1}", r"data.label_mapping=\{'a': 1\} must map label values"),
        ("data.label_mapping={3: 1.5}", r"data.label_mapping=\{3: 1.5\} must map label values"),
        ("preprocess.body_threshold_hu=.nan", "preprocess.body_threshold_hu=nan must be finite"),
        ("inference.mirror_axes=[9]", r"inference.mirror_axes=\[9\] must be axes 0, 1, 2"),
        ("inference.absorb_islands_ml=-1", "inference.absorb_islands_ml=-1.0 must be >= 0"),
        ("inference.absorb_islands_ml=.inf", "inference.absorb_islands_ml=inf must be >= 0"),
        ("train.augment.noise_std=-1", "train.augment.noise_std=-1.0 must be >= 0 and finite"),
        ("train.absorb_candidates_ml=[0.5, -1]", r"train.absorb_candidates_ml=\(0.5, -1.0\) must be a list"),
        (
            "train.absorb_candidates_ml=[.nan]",
            r"train.absorb_candidates_ml=\(nan,\) must be a list of volumes",
        ),
        ("train.augment.elastic_prob=5", r"train.augment.elastic_prob=5.0 must be a probability in \[0, 1\]"),
        ("train.augment.flip_prob=2", r"train.augment.flip_prob=2.0 must be a probability"),
        ("train.augment.flip_axes=[7]", r"train.augment.flip_axes=\[7\] must be axes 0, 1, 2"),
        ("train.augment.elastic_sigma=[8, 5]", r"train.augment.elastic_sigma=\[8.0, 5.0\] must be a range"),
        ("train.augment.elastic_scale=[0.1, -1, 0.1]", "train.augment.elastic_scale=.* must be >= 0"),
    ],
)
def test_values_that_cannot_train_are_refused_in_one_line_naming_the_key(override, message):
    from kidneyseg.recipes import load_recipe

    with pytest.raises(KidneysegError, match=message) as info:
        load_recipe("sca-unet-3d:cpu", overrides=[override])
    assert "\n" not in str(info.value)


def test_volumes_given_as_booleans_or_one_number_in_python_are_refused():
    """Found by a review: `absorb_candidates_ml=(True,)` was taken and wrote `True` into best.pt,
    which no longer loaded; a single number crashed the run's end."""
    from kidneyseg.config import InferenceConfig, TrainConfig

    for bad in ((True,), 0.5, (0.5, False)):
        with pytest.raises(KidneysegError, match=r"train.absorb_candidates_ml=.* must be a list of volumes"):
            TrainConfig(absorb_candidates_ml=bad)
    with pytest.raises(KidneysegError, match=r"inference.absorb_islands_ml=True must be >= 0"):
        InferenceConfig(absorb_islands_ml=True)
    assert TrainConfig(absorb_candidates_ml=[0.5, 1]).absorb_candidates_ml == [0.5, 1]


def test_a_2d_network_flips_and_mirrors_its_slices_axes_only():
    """Was: flip axis 2 of a 2D recipe crashed MONAI's RandFlipd mid-training (found by a
    hostile review); a 3D recipe takes axis 2."""
    from kidneyseg.recipes import load_recipe

    for key in ("train.augment.flip_axes", "inference.mirror_axes"):
        with pytest.raises(KidneysegError, match=rf"{key}=\[2\] must be axes 0 and 1 of a 2D network"):
            load_recipe("attention-unet-2d:cpu", overrides=[f"{key}=[2]"])
        assert load_recipe("sca-unet-3d:cpu", overrides=[f"{key}=[2]"])


def test_every_string_choice_of_every_config_section_is_validated():
    """Each `str` field of a config dataclass is refused when it is not one of its choices, so no
    later stage checks it again. Not choices: the recipe label, the orientation (any 3 axis
    codes, checked on its own) and the model name (checked by the registry, which needs torch)."""
    import dataclasses
    import typing

    from kidneyseg import config as cfg

    free_text = {("TrainConfig", "recipe"), ("ModelConfig", "name"), ("PreprocessConfig", "orientation")}
    sections = [cfg.RunConfig, cfg.PreprocessConfig, cfg.ModelConfig, cfg.InferenceConfig, cfg.DataConfig]
    for cls in [*sections, cfg.AugmentConfig, cfg.TrainConfig]:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] is str and (cls.__name__, f.name) not in free_text:
                with pytest.raises(KidneysegError, match="is not one of"):
                    cls(**{f.name: "no-such-choice"})
