"""Find cases in the official KiTS layouts or a plain folder of image/label pairs.

Layouts (`layout=`):

- `kits19`: `data/case_XXXXX/imaging.nii.gz` + `segmentation.nii.gz`, labels 0-2.
- `kits21`: `kits21/data/case_XXXXX/imaging.nii.gz` + `aggregated_{AND,MAJ,OR}_seg.nii.gz`
  (choose with `annotation=`; the SCA-UNet paper trained on AND), labels 0-3.
- `kits23`: `dataset/case_XXXXX/imaging.nii.gz` + `segmentation.nii.gz`, labels 0-3.
  Phantom cases also have `tissue.nii.gz` (the generator's tissue map), found as `Case.tissue`.
- `plain`: `images/NAME.nii.gz` + `labels/NAME.nii.gz` (nnU-Net's `imagesTr/NAME_0000.nii.gz`
  + `labelsTr/NAME.nii.gz` too), any file format of the reader table, paired by the one case-id rule
  (`kidneyseg.io.formats.case_id_of`).
- `auto`: recognise one of the above from the folder given or its parents/children.

`walk_kits` is the one walker of the KiTS layouts; `kidneyseg evaluate` uses it for folders that
hold only the segmentations.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kidneyseg.config import KITS21_ANNOTATIONS, LAYOUTS, check_choice
from kidneyseg.errors import KidneysegError, some_names
from kidneyseg.io.formats import files_by_case_id
from kidneyseg.labels import KITS19, KITS23, LabelMap

log = logging.getLogger(__name__)

_CASE_DIR = re.compile(r"^case_\d{5}$")
IMAGE_FILE = "imaging.nii.gz"
TISSUE_FILE = "tissue.nii.gz"
"""A phantom case's tissue map (uint8 `Tissue` ids) beside its `imaging.nii.gz`."""


@dataclass(frozen=True)
class Case:
    """One case: an id, its CT, (if annotated) its reference label map and (phantoms) its tissue map."""

    case_id: str
    image: Path
    label: Path | None
    tissue: Path | None = None

    def file_sizes(self) -> list[int]:
        """The sizes in bytes of its CT and label map, as a training run records them to tell
        another file under the same case id."""
        return [self.image.stat().st_size, self.label.stat().st_size if self.label else 0]


def differing_files(recorded: dict[str, list[int]] | None, current: dict[str, list[int]]) -> list[str]:
    """The case ids in both whose recorded file sizes (`Case.file_sizes`) differ from the current
    ones, sorted; none when nothing was recorded (runs of older versions)."""
    return sorted(i for i, sizes in (recorded or {}).items() if i in current and current[i] != sizes)


@dataclass(frozen=True)
class Dataset:
    """The cases found under `root`, in one layout, with the label map that layout uses."""

    root: Path
    layout: str
    label_map: LabelMap
    cases: tuple[Case, ...]

    @property
    def labelled(self) -> tuple[Case, ...]:
        return tuple(c for c in self.cases if c.label is not None)

    def subset(self, case_ids: list[str] | tuple[str, ...]) -> tuple[Case, ...]:
        by_id = {c.case_id: c for c in self.cases}
        missing = [i for i in case_ids if i not in by_id]
        if missing:
            raise KidneysegError(f"cases not in this dataset: {some_names(missing)}", self.root)
        return tuple(by_id[i] for i in case_ids)


def _case_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and _CASE_DIR.match(p.name))


def _kits_folder(root: Path, layout: str) -> tuple[Path, str] | None:
    """The folder under `root` holding the case folders of a KiTS layout (`auto`: recognised),
    and the layout; None if there is none."""
    candidates = {
        "kits21": [root / "kits21" / "data", root / "data", root],
        "kits23": [root / "dataset", root],
        "kits19": [root / "data", root],
    }
    if layout != "auto":
        found = next((f for f in candidates[layout] if f.is_dir() and _case_dirs(f)), None)
        return None if found is None else (found, layout)
    for folder in [root / "kits21" / "data", root / "dataset", root / "data", root]:
        dirs = _case_dirs(folder) if folder.is_dir() else []
        if not dirs:
            continue
        if any((d / "aggregated_AND_seg.nii.gz").exists() for d in dirs[:20]):
            return folder, "kits21"
        # KiTS19 and KiTS23 share file names; KiTS23's cases hold their annotators' `instances/`,
        # KiTS19 lives in `data/` and ships `kits.json`.
        if any((d / "instances").is_dir() for d in dirs[:20]):
            return folder, "kits23"
        if folder.name == "data" or (folder / "kits.json").exists():
            return folder, "kits19"
        return folder, "kits23"
    return None


