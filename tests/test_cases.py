"""The KiTS data layer: case discovery in the official layouts built in temporary folders with
tiny volumes, and seeded case-level splits."""

from __future__ import annotations

import numpy as np
import pytest

from kidneyseg.data.cases import discover, kits_layout
from kidneyseg.data.splits import kfold_splits, run_split, train_val_split
from kidneyseg.errors import KidneysegError, some_names
from kidneyseg.io.volume import Volume, read_volume, write_volume
from kidneyseg.labels import KITS19, KITS23
from kidneyseg.predict.inputs import find_inputs

AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def _nifti(path, value: int = 0, dtype=np.int16):
    write_volume(path, Volume(np.full((4, 5, 3), value, dtype), AFFINE))


def _kits_case(folder, seg_names=("segmentation.nii.gz",), image=True):
    if image:
        _nifti(folder / "imaging.nii.gz", -1000)
    for k, name in enumerate(seg_names):
        _nifti(folder / name, k + 1, np.uint8)


def test_kits19_layout(tmp_path, caplog):
    for k in range(3):
        _kits_case(tmp_path / "kits19" / "data" / f"case_{k:05d}")
    _kits_case(tmp_path / "kits19" / "data" / "case_00003", seg_names=())  # a test case: no labels
    _kits_case(tmp_path / "kits19" / "data" / "case_00004", image=False)  # no CT: not a case
    _kits_case(tmp_path / "kits19" / "data" / "case_00005", image=False)
    (tmp_path / "kits19" / "data" / "case_00005" / "imaging.nii.gz").symlink_to(tmp_path / "gone.nii.gz")
    (tmp_path / "kits19" / "data" / "notes").mkdir()
    for misnamed in ("case_0006", "Case_00007"):  # was: left out without a word
        _kits_case(tmp_path / "kits19" / "data" / misnamed)
    for root in (tmp_path / "kits19", tmp_path / "kits19" / "data"):
        caplog.clear()
        dataset = discover(root)
        assert caplog.messages == [
            f"{tmp_path / 'kits19' / 'data'}: 2 case folder(s) without imaging.nii.gz left out: "
            "case_00004, case_00005 (broken link)",
            f"{tmp_path / 'kits19' / 'data'}: 2 folder(s) holding imaging.nii.gz not named case_XXXXX "
            "(5 digits) left out: Case_00007, case_0006",
        ]
        assert dataset.layout == "kits19" and dataset.label_map is KITS19
        assert [c.case_id for c in dataset.cases] == [f"case_{k:05d}" for k in range(4)]
        assert [c.case_id for c in dataset.labelled] == ["case_00000", "case_00001", "case_00002"]
        assert dataset.root == tmp_path / "kits19" / "data"
        assert dataset.cases[0].image == dataset.root / "case_00000" / "imaging.nii.gz"
    assert discover(tmp_path / "kits19", layout="kits19").cases == dataset.cases


@pytest.mark.parametrize("annotation", ["AND", "MAJ", "OR"])
def test_kits21_layout_selects_the_aggregated_annotation(tmp_path, annotation):
    names = tuple(f"aggregated_{a}_seg.nii.gz" for a in ("AND", "MAJ", "OR"))
    for k in range(2):
        _kits_case(tmp_path / "repo" / "kits21" / "data" / f"case_{k:05d}", seg_names=names)
    dataset = discover(tmp_path / "repo", annotation=annotation)
    assert dataset.layout == "kits21" and dataset.label_map is KITS23
    assert kits_layout(tmp_path / "repo") == "kits21" and kits_layout(tmp_path) is None
    assert all(c.label.name == f"aggregated_{annotation}_seg.nii.gz" for c in dataset.cases)
    # The file chosen is the one holding that annotation (values 1, 2, 3 written above).
    value = {"AND": 1, "MAJ": 2, "OR": 3}[annotation]
    assert int(read_volume(dataset.cases[0].label).array.max()) == value
    with pytest.raises(KidneysegError, match="annotation='XOR' is not one of AND, MAJ, OR"):
        discover(tmp_path / "repo", annotation="XOR")


def test_kits23_layout(tmp_path):
    for k in (0, 5, 12):
        _kits_case(tmp_path / "kits23" / "dataset" / f"case_{k:05d}")
    dataset = discover(tmp_path / "kits23")
    assert dataset.layout == "kits23" and dataset.label_map is KITS23
    assert [c.case_id for c in dataset.cases] == ["case_00000", "case_00005", "case_00012"]
    assert discover(tmp_path / "kits23", layout="kits23").cases == dataset.cases
    assert [c.case_id for c in dataset.subset(["case_00012", "case_00000"])] == ["case_00012", "case_00000"]
    with pytest.raises(KidneysegError, match="case_00099"):
        dataset.subset(["case_00099"])
    moved = tmp_path / "kits23" / "data"  # unpacked into a folder named as KiTS19's: its instances/ tell
    (tmp_path / "kits23" / "dataset").rename(moved)
    assert discover(tmp_path / "kits23").layout == "kits19"
    (moved / "case_00005" / "instances").mkdir()
    assert discover(tmp_path / "kits23").layout == "kits23"


