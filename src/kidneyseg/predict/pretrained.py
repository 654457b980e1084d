"""The bundled pretrained model: what `kidneyseg predict` and `kidneyseg.segment(ct)` use when given
no model.

The weights ship inside the package (`kidneyseg/weights/`), in the same safe checkpoint format as
every run (loaded with `weights_only=True`); nothing is downloaded. Their model card, results
and licence (CC BY-NC-SA 4.0, inherited from the KiTS19 shapes they were trained on) are in
docs/pretrained.md and `kidneyseg/weights/NOTICE.md`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kidneyseg.errors import KidneysegError

BUNDLED = "sca-unet-3d-transfer"
"""Name of the bundled model (its file is `<name>.pt` in `kidneyseg/weights/`)."""
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
NO_MODEL = (
    "no model given: models must be a run folder or checkpoint, or a list of them (an ensemble); "
    "for the bundled pretrained model, which kidneyseg.segment() uses when model is None, pass "
    "kidneyseg.predict.pretrained.default_model()"
)
"""`Predictor`'s refusal of no model. Only Python callers meet it: `kidneyseg predict` without
--model passes the bundled model."""


def bundled_path(name: str = BUNDLED) -> Path:
    """The checkpoint file of a bundled model."""
    return WEIGHTS_DIR / f"{name}.pt"


def default_model() -> Path:
    """The checkpoint used when no model is given: the bundled pretrained model.

    Raises:
        KidneysegError: the package was installed without its weights.
    """
    path = bundled_path()
    if not path.is_file():
        raise KidneysegError(
            "the bundled pretrained model is missing from this installation: reinstall kidneyseg, or "
            "pass model= (Python) or --model (command line) a run folder or checkpoint",
            path,
        )
    return path


def bundled_name(path: str | os.PathLike[str]) -> str | None:
    """The bundled model's name if `path` is its checkpoint, else None."""
    try:
        resolved = Path(path).resolve()
    except OSError:
        return None
    return resolved.stem if resolved.parent == WEIGHTS_DIR and resolved.suffix == ".pt" else None


def export_weights(source: str | os.PathLike[str], dest: str | os.PathLike[str], **inference: Any) -> Path:
    """Write the network of a run (or checkpoint) as a weights-only checkpoint for shipping:
    the config, label map and weights, and from the engine state only its training history (no
    optimizer, scheduler or sampler state, and no paths of the machine it was trained on).
    `inference` changes the config's inference section, e.g. `absorb_islands_ml=1.0` chosen on the
    run's validation cases."""
    from dataclasses import replace

    from kidneyseg.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint

    ckpt = load_checkpoint(resolve_checkpoint(source))
    config = replace(ckpt.config, inference=replace(ckpt.config.inference, **inference))
    history = ("epoch", "best_dice", "best_epoch", "history", "train_seconds", "cpu_seconds")
    kept = {k: ckpt.extra[k] for k in history if k in ckpt.extra}
    return save_checkpoint(dest, model_state=ckpt.model_state, config=config, extra_state=kept)
