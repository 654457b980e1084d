"""kidneyseg: kidney, renal tumor and renal cyst segmentation in abdominal CT.

`kidneyseg.segment(ct, model=...)` segments one CT (see `kidneyseg.predict.api.segment`);
importing the package loads neither torch nor MONAI.
"""

import importlib
import importlib.util
from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "segment"]


def __getattr__(name: str) -> Any:
    if name == "segment":
        from kidneyseg.predict.api import segment

        return segment
    # a subpackage or module on first use: `kidneyseg.predict.Predictor` without `import kidneyseg.predict`
    if name.isidentifier() and not name.startswith("_"):
        spec = importlib.util.find_spec(f"{__name__}.{name}")
        if spec is not None and spec.origin is not None:  # not a folder of data (`weights`)
            return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'kidneyseg' has no attribute {name!r}")
