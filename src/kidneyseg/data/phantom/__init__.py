"""The phantom generator: synthetic abdominal CT with reference labels and a tissue map, in the
KiTS23 layout, so that every stage runs without downloading anything.

Modules: `options` (what a case is made of: grid presets, orientation, shares, checked), then in
the order a case is made: `shapes` (grids, boxes, the canvas painted on, smooth noise), `tissue`
(the tissue ids and which KiTS label each belongs to), `body` (a patient's size and layout),
`anatomy` (the body painted; its bony pelvis in `pelvis`), `kidney` (kidneys, vessels, tumors,
cysts), `context` (what lies around them), `real` (kidneys and lesions taken from real KiTS label
maps), `render` (HU per tissue and phase, the CT image formation), `generate` (cases) and
`dataset` (datasets on disk).
See docs/phantom.md.
"""

from kidneyseg.data.phantom.dataset import case_seeds, generate_dataset
from kidneyseg.data.phantom.generate import PhantomCase, generate_case, generate_case_on
from kidneyseg.data.phantom.options import SIZES, PhantomOptions, SizePreset

__all__ = [
    "SIZES",
    "PhantomCase",
    "PhantomOptions",
    "SizePreset",
    "case_seeds",
    "generate_case",
    "generate_case_on",
    "generate_dataset",
]
