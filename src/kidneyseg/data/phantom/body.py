"""One synthetic patient's size and layout (`Body`, drawn by `sample_body`), and the tissue sets
that the painters of the body, the kidneys and their context share.

Positions follow normal adult anatomy at the level of the renal hila in patient coordinates (mm,
RAS+, z = 0 at the level of the hila); `kidneyseg.data.phantom.anatomy` paints the body.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kidneyseg.data.phantom.tissue import Tissue, tissue_set

SOFT_CAVITY = tissue_set(Tissue.VISCERAL_FAT)
ORGAN_OVER = tissue_set(
    Tissue.VISCERAL_FAT,
    Tissue.BOWEL_WALL,
    Tissue.BOWEL_GAS,
    Tissue.BOWEL_FLUID,
    Tissue.BOWEL_CONTRAST,
    Tissue.BOWEL_FECES,
)
BOWEL_CONTENTS = (Tissue.BOWEL_FLUID, Tissue.BOWEL_CONTRAST, Tissue.BOWEL_GAS, Tissue.BOWEL_FECES)


@dataclass(frozen=True)
class Body:
    """Size and layout of one synthetic patient (mm, patient coordinates).

    Attributes:
        a: lateral semi-axis of the body outline.
        b_ant, b_post: anterior and posterior semi-axes (the back is flatter).
        power: superellipse exponent of the outline (2 = ellipse, larger = boxier).
        skin, fat, muscle: thickness of skin, subcutaneous fat and abdominal wall muscle.
        spine_y: y of the vertebral bodies' centre; the spine is at x = 0.
        rib_z: z of the 12th rib's posterior end.
        disc_phase: z of the L1/L2 disc's lower edge (0-36 mm above the hila; discs every 36 mm).
    """

    a: float
    b_ant: float
    b_post: float
    power: float
    skin: float
    fat: float
    muscle: float
    spine_y: float
    rib_z: float
    disc_phase: float
    scale_phase: float

    @property
    def mean_radius(self) -> float:
        return (self.a + 0.5 * (self.b_ant + self.b_post)) / 2

    @property
    def width(self) -> float:
        return 2 * self.a

    @property
    def cavity(self) -> tuple[float, float, float]:
        """Semi-axes (lateral, anterior, posterior) of the peritoneal cavity outline."""
        inset = self.skin + self.fat + self.muscle
        return self.a - inset, self.b_ant - inset, self.b_post - inset

    @property
    def aorta(self) -> tuple[float, float, float]:
        """(x, y, radius) of the abdominal aorta."""
        r = 11.0
        return -12.0, self.spine_y + 17 + r + 2, r

    @property
    def ivc(self) -> tuple[float, float]:
        return 24.0, self.spine_y + 24

    @property
    def crest_z(self) -> float:
        """z of the iliac crests' top: the middle of the L4/L5 disc, three discs below L1/L2."""
        return self.disc_phase - 3 * 36.0 + 4

    @property
    def sacrum_z(self) -> float:
        """z of the sacrum's top (S1's upper endplate): the lower edge of the L5/S1 disc, four discs
        below the L1/L2 disc; the lumbar column ends there."""
        return self.disc_phase - 4 * 36.0


def sample_body(rng: np.random.Generator, width: float | None = None) -> Body:
    """A random adult body; `width` (mm) fixes the lateral size when given."""
    a = width / 2 if width is not None else rng.uniform(140, 185)
    size = (a - 140) / 45
    fat = rng.uniform(8, 18) + size * rng.uniform(5, 25)
    b_post = rng.uniform(0.62, 0.72) * a
    return Body(
        a=a,
        b_ant=rng.uniform(0.68, 0.85) * a,
        b_post=b_post,
        power=rng.uniform(2.1, 2.6),
        skin=2.0,
        fat=fat,
        muscle=rng.uniform(8, 13),
        spine_y=-b_post + fat + rng.uniform(62, 75),
        rib_z=rng.uniform(25, 45),
        disc_phase=rng.uniform(0, 36),
        scale_phase=rng.uniform(0, 2 * np.pi),
    )


def body_scale(body: Body, z: np.ndarray) -> np.ndarray:
    """Slow cranio-caudal change of the body outline (1 at the hila)."""
    return (
        1 + 0.035 * np.sin(2 * np.pi * z / 420 + body.scale_phase) - 0.035 * np.sin(body.scale_phase)
    ).astype(np.float32)
