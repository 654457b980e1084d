"""What a phantom is made of besides its seed: the grid presets (`SizePreset`, `SIZES`), the
axis order of the written arrays and the shares of chest-abdomen scans and of the real-anatomy
options, held and checked by `PhantomOptions` (see `generate.generate_case`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kidneyseg.errors import KidneysegError

KITS_ORIENTATION = "IPL"
"""Axis order of the real KiTS19/23 files: slices first (towards inferior), then rows (towards
posterior) and columns (towards the patient's left)."""


@dataclass(frozen=True)
class SizePreset:
    """Grid of a phantom size.

    Attributes:
        in_plane: voxels along x and y.
        spacing: (min, max) in-plane spacing in mm; the field of view follows the body width.
        thickness: slice thicknesses (mm) to choose from.
        extent: (min, max) cranio-caudal coverage in mm.
        slices: a fixed number of slices (then the thickness follows from the extent), or 0.
        max_slices: cap on the number of slices (thin-slice cases cover less).
    """

    in_plane: int
    spacing: tuple[float, float]
    thickness: tuple[float, ...]
    extent: tuple[float, float]
    slices: int = 0
    max_slices: int = 10_000


SIZES: dict[str, SizePreset] = {
    "full": SizePreset(
        512, (0.6, 1.0), (0.5, 0.625, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0), (200, 330), 0, 400
    ),
    "small": SizePreset(176, (1.8, 2.8), (2.5, 3.0, 3.5, 4.0, 5.0), (210, 360)),
    "tiny": SizePreset(64, (4.5, 7.0), (), (200, 230), slices=32),
}


def check_orientation(orientation: str) -> str:
    import nibabel as nib

    code = orientation.upper()
    try:
        ornt = nib.orientations.axcodes2ornt(tuple(code))
        if len(code) != 3 or sorted(ornt[:, 0].tolist()) != [0, 1, 2]:
            raise ValueError
    except ValueError:
        raise KidneysegError(
            f"orientation {orientation!r} is not three distinct axis codes "
            f"such as RAS, LPS or {KITS_ORIENTATION}"
        ) from None
    return code


def check_size(size: str) -> SizePreset:
    if size not in SIZES:
        raise KidneysegError(f"unknown phantom size {size!r}; choose one of {', '.join(SIZES)}")
    return SIZES[size]


def check_chest(chest: float) -> float:
    if not 0.0 <= chest <= 1.0:
        raise KidneysegError(f"the chest-abdomen share must be between 0 and 1, got {chest}")
    return chest


def _check_share(share: float, what: str) -> None:
    if not 0.0 <= share <= 1.0:
        raise KidneysegError(f"the share of {what} must be between 0 and 1, got {share}")


def _check_anatomy_share(share: float, anatomy: Path | None, what: str, doing: str) -> None:
    _check_share(share, what)
    if share > 0 and anatomy is None:
        raise KidneysegError(f"{doing} needs an anatomy folder (real label maps)")


@dataclass(frozen=True)
class PhantomOptions:
    """What a phantom is made of besides its seed and grid: `generate_case`'s arguments of the
    same names, checked when made (`orientation` kept upper-case, `anatomy` as a Path).

    Raises:
        KidneysegError: a share outside [0, 1], an anatomy share without an anatomy folder, or an
            unknown orientation.
    """

    anatomy: Path | None = None
    orientation: str = KITS_ORIENTATION
    chest: float = 0.0
    tumors_as_kidney: float = 0.0
    mirror: float = 0.0
    collapsed_bowel: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "orientation", check_orientation(self.orientation))
        if self.anatomy is not None:
            object.__setattr__(self, "anatomy", Path(self.anatomy))
        check_chest(self.chest)
        _check_anatomy_share(
            self.tumors_as_kidney, self.anatomy, "tumors painted as kidney", "painting tumors as kidney"
        )
        _check_anatomy_share(self.mirror, self.anatomy, "mirrored label maps", "mirroring label maps")
        _check_share(self.collapsed_bowel, "collapsed small-bowel loops")
