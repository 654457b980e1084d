"""The phantom's tissue map: the tissue ids the anatomy modules paint into a `uint8` map, the
tissues that make up each KiTS label, and lookup tables over tissue ids. How a tissue looks in CT
is `kidneyseg.data.phantom.render`.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from kidneyseg.labels import KITS23


class Tissue(IntEnum):
    """Tissue ids painted by the anatomy modules (values of the `uint8` tissue map)."""

    AIR = 0
    SKIN = 1
    SUBCUTANEOUS_FAT = 2
    MUSCLE = 3
    VISCERAL_FAT = 4
    LIVER = 5
    HEPATIC_VESSEL = 6
    SPLEEN = 7
    PANCREAS = 8
    GALLBLADDER = 9
    BOWEL_WALL = 10
    BOWEL_GAS = 11
    BOWEL_FLUID = 12
    BOWEL_CONTRAST = 13
    BOWEL_FECES = 14
    AORTA = 15
    IVC = 16
    BONE_CORTICAL = 17
    BONE_CANCELLOUS = 18
    DISC = 19
    SPINAL_CANAL = 20
    KIDNEY_CORTEX = 21
    KIDNEY_MEDULLA = 22
    RENAL_PELVIS = 23
    SINUS_FAT = 24
    TUMOR = 25
    TUMOR_NECROSIS = 26
    CYST = 27
    OUTSIDE_FOV = 28
    LUNG = 29
    HEART = 30
    TABLE = 31
    TUMOR_CALCIFICATION = 32
    CYST_SEPTUM = 33
    ADRENAL = 34
    MYOCARDIUM = 35


N_TISSUES = len(Tissue)
KIDNEY_TISSUES = (Tissue.KIDNEY_CORTEX, Tissue.KIDNEY_MEDULLA, Tissue.RENAL_PELVIS)
"""Labelled kidney (KiTS: "all parenchyma and the non-fat tissue within the hilum")."""
TUMOR_TISSUES = (Tissue.TUMOR, Tissue.TUMOR_NECROSIS, Tissue.TUMOR_CALCIFICATION)
CYST_TISSUES = (Tissue.CYST, Tissue.CYST_SEPTUM)
HEART_TISSUES = (Tissue.HEART, Tissue.MYOCARDIUM)
"""The heart: the blood in its chambers (`Tissue.HEART`) and their walls."""


def label_lut() -> np.ndarray:
    """Tissue id → KiTS23 label (0 background, 1 kidney, 2 tumor, 3 cyst)."""
    lut = np.zeros(N_TISSUES, dtype=np.uint8)
    for name, tissues in (("kidney", KIDNEY_TISSUES), ("tumor", TUMOR_TISSUES), ("cyst", CYST_TISSUES)):
        lut[list(tissues)] = KITS23.value(name)
    return lut


def tissue_ids(values) -> np.ndarray:
    """Tissue ids (uint8) of a tissue map that travelled through training's transforms as floats
    (nearest-neighbour, so whole numbers up to rounding), kept within the known ids."""
    return np.clip(np.rint(np.asarray(values, dtype=np.float32)), 0, N_TISSUES - 1).astype(np.uint8)


def tissue_set(*tissues: Tissue) -> np.ndarray:
    """A boolean lookup table over tissue ids, true for `tissues`."""
    lut = np.zeros(N_TISSUES, dtype=bool)
    lut[list(tissues)] = True
    return lut
