"""Lower layers never import upper ones (docs/architecture.md): predicting needs no training code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kidneyseg


def test_predict_does_not_import_train():
    code = (
        "import sys, kidneyseg.predict.predictor, kidneyseg.predict.runner, kidneyseg.predict.api, "
        "kidneyseg.cli.predict; print(sorted(m for m in sys.modules if m.startswith('kidneyseg.train')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_one_module_calls_monai_sliding_window_inference():
    """Validation and prediction share one inferer (issue 18)."""
    package = Path(kidneyseg.__file__).parent
    callers = [
        p.relative_to(package).as_posix()
        for p in package.rglob("*.py")
        if "sliding_window_inference(" in p.read_text()
    ]
    assert callers == ["predict/sliding_window.py"]
