"""Predict a CT's label map with one checkpoint or an ensemble: preprocess → windows → inverse.

Everything the prediction needs comes from the checkpoint's resolved run config: the
preprocessing (SCA-UNet paper: RAS, 1.62 × 1.62 × 2 mm, body crop, HU [-80, 305] → [0, 1]),
the network, its patch size and the label map. Per-call settings (`PredictSettings`) override
only what inference may change (overlap, blending, batch, mirroring, precision).

Window scores are brought back to the original CT grid by the preprocessing inverse
(`kidneyseg.preprocess.invert_probabilities`: trilinear, chunked over slices so memory stays
bounded) and arg-maxed there, so the label map has exactly the CT's shape and affine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kidneyseg.config import RunConfig
from kidneyseg.errors import KidneysegError, exception_line
from kidneyseg.io.volume import Volume
from kidneyseg.labels import LabelMap
from kidneyseg.predict.roi import Box, Region
from kidneyseg.predict.settings import EVERY_AXIS, Prediction, PredictSettings, model_list
from kidneyseg.predict.sliding_window import WindowStats
from kidneyseg.preprocess import PreprocessMeta

if TYPE_CHECKING:
    import torch

CPU_3D_BATCH = 1
"""Most 3D windows per forward pass on CPU unless asked otherwise: 2 per pass were not faster end to
end, and every window adds ≈ 0.8 GB of activations for the paper's SCA-UNet (docs/prediction.md)."""