def kits_layout(root: str | os.PathLike[str]) -> str | None:
    """The KiTS layout recognised under `root` (kits19, kits21 or kits23), None if none."""
    found = _kits_folder(Path(root), "auto") if Path(root).is_dir() else None
    return None if found is None else found[1]


def _resolve(root: Path, layout: str) -> tuple[Path, str]:
    """The folder holding the case folders (or image/label folders) and the layout."""
    if layout == "plain":
        return root, "plain"
    found = _kits_folder(root, layout)
    plain = plain_pairs_dirs(root)
    if found is not None and layout == "auto" and plain is not None:
        refuse_two_layouts(
            root,
            list(files_by_case_id(plain[0])),
            f"in {plain[0].name}/ + {plain[1].name}/ beside the {found[1]} layout's case folders "
            f"in {found[0]}",
            "read",
            f"choose one with --layout {found[1]} or --layout plain (train: data.layout=...), "
            f"or give predict and report a folder of one layout (e.g. {plain[0]})",
        )
    if found is not None:
        return found
    if layout != "auto":
        raise KidneysegError(f"no case_XXXXX folders found for layout {layout!r}", root)
    if plain is not None:
        return root, "plain"
    raise KidneysegError(
        "no cases found: expected case_XXXXX/imaging.nii.gz folders (KiTS19/21/23 layout) "
        "or images/ + labels/ folders",
        root,
    )


class TwoLayoutsError(KidneysegError):
    """A folder holds cases in two layouts at once: a refusal that callers trying other ways of
    reading a folder (`predict.inputs.find_inputs`) must pass on, not take for "no cases here"."""


def refuse_two_layouts(folder: Path, case_ids: Iterable[str], where: str, verb: str, advice: str) -> None:
    """Refuse a folder holding cases (`case_ids`, if any) in two layouts at once (`where`):
    which of them to `verb` would be a guess, and one of them would be left out unseen.

    Raises:
        TwoLayoutsError: some cases are in both layouts.
    """
    ids = sorted(case_ids)
    if ids:
        raise TwoLayoutsError(
            f"holds case(s) {some_names(ids)} {where}: which to {verb} is unclear; {advice}", folder
        )


def plain_pairs_dirs(root: Path) -> tuple[Path, Path] | None:
    """The plain layout's images and labels folders under `root` (`images/` + `labels/`, or
    nnU-Net's `imagesTr/` + `labelsTr/`); None if it has none."""
    for images, labels in (("images", "labels"), ("imagesTr", "labelsTr")):
        if (root / images).is_dir():
            return root / images, root / labels
    return None


def _existing(path: Path) -> Path | None:
    return path if path.exists() else None


def walk_kits(
    root: str | os.PathLike[str], layout: str = "auto", annotation: str = "AND"
) -> tuple[Case, ...]:
    """The KiTS-layout walker: one `Case` per `case_XXXXX` folder under `root`, with its
    reference (`aggregated_<annotation>_seg.nii.gz` for KiTS21, else `segmentation.nii.gz`) and
    tissue map where present. `image` is where the CT belongs: a folder of segmentations only
    (the KiTS19 repository before the CT download) lacks it.

    Raises:
        KidneysegError: no case folders of `layout` under `root`, or KiTS21 was asked for but a
            case folder holds `segmentation.nii.gz` instead of its aggregated segmentation.
    """
    root = Path(root)
    found = _kits_folder(root, layout)
    if found is None:
        raise KidneysegError(f"no case_XXXXX folders found for layout {layout!r}", root)
    folder, layout = found
    seg_name = f"aggregated_{annotation}_seg.nii.gz" if layout == "kits21" else "segmentation.nii.gz"
    if layout == "kits21":
        other = next((d for d in _case_dirs(folder) if (d / "segmentation.nii.gz").exists()), None)
        if other is not None and not (other / seg_name).exists():
            raise KidneysegError(
                f"holds segmentation.nii.gz but no {seg_name}: not the KiTS21 layout "
                "(use the layout auto, kits19 or kits23)",
                other,
            )
    return tuple(
        Case(d.name, d / IMAGE_FILE, _existing(d / seg_name), _existing(d / TISSUE_FILE))
        for d in _case_dirs(folder)
    )


