"""Prediction back to the original CT: sliding windows, inverse resampling; NIfTI, DICOM SEG and
RTSTRUCT out. `segment` does one CT in one call, `run_prediction` a folder.

Importing this package does not import torch; its functions do.
"""

from kidneyseg.predict.api import segment
from kidneyseg.predict.inputs import CaseInput, find_inputs
from kidneyseg.predict.outputs import OutputOptions
from kidneyseg.predict.predictor import Prediction, Predictor, PredictSettings
from kidneyseg.predict.run_record import RunRecord
from kidneyseg.predict.runner import run_prediction

__all__ = [
    "CaseInput",
    "OutputOptions",
    "PredictSettings",
    "Prediction",
    "Predictor",
    "RunRecord",
    "find_inputs",
    "run_prediction",
    "segment",
]