def test_plain_and_nnunet_layouts(tmp_path):
    for name in ("b", "a", "c"):
        _nifti(tmp_path / "plain" / "images" / f"{name}.nii.gz")
    _nifti(tmp_path / "plain" / "labels" / "a.nii.gz", 1, np.uint8)
    _nifti(tmp_path / "plain" / "labels" / "b.nii.gz", 1, np.uint8)
    dataset = discover(tmp_path / "plain")
    assert dataset.layout == "plain"
    assert [(c.case_id, c.label is not None) for c in dataset.cases] == [
        ("a", True),
        ("b", True),
        ("c", False),
    ]
    for name in ("kid_001", "kid_002"):
        _nifti(tmp_path / "nnunet" / "imagesTr" / f"{name}_0000.nii.gz")
        _nifti(tmp_path / "nnunet" / "labelsTr" / f"{name}.nii.gz", 1, np.uint8)
    dataset = discover(tmp_path / "nnunet", layout="plain")
    assert [c.case_id for c in dataset.labelled] == ["kid_001", "kid_002"]
    assert dataset.cases[0].image.name == "kid_001_0000.nii.gz"


def test_discovery_errors(tmp_path):
    with pytest.raises(KidneysegError, match="does not exist"):
        discover(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KidneysegError, match="no cases found") as info:
        discover(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(info.value)
    with pytest.raises(KidneysegError, match="layout='kits99' is not one of"):
        discover(tmp_path / "empty", layout="kits99")
    _kits_case(tmp_path / "k23" / "dataset" / "case_00000")
    with pytest.raises(KidneysegError, match="no case_XXXXX folders found for layout 'kits21'"):
        discover(tmp_path / "k23", layout="kits21")
    _kits_case(tmp_path / "k23" / "dataset" / "case_00001")  # the case folders' own parent, as kits21
    with pytest.raises(KidneysegError, match=r"segmentation\.nii\.gz but no aggregated_AND_seg\.nii\.gz"):
        discover(tmp_path / "k23" / "dataset", layout="kits21")  # was: every label dropped, exit 0
    _kits_case(tmp_path / "nolabels" / "dataset" / "case_00000", seg_names=())
    with pytest.raises(KidneysegError, match="none of the 1 cases has a reference segmentation"):
        discover(tmp_path / "nolabels", require_labels=True)
    _kits_case(tmp_path / "segonly" / "data" / "case_00000", image=False)  # KiTS19 masks without CT
    with pytest.raises(KidneysegError, match="no CT images found"):
        discover(tmp_path / "segonly")


IDS = [f"case_{k:05d}" for k in range(210)]


def test_80_20_split_of_kits19_is_168_42_and_reproducible():
    train, val = train_val_split(IDS, 0.2, seed=3)
    assert (len(train), len(val)) == (168, 42)
    assert set(train).isdisjoint(val) and sorted(train + val) == IDS
    assert train_val_split(list(reversed(IDS)), 0.2, seed=3) == (train, val)  # order of listing is irrelevant
    assert train_val_split(IDS, 0.2, seed=4) != (train, val)
    # Shuffled: the validation set is not a contiguous block of case ids.
    numbers = sorted(int(c[5:]) for c in val)
    assert numbers[-1] - numbers[0] > 60


def test_90_10_split():
    train, val = train_val_split(IDS, 0.1, seed=0)
    assert (len(train), len(val)) == (189, 21)
    assert set(train).isdisjoint(val) and sorted(train + val) == IDS
    small_train, small_val = train_val_split(IDS[:2], 0.1)
    assert len(small_train) == 1 and len(small_val) == 1


@pytest.mark.parametrize("k", [2, 5, 7])
def test_kfold_partitions(k):
    folds = kfold_splits(IDS, k, seed=1)
    assert len(folds) == k
    vals = [v for _, v in folds]
    assert sorted(c for v in vals for c in v) == IDS  # each case validated exactly once
    assert max(len(v) for v in vals) - min(len(v) for v in vals) <= 1
    for train, val in folds:
        assert sorted(train + val) == IDS and set(train).isdisjoint(val)
    assert kfold_splits(IDS, k, seed=1) == folds and kfold_splits(IDS, k, seed=2) != folds


def test_a_run_trains_on_its_fold_or_its_val_fraction_split():
    """`data.folds=k data.fold=i`: the runs of folds 0..k-1 validate on disjoint cases covering
    every case once (an ensemble of them is a fold ensemble); without folds, the fraction split."""
    from kidneyseg.config import DataConfig

    vals = [run_split(IDS, DataConfig(folds=5, fold=i, split_seed=3))[1] for i in range(5)]
    assert sorted(c for v in vals for c in v) == IDS
    assert run_split(IDS, DataConfig(folds=5, fold=2, split_seed=3)) == kfold_splits(IDS, 5, 3)[2]
    assert run_split(IDS, DataConfig(val_fraction=0.2)) == train_val_split(IDS, 0.2)
    with pytest.raises(KidneysegError, match=r"data\.fold=5 must be in 0\.\.4"):
        DataConfig(folds=5, fold=5)
    with pytest.raises(KidneysegError, match=r"data\.folds=1 must be 0"):
        DataConfig(folds=1)


def test_split_errors():
    with pytest.raises(KidneysegError, match="fraction"):
        train_val_split(IDS, 1.0)
    with pytest.raises(KidneysegError, match="at least 2"):
        train_val_split(IDS[:1], 0.2)
    with pytest.raises(KidneysegError, match="not unique"):
        train_val_split(IDS[:3] + IDS[:1], 0.2)
    with pytest.raises(KidneysegError, match="k must be between 2"):
        kfold_splits(IDS[:3], 4)


def test_long_lists_of_names_show_the_first_ten_and_a_count():
    names = [f"case_{i:05d}" for i in range(13)]
    assert some_names(names) == ", ".join(names[:10]) + " and 3 more"
    assert some_names(names[:10]) == ", ".join(names[:10]) and some_names([]) == ""


def test_a_subset_names_the_cases_the_dataset_lacks(tmp_path):
    _kits_case(tmp_path / "case_00000")
    dataset = discover(tmp_path)
    missing = [f"case_{i:05d}" for i in range(1, 13)]
    with pytest.raises(KidneysegError, match=f"cases not in this dataset: {some_names(missing)}$"):
        dataset.subset(["case_00000", *missing])
    assert dataset.subset(["case_00000"])[0].case_id == "case_00000"


def test_files_training_leaves_out_are_named(tmp_path, caplog):
    """Was: a CT without a label map and a misnamed label map (`c0_seg`) were left out of
    training without a word."""
    for name in ("c0", "c1", "c2"):
        _nifti(tmp_path / "images" / f"{name}.nii.gz")
    for name in ("c0_seg", "c1", "c2"):
        _nifti(tmp_path / "labels" / f"{name}.nii.gz", 1, np.uint8)
    dataset = discover(tmp_path, require_labels=True)
    assert [c.case_id for c in dataset.labelled] == ["c1", "c2"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'labels'}: 1 label map(s) without a CT in images/ left out: c0_seg.nii.gz",
        f"{tmp_path}: 1 CT(s) without a label map in labels/ left out: c0",
    ]
    caplog.clear()
    discover(tmp_path / "labels", layout="plain")  # CTs without label maps to predict: no warning
    assert not caplog.records


