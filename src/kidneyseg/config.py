"""Typed, frozen configuration: one frozen dataclass per section, validated on construction.

Every string choice and every range is checked in `__post_init__`, so a config that exists is a
config that can run; no later stage checks a choice again. `kidneyseg.plaindata` builds these
dataclasses from plain data (YAML, JSON, `section.key=value` overrides) and back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from kidneyseg.errors import KidneysegError
from kidneyseg.labels import LABEL_MAPS, LabelMap
from kidneyseg.plaindata import is_whole

LOSSES = ("dice_ce", "dice_squared", "dice", "dice_ce_regions")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("none", "plateau", "cosine")
SAMPLINGS = ("patch3d", "slice2d")
SLICE_FILTERS = ("foreground", "tumor")
CACHES = ("smart", "full", "none")
BLENDS = ("gaussian", "constant")
LAYOUTS = ("auto", "kits19", "kits21", "kits23", "plain")
KITS21_ANNOTATIONS = ("AND", "MAJ", "OR")


def _require(ok: bool, key: str, value: Any, rule: str) -> None:
    """Refuse a config value in one line naming the key and the value."""
    if not ok:
        raise KidneysegError(f"{key}={value!r} {rule}")


def check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    """Refuse `value` unless it is one of `choices`, in one line naming `key`."""
    _require(value in choices, key, value, f"is not one of {', '.join(choices)}")


def _positive_ints(values: Any) -> bool:
    return all(is_whole(v) and v > 0 for v in values)


def _axes(values: Any, dims: int) -> bool:
    """Whether `values` are spatial axes of a `dims`-D array (0 .. dims - 1)."""
    return all(is_whole(v) and 0 <= v < dims for v in values)


def _finite_at_least_0(values: Any) -> bool:
    return all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in values
    )


@dataclass(frozen=True)
class PreprocessConfig:
    """How a CT is brought to the network's grid (SCA-UNet paper defaults).

    Attributes:
        orientation: canonical axis codes of the preprocessed array.
        spacing: target voxel size in mm along the canonical axes (x, y, z for RAS):
            1.62 mm in-plane and 2 mm cranio-caudal.
        hu_window: HU values clipped to this range, then rescaled to [0, 1].
        crop_foreground: crop to the bounding box of the body.
        body_threshold_hu: voxels above this HU count as body for the crop.
        crop_margin_mm: margin kept around the body box.
    """

    orientation: str = "RAS"
    spacing: tuple[float, float, float] = (1.62, 1.62, 2.0)
    hu_window: tuple[float, float] = (-80.0, 305.0)
    crop_foreground: bool = True
    body_threshold_hu: float = -500.0
    crop_margin_mm: float = 0.0

    def __post_init__(self) -> None:
        codes = self.orientation.upper()
        if len(codes) != 3 or {a for c in codes for a in ("LR", "PA", "IS") if c in a} != {"LR", "PA", "IS"}:
            raise KidneysegError(f"preprocess.orientation {self.orientation!r} must name 3 axes, e.g. 'RAS'")
        if not all(math.isfinite(s) and s > 0 for s in self.spacing):
            raise KidneysegError(f"preprocess.spacing {self.spacing} must be positive and finite")
        low, high = self.hu_window
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise KidneysegError(f"preprocess.hu_window {self.hu_window} must be finite with low < high")
        if not (math.isfinite(self.crop_margin_mm) and self.crop_margin_mm >= 0):
            raise KidneysegError(f"preprocess.crop_margin_mm {self.crop_margin_mm} must be >= 0")
        threshold = self.body_threshold_hu
        _require(math.isfinite(threshold), "preprocess.body_threshold_hu", threshold, "must be finite")


@dataclass(frozen=True)
class ModelConfig:
    """Which registered network to build, with keyword overrides for `build_model`."""

    name: str = "sca_unet_3d"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("channels", "strides"):
            if key in self.kwargs:
                value = self.kwargs[key]
                _require(
                    isinstance(value, (list, tuple)) and _positive_ints(value),
                    f"model.kwargs.{key}",
                    value,
                    "must be a list of positive integers",
                )
        channels = self.kwargs.get("in_channels", 1)
        _require(channels == 1, "model.kwargs.in_channels", channels, "must be 1: a CT has one channel")


@dataclass(frozen=True)
class InferenceConfig:
    """Sliding-window inference on the preprocessed grid.

    Attributes:
        roi_size: window size along the canonical array axes (x, y, z for RAS; the SCA-UNet
            paper's 64×128×128 z-first patch is (128, 128, 64)); two values for 2D models,
            which run slice by slice along z.
        overlap: fraction of a window shared with its neighbour (0.8 in the SCA-UNet paper).
        blend: "gaussian" or "constant" weighting of overlapping windows.
        sw_batch_size: windows per forward pass.
        mirror_axes: spatial axes mirrored for test-time augmentation (empty: none).
        absorb_islands_ml: tumor/cyst islands below this (mL) take the class around them (0: none).
    """

    roi_size: tuple[int, ...] = (128, 128, 64)
    overlap: float = 0.8
    blend: str = "gaussian"
    sw_batch_size: int = 4
    mirror_axes: tuple[int, ...] = ()
    absorb_islands_ml: float = 0.0

    def __post_init__(self) -> None:
        check_choice("inference.blend", self.blend, BLENDS)
        _require(_positive_ints(self.roi_size), "inference.roi_size", list(self.roi_size), "must be positive")
        _require(0.0 <= self.overlap < 1.0, "inference.overlap", self.overlap, "must be in [0, 1)")
        _require(self.sw_batch_size >= 1, "inference.sw_batch_size", self.sw_batch_size, "must be >= 1")
        axes = list(self.mirror_axes)
        _require(_axes(axes, 3), "inference.mirror_axes", axes, "must be axes 0, 1, 2")
        ml = self.absorb_islands_ml
        _require(_finite_at_least_0([ml]), "inference.absorb_islands_ml", ml, "must be >= 0")


@dataclass(frozen=True)
class DataConfig:
    """Which cases a run trains on and how training samples are drawn from them.

    Attributes:
        layout: dataset layout for `kidneyseg.data.cases.discover` (auto, kits19, kits21, ...).
        annotation: KiTS21 aggregated annotation (AND in the SCA-UNet paper).
        label_mapping: reference label value -> training class value, applied before
            training (e.g. {3: 1} trains KiTS19's 3 classes on KiTS21/23 data, where KiTS19
            counted cysts as kidney). Values not in the run's label map are an error.
        val_fraction: shuffled case-level validation fraction (0.1 SCA-UNet, 0.2 attention U-Net).
        split_seed: seed of the case-level split.
        folds: k of a k-fold cross-validation (0: one split by `val_fraction`); the runs of
            folds 0..k-1 validate on disjoint cases and are used together as an ensemble
            (`kidneyseg predict --model RUN0 --model RUN1 ...`).
        fold: which fold this run validates on (0..folds-1).
        sampling: "patch3d" (random 3D patches) or "slice2d" (axial slices).
        patch_size: 3D patch size along the canonical array axes (x, y, z; the paper's z-first
            64×128×128 is (128, 128, 64)), or the 2D slice size (x, y). Cases smaller than the
            patch are padded.
        pos: weight of foreground-centred patches (MONAI RandCropByPosNegLabeld `pos`).
        neg: weight of patches centred anywhere (`neg`; pos = neg = 1 is "half and half").
        class_ratios: if given, one weight per class (background first): patches are centred
            on a voxel of a class drawn with these weights (MONAI RandCropByLabelClassesd),
            replacing `pos`/`neg`; oversamples small classes (nnU-Net's foreground patches).
        samples_per_case: patches drawn from one loaded case (`num_samples`).
        batch_size: cases per batch (3D: batch_size × samples_per_case patches per step;
            2D: slices per step).
        background_slice_fraction: 2D: share of background-only slices kept each epoch
            (re-drawn every epoch; 0.02 in the attention U-Net paper).
        slice_filter: 2D: "foreground" (slices with any foreground class) or "tumor" (stage 2
            fine-tuning on tumor-containing slices).
        cache: "smart" (MONAI SmartCacheDataset), "full" (CacheDataset) or "none".
        cache_rate: fraction of training cases held in the cache (0.4 in the SCA-UNet paper).
        replace_rate: fraction of the cache replaced every epoch (0.5 in the paper).
        num_workers: data-loader worker processes (0: load in the training process).
        synth_randomize: probability per training sample of replacing the image by one with
            random appearance re-rendered from the phantom's `tissue.nii.gz` (SynthSeg-style
            domain randomisation, `kidneyseg.data.synth`); 0: off.
        synth_lesions: probability per 3D training patch of pasting one more random tumor or
            cyst, drawn and painted as the phantom generator does, onto a kidney in it
            (`kidneyseg.data.paste`; phantoms only, like `synth_randomize`); 0: off.
        short_scans: probability per 3D training case (each time it is drawn) of cutting it
            to a short scan, padded as prediction pads one (`kidneyseg.train.data.ShortScanD`).
    """

    layout: str = "auto"
    annotation: str = "AND"
    label_mapping: dict[int, int] = field(default_factory=dict)
    val_fraction: float = 0.1
    split_seed: int = 0
    folds: int = 0
    fold: int = 0
    sampling: str = "patch3d"
    patch_size: tuple[int, ...] = (128, 128, 64)
    pos: float = 1.0
    neg: float = 1.0
    class_ratios: tuple[float, ...] = ()
    samples_per_case: int = 2
    batch_size: int = 1
    background_slice_fraction: float = 0.02
    slice_filter: str = "foreground"
    cache: str = "smart"
    cache_rate: float = 0.4
    replace_rate: float = 0.5
    num_workers: int = 2
    synth_randomize: float = 0.0
    synth_lesions: float = 0.0
    short_scans: float = 0.0

    def __post_init__(self) -> None:
        check_choice("data.layout", self.layout, LAYOUTS)
        check_choice("data.annotation", self.annotation, KITS21_ANNOTATIONS)
        check_choice("data.sampling", self.sampling, SAMPLINGS)
        check_choice("data.slice_filter", self.slice_filter, SLICE_FILTERS)
        check_choice("data.cache", self.cache, CACHES)
        _require(0.0 < self.val_fraction < 1.0, "data.val_fraction", self.val_fraction, "must be in (0, 1)")
        _require(self.split_seed >= 0, "data.split_seed", self.split_seed, "must be >= 0")
        _require(self.folds == 0 or self.folds >= 2, "data.folds", self.folds, "must be 0 (no folds) or >= 2")
        folds = max(self.folds, 1)
        _require(0 <= self.fold < folds, "data.fold", self.fold, f"must be in 0..{folds - 1}")
        patch = list(self.patch_size)
        _require(_positive_ints(patch), "data.patch_size", patch, "must be positive")
        pos, neg = self.pos, self.neg
        ok = min(pos, neg) >= 0 and pos + neg > 0
        _require(ok, "data.pos/neg", (pos, neg), "must be >= 0 and not both 0")
        for key in ("samples_per_case", "batch_size"):
            _require(getattr(self, key) >= 1, f"data.{key}", getattr(self, key), "must be >= 1")
        for key in ("background_slice_fraction", "synth_randomize", "synth_lesions", "short_scans"):
            _require(0.0 <= getattr(self, key) <= 1.0, f"data.{key}", getattr(self, key), "must be in [0, 1]")
        for key, does in (("synth_lesions", "pastes lesions into"), ("short_scans", "cuts short")):
            value = getattr(self, key)
            ok = value == 0 or self.sampling == "patch3d"
            _require(ok, f"data.{key}", value, f"{does} 3D patches: it needs data.sampling=patch3d")
        _require(0.0 < self.replace_rate <= 1.0, "data.replace_rate", self.replace_rate, "must be in (0, 1]")
        _require(
            all(is_whole(k) and is_whole(v) and k >= 0 and v >= 0 for k, v in self.label_mapping.items()),
            "data.label_mapping",
            self.label_mapping,
            "must map label values to class values, whole numbers >= 0",
        )
        ratios = list(self.class_ratios)
        ok = not ratios or (min(ratios) >= 0 and sum(ratios) > 0)
        _require(ok, "data.class_ratios", ratios, "must be non-negative weights, not all 0")
        short = "with data.short_scans must weigh background above 0: a short case may hold no foreground"
        _require(not ratios or self.short_scans == 0 or ratios[0] > 0, "data.class_ratios", ratios, short)
        _require(0.0 < self.cache_rate <= 1.0, "data.cache_rate", self.cache_rate, "must be in (0, 1]")
        _require(self.num_workers >= 0, "data.num_workers", self.num_workers, "must be >= 0")


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly augmentation (MONAI transforms); a probability of 0 switches one off.

    3D (SCA-UNet paper): Rand3DElasticd with `elastic_*` (sigma and magnitude in voxels,
    translate in voxels, rotate in radians, scale added to 1), RandShiftIntensityd, and
    RandGaussianNoised. 2D (attention U-Net paper): random shifts (RandAffined translate, in
    pixels) and flips (RandFlipd) along `flip_axes`.
    """

    elastic_prob: float = 0.0
    elastic_sigma: tuple[float, float] = (5.0, 8.0)
    elastic_magnitude: tuple[float, float] = (50.0, 150.0)
    elastic_translate: tuple[float, ...] = (10.0, 10.0, 5.0)
    elastic_rotate: tuple[float, ...] = (0.0872665, 0.0872665, 3.1415927)
    elastic_scale: tuple[float, ...] = (0.1, 0.1, 0.1)
    intensity_shift: float = 0.1
    intensity_shift_prob: float = 0.0
    noise_std: float = 0.1
    noise_prob: float = 0.0
    shift_prob: float = 0.0
    shift_pixels: tuple[float, ...] = (10.0, 10.0)
    flip_prob: float = 0.0
    flip_axes: tuple[int, ...] = (0, 1)

    def __post_init__(self) -> None:
        for key in (f.name for f in fields(self) if f.name != "flip_axes"):
            value = getattr(self, key)
            values = value if isinstance(value, tuple) else (value,)
            _require(_finite_at_least_0(values), f"train.augment.{key}", value, "must be >= 0 and finite")
            if key.endswith("_prob"):
                _require(value <= 1.0, f"train.augment.{key}", value, "must be a probability in [0, 1]")
        for key in ("elastic_sigma", "elastic_magnitude"):
            low_high = list(getattr(self, key))
            rule = "must be a range [low, high], low <= high"
            _require(
                len(low_high) == 2 and low_high[0] <= low_high[1], f"train.augment.{key}", low_high, rule
            )
        axes = list(self.flip_axes)
        _require(_axes(axes, 3), "train.augment.flip_axes", axes, "must be axes 0, 1, 2")


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation: loss, optimizer, schedule, validation and numerics.

    Attributes:
        recipe: the recipe (and variant) this config was resolved from, for the record.
        epochs: passes over the training sampler.
        loss: "dice_ce" (MONAI DiceCELoss, SCA-UNet), "dice_squared" (V-Net's Dice with squared
            denominators, MONAI DiceLoss(squared_pred=True): attention U-Net), "dice" (soft Dice)
            or "dice_ce_regions" (Dice over the KiTS regions plus cross-entropy over the classes).
        ce_weight: the cross-entropy term's weight in "dice_ce(_regions)" (1: the paper's sum).
        optimizer: "adamw", "adam" or "sgd".
        lr: learning rate (SCA-UNet paper: "10e-4", read as 1e-3; its code used 1e-4).
        weight_decay: optimizer weight decay.
        scheduler: "none", "plateau" (ReduceLROnPlateau on validation loss) or "cosine".
        plateau_factor: learning-rate factor on a plateau.
        plateau_patience: validations without improvement before reducing.
        augment: on-the-fly augmentation.
        val_every: validate every this many epochs (the best checkpoint follows validation).
        val_overlap: validation's override of `inference.overlap` (None: that overlap); the
            recipes validate with fewer windows than they predict with.
        val_max_cases: validate on at most this many validation cases (0: all).
        amp: mixed precision on CUDA (always float32 on CPU).
        channels_last: channels-last memory format on CUDA.
        seed: seed of every random number in the run (weights, sampling, augmentation).
        deterministic: ask torch for deterministic algorithms.
        time_limit_minutes: stop after the epoch that passes this training time (0: none).
        freeze_depth: fine-tuning: shallow encoder levels frozen (attention U-Net stage 2).
        keep_epoch_weights: also write each epoch's weights to `epochs/epoch_NNNN.pt` in the run
            folder, for weight averages along the run (`scripts/average_weights.py`).
        absorb_candidates_ml: when training ends, `inference.absorb_islands_ml` of `best.pt` is
            chosen among these on all validation cases (`kidneyseg.train.postprocessing`; empty: not).
    """

    recipe: str = ""
    epochs: int = 300
    loss: str = "dice_ce"
    ce_weight: float = 1.0
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    scheduler: str = "none"
    plateau_factor: float = 0.5
    plateau_patience: int = 10
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    val_every: int = 1
    val_overlap: float | None = None
    val_max_cases: int = 0
    amp: bool = True
    channels_last: bool = True
    seed: int = 0
    deterministic: bool = True
    time_limit_minutes: float = 0.0
    freeze_depth: int = 2
    keep_epoch_weights: bool = False
    absorb_candidates_ml: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0)

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "train.epochs", self.epochs, "must be >= 1")
        check_choice("train.loss", self.loss, LOSSES)
        check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        check_choice("train.scheduler", self.scheduler, SCHEDULERS)
        _require(math.isfinite(self.lr) and self.lr > 0, "train.lr", self.lr, "must be positive and finite")
        for key in ("weight_decay", "ce_weight", "time_limit_minutes"):
            value = getattr(self, key)
            _require(_finite_at_least_0([value]), f"train.{key}", value, "must be >= 0 and finite")
        ml = self.absorb_candidates_ml
        ok = isinstance(ml, list | tuple) and _finite_at_least_0(ml)
        _require(ok, "train.absorb_candidates_ml", ml, "must be a list of volumes (mL), each >= 0 and finite")
        factor = self.plateau_factor
        _require(0.0 < factor < 1.0, "train.plateau_factor", factor, "must be in (0, 1)")
        for key in ("plateau_patience", "val_max_cases", "freeze_depth", "seed"):
            _require(getattr(self, key) >= 0, f"train.{key}", getattr(self, key), "must be >= 0")
        _require(self.val_every >= 1, "train.val_every", self.val_every, "must be >= 1")
        overlap = self.val_overlap
        _require(overlap is None or 0.0 <= overlap < 1.0, "train.val_overlap", overlap, "must be in [0, 1)")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, saved beside every checkpoint and read back by `predict`."""

    labels: str = "kits23"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_choice("labels", self.labels, tuple(LABEL_MAPS))
        if self.data.sampling == "slice2d":  # a 2D network: axes 0 and 1 only
            for key, axes in (
                ("train.augment.flip_axes", self.train.augment.flip_axes),
                ("inference.mirror_axes", self.inference.mirror_axes),
            ):
                _require(_axes(axes, 2), key, list(axes), "must be axes 0 and 1 of a 2D network's slices")

    @property
    def label_map(self) -> LabelMap:
        """The run's classes (`labels`): what the network predicts, channel i = class value i."""
        return LABEL_MAPS[self.labels]
