"""Phantom datasets on disk: `generate_dataset` writes cases as
`OUT/dataset/case_XXXXX/{imaging,segmentation}.nii.gz` plus `phantom.json`, the ground truth of
every lesion (kind, side, centre, diameters, volume) for measurement checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from kidneyseg.data.phantom.generate import generate_case_on
from kidneyseg.data.phantom.options import KITS_ORIENTATION, PhantomOptions, check_size
from kidneyseg.errors import KidneysegError


def case_seeds(seed: int, cases: int) -> list[int]:
    """Independent per-case seeds of a dataset (stable: case i's seed does not depend on `cases`)."""
    return [int(np.random.SeedSequence([seed, i]).generate_state(1)[0]) for i in range(cases)]


def generate_dataset(
    out: Path,
    cases: int,
    seed: int = 0,
    size: str = "small",
    anatomy: Path | None = None,
    orientation: str = KITS_ORIENTATION,
    progress: bool = True,
    chest: float = 0.0,
    anatomy_in_order: bool = False,
    tumors_as_kidney: float = 0.0,
    mirror: float = 0.0,
    collapsed_bowel: float = 0.0,
) -> list[Path]:
    """Write `cases` phantoms to `out/dataset/case_XXXXX/` (KiTS23 layout); returns the case folders.

    Each folder holds `imaging.nii.gz` (int16 HU), `segmentation.nii.gz` (uint8: 0 background,
    1 kidney, 2 tumor, 3 cyst) and `phantom.json` (the ground truth, see `PhantomCase`). Files are
    written atomically; the tissue map first, so a folder with it is a phantom's (complete or
    left by a killed run), and `phantom.json` last, so a folder with it is complete; a run that fails
    removes the case folders and the folders it created (cases that were there stay). A dataset
    holding other cases is refused (`refuse_other_cases`). `chest`: the share
    of chest-abdomen scans (`generate_case`). `anatomy_in_order`: case i takes the i-th label map
    of `anatomy` (cycling) instead of one drawn by its seed, so as many cases as maps use each once.
    `tumors_as_kidney`: the share of `anatomy`'s tumors painted as kidney, `mirror` the share of
    cases whose label map is mirrored left to right, `collapsed_bowel` the share of collapsed
    small-bowel loops (`generate_case`).
    """
    from tqdm import tqdm

    from kidneyseg.data.cases import TISSUE_FILE
    from kidneyseg.io.atomic import remove_stale_partials, write_text_atomic
    from kidneyseg.io.volume import write_labels, write_volume

    if cases < 1:
        raise KidneysegError(f"the number of cases must be at least 1, got {cases}")
    preset = check_size(size)
    options = PhantomOptions(anatomy, orientation, chest, tumors_as_kidney, mirror, collapsed_bowel)
    if anatomy_in_order and options.anatomy is None:
        raise KidneysegError("taking label maps in order needs an anatomy folder")
    if options.anatomy is not None:
        from kidneyseg.data.phantom.real import anatomy_files

        anatomy_files(options.anatomy)
    root = Path(out) / "dataset"
    refuse_other_cases(root, seed, size, options)
    new = [p for p in (Path(out), root) if not p.exists()]
    existed = set(root.iterdir()) if root.is_dir() else set()
    folders: list[Path] = []
    try:
        for index, case_seed in enumerate(
            tqdm(case_seeds(seed, cases), desc="phantom cases", unit="case", disable=not progress)
        ):
            order = index if anatomy_in_order else None
            case = generate_case_on(preset, case_seed, options, size, order)
            folder = root / f"case_{index:05d}"
            if folder.is_dir():
                remove_stale_partials(folder)  # files a killed run was writing
            folders.append(folder)
            write_labels(folder / TISSUE_FILE, case.tissue.array, case.ct)  # first: marks a phantom's folder
            write_volume(folder / "imaging.nii.gz", case.ct, np.int16)
            write_labels(folder / "segmentation.nii.gz", case.labels.array, case.ct)
            write_text_atomic(
                folder / "phantom.json", json.dumps({"case_id": folder.name, **case.truth}, indent=1)
            )
    except BaseException:  # a failed run leaves none of its new cases (e.g. an unreadable anatomy map)
        for path in [*(f for f in folders if f not in existed), *reversed(new)]:
            shutil.rmtree(path, ignore_errors=True)
        raise
    return folders


def refuse_other_cases(dataset: Path, seed: int, size: str, options: PhantomOptions) -> None:
    """Refuse to write into a dataset holding other cases: phantoms made with another seed, size,
    orientation, chest, tumors-as-kidney, mirror or collapsed-bowel share or anatomy folder (told apart by the
    names of its label maps: one of the same names holding other shapes is not seen), which would
    be silently mixed (the same settings rewrite the same cases), or a case folder with a label
    map that is no phantom's (no `phantom.json` and no tissue map: a real dataset's), which would
    be overwritten. A case a killed run left unfinished (its tissue map, no `phantom.json`) is
    written again.

    Raises:
        KidneysegError: naming the dataset and the first such case.
    """
    from kidneyseg.data.cases import TISSUE_FILE
    from kidneyseg.data.phantom.generate import chest_extension

    for folder in sorted(dataset.glob("case_*")):
        path = folder / "phantom.json"
        if not path.is_file():
            if (folder / "segmentation.nii.gz").exists() and not (folder / TISSUE_FILE).exists():
                raise KidneysegError(
                    f"holds a case that is not a kidneyseg phantom ({folder.name}: a label map without "
                    "phantom.json or a tissue map): it would be overwritten; choose another --out",
                    dataset,
                )
            continue
        try:
            truth = json.loads(path.read_text(encoding="utf-8"))
            index = int(folder.name.removeprefix("case_"))
        except (OSError, ValueError):
            truth, index = {}, -1
        case_seed = case_seeds(seed, index + 1)[index] if index >= 0 else None
        drawn = truth.get("anatomy")
        same = (
            case_seed is not None
            and truth.get("seed") == case_seed
            and truth.get("chest_mm", 0.0) == round(chest_extension(case_seed, options.chest), 1)
            and truth.get("tumors_as_kidney", 0.0) == options.tumors_as_kidney
            and truth.get("mirror", 0.0) == options.mirror
            and truth.get("collapsed_bowel", 0.0) == options.collapsed_bowel
            and truth.get("size") == size
            and truth.get("orientation") == options.orientation
            and (drawn is None) == (options.anatomy is None)
            and (options.anatomy is None or (options.anatomy / drawn).exists())
        )
        if not same:
            raise KidneysegError(
                "already holds phantoms made with another seed, size, orientation, chest share, "
                f"tumors-as-kidney, mirror or collapsed-bowel share or anatomy folder ({folder.name}); "
                "choose another --out",
                dataset,
            )
