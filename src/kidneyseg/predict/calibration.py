"""Calibration windows for int8 post-training quantisation (`--precision int8`).

NNCF's post-training quantisation (`kidneyseg.predict.backends.OpenVINONetwork`) runs the network
on a few representative inputs and sets each int8 quantiser's range from the activations it sees.
Here those inputs are windows of phantom CT (`kidneyseg.data.phantom.generate_case`, `small`
phantoms with fixed seeds), preprocessed exactly as the checkpoint's config says and cut to the
network's window shape. Half of the windows are centred on a kidney, tumor or cyst voxel (the
voxels whose labels matter), half on any body voxel (what most windows of a scan hold). The
phantoms and window centres follow from `Calibration` alone, so the same checkpoint is quantised
the same way on every run; nothing is cached between runs (`predict_run.json` records the
calibration and its seconds under `environment.calibration`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from kidneyseg.config import PreprocessConfig


@dataclass(frozen=True)
class Calibration:
    """Which phantom windows calibrate the int8 network.

    Attributes:
        windows: how many windows (NNCF's `subset_size`).
        phantoms: how many `small` phantoms they are cut from (seeds `seed`, `seed + 1`, ...).
        seed: the first phantom's seed, and the seed of the window centres.
        lesion_share: share of windows centred on a kidney, tumor or cyst voxel (the rest: any
            body voxel).
        size: the phantoms' size preset.
    """

    windows: int = 16
    phantoms: int = 4
    seed: int = 0
    lesion_share: float = 0.5
    size: str = "small"

    def record(self) -> dict[str, Any]:
        """For the run record."""
        return {**asdict(self), "source": "kidneyseg phantoms"}


CALIBRATION = Calibration()
"""The calibration `--precision int8` uses (docs/prediction.md: its agreement with float32)."""


def calibrate(
    preprocess_config: PreprocessConfig, window_shape: Sequence[int]
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """`CALIBRATION`'s windows for a checkpoint, and their run-record entry (with the seconds they
    took and NNCF's version; the backend adds `quantize_seconds`)."""
    import time
    from importlib.metadata import version

    start = time.perf_counter()
    windows = calibration_windows(preprocess_config, window_shape, CALIBRATION)
    record = {
        **CALIBRATION.record(),
        "window_shape": list(window_shape),
        "windows_seconds": round(time.perf_counter() - start, 3),
        "nncf_version": version("nncf"),
    }
    return windows, record


def _crop(image: np.ndarray, centre: Sequence[int], roi: Sequence[int]) -> np.ndarray:
    """The `roi`-sized box of `image` centred on `centre`, zero-padded where it leaves the image
    (as the sliding windows pad: 0 is the bottom of the HU window)."""
    padded = np.pad(image, [(r, r) for r in roi])
    starts = [int(c) + r - r // 2 for c, r in zip(centre, roi, strict=True)]
    return padded[tuple(slice(s, s + r) for s, r in zip(starts, roi, strict=True))]


def calibration_windows(
    preprocess_config: PreprocessConfig, window_shape: Sequence[int], calibration: Calibration = CALIBRATION
) -> list[np.ndarray]:
    """The calibration inputs: `calibration.windows` float32 arrays `[1, *window_shape]`.

    Args:
        preprocess_config: the checkpoint's preprocessing (spacing, HU window, crop).
        window_shape: `(channels, *spatial)` of one network input: `(1, x, y, z)` for a 3D network,
            `(1, x, y)` for a 2D one (then the windows are axial slices).
    """
    from kidneyseg.data.phantom import generate_case
    from kidneyseg.preprocess import preprocess

    spatial = tuple(int(s) for s in window_shape[1:])
    roi = spatial if len(spatial) == 3 else (*spatial, 1)
    rng = np.random.default_rng(calibration.seed)
    cases = []
    for seed in range(calibration.seed, calibration.seed + calibration.phantoms):
        case = generate_case(seed, size=calibration.size)
        pre = preprocess(case.ct, preprocess_config, labels=case.labels)
        cases.append((pre.image, np.argwhere(pre.labels > 0), np.argwhere(pre.image > 0)))
    lesion_windows = round(calibration.windows * calibration.lesion_share)
    windows = []
    for i in range(calibration.windows):
        image, foreground, body = cases[i % len(cases)]
        centres = foreground if i < lesion_windows and len(foreground) else body
        window = _crop(image, centres[rng.integers(len(centres))], roi)
        windows.append(np.ascontiguousarray(window.reshape(1, 1, *spatial), dtype=np.float32))
    return windows
