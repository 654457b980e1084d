"""Label maps and KiTS evaluation regions: the single source of truth, pure data (no torch).

KiTS19 annotates kidney (1) and tumor (2); KiTS21 and KiTS23 add cyst (3). The KiTS21/23
challenges evaluate hierarchical evaluation classes (HECs): kidney + masses, masses, tumor,
each with a Surface Dice tolerance in mm (values from the official `kits21`/`kits23`
evaluation code).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kidneyseg.errors import KidneysegError


@dataclass(frozen=True)
class LabelClass:
    """One class of a label map: its voxel value, name and display color (RGB 0-255)."""

    value: int
    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class LabelMap:
    """An ordered set of classes whose values are 0..n-1 (0 = background)."""

    name: str
    classes: tuple[LabelClass, ...]

    def __post_init__(self) -> None:
        values = [c.value for c in self.classes]
        if values != list(range(len(values))):
            raise ValueError(f"label map {self.name!r}: values must be 0..n-1, got {values}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def foreground(self) -> tuple[LabelClass, ...]:
        return self.classes[1:]

    def value(self, name: str) -> int:
        """The voxel value of the class called `name`."""
        for c in self.classes:
            if c.name == name:
                return c.value
        raise KeyError(f"label map {self.name!r} has no class {name!r}; it has {self.names}")

    def has(self, name: str) -> bool:
        return name in self.names

    def unknown_values(self, values: Iterable[int]) -> list[int]:
        """The values in `values` that are not classes of this map, sorted."""
        return sorted({int(v) for v in values} - set(range(self.num_classes)))

    def check_values(self, values: Iterable[int], path: str | None = None) -> None:
        """Raise a `KidneysegError` naming `path` if any value is not a class of this map."""
        unknown = self.unknown_values(values)
        if unknown:
            shown = (
                str(unknown)
                if len(unknown) <= 10
                else f"[{', '.join(map(str, unknown[:10]))}, ...] ({len(unknown)} values)"
            )
            raise KidneysegError(
                f"label values {shown} are not in the {self.name} label map "
                f"({', '.join(f'{c.value}={c.name}' for c in self.classes)})",
                path,
            )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "classes": [{"value": c.value, "name": c.name, "color": list(c.color)} for c in self.classes],
        }

    @classmethod
    def from_dict(cls, data: dict) -> LabelMap:
        return cls(
            name=str(data["name"]),
            classes=tuple(
                LabelClass(int(c["value"]), str(c["name"]), tuple(int(x) for x in c["color"]))
                for c in data["classes"]
            ),
        )


BACKGROUND = LabelClass(0, "background", (0, 0, 0))
KIDNEY = LabelClass(1, "kidney", (60, 180, 75))
TUMOR = LabelClass(2, "tumor", (230, 25, 75))
CYST = LabelClass(3, "cyst", (255, 225, 25))

KITS19 = LabelMap("kits19", (BACKGROUND, KIDNEY, TUMOR))
KITS23 = LabelMap("kits23", (BACKGROUND, KIDNEY, TUMOR, CYST))
LABEL_MAPS = {m.name: m for m in (KITS19, KITS23)}


SIDES = ("right", "left")
"""The patient's sides, in the order `split_sides` numbers them."""


def split_sides(label_map: LabelMap) -> LabelMap:
    """`label_map` with every foreground class split into its right and left part, named as
    TotalSegmentator names them: kidney_right = 1, kidney_left = 2, tumor_right = 3, ...
    Class value v on side s (0 right, 1 left) becomes 2v - 1 + s; the left part is drawn darker."""
    classes = [label_map.classes[0]]
    for cls in label_map.foreground:
        for side in SIDES:
            color = cls.color if side == "right" else tuple(int(c * 0.7) for c in cls.color)
            classes.append(LabelClass(len(classes), f"{cls.name}_{side}", color))  # type: ignore[arg-type]
    return LabelMap(f"{label_map.name}-sides", tuple(classes))


def get_label_map(name: str) -> LabelMap:
    """The registered label map called `name` (`kits19` or `kits23`)."""
    try:
        return LABEL_MAPS[name]
    except KeyError:
        raise KidneysegError(f"unknown label map {name!r}; choose one of {sorted(LABEL_MAPS)}") from None


@dataclass(frozen=True)
class Region:
    """A KiTS hierarchical evaluation class: the union of `values`, with its Surface Dice
    tolerance in mm."""

    name: str
    values: tuple[int, ...]
    tolerance_mm: float


KITS_REGIONS = (
    Region("kidney_and_masses", (1, 2, 3), 1.0331),
    Region("masses", (2, 3), 1.1329),
    Region("tumor", (2,), 1.1498),
)
"""KiTS21/23 HECs with the official Surface Dice tolerances."""

KITS23_REGION_ORDER = (1, 3, 2)
"""nnU-Net's `regions_class_order` for KiTS23: paint kidney, then masses as cyst, then tumor."""