class Predictor:
    """Networks loaded from one or several checkpoints (an ensemble, e.g. k folds), ready to predict.

    Args:
        models: a run folder (its best checkpoint) or checkpoint file, or a list of them.
        settings: inference settings overriding the checkpoint's.
        device: "auto", "cpu", "cuda" or "cuda:N", or a `torch.device` (`kidneyseg.device.pick_device`;
            refused in one line where torch sees no CUDA device).

    Attributes:
        backend: the `Backend` the networks run on (`kidneyseg.predict.backends`).
        torch_networks: the PyTorch networks; they still compute the constant windows (see
            `WindowPredictor`) whatever the backend.
        compile_seconds: time spent compiling the networks for the backend (int8: calibrating too).
        backend_fallback: why `auto` fell back to PyTorch although its backend is installed, or None.
        calibration: int8's calibration and its seconds (for the run record), else None.

    Raises:
        KidneysegError: a checkpoint is missing, corrupt or not kidneyseg's, the checkpoints
            of an ensemble disagree on preprocessing, patch size or label map, or the backend
            asked for cannot run here or not at this precision.
    """

    def __init__(
        self,
        models: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        settings: PredictSettings | None = None,
        device: str | torch.device = "cpu",
    ):
        from kidneyseg.checkpoint import (
            build_model_from_checkpoint,
            load_checkpoint,
            resolve_checkpoint,
        )
        from kidneyseg.device import pick_device
        from kidneyseg.predict.backends import check_precision, resolve_backend

        models = model_list(models)
        if settings is not None and not isinstance(settings, PredictSettings):
            raise KidneysegError(
                "settings must be a PredictSettings, e.g. PredictSettings(overlap=0.5), "
                f"not {type(settings).__name__}"
            )
        self.settings = settings or PredictSettings()
        self.checkpoints = [load_checkpoint(resolve_checkpoint(m)) for m in models]
        first = self.checkpoints[0]
        for ckpt in self.checkpoints[1:]:
            for what, a, b in (
                ("preprocessing", first.config.preprocess, ckpt.config.preprocess),
                ("patch size", first.config.inference.roi_size, ckpt.config.inference.roi_size),
                ("label map", first.label_map, ckpt.label_map),
            ):
                if a != b:
                    raise KidneysegError(
                        f"an ensemble needs one {what}, but this checkpoint's differs from {first.path}",
                        ckpt.path,
                    )
        self.device = device = str(pick_device(str(device)))  # a name or a torch.device
        self.backend = resolve_backend(self.settings.backend, device)
        check_precision(self.backend, self.settings.precision, device)
        self.calibration: dict[str, Any] | None = None
        self.torch_networks = [build_model_from_checkpoint(c).to(device) for c in self.checkpoints]
        dims = {int(getattr(n, "spatial_dims", 3)) for n in self.torch_networks}
        if len(dims) != 1:
            raise KidneysegError("an ensemble cannot mix 2D and 3D networks", self.checkpoints[-1].path)
        self.spatial_dims = dims.pop()
        inference = self.settings.resolve(first.config.inference)
        if (
            self.settings.sw_batch_size is None
            and self.spatial_dims == 3
            and not str(device).startswith("cuda")
        ):
            inference = replace(inference, sw_batch_size=min(inference.sw_batch_size, CPU_3D_BATCH))
        self.inference = replace(inference, mirror_axes=self._mirror_axes(inference.mirror_axes))
        self.compiled, self.compile_seconds, self.backend_fallback = self._compile()
        self.roi, self.locator = self._resolve_roi()
        if self.locator is not None:
            self.compile_seconds += self.locator.compile_seconds

    def _mirror_axes(self, axes: tuple[int, ...]) -> tuple[int, ...]:
        """The axes to mirror: `EVERY_AXIS` (--tta) means those the network has (a 2D network
        mirrors only in-plane); an axis named on its own must be one of them."""
        if tuple(axes) == EVERY_AXIS:
            return EVERY_AXIS[: self.spatial_dims]
        outside = [a for a in axes if a >= self.spatial_dims]
        if outside:
            raise KidneysegError(
                f"mirror_axes {outside}: a {self.spatial_dims}D network has spatial axes "
                f"0..{self.spatial_dims - 1} only (tta mirrors every axis it has)",
                self.checkpoints[0].path,
            )
        return tuple(axes)

    def _compile(self) -> tuple[list[Any], float, str | None]:
        """The networks compiled for the backend, the seconds it took, and why `auto` fell back
        to PyTorch (None when it did not)."""
        from kidneyseg.predict.backends import BACKENDS, FALLBACK, NEEDS_CALIBRATION
        from kidneyseg.predict.calibration import CalibrationSet
        from kidneyseg.predict.sliding_window import window_roi

        window = (1, *window_roi(self.inference.roi_size, self.spatial_dims)[: self.spatial_dims])
        precision, start = self.settings.precision, time.perf_counter()
        try:
            calibration = None
            if precision in NEEDS_CALIBRATION:  # int8: windows of phantoms, unless cached quantised
                calibration = CalibrationSet(self.config.preprocess, window)
            batch = self.inference.sw_batch_size
            compiled = [
                self.backend.compile(n, window, precision, calibration, batch) for n in self.torch_networks
            ]
        except Exception as exc:  # the backends' errors have no common base class
            reason = exception_line(exc)
            failed = f"{self.backend.title} could not compile the network"
            unfixable = self.backend.name == FALLBACK or precision not in BACKENDS[FALLBACK].precisions
            if self.settings.backend != "auto" or unfixable:  # PyTorch has no int8
                raise KidneysegError(f"{failed} ({reason})", self.checkpoints[0].path) from exc
            self.backend = BACKENDS[FALLBACK]
            return list(self.torch_networks), 0.0, f"{failed}, using {self.backend.title}: {reason}"
        if calibration is not None:
            quantize_seconds = round(sum(c.quantize_seconds for c in compiled), 3)
            self.calibration = {**calibration.record(), "quantize_seconds": quantize_seconds}
        return compiled, time.perf_counter() - start, None

    def _resolve_roi(self) -> tuple[str, Predictor | None]:
        """The ROI mode, and stage 1's predictor: None when this one is the bundled model alone,
        whose whole-volume scores are then both stage 1 and, inside the kidney boxes, stage 2."""
        from kidneyseg.predict.pretrained import BUNDLED, bundled_name, bundled_path, default_model

        roi = self.settings.roi  # a valid choice or None (`PredictSettings` checks it)
        if roi is None:
            roi = "kidneys" if bundled_path().is_file() else "body"
        alone = len(self.checkpoints) == 1 and bundled_name(self.checkpoints[0].path) == BUNDLED
        if roi == "body" or alone:
            return roi, None
        settings = PredictSettings(backend=self.settings.backend, postprocess=False, roi="body")
        return roi, Predictor([default_model()], settings, device=self.device)

    def compile_cache(self) -> list[str]:
        """Whether each compiled network (the locator's last) came from the compile cache
        (`OpenVINONetwork.cache`; empty with PyTorch)."""
        located = self.locator.compile_cache() if self.locator is not None else []
        return [c.cache for c in self.compiled if hasattr(c, "cache")] + located

    @property
    def config(self) -> RunConfig:
        return self.checkpoints[0].config

    @property
    def label_map(self) -> LabelMap:
        return self.checkpoints[0].label_map

    @property
    def model_paths(self) -> list[Path]:
        return [c.path for c in self.checkpoints]

    def scores(
        self,
        image: np.ndarray,
        progress: bool = False,
        source: str | None = None,
        within: Sequence[Box] | None = None,
    ) -> tuple[torch.Tensor, WindowStats]:
        """Blended window scores `[C, X, Y, Z]` over a preprocessed image (logits for one network,
        probabilities for an ensemble), and the window counts; with `within`, exact inside those
        boxes only (`sliding_window_scores`).

        Raises:
            KidneysegError: the network produced NaN or infinite scores.
        """
        import torch

        from kidneyseg.predict.sliding_window import WindowPredictor, sliding_window_scores

        window_predictor = WindowPredictor(
            [partial(self.backend.run, c) for c in self.compiled],
            spatial_dims=self.spatial_dims,
            mirror_axes=self.inference.mirror_axes,
            precision=self.settings.precision,
            reuse_constant=self.settings.reuse_constant_windows,
            constant_networks=self.torch_networks,
            classes=self.label_map.num_classes,
        )
        scores = sliding_window_scores(image, window_predictor, self.inference, progress, within)
        for compiled in self.compiled:
            self.backend.release(compiled)
        if not torch.isfinite(scores).all():
            raise KidneysegError(
                "the network produced NaN or infinite scores; the checkpoint or the input is broken "
                f"(checkpoint {self.checkpoints[0].path})",
                source,
            )
        return scores, window_predictor.stats

    def _locate(self, ct: Volume, image: np.ndarray, meta: PreprocessMeta, progress: bool):
        """Stage 1: the kidney boxes, its window counts, and (when this predictor is its own
        locator) the whole-volume scores."""
        import torch

        from kidneyseg.predict.roi import locate
        from kidneyseg.preprocess import preprocess

        if self.locator is None:
            scores, stats = self.scores(image, progress, ct.source)
            labels = torch.argmax(scores, dim=0).numpy()
            return locate(labels, meta), stats, scores
        pre = preprocess(ct, self.locator.config.preprocess)
        scores, stats = self.locator.scores(pre.image, source=ct.source)
        return locate(torch.argmax(scores, dim=0).numpy(), pre.meta), stats, None

    def _kidney_parts(
        self, ct: Volume, image: np.ndarray, meta: PreprocessMeta, progress: bool, seconds: dict[str, float]
    ) -> tuple[list[tuple[Region, torch.Tensor]], WindowStats, torch.Tensor | None, dict[str, Any]]:
        """`--roi kidneys`: the scores of each kidney region (none when stage 1 fell back), the
        window counts, the whole-volume scores when this predictor is its own locator, and the
        ROI record; the stages' times go into `seconds`."""
        from kidneyseg.predict.roi import regions, slices
        from kidneyseg.predict.sliding_window import window_overlaps, window_roi

        t = time.perf_counter()
        located, stats, scores = self._locate(ct, image, meta, progress)
        seconds["locate"] = time.perf_counter() - t
        roi_record = {
            "mode": "kidneys",
            "locator": "this model" if self.locator is None else str(self.locator.model_paths[0]),
            "locator_windows": stats.counts(),
            "margin_mm": self.settings.roi_margin_mm,
            **located.record(),
        }
        if self.locator is not None:
            stats = WindowStats()
        parts = []
        if located.fallback is None:
            window = window_roi(self.inference.roi_size, self.spatial_dims)
            overlaps = window_overlaps(self.inference.overlap, self.spatial_dims)
            found = regions(located, meta, window, self.settings.roi_margin_mm, overlaps)
            roi_record["regions"] = [
                {"core": r.core, "context": r.context, "whole_volume": r.whole_volume} for r in found
            ]
            t = time.perf_counter()
            edge_cores = [r.core for r in found if r.whole_volume]
            whole = scores
            if whole is None and edge_cores:  # one pass of the whole-volume windows for them all
                whole, edge_stats = self.scores(image, progress, ct.source, within=edge_cores)
                stats.add(edge_stats)
            for region in found:
                if region.whole_volume or scores is not None:  # `whole` holds this region's scores
                    parts.append((region, whole[(slice(None), *slices(region.core))]))
                else:
                    part, region_stats = self.scores(image[slices(region.context)], progress, ct.source)
                    stats.add(region_stats)
                    parts.append((region, part[(slice(None), *region.core_in_context)]))
            seconds["windows"] = time.perf_counter() - t
        return parts, stats, scores, roi_record

    def predict(self, ct: Volume | str | os.PathLike[str] | Any, progress: bool = False) -> Prediction:
        """Segment `ct` (Hounsfield units, any orientation); labels come back on its grid. A
        `Volume` is taken as it is; a CT file or DICOM folder or a nibabel image is read and
        checked as by `segment()`, which says what it cannot take in a `KidneysegError`."""
        from kidneyseg.predict.postprocess import post_process
        from kidneyseg.predict.roi import restrict
        from kidneyseg.predict.votes import Votes, foreground_voxels
        from kidneyseg.preprocess import invert_probabilities, preprocess

        if not isinstance(ct, Volume):
            from kidneyseg.predict.api import checked_volume

            ct = checked_volume(ct, self, caller="Predictor.predict()")
        seconds: dict[str, float] = {}
        t = time.perf_counter()
        ct = Volume(_for_torch(ct.array), ct.affine, ct.source, ct.dicom_files)
        pre = preprocess(ct, self.config.preprocess)
        image, meta = pre.image, pre.meta
        del pre
        seconds["preprocess"] = time.perf_counter() - t

        whole: Box = tuple((0, n) for n in image.shape)  # type: ignore[assignment]
        parts: list[tuple[Region, torch.Tensor]] = []
        roi_record: dict[str, Any] | None = None
        stats = WindowStats()
        scores = None
        if self.roi == "kidneys":
            parts, stats, scores, roi_record = self._kidney_parts(ct, image, meta, progress, seconds)
        if not parts:  # the whole body crop: --roi body, or stage 1's fallback
            t = time.perf_counter()
            if scores is None:
                scores, stats = self.scores(image, progress, ct.source)
            parts = [(Region(whole, whole), scores)]
            seconds["windows"] = time.perf_counter() - t
        del image, scores

        ensemble = len(self.torch_networks) > 1
        votes = Votes(
            *foreground_voxels([([lo for lo, _ in r.core], p) for r, p in parts], probabilities=ensemble),
            affine=np.asarray(meta.affine),
        )
        probabilities = None
        if self.settings.probabilities:
            probabilities = _probabilities(parts, (self.label_map.num_classes, *meta.shape), ensemble)

        t = time.perf_counter()
        labels = None
        for region, part in parts:
            inverted = invert_probabilities(
                part, restrict(meta, region.core), chunk_slices=self.settings.chunk_slices
            )
            labels = inverted if labels is None else np.maximum(labels, inverted, out=labels)
        del parts
        seconds["inverse"] = time.perf_counter() - t
        ruled_out: list[dict[str, Any]] = []
        absorbed: list[dict[str, Any]] = []
        if self.settings.postprocess:
            t = time.perf_counter()
            air = self.config.preprocess.body_threshold_hu if self.settings.anatomy_check else None
            labels, ruled_out, absorbed = post_process(
                labels, ct, self.label_map, air, self.inference.absorb_islands_ml
            )
            seconds["postprocess"] = time.perf_counter() - t
        return Prediction(
            labels=Volume(labels, ct.affine, ct.source, ct.dicom_files),
            probabilities=probabilities,
            probabilities_affine=np.asarray(meta.affine) if probabilities is not None else None,
            seconds=seconds,
            windows=stats.counts(),
            confidence=votes.mean_top(labels, ct.affine),
            votes=votes,
            roi=roi_record,
            ruled_out=tuple(ruled_out),
            absorbed=tuple(absorbed),
        )


def _probabilities(parts: list[tuple[Region, torch.Tensor]], shape: tuple[int, ...], ensemble: bool):
    """Class probabilities `shape` ([C, X, Y, Z]) on the network grid from the regions' scores
    (probabilities for an ensemble, else logits); background wherever stage 2 did not run."""
    import torch

    from kidneyseg.predict.roi import slices

    probabilities = np.zeros(shape, dtype=np.float32)
    probabilities[0] = 1.0
    for region, part in parts:
        probs = part if ensemble else torch.softmax(part, dim=0)
        probabilities[(slice(None), *slices(region.core))] = probs.numpy()
    return probabilities


def _for_torch(array: np.ndarray) -> np.ndarray:
    """`array` as torch takes it: a flipped view (in-memory volumes only) copied, big-endian data
    (a NIfTI file's choice) in native byte order."""
    if any(stride < 0 for stride in array.strides):
        array = np.ascontiguousarray(array)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array
