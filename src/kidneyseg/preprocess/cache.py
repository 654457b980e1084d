"""A disk cache of preprocessed cases, re-used across runs with the same preprocessing config.

Layout, one folder per case::

    OUT/<case_id>/image.npy   float16, [0, 1], canonical (x, y, z) axes
    OUT/<case_id>/label.npy   uint8 (only for cases with a reference segmentation)
    OUT/<case_id>/tissue.npy  uint8 (only for phantoms with a tissue map)
    OUT/<case_id>/meta.json   inverse metadata, config + its hash, source files' size/mtime

The image is stored as float16: its step near 1.0 is 2⁻¹¹, i.e. at most 0.09 HU of rounding
error within the [-80, 305] HU window — two orders of magnitude below CT noise — and it halves
the cache and the patch-reading I/O (measured in docs/preprocessing.md). A case folder is first
written under a temporary name and renamed when complete, so an interrupted run leaves no
half-written case; a case whose config hash and source files are unchanged is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg.config import PreprocessConfig
from kidneyseg.data.cases import Case, Dataset
from kidneyseg.errors import KidneysegError
from kidneyseg.io.atomic import make_folder, partial_name, remove_empty_folders, remove_stale_partials
from kidneyseg.io.stamps import file_stamp, stamp_hash
from kidneyseg.io.volume import read_volume
from kidneyseg.labels import LabelMap
from kidneyseg.plaindata import to_dict
from kidneyseg.preprocess.pipeline import META_VERSION, PreprocessMeta, preprocess

CACHE_VERSION = 1
IMAGE_DTYPE = np.float16
IMAGE_FILE, LABEL_FILE, META_FILE, TISSUE_FILE = "image.npy", "label.npy", "meta.json", "tissue.npy"


def config_hash(cfg: PreprocessConfig) -> str:
    """A hash of everything that determines the cached arrays (config and format versions)."""
    payload = {"cache": CACHE_VERSION, "meta": META_VERSION, "config": to_dict(cfg)}
    return stamp_hash(payload)


def _source(path: Path | None) -> dict[str, Any] | None:
    return None if path is None else file_stamp(path)


def _record(case: Case, cfg: PreprocessConfig) -> dict[str, Any]:
    """What a cached case must have been made from to be re-used."""
    return {
        "config_hash": config_hash(cfg),
        "image_source": _source(case.image),
        "label_source": _source(case.label),
        "tissue_source": _source(case.tissue),
    }


def _is_fresh(folder: Path, expected: dict[str, Any]) -> bool:
    meta_path = folder / META_FILE
    if not meta_path.is_file() or not (folder / IMAGE_FILE).is_file():
        return False
    try:
        stored = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    for key, name in (("label_source", LABEL_FILE), ("tissue_source", TISSUE_FILE)):
        if expected[key] is not None and not (folder / name).is_file():
            return False
    return all(stored.get(k) == v for k, v in expected.items())


def _check_replaceable(folder: Path) -> None:
    """Only a cached case (it has meta.json) may be replaced: never a dataset's own case folder
    or anything else that happens to have a case's name."""
    if not (folder / META_FILE).is_file():
        raise KidneysegError(
            "exists but is not a preprocessed case (no meta.json); it is kept: choose another cache folder",
            folder,
        )


def _refuse_cache_inside_cases(dataset: Dataset, out: Path) -> None:
    """Refuse a cache whose case folders would be the dataset's own (`--out` = the dataset
    folder), or that would lie in the folder of a case's files (a case folder, `images/`)."""
    inside = out.resolve()
    for case in dataset.cases:
        folder = (out / case.case_id).resolve()
        for source in (case.image, case.label, case.tissue):
            if source is None:
                continue
            home = Path(source).resolve().parent
            if folder in home.parents or folder == home:
                where = f"replace the dataset's case folder {out / case.case_id}"
            elif home == inside or home in inside.parents:
                where = f"lie in the dataset's folder {home} (of case {case.case_id})"
            else:
                continue
            raise KidneysegError(f"the cache would {where}; choose a cache folder outside the dataset", out)


NOT_HU = "convert it to Hounsfield units, or leave the case out of the dataset"
"""How a refusal of a case's CT as not in Hounsfield units ends here (no option goes on anyway)."""