def _warn_without_image(cases: list[Case], folder: Path) -> None:
    """Say which case folders are left out for want of a CT (a partial download, a broken link)."""
    names = [c.case_id + (" (broken link)" if c.image.is_symlink() else "") for c in cases]
    _warn_left_out(names, f"case folder(s) without {IMAGE_FILE}", folder)


def _warn_left_out(names: list[str], what: str, folder: Path) -> None:
    """Say which files training leaves out for want of their other half (a misnamed label map)."""
    if names:
        log.warning("%s: %d %s left out: %s", folder, len(names), what, some_names(names))


def discover(
    root: str | os.PathLike[str],
    layout: str = "auto",
    annotation: str = "AND",
    require_labels: bool = False,
) -> Dataset:
    """Find the cases under `root`. KiTS case folders without a CT, and plain-layout label maps
    without one, are left out with a warning naming them (all of them without: an error); with
    `require_labels`, so are CTs without a label map. A folder holding both a KiTS layout and
    plain `images/` + `labels/` is refused with `layout="auto"`.

    Args:
        root: the dataset folder (or the repository folder holding it).
        layout: one of `LAYOUTS`.
        annotation: for KiTS21, which aggregated segmentation to use (AND, MAJ or OR).
        require_labels: raise if no case has a reference segmentation.

    Raises:
        KidneysegError: the folder is missing, empty, not in a known layout, or (auto) in two.
    """
    root = Path(root)
    check_choice("layout", layout, LAYOUTS)
    check_choice("KiTS21 annotation", annotation, KITS21_ANNOTATIONS)
    if not root.is_dir():
        raise KidneysegError(
            "is a file, not a dataset folder" if root.exists() else "dataset folder does not exist", root
        )
    folder, layout = _resolve(root, layout)
    if layout == "plain":
        images_dir, labels_dir = plain_pairs_dirs(folder) or (folder, folder)
        labels = files_by_case_id(labels_dir)
        images = files_by_case_id(images_dir)
        cases = [Case(name, image, labels.get(name)) for name, image in images.items()]
        if images_dir != labels_dir:
            _warn_left_out(
                [labels[n].name for n in labels if n not in images],
                f"label map(s) without a CT in {images_dir.name}/",
                labels_dir,
            )
    else:
        walked = walk_kits(folder, layout, annotation)
        cases = [c for c in walked if c.image.exists()]
        if cases and len(cases) < len(walked):
            _warn_without_image([c for c in walked if not c.image.exists()], folder)
        misnamed = [
            p.name
            for p in sorted(folder.iterdir())
            if p.is_dir() and not _CASE_DIR.match(p.name) and (p / IMAGE_FILE).exists()
        ]
        _warn_left_out(misnamed, f"folder(s) holding {IMAGE_FILE} not named case_XXXXX (5 digits)", folder)
    if require_labels and any(c.label is not None for c in cases):
        where = f" in {labels_dir.name}/" if layout == "plain" else ""
        unlabelled = [c.case_id for c in cases if c.label is None]
        _warn_left_out(unlabelled, f"CT(s) without a label map{where}", folder)
    if not cases:
        raise KidneysegError(f"no CT images found in the {layout} layout", folder)
    dataset = Dataset(folder, layout, KITS19 if layout == "kits19" else KITS23, tuple(cases))
    if require_labels and not dataset.labelled:
        raise KidneysegError(f"none of the {len(cases)} cases has a reference segmentation", folder)
    return dataset
