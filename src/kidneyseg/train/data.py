"""Training samples: cached cases → MONAI transforms → patches (3D) or axial slices (2D).

3D (SCA-UNet, Gohil & Lad, KiTS21): each training case is loaded and padded to at least the
patch size (deterministic part, held in a MONAI `SmartCacheDataset`), then
`RandCropByPosNegLabeld` draws patches centred on foreground or anywhere (pos = neg = 1 is
"half and half"), followed by `Rand3DElasticd`, `RandShiftIntensityd` and
`RandGaussianNoised` (with `data.short_scans`, cases cut short first: `ShortScanD`).

2D (attention-gate U-Net, Rathnayaka et al., KiTS19): the candidates are the axial slices of
every training case; `kidneyseg.train.samples.SliceEpochSampler` keeps every slice holding
foreground (or tumor, for stage-2 fine-tuning) and a fresh random share of background-only
slices each epoch. Slices are padded/cropped to the slice size, then randomly shifted
(`RandAffined`) and flipped (`RandFlipd`).

Every random draw derives from `(seed, epoch, rank)`, so an epoch is reproducible on its own:
that is what makes `--resume` exact. The datasets, samplers and loaders that serve these
samples each epoch are in `kidneyseg.train.samples`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai import transforms as mt

from kidneyseg.config import AugmentConfig, DataConfig, PreprocessConfig
from kidneyseg.errors import KidneysegError
from kidneyseg.labels import LabelMap

MAX_SEED = 2**32 - 1
SHORT_SCAN_SLICES = (4, 40)
"""How many axial slices (of the training grid; 12-120 mm at 3 mm) a case cut to a short scan
keeps, drawn uniformly; fewer than a 48-slice patch, so that the slab is always padded."""


def epoch_seed(seed: int, epoch: int, rank: int = 0, stream: int = 0) -> int:
    """A seed for one (run seed, epoch, rank, stream) combination, independent of history."""
    return int(np.random.SeedSequence([seed, epoch, rank, stream]).generate_state(1)[0])


@dataclass(frozen=True)
class CaseRecord:
    """A preprocessed training or validation case and what its labels hold.

    Attributes:
        case_id: the case's id.
        folder: the preprocessed case folder (`image.npy`, `label.npy`, `meta.json`).
        shape: the preprocessed array shape (x, y, z).
        counts: voxels per training class (after `label_mapping`).
        foreground_slices: z indices of axial slices holding any foreground class.
        tumor_slices: z indices of axial slices holding tumor (empty if the map has none).
    """

    case_id: str
    folder: Path
    shape: tuple[int, int, int]
    counts: tuple[int, ...]
    foreground_slices: tuple[int, ...]
    tumor_slices: tuple[int, ...]


def scan_case(case_id: str, folder: Path, label_map: LabelMap, lut: np.ndarray) -> CaseRecord:
    """Check a preprocessed case's labels against the run's label map and index its slices.

    Raises:
        KidneysegError: a label value is neither a class nor mapped to one (names the file).
    """
    from kidneyseg.preprocess import load_cached

    image, label, _ = load_cached(folder)
    if label is None:
        raise KidneysegError("case has no reference segmentation", folder)
    raw = np.bincount(np.asarray(label, dtype=np.uint8).ravel(), minlength=256)
    present = np.nonzero(raw)[0]
    mapped = lut[present]
    label_map.check_values(mapped.tolist(), str(folder / "label.npy"))
    counts = np.zeros(label_map.num_classes, dtype=np.int64)
    np.add.at(counts, mapped, raw[present])
    mapped_label = lut.astype(np.uint8)[label]
    fg = np.nonzero(mapped_label.any(axis=(0, 1)))[0]
    tumor: np.ndarray = np.zeros(0, dtype=np.int64)
    if label_map.has("tumor"):
        tumor = np.nonzero((mapped_label == label_map.value("tumor")).any(axis=(0, 1)))[0]
    return CaseRecord(
        case_id=case_id,
        folder=Path(folder),
        shape=tuple(int(s) for s in image.shape),  # type: ignore[arg-type]
        counts=tuple(int(c) for c in counts),
        foreground_slices=tuple(int(z) for z in fg),
        tumor_slices=tuple(int(z) for z in tumor),
    )


def _open_case(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """The memory-mapped image and label of a cached case, opened once per process (2D training
    reads many slices of each case) and again if the case is re-preprocessed."""
    return _open_case_version(folder, os.stat(Path(folder) / "meta.json").st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _open_case_version(folder: str, version: int) -> tuple[np.ndarray, np.ndarray]:
    from kidneyseg.preprocess import load_cached

    image, label, _ = load_cached(folder)
    if label is None:
        raise KidneysegError("case has no reference segmentation", folder)
    return image, label


class LoadCaseD(mt.MapTransform):
    """Load a preprocessed case (or one axial slice of it) as channel-first tensors.

    Input item: `{"case": folder}` (whole volume) or `{"case": folder, "z": index}` (slice).
    Output: `image` float32 (1, x, y[, z]) and `label` int64 (1, x, y[, z]) with
    `data.label_mapping` applied; with `tissue`, also the phantom's tissue map as float32
    (so that spatial transforms move it with the label, nearest-neighbour).
    """

    def __init__(self, lut: np.ndarray, tissue: bool = False):
        super().__init__(keys=("case",))
        self.lut = lut.astype(np.uint8)
        self.tissue = tissue

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        folder = str(data["case"])
        image, label = _open_case(folder)
        tissue = _open_tissue(folder) if self.tissue else None
        if "z" in data:
            image, label = image[:, :, data["z"]], label[:, :, data["z"]]
            tissue = tissue[:, :, data["z"]] if tissue is not None else None
        out = dict(data)
        out["image"] = torch.from_numpy(np.array(image, dtype=np.float32)[None])
        out["label"] = torch.from_numpy(self.lut[np.asarray(label)][None].astype(np.int64))
        if tissue is not None:
            out["tissue"] = torch.from_numpy(np.array(tissue, dtype=np.float32)[None])
        out["case"] = folder
        return out


def _open_tissue(folder: str) -> np.ndarray:
    from kidneyseg.preprocess.cache import load_tissue

    tissue = load_tissue(folder)
    if tissue is None:
        raise KidneysegError(
            "data.synth_randomize and data.synth_lesions need the phantom's tissue map (tissue.nii.gz "
            "beside imaging.nii.gz; regenerate the phantoms with this version of kidneyseg)",
            folder,
        )
    return tissue


def _augment_3d(aug: AugmentConfig, patch: Sequence[int], keys: tuple[str, ...]) -> list[mt.Transform]:
    out: list[mt.Transform] = []
    if aug.elastic_prob > 0:
        out.append(
            mt.Rand3DElasticd(
                keys=keys,
                sigma_range=aug.elastic_sigma,
                magnitude_range=aug.elastic_magnitude,
                prob=aug.elastic_prob,
                rotate_range=aug.elastic_rotate,
                translate_range=aug.elastic_translate,
                scale_range=aug.elastic_scale,
                spatial_size=tuple(patch),
                mode=("bilinear", *["nearest"] * (len(keys) - 1)),
                padding_mode="zeros",
            )
        )
    return out


def _intensity(aug: AugmentConfig) -> list[mt.Transform]:
    out: list[mt.Transform] = []
    if aug.intensity_shift_prob > 0:
        out.append(
            mt.RandShiftIntensityd(keys="image", offsets=aug.intensity_shift, prob=aug.intensity_shift_prob)
        )
    if aug.noise_prob > 0:
        out.append(mt.RandGaussianNoised(keys="image", std=aug.noise_std, prob=aug.noise_prob))
    return out


def _augment_2d(aug: AugmentConfig, keys: tuple[str, ...]) -> list[mt.Transform]:
    out: list[mt.Transform] = []
    if aug.shift_prob > 0:
        out.append(
            mt.RandAffined(
                keys=keys,
                prob=aug.shift_prob,
                translate_range=aug.shift_pixels,
                mode=("bilinear", *["nearest"] * (len(keys) - 1)),
                padding_mode="zeros",
            )
        )
    if aug.flip_prob > 0:
        out.extend(mt.RandFlipd(keys=keys, prob=aug.flip_prob, spatial_axis=a) for a in aug.flip_axes)
    return out


SHORT_KEY = "short_scan_slices"
SLAB_KEY = "short_scan_slab"


class ShortScanD(mt.RandomizableTransform, mt.MapTransform):
    """With probability `prob`, cut a training case to a short scan of itself, as a scan that
    stops short is: a run of `SHORT_SCAN_SLICES` slices along its last axis (superior-inferior
    in the RAS preprocessed array), drawn anywhere along the case, so that it holds a kidney about
    as often as a slab of that length of this body does.

    A scan shorter than the sliding window is padded evenly with zeros along that axis
    (`kidneyseg.predict.sliding_window.blend_windows`): every window holds the slab between two
    blocks of zeros, and instance normalisation and the network's context see both. The pad to
    the patch that follows (`SpatialPadd`, even) puts the zeros where prediction puts them.
    Where the slab is travels as a mask under `SLAB_KEY` (ones over the case, cut or not), padded,
    cropped and deformed with the image, so that `ShortScanPaddingD`, last in the chain, sets the
    padding to 0 again where the elastic deformation moved it, after the transforms that change
    intensities. Cutting the patch instead (centred on the class its sampler drew) kept a kidney
    in 9 of 10 short patches and taught the network that a short scan holds one
    (docs/pretrained/tried.md, "Short scans"). The number of slices kept (0: not cut) travels
    under `SHORT_KEY`.

    Args:
        prob: probability per case and epoch (`data.short_scans`).
        keys: the arrays to cut (image, label and, for phantoms, tissue).
    """

    def __init__(self, prob: float, keys: tuple[str, ...]):
        mt.RandomizableTransform.__init__(self, prob)
        mt.MapTransform.__init__(self, keys=keys)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        self.randomize(None)
        out = dict(data)
        out[SHORT_KEY] = 0
        out[SLAB_KEY] = torch.ones_like(data["image"])
        depth = data["image"].shape[-1]
        if not self._do_transform or depth <= SHORT_SCAN_SLICES[0]:
            return out
        kept = int(self.R.randint(SHORT_SCAN_SLICES[0], min(SHORT_SCAN_SLICES[1], depth - 1) + 1))
        first = int(self.R.randint(0, depth - kept + 1))
        for key in (*self.keys, SLAB_KEY):
            out[key] = out[key][..., first : first + kept]
        out[SHORT_KEY] = kept
        return out


class ShortScanPaddingD(mt.MapTransform):
    """Zeros (image) and background (label) outside the slab (`SLAB_KEY`) of a patch cut by
    `ShortScanD`: the padding, as prediction pads; drops `SHORT_KEY` and `SLAB_KEY`."""

    def __init__(self) -> None:
        mt.MapTransform.__init__(self, keys=("image", "label"))

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        out = dict(data)
        kept = int(out.pop(SHORT_KEY))
        padding = torch.as_tensor(out.pop(SLAB_KEY)) == 0
        if not kept or not padding.any():
            return out
        for key in self.keys:
            out[key] = data[key].clone()
            out[key][padding] = 0
        return out


def _patch_crop(data: DataConfig, keys: tuple[str, ...]) -> mt.Transform:
    """Foreground/background patch centres (`pos`/`neg`), or per-class ones (`class_ratios`)."""
    if data.class_ratios:
        return mt.RandCropByLabelClassesd(
            keys=keys,
            label_key="label",
            spatial_size=tuple(data.patch_size),
            ratios=list(data.class_ratios),
            num_classes=len(data.class_ratios),
            num_samples=data.samples_per_case,
            allow_smaller=False,
            warn=False,
        )
    return mt.RandCropByPosNegLabeld(
        keys=keys,
        label_key="label",
        spatial_size=tuple(data.patch_size),
        pos=data.pos,
        neg=data.neg,
        num_samples=data.samples_per_case,
        allow_smaller=False,
    )


def train_transforms(
    data: DataConfig, aug: AugmentConfig, lut: np.ndarray, preprocess: PreprocessConfig
) -> mt.Compose:
    """The training transform chain; everything before the first random transform is what
    the (Smart)cache holds. With `data.synth_lesions` or `data.synth_randomize` the phantom's
    tissue map travels with the label through the spatial transforms; `PasteLesionsD` paints
    new lesions into image, label and tissue map, then `SynthesizeD` re-renders the image from
    the tissue map (windowed with the run's preprocessing window) before the intensity transforms."""
    synth = data.synth_randomize > 0 or data.synth_lesions > 0
    keys = ("image", "label", "tissue") if synth else ("image", "label")
    patch = tuple(data.patch_size)
    if data.sampling == "patch3d":
        spatial = (*keys, SLAB_KEY) if data.short_scans > 0 else keys
        chain: list[mt.Transform] = [
            LoadCaseD(lut, tissue=synth),
            *([ShortScanD(data.short_scans, keys)] if data.short_scans > 0 else []),
            mt.SpatialPadd(keys=spatial, spatial_size=patch, mode="constant"),
            _patch_crop(data, spatial),
            *_augment_3d(aug, patch, spatial),
        ]
    else:
        chain = [
            LoadCaseD(lut, tissue=synth),
            mt.ResizeWithPadOrCropd(keys=keys, spatial_size=patch),
            *_augment_2d(aug, keys),
        ]
    if data.synth_lesions > 0:
        from kidneyseg.data.paste import PasteLesionsD

        chain.append(PasteLesionsD(data.synth_lesions, preprocess.spacing, preprocess.hu_window, lut))
    if data.synth_randomize > 0:
        from kidneyseg.data.synth import SynthesizeD

        chain.append(SynthesizeD(preprocess.hu_window, data.synth_randomize))
    elif synth:
        chain.append(mt.DeleteItemsd(keys="tissue"))
    chain.extend(_intensity(aug))
    if data.short_scans > 0:
        chain.append(ShortScanPaddingD())
    chain.append(mt.EnsureTyped(keys=("image", "label"), track_meta=False))
    return mt.Compose(chain)


def load_full_case(record: CaseRecord, lut: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole preprocessed case for validation: image (1, 1, x, y, z) and label (1, 1, x, y, z)."""
    item = LoadCaseD(lut)({"case": str(record.folder)})
    return item["image"][None], item["label"][None]