def preprocess_case(
    case: Case, cfg: PreprocessConfig, folder: Path, label_map: LabelMap, mapped: bool = False
) -> Path:
    """Preprocess one case into `folder` (written under a temporary name, then renamed). Its
    label values must be classes of `label_map`, or with `mapped` (a run's `data.label_mapping`
    maps them to classes, and training checks the mapped values) any of 0..255.

    Raises:
        KidneysegError: the CT or label map is unreadable, invalid or inconsistent, or the CT
            holds no body or is clearly not in Hounsfield units (`predict`'s `check_body` and
            `check_hu` refusals; their warnings are left to `predict`).
    """
    from kidneyseg.predict.checks import check_body, check_hu

    record = _record(case, cfg)
    ct = read_volume(case.image)
    check_body(ct.array, str(case.image))  # as `predict`: labels on a CT of air are nonsense
    check_hu(ct.array, str(case.image), NOT_HU)  # the HU window would make it near-constant
    labels = read_volume(case.label) if case.label is not None else None
    tissue = read_volume(case.tissue) if case.tissue is not None else None
    try:
        result = preprocess(ct, cfg, labels, None if mapped else label_map, tissue)
    except MemoryError as exc:
        raise KidneysegError(
            f"not enough memory to resample it to {cfg.spacing} mm ({exc}); check the spacing", case.image
        ) from None
    del ct, labels, tissue
    meta = {
        "case_id": case.case_id,
        **record,
        "config": to_dict(cfg),
        "label_map": label_map.name,
        "image_dtype": np.dtype(IMAGE_DTYPE).name,
        "label_counts": (
            None
            if result.labels is None
            else np.bincount(result.labels.ravel(), minlength=label_map.num_classes).tolist()
        ),
        "preprocess": result.meta.to_dict(),
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        np.save(tmp / IMAGE_FILE, result.image.astype(IMAGE_DTYPE))
        if result.labels is not None:
            np.save(tmp / LABEL_FILE, result.labels)
        if result.tissue is not None:
            np.save(tmp / TISSUE_FILE, result.tissue)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        if folder.exists():
            _check_replaceable(folder)
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except OSError as exc:
        raise KidneysegError(f"could not write the cached case ({exc.strerror or exc})", folder) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def preprocess_dataset(
    dataset: Dataset,
    cfg: PreprocessConfig,
    out: str | os.PathLike[str],
    progress: bool = True,
    mapped: bool = False,
) -> list[Path]:
    """Preprocess every case of `dataset` into `out/<case_id>/`, skipping up-to-date ones
    (`mapped`: as for `preprocess_case`).

    A cached case is redone when the config (hash) or the size/mtime of its CT or label file
    changed. Stops at the first bad case with a `KidneysegError` naming its file; the cases
    finished before it stay cached and complete.

    Returns:
        The case folders, in the dataset's order.
    """
    from tqdm import tqdm

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise KidneysegError("the cache path exists and is not a folder", out)
    _refuse_cache_inside_cases(dataset, out)
    created = make_folder(out, "cache")
    remove_stale_partials(out)  # cases a killed run was writing
    folders = []
    bar = tqdm(dataset.cases, desc="preprocessing", unit="case", disable=not progress)
    try:
        for case in bar:
            folder = out / case.case_id
            if not _is_fresh(folder, _record(case, cfg)):
                bar.set_postfix_str(case.case_id)
                preprocess_case(case, cfg, folder, dataset.label_map, mapped)
            folders.append(folder)
    except BaseException:
        if created:
            remove_empty_folders(out)
        raise
    return folders


def read_cache_meta(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The full `meta.json` of a cached case (config, sources, label counts, inverse)."""
    path = Path(folder) / META_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KidneysegError("not a preprocessed case: meta.json is missing", folder) from None
    except (OSError, ValueError) as exc:
        raise KidneysegError(f"unreadable preprocessing metadata ({exc})", path) from None


def load_tissue(folder: str | os.PathLike[str]) -> np.ndarray | None:
    """A cached phantom's tissue map (read-only memory map), or None when the case has none."""
    path = Path(folder) / TISSUE_FILE
    if not path.is_file():
        return None
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise KidneysegError(f"unreadable cached tissue map ({exc})", path) from None


def load_cached(
    folder: str | os.PathLike[str], mmap: bool = True
) -> tuple[np.ndarray, np.ndarray | None, PreprocessMeta]:
    """A cached case: `(image, label or None, meta)`.

    With `mmap` the arrays are read-only memory maps, so patches cost only what they read;
    the image is float16 (convert patches with `np.asarray(patch, dtype=np.float32)`).
    """
    folder = Path(folder)
    meta = read_cache_meta(folder)
    mode = "r" if mmap else None
    try:
        image = np.load(folder / IMAGE_FILE, mmap_mode=mode)
        label = np.load(folder / LABEL_FILE, mmap_mode=mode) if (folder / LABEL_FILE).exists() else None
    except (OSError, ValueError) as exc:
        raise KidneysegError(f"unreadable cached arrays ({exc})", folder) from None
    try:
        pre = PreprocessMeta.from_dict(meta["preprocess"])
    except KeyError:
        raise KidneysegError("preprocessing metadata has no 'preprocess' section", folder) from None
    if image.shape != pre.shape or (label is not None and label.shape != pre.shape):
        raise KidneysegError(f"cached arrays do not have the recorded shape {pre.shape}", folder)
    return image, label, pre
