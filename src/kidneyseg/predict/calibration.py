"""Calibration windows for int8 post-training quantisation (`--precision int8`).

NNCF's post-training quantisation (`kidneyseg.predict.backends.OpenVINONetwork`) runs the network
on a few representative inputs and sets each int8 quantiser's range from the activations it sees.
Here those inputs are windows of phantom CT (`kidneyseg.data.phantom.generate_case`, `small`
phantoms with fixed seeds), preprocessed exactly as the checkpoint's config says and cut to the
network's window shape. Half of the windows are centred on a kidney, tumor or cyst voxel (the
voxels whose labels matter), half on any body voxel (what most windows of a scan hold). The
phantoms and window centres follow from `Calibration` alone, so the same checkpoint is quantised
the same way on every run. So the quantised network is kept in the compile cache
(`kidneyseg.predict.compile_cache`) under the float32 network's key and `CalibrationSet.key`, and a
later run that reads it back makes no windows and does not quantise (`predict_run.json` records
the calibration and its seconds under `environment.calibration`).
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


class CalibrationSet:
    """`calibration`'s windows for one checkpoint's preprocessing and window shape, made on first
    use: a quantised network read from the compile cache needs none.

    Args:
        preprocess_config: the checkpoint's preprocessing (spacing, HU window, crop).
        window_shape: `(channels, *spatial)` of one network input.
        calibration: which phantom windows (None: `CALIBRATION`).
    """

    def __init__(
        self,
        preprocess_config: PreprocessConfig,
        window_shape: Sequence[int],
        calibration: Calibration | None = None,
    ) -> None:
        from importlib.metadata import version

        self.preprocess_config = preprocess_config
        self.window_shape = tuple(int(s) for s in window_shape)
        self.calibration = CALIBRATION if calibration is None else calibration
        self.nncf_version = version("nncf")
        self.windows_seconds: float | None = None
        self._windows: list[np.ndarray] | None = None

    def windows(self) -> list[np.ndarray]:
        """The calibration inputs (`calibration_windows`), made once."""
        import time

        if self._windows is None:
            start = time.perf_counter()
            self._windows = calibration_windows(self.preprocess_config, self.window_shape, self.calibration)
            self.windows_seconds = round(time.perf_counter() - start, 3)
        return self._windows

    def key(self) -> str:
        """A digest of what the windows and NNCF's ranges depend on: the calibration, the
        preprocessing, the window shape, the versions of NNCF and NumPy (its random generator
        draws the window centres), and the source of the phantom generator, the preprocessing
        and the label maps."""
        import hashlib
        from pathlib import Path

        import kidneyseg

        package = Path(kidneyseg.__file__).parent
        digest = hashlib.sha256()
        digest.update(
            repr((asdict(self.calibration), asdict(self.preprocess_config), self.window_shape)).encode()
        )
        digest.update(f"{kidneyseg.__version__} {self.nncf_version} {np.__version__}".encode())
        sources = [Path(__file__), package / "labels.py", package / "config.py"]
        for source in sorted([*sources, *package.glob("data/**/*.py"), *package.glob("preprocess/*.py")]):
            digest.update(source.read_bytes())
        return digest.hexdigest()

    def record(self) -> dict[str, Any]:
        """The run record's entry: the calibration, the window shape, NNCF's version and the
        seconds the windows took (None when every network came quantised from the cache)."""
        return {
            **self.calibration.record(),
            "window_shape": list(self.window_shape),
            "windows_seconds": self.windows_seconds,
            "nncf_version": self.nncf_version,
        }


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
