"""kidneyseg: kidney, renal tumor and renal cyst segmentation in abdominal CT."""

__version__ = "0.1.0"
