"""Prediction back to the original CT: sliding windows, inverse resampling, NIfTI/DICOM SEG out.

Importing this package does not import torch; its functions do.
"""

from kidneyseg.predict.predictor import Prediction, Predictor, PredictSettings
from kidneyseg.predict.runner import CaseInput, OutputOptions, RunRecord, find_inputs, run_prediction

__all__ = [
    "CaseInput",
    "OutputOptions",
    "PredictSettings",
    "Prediction",
    "Predictor",
    "RunRecord",
    "find_inputs",
    "run_prediction",
]
