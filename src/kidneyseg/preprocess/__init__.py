"""Invertible preprocessing (SCA-UNet paper): orientation, resampling, body crop, HU window."""

from kidneyseg.preprocess.cache import config_hash, load_cached, preprocess_dataset, read_cache_meta
from kidneyseg.preprocess.inverse import invert_labels, invert_probabilities
from kidneyseg.preprocess.pipeline import Preprocessed, PreprocessMeta, preprocess

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
