"""The bundled pretrained model: where `kidneyseg.segment(ct)` finds its network when given none.

No model trained on real CT ships yet. When one does, `default_model` returns its checkpoint
(installed with the package, or downloaded once into a cache) and nothing else changes.
"""

from __future__ import annotations

from pathlib import Path

from kidneyseg.errors import KidneysegError


def default_model() -> Path:
    """The checkpoint used when no model is given.

    Raises:
        KidneysegError: no pretrained model is installed (today always), with what to pass instead.
    """
    raise KidneysegError(
        "no bundled pretrained model is installed yet: pass model= (Python) or --model (command line) "
        "a run folder or checkpoint, e.g. one trained with `kidneyseg train`"
    )
