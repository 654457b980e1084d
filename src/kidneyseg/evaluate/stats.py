"""Statistics for comparing models on the same cases: seeded bootstrap confidence intervals of
the mean, and paired tests (Wilcoxon signed-rank; paired bootstrap of the mean difference).

Cases where a metric is undefined (NaN: the class is absent from prediction and reference)
are left out of that metric's mean, as in the per-case tables.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np

N_BOOTSTRAP = 10_000
CONFIDENCE = 0.95


@contextmanager
def _nan_means_allowed() -> Iterator[None]:
    # A resample may hold no defined value for a class: its mean is NaN, which is the answer.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@dataclass(frozen=True)
class Interval:
    """A mean over cases with its percentile-bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in asdict(self).items()}


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - confidence) / 2.0 * 100.0
    return np.nanpercentile(samples, alpha, axis=0), np.nanpercentile(samples, 100.0 - alpha, axis=0)


def bootstrap_means(
    values: np.ndarray, n_boot: int = N_BOOTSTRAP, confidence: float = CONFIDENCE, seed: int = 0
) -> list[Interval]:
    """Bootstrap CIs of the column means of a (cases × columns) array, resampling cases jointly.

    Args:
        values: per-case values, NaN where undefined.
        n_boot: number of bootstrap resamples.
        confidence: coverage of the interval (0.95 = 2.5th to 97.5th percentile).
        seed: seed of the resampling, so that tables are reproducible.

    Returns:
        One `Interval` per column; low and high are NaN with fewer than two defined values.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    n_cases = values.shape[0]
    index = np.random.default_rng(seed).integers(0, n_cases, size=(n_boot, n_cases))
    with _nan_means_allowed():
        samples = np.nanmean(values[index], axis=1)
        low, high = _percentiles(samples, confidence)
        means = np.nanmean(values, axis=0)
    counts = (~np.isnan(values)).sum(axis=0)
    return [
        Interval(float(m), float(lo) if c > 1 else np.nan, float(hi) if c > 1 else np.nan, int(c))
        for m, lo, hi, c in zip(means, low, high, counts, strict=True)
    ]


def bootstrap_mean_of_means(
    values: np.ndarray, n_boot: int = N_BOOTSTRAP, confidence: float = CONFIDENCE, seed: int = 0
) -> Interval:
    """Bootstrap CI of the average of the column means (the papers' "Mean" over classes),
    resampling cases jointly; columns with no defined value are left out.

    Every resample averages the same columns as the mean itself: a resample that draws no
    defined value of one of them is left out of the percentiles, as it is for that column's own
    CI (was: averaged over the other columns, a different statistic).
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[:, ~np.all(np.isnan(values), axis=0)]
    n_cases = values.shape[0]
    index = np.random.default_rng(seed).integers(0, n_cases, size=(n_boot, n_cases))
    with _nan_means_allowed():
        samples = np.mean(np.nanmean(values[index], axis=1), axis=1)
        low, high = _percentiles(samples[:, None], confidence)
        mean = np.mean(np.nanmean(values, axis=0))
    if n_cases < 2:
        return Interval(float(mean), np.nan, np.nan, int(n_cases))
    return Interval(float(mean), float(low[0]), float(high[0]), int(n_cases))


@dataclass(frozen=True)
class PairedTest:
    """Model A minus model B on the cases where both are defined."""

    n: int
    mean_difference: float
    low: float
    high: float
    bootstrap_p: float
    wilcoxon_p: float

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in asdict(self).items()}


def paired_test(
    a: np.ndarray, b: np.ndarray, n_boot: int = N_BOOTSTRAP, confidence: float = CONFIDENCE, seed: int = 0
) -> PairedTest:
    """Compare two models case by case.

    - Wilcoxon signed-rank test (two-sided, `scipy.stats.wilcoxon`, zero differences dropped
      as in Wilcoxon's original test); p = 1 when every difference is zero.
    - Paired bootstrap of the mean difference: CI by percentiles, and the two-sided p-value
      2·min(P(Δ* ≤ 0), P(Δ* ≥ 0)) capped at 1.

    Args:
        a: per-case values of model A (NaN where undefined).
        b: per-case values of model B for the same cases, in the same order.
    """
    from scipy.stats import wilcoxon

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need one shape, got {a.shape} and {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    diff = a[keep] - b[keep]
    n = int(diff.size)
    if n == 0:
        return PairedTest(0, np.nan, np.nan, np.nan, np.nan, np.nan)
    mean = float(diff.mean())
    if n < 2:
        return PairedTest(n, mean, np.nan, np.nan, np.nan, np.nan)
    index = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    samples = diff[index].mean(axis=1)
    low, high = _percentiles(samples[:, None], confidence)
    boot_p = min(1.0, 2.0 * min(float((samples <= 0).mean()), float((samples >= 0).mean())))
    if np.all(diff == 0):
        wilcoxon_p = 1.0
    else:
        wilcoxon_p = float(wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)
    return PairedTest(n, mean, float(low[0]), float(high[0]), boot_p, wilcoxon_p)
