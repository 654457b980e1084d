"""The pure-data label registry: KiTS label maps, values, colors and HEC regions."""

from __future__ import annotations

import pytest

from kidneyseg.errors import KidneysegError
from kidneyseg.labels import (
    KITS19,
    KITS23,
    KITS_REGIONS,
    LabelClass,
    LabelMap,
    folding,
    get_label_map,
    label_lut,
    lesion_classes,
)


def test_kits_label_maps():
    assert KITS19.names == ("background", "kidney", "tumor")
    assert KITS23.names == ("background", "kidney", "tumor", "cyst")
    assert KITS23.num_classes == 4 and KITS23.value("cyst") == 3
    assert [c.name for c in KITS23.foreground] == ["kidney", "tumor", "cyst"]
    assert len({c.color for c in KITS23.classes}) == 4
    assert get_label_map("kits19") is KITS19 and get_label_map("kits23") is KITS23
    with pytest.raises(KidneysegError, match="unknown label map 'kits99'"):
        get_label_map("kits99")
    with pytest.raises(KeyError, match="no class 'cyst'"):
        KITS19.value("cyst")


def test_regions_are_the_kits_hecs():
    regions = {r.name: r for r in KITS_REGIONS}
    assert regions["kidney_and_masses"].values() == (1, 2, 3)
    assert regions["masses"].values() == (2, 3)
    assert regions["tumor"].values() == (2,)
    assert all(1.0 < r.tolerance_mm < 1.2 for r in KITS_REGIONS)
    assert [r.values(KITS19) for r in KITS_REGIONS] == [(1, 2), (2,), (2,)]


def test_lesion_kinds_and_folding_follow_the_label_map():
    assert lesion_classes(KITS23) == {"tumor": (2,), "cyst": (3,), "masses": (2, 3)}
    assert lesion_classes(KITS19) == {"tumor": (2,), "masses": (2,)}
    assert folding(KITS19) == {3: 1}  # KiTS19 annotated cysts as kidney
    assert folding(KITS23) == {} and folding(KITS19, KITS19) == {}
    assert label_lut(KITS19, folding(KITS19))[[0, 1, 2, 3]].tolist() == [0, 1, 2, 1]


def test_value_checks_and_round_trip():
    assert KITS19.unknown_values([0, 1, 2, 3, 7, 1]) == [3, 7]
    KITS23.check_values([0, 3])
    with pytest.raises(KidneysegError, match=r"seg\.nii\.gz: label values \[3\] are not in the kits19"):
        KITS19.check_values([0, 3], "seg.nii.gz")
    assert LabelMap.from_dict(KITS23.to_dict()) == KITS23
    with pytest.raises(ValueError, match=r"0\.\.n-1"):
        LabelMap("gappy", (LabelClass(0, "background", (0, 0, 0)), LabelClass(2, "tumor", (1, 1, 1))))
