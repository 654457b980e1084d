"""Lower layers never import upper ones (docs/architecture.md): predicting needs no training code."""

from __future__ import annotations

import subprocess
import sys


def test_predict_does_not_import_train():
    code = (
        "import sys, kidneyseg.predict.predictor, kidneyseg.predict.runner, kidneyseg.predict.api, "
        "kidneyseg.cli.predict; print(sorted(m for m in sys.modules if m.startswith('kidneyseg.train')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
