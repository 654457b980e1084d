"""Invertible preprocessing (SCA-UNet paper): orientation, resampling, body crop, HU window."""

from kidneyseg.preprocess.pipeline import (
    Preprocessed,
    PreprocessMeta,
    invert_labels,
    invert_probabilities,
    preprocess,
)

__all__ = ["PreprocessMeta", "Preprocessed", "invert_labels", "invert_probabilities", "preprocess"]
