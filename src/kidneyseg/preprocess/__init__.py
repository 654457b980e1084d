"""Invertible preprocessing (SCA-UNet paper): orientation, resampling, body crop, HU window."""

from kidneyseg.preprocess.cache import config_hash, load_cached, preprocess_dataset, read_cache_meta
from kidneyseg.preprocess.pipeline import (
    Preprocessed,
    PreprocessMeta,
    invert_labels,
    invert_probabilities,
    preprocess,
)

__all__ = [
    "PreprocessMeta",
    "Preprocessed",
    "config_hash",
    "invert_labels",
    "invert_probabilities",
    "load_cached",
    "preprocess",
    "preprocess_dataset",
    "read_cache_meta",
]
