"""The preprocessed-case cache and `kidneyseg preprocess`: files, skipping, invalidation,
float16 precision, and bad input through the API and the CLI (one line, exit 2, no partial
output)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from kidneyseg.cli import app
from kidneyseg.config import PreprocessConfig
from kidneyseg.data.cases import discover
from kidneyseg.errors import KidneysegError
from kidneyseg.io.volume import Volume, read_volume, write_volume
from kidneyseg.preprocess import (
    config_hash,
    invert_labels,
    load_cached,
    preprocess,
    preprocess_dataset,
    read_cache_meta,
)

SHAPE = (30, 26, 10)
AFFINE = np.diag([-2.0, -2.0, 4.0, 1.0])  # LPS-like
CFG = PreprocessConfig(spacing=(1.5, 1.5, 3.0))  # finer than the source: exact inverse


def _case_arrays(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    i, j, _ = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    body = ((i - 15) / 12.0) ** 2 + ((j - 13) / 10.0) ** 2 < 1
    ct = np.where(body, 30, -1000) + rng.normal(0, 8, SHAPE)
    labels = np.zeros(SHAPE, np.uint8)
    labels[10:16, 8:14, 3:7] = 1
    labels[12:14, 10:12, 4:6] = 2
    ct[labels == 1] = 170
    return ct.astype(np.int16), labels


def _write_case(folder, rng, label_name="segmentation.nii.gz"):
    ct, labels = _case_arrays(rng)
    write_volume(folder / "imaging.nii.gz", Volume(ct, AFFINE))
    write_volume(folder / label_name, Volume(labels, AFFINE))


@pytest.fixture
def kits23(tmp_path, rng):
    root = tmp_path / "kits23"
    for k in range(3):
        _write_case(root / "dataset" / f"case_{k:05d}", rng)
    return root


def _leftovers(out) -> list[str]:
    return sorted(p.name for p in out.rglob("*") if "partial" in p.name) if out.exists() else []


def _assert_cached_as_preprocessed(folder, image_file, label_file):
    """The cached case in `folder` is `preprocess` of its files (the image to float16 rounding);
    returns the reference."""
    image, label, meta = load_cached(folder)
    ref = preprocess(read_volume(image_file), CFG, read_volume(label_file))
    # float16 storage: at most half a float16 step (2^-12 below 1.0) from the float32 result.
    assert np.abs(image.astype(np.float32) - ref.image).max() <= 2.0**-12
    np.testing.assert_array_equal(label, ref.labels)
    assert meta == ref.meta
    return ref


def test_cache_files_and_exact_content(kits23, tmp_path):
    out = tmp_path / "cache"
    dataset = discover(kits23)
    folders = preprocess_dataset(dataset, CFG, out, progress=False)
    assert [f.name for f in folders] == ["case_00000", "case_00001", "case_00002"]
    for folder, case in zip(folders, dataset.cases, strict=True):
        image, label, meta = load_cached(folder)
        assert isinstance(image, np.memmap) and image.dtype == np.float16 and label.dtype == np.uint8
        ref = _assert_cached_as_preprocessed(folder, case.image, case.label)
        np.testing.assert_array_equal(
            invert_labels(label, meta, mode="nearest"), read_volume(case.label).array
        )
        record = read_cache_meta(folder)
        assert record["config_hash"] == config_hash(CFG)
        assert record["image_source"]["size"] == case.image.stat().st_size
        assert record["label_counts"] == np.bincount(ref.labels.ravel(), minlength=4).tolist()
    assert _leftovers(out) == []


def test_rerun_skips_and_changes_redo(kits23, tmp_path):
    out = tmp_path / "cache"
    dataset = discover(kits23)
    preprocess_dataset(dataset, CFG, out, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("meta.json")}
    preprocess_dataset(dataset, CFG, out, progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("meta.json")} == stamps

    # A changed source file redoes only that case.
    changed = dataset.cases[1].image
    ct = read_volume(changed)
    write_volume(changed, ct.with_array(ct.array + np.int16(5)))
    preprocess_dataset(dataset, CFG, out, progress=False)
    redone = {p.parent.name for p, t in stamps.items() if p.stat().st_mtime_ns != t}
    assert redone == {"case_00001"}

    # A changed config redoes every case, and the hash says so.
    other = dataclasses.replace(CFG, hu_window=(-100.0, 300.0))
    assert config_hash(other) != config_hash(CFG)
    preprocess_dataset(dataset, other, out, progress=False)
    assert all(read_cache_meta(out / c.case_id)["config_hash"] == config_hash(other) for c in dataset.cases)


def test_an_interrupted_case_is_redone(kits23, tmp_path):
    out = tmp_path / "cache"
    dataset = discover(kits23)
    preprocess_dataset(dataset, CFG, out, progress=False)
    cases = ("case_00000", "case_00002")
    first = {case: (*load_cached(out / case, mmap=False), read_cache_meta(out / case)) for case in cases}
    (out / "case_00000" / "image.npy").unlink()
    (out / "case_00002" / "meta.json").write_text("{not json")
    preprocess_dataset(dataset, CFG, out, progress=False)
    for case, (image, label, meta, record) in first.items():  # redone exactly as the first time
        again_image, again_label, again_meta = load_cached(out / case, mmap=False)
        np.testing.assert_array_equal(again_image, image)
        np.testing.assert_array_equal(again_label, label)
        assert again_meta == meta and read_cache_meta(out / case) == record


def test_cases_without_labels_are_cached_without_label_file(tmp_path, rng):
    root = tmp_path / "kits23"
    _write_case(root / "dataset" / "case_00000", rng)
    (root / "dataset" / "case_00000" / "segmentation.nii.gz").unlink()
    [folder] = preprocess_dataset(discover(root), CFG, tmp_path / "cache", progress=False)
    image, label, meta = load_cached(folder, mmap=False)
    assert label is None and not (folder / "label.npy").exists() and image.shape == meta.shape


def test_load_cached_errors(tmp_path):
    with pytest.raises(KidneysegError, match=r"meta\.json is missing"):
        load_cached(tmp_path)
    (tmp_path / "meta.json").write_text("[1, 2")
    with pytest.raises(KidneysegError, match="unreadable preprocessing metadata"):
        load_cached(tmp_path)


# ---------------------------------------------------------------- the CLI and bad input


def _cli(*args):
    result = CliRunner().invoke(app, ["preprocess", *map(str, args)])
    return result


def _assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if not line.startswith("preprocessing")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_preprocesses_with_options(kits23, tmp_path):
    out = tmp_path / "cache"
    result = _cli("--data", kits23, "--out", out, "--spacing", 1.5, 1.5, 3, "--hu-window", -100, 300, "-q")
    assert result.exit_code == 0, result.output
    assert "3 kits23 cases preprocessed" in result.output
    record = read_cache_meta(out / "case_00000")
    assert record["config"]["spacing"] == [1.5, 1.5, 3.0] and record["config"]["hu_window"] == [-100.0, 300.0]
    result = _cli("--data", kits23, "--out", out, "--spacing", 1.5, 1.5, 3, "--no-crop", "-q")
    assert result.exit_code == 0, result.output
    _, _, meta = load_cached(out / "case_00000")
    assert meta.shape == meta.resampled_shape


@pytest.mark.parametrize("spacing", [("0", "1", "1"), ("-1", "1", "1"), ("nan", "1", "1")])
def test_cli_rejects_bad_spacing(kits23, tmp_path, spacing):
    result = _cli("--data", kits23, "--out", tmp_path / "cache", "--spacing", *spacing, "-q")
    _assert_one_line_error(result, "spacing")
    assert not (tmp_path / "cache").exists()


def _bad_dataset(tmp_path, rng, problem):
    """A 2-case KiTS23 dataset whose second case has `problem`; returns (root, bad file)."""
    root = tmp_path / "bad"
    _write_case(root / "dataset" / "case_00000", rng)
    folder = root / "dataset" / "case_00001"
    _write_case(folder, rng)
    image, seg = folder / "imaging.nii.gz", folder / "segmentation.nii.gz"
    ct, labels = _case_arrays(rng)
    if problem == "corrupt":
        image.write_bytes(b"this is not a NIfTI file" * 10)
        return root, image
    if problem == "truncated":
        data = image.read_bytes()
        image.write_bytes(data[: len(data) // 2])
        return root, image
    if problem == "not_gzip_inside":
        image.write_bytes(gzip.compress(b"\0" * 400))
        return root, image
    if problem == "4d":
        nib.save(nib.Nifti1Image(np.stack([ct, ct], -1), AFFINE), str(image))
        return root, image
    if problem in ("zero_spacing", "nan_spacing"):
        value = 0.0 if problem == "zero_spacing" else float("nan")
        header = nib.Nifti1Header()
        header.set_data_shape(ct.shape)
        header.set_data_dtype(np.int16)
        header["pixdim"][1:4] = (value, 2.0, 4.0)
        header["srow_x"], header["srow_y"], header["srow_z"] = (value, 0, 0, 0), (0, 2, 0, 0), (0, 0, 4, 0)
        header["sform_code"], header["qform_code"] = 1, 0
        nib.save(nib.Nifti1Image(ct, None, header=header), str(image))
        return root, image
    if problem == "singular_affine":
        singular = AFFINE.copy()
        singular[:3, 2] = singular[:3, 0]
        nib.save(nib.Nifti1Image(ct, singular), str(image))
        return root, image
    if problem == "complex":
        nib.save(nib.Nifti1Image(ct.astype(np.complex64), AFFINE), str(image))
        return root, image
    if problem == "label_shape":
        write_volume(seg, Volume(labels[:-2], AFFINE))
        return root, seg
    if problem == "label_geometry":
        write_volume(seg, Volume(labels, np.diag([-2.0, -2.0, 3.0, 1.0])))
        return root, seg
    if problem == "label_values":
        labels[0, 0, 0] = 7
        write_volume(seg, Volume(labels, AFFINE))
        return root, seg
    if problem == "all_air":  # found by a hostile run: was cached, exit 0
        nib.save(nib.Nifti1Image(np.full(ct.shape, -1000, np.int16), AFFINE), str(image))
        return root, image
    if problem in ("normalised", "tenths_of_hu"):  # both were cached, windowed to near-constant
        # Four times the slices, and noise that is not in whole HU: the air check weighs at least
        # 1000 of every 8th voxel, and takes one value holding over 5 % of them for padding.
        labels = np.tile(labels, (1, 1, 4))
        hu = (np.tile(ct, (1, 1, 4)) + rng.normal(0, 20, labels.shape)).astype(np.float32)
        values = (hu + 1000) / 4000 if problem == "normalised" else hu * 10
        nib.save(nib.Nifti1Image(values, AFFINE), str(image))
        write_volume(seg, Volume(labels, AFFINE))
        return root, image
    raise AssertionError(problem)


BAD_INPUTS = {
    "corrupt": "cannot read NIfTI",
    "truncated": "cannot read NIfTI",
    "not_gzip_inside": "cannot read NIfTI",
    "4d": "expected a 3D image",
    "zero_spacing": "spacing",
    "nan_spacing": "spacing",
    "singular_affine": "affine is singular",
    "complex": "complex values",
    "label_shape": "label map shape",
    "label_geometry": "label map geometry differs",
    "label_values": "label values [7] are not in the kits23 label map",
    "all_air": "no body in the image",
    "normalised": "looks already normalised, but kidneyseg expects CT in Hounsfield units (air -1000, "
    "water 0); convert it to Hounsfield units, or leave the case out of the dataset",
    "tenths_of_hu": "where CT in Hounsfield units has -1000: the values look scaled (e.g. tenths of HU); "
    "convert it to Hounsfield units, or leave the case out of the dataset",
}


@pytest.mark.parametrize("problem", sorted(BAD_INPUTS))
def test_bad_case_is_one_line_and_leaves_no_partial_output(tmp_path, rng, problem):
    root, bad = _bad_dataset(tmp_path, rng, problem)
    out = tmp_path / "cache"
    with pytest.raises(KidneysegError) as info:
        preprocess_dataset(discover(root), CFG, out, progress=False)
    assert str(bad) in str(info.value) and BAD_INPUTS[problem] in str(info.value)
    shutil.rmtree(out)
    result = _cli("--data", root, "--out", out, "--spacing", 1.5, 1.5, 3, "-q")
    _assert_one_line_error(result, str(bad), BAD_INPUTS[problem])
    # The good case before it is complete; nothing of the bad one, no temporary leftovers.
    good = root / "dataset" / "case_00000"
    _assert_cached_as_preprocessed(out / "case_00000", good / "imaging.nii.gz", good / "segmentation.nii.gz")
    assert not (out / "case_00001").exists() and _leftovers(out) == []


def test_real_truncated_kits19_mask(shared_data, tmp_path):
    """A real KiTS19 .nii.gz cut short (as an interrupted download would be)."""
    source = shared_data / "kits19" / "case_00004" / "segmentation.nii.gz"
    folder = tmp_path / "kits19" / "data" / "case_00004"
    folder.mkdir(parents=True)
    data = source.read_bytes()
    (folder / "imaging.nii.gz").write_bytes(data[: int(len(data) * 0.6)])
    result = _cli("--data", tmp_path / "kits19", "--out", tmp_path / "cache", "-q")
    _assert_one_line_error(result, str(folder / "imaging.nii.gz"), "cannot read NIfTI")
    assert not (tmp_path / "cache" / "case_00004").exists() and _leftovers(tmp_path / "cache") == []


@pytest.mark.parametrize("layout", ["missing", "empty", "mislaid", "wrong_layout"])
def test_bad_dataset_folders(tmp_path, rng, layout):
    root = tmp_path / "data"
    if layout == "empty":
        root.mkdir()
    elif layout == "mislaid":  # CTs not in case_XXXXX folders nor images/ + labels/
        _write_case(root / "scans" / "patient1", rng)
    elif layout == "wrong_layout":
        _write_case(root / "dataset" / "case_00000", rng)
    args = ["--layout", "kits21"] if layout == "wrong_layout" else []
    result = _cli("--data", root, "--out", tmp_path / "cache", "-q", *args)
    _assert_one_line_error(result, str(root))
    assert not (tmp_path / "cache").exists()


def test_a_cache_path_that_is_a_file_is_one_line(kits23, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = _cli("--data", kits23, "--out", blocker, "-q")  # was a FileExistsError traceback
    _assert_one_line_error(result, f"{blocker}: the cache path exists and is not a folder")
    assert blocker.read_text() == "x"


def test_meta_json_is_plain_json(kits23, tmp_path):
    [folder, *_] = preprocess_dataset(discover(kits23), CFG, tmp_path / "cache", progress=False)
    data = json.loads((folder / "meta.json").read_text())
    assert data["case_id"] == "case_00000" and data["label_map"] == "kits23"
    assert data["preprocess"]["original_shape"] == list(SHAPE)
