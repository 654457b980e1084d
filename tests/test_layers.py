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


def test_one_module_blends_windows_and_none_calls_monai_for_it():
    """Validation and prediction share one inferer (issue 18), ours: MONAI's is not called."""
    package = Path(kidneyseg.__file__).parent
    texts = {p.relative_to(package).as_posix(): p.read_text() for p in package.rglob("*.py")}
    assert [name for name, text in texts.items() if "blend_windows(" in text] == ["predict/sliding_window.py"]
    assert not [name for name, text in texts.items() if "sliding_window_inference(" in text]


def test_predicting_imports_no_monai():
    """Loading the bundled network and blending its windows needs no MONAI (importing it takes seconds)."""
    code = (
        "import sys, numpy as np, kidneyseg.cli.predict, kidneyseg.predict.runner\n"
        "from kidneyseg.config import InferenceConfig\n"
        "from kidneyseg.predict.predictor import Predictor\n"
        "from kidneyseg.predict.pretrained import bundled_path\n"
        "from kidneyseg.predict.sliding_window import WindowPredictor, sliding_window_scores\n"
        "p = Predictor([bundled_path()])\n"
        "w = WindowPredictor(p.torch_networks, spatial_dims=3)\n"
        "sliding_window_scores(np.zeros((20, 20, 20), np.float32), w, InferenceConfig((16, 16, 16)))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'monai'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