def test_a_kits_layout_beside_images_and_labels_is_refused_unless_a_layout_is_chosen(tmp_path):
    """Was: read as KiTS, the plain cases (here `extra`) left out without a word."""
    _kits_case(tmp_path / "dataset" / "case_00000")
    for name in ("case_00000", "extra"):
        _nifti(tmp_path / "images" / f"{name}.nii.gz")
        _nifti(tmp_path / "labels" / f"{name}.nii.gz", 1, np.uint8)
    with pytest.raises(KidneysegError) as info:
        discover(tmp_path)
    assert str(info.value) == (
        f"{tmp_path}: holds case(s) case_00000, extra in images/ + labels/ beside the kits23 layout's "
        f"case folders in {tmp_path / 'dataset'}: which to read is unclear; choose one with --layout "
        "kits23 or --layout plain (train: data.layout=...), or give predict and report a folder of "
        f"one layout (e.g. {tmp_path / 'images'})"
    )
    assert [c.case_id for c in discover(tmp_path, layout="plain").cases] == ["case_00000", "extra"]
    assert [c.case_id for c in discover(tmp_path, layout="kits23").cases] == ["case_00000"]
    # predict and report, which read a folder in other ways too, pass the refusal on (was: "no CT found")
    with pytest.raises(KidneysegError, match="which to read is unclear"):
        find_inputs(tmp_path)
    assert [c.case_id for c in find_inputs(tmp_path / "images")[0]] == ["case_00000", "extra"]
