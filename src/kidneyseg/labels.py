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


SIDES_SUFFIX = "-sides"
"""Ends the name of a label map split into sides (`split_sides`): `kits23-sides`."""


def split_sides(label_map: LabelMap) -> LabelMap:
    """`label_map` with every foreground class split into its right and left part, named as
    TotalSegmentator names them: kidney_right = 1, kidney_left = 2, tumor_right = 3, ...
    Class value v on side s (0 right, 1 left) becomes 2v - 1 + s; the left part is drawn darker."""
    classes = [label_map.classes[0]]
    for cls in label_map.foreground:
        for side in SIDES:
            color = cls.color if side == "right" else tuple(int(c * 0.7) for c in cls.color)
            classes.append(LabelClass(len(classes), f"{cls.name}_{side}", color))  # type: ignore[arg-type]
    return LabelMap(f"{label_map.name}{SIDES_SUFFIX}", tuple(classes))


def get_label_map(name: str) -> LabelMap:
    """The registered label map called `name` (`kits19` or `kits23`)."""
    try:
        return LABEL_MAPS[name]
    except KeyError:
        raise KidneysegError(f"unknown label map {name!r}; choose one of {sorted(LABEL_MAPS)}") from None


FOLDED_INTO = {"cyst": "kidney"}
"""Where a class goes in a label map that lacks it: KiTS19 annotated renal cysts as kidney."""


def folding(target: LabelMap, source: LabelMap = KITS23) -> dict[int, int]:
    """The value mapping that brings labels of `source` into `target`: classes both maps have
    keep their class, a class `target` lacks goes where `FOLDED_INTO` says (KITS23 into
    KITS19 is {3: 1}); values that stay the same are left out.

    Raises:
        KidneysegError: a class of `source` has no place in `target`.
    """
    mapping = {}
    for cls in source.foreground:
        name = cls.name if target.has(cls.name) else FOLDED_INTO.get(cls.name)
        if name is None or not target.has(name):
            raise KidneysegError(
                f"class {cls.name!r} of the {source.name} label map has no place in {target.name}"
            )
        if target.value(name) != cls.value:
            mapping[cls.value] = target.value(name)
    return mapping


def check_label_values(array, label_map: LabelMap | None = None, where: object = None) -> None:
    """The one check of a label map's voxel values: whole numbers, each a class of `label_map`
    (without one: each in 0..255, a value `label_lut` can map). Minimum and maximum first: `np.unique`
    over a whole CT grid takes seconds.

    Raises:
        KidneysegError: naming `where`, for non-integer values, a non-numeric data type, or values
            outside the classes.
    """
    import numpy as np

    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise KidneysegError("label map holds non-integer values; is this a CT instead?", where)
    elif array.dtype.kind not in "iub":
        raise KidneysegError(f"label map has data type {array.dtype}; expected integer labels", where)
    if not array.size:
        return
    limit = 255 if label_map is None else label_map.num_classes - 1
    if array.min() >= 0 and array.max() <= limit:
        return
    values = np.unique(array[(array < 0) | (array > limit)][:1_000_000])
    if label_map is not None:
        label_map.check_values(values.tolist(), where)
    raise KidneysegError(f"label values {values.tolist()} are not in 0..255", where)


def label_lut(label_map: LabelMap, mapping: dict[int, int]):
    """A 256-entry lookup table from reference label values to class values of `label_map`
    (`mapping`, e.g. a run's `data.label_mapping`); unmapped values map to themselves.

    Raises:
        KidneysegError: a source value outside 0..255 or a target that is not a class of `label_map`.
    """
    import numpy as np

    lut = np.arange(256, dtype=np.int64)
    for src, dst in mapping.items():
        if not 0 <= int(src) <= 255:
            raise KidneysegError(f"data.label_mapping: source value {src} is not in 0..255")
        if not 0 <= int(dst) < label_map.num_classes:
            raise KidneysegError(
                f"data.label_mapping: target value {dst} is not a class of the {label_map.name} label map"
            )
        lut[int(src)] = int(dst)
    return lut


@dataclass(frozen=True)
class Region:
    """A KiTS hierarchical evaluation class: the union of the classes `classes`, with its Surface
    Dice tolerance in mm."""

    name: str
    classes: tuple[str, ...]
    tolerance_mm: float

    def values(self, label_map: LabelMap = KITS23) -> tuple[int, ...]:
        """The voxel values of the region's classes that `label_map` has."""
        return tuple(label_map.value(c) for c in self.classes if label_map.has(c))


KITS_REGIONS = (
    Region("kidney_and_masses", ("kidney", "tumor", "cyst"), 1.0330772532390826),
    Region("masses", ("tumor", "cyst"), 1.1328796488598762),
    Region("tumor", ("tumor",), 1.1498198361434828),
)
"""KiTS21/23 HECs with the official Surface Dice tolerances (`HEC_SD_TOLERANCES_MM` of the
kits21 and kits23 repositories, to every digit: a distance at the rounded value would fall on
the other side of the tolerance)."""

LESION_CLASSES = ("tumor", "cyst")
"""The classes that are renal masses (lesions), as opposed to kidney."""
LESIONS = (*((name, (name,)) for name in LESION_CLASSES), ("masses", LESION_CLASSES))
"""Lesion kinds counted by detection: each a name and the classes whose connected components
are its lesions (each lesion class, and all masses together)."""


def lesion_classes(label_map: LabelMap) -> dict[str, tuple[int, ...]]:
    """The lesion kinds `label_map` can hold, each with its voxel values (KITS23: tumor (2,),
    cyst (3,), masses (2, 3); KITS19: tumor (2,), masses (2,))."""
    kinds = {
        name: tuple(label_map.value(c) for c in classes if label_map.has(c)) for name, classes in LESIONS
    }
    return {name: values for name, values in kinds.items() if values}
