"""Checkpoints: safe to load (no pickled code), complete enough to predict, atomic, refusing bad files."""

from __future__ import annotations

import errno
import json
import math
import random

import pytest
import torch

from kidneyseg import checkpoint as ck
from kidneyseg.config import DataConfig, ModelConfig, RunConfig
from kidneyseg.errors import KidneysegError
from kidneyseg.labels import KITS19

CONFIG = RunConfig(
    labels="kits19",
    model=ModelConfig("unet_2d", {"channels": [4, 8], "out_channels": 3}),
    data=DataConfig(sampling="slice2d", patch_size=(32, 32), label_mapping={3: 1}),
)


def _model_and_state() -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    model = ck.build_model_from_config(CONFIG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(2, 1, 32, 32)).mean().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    scheduler.step(1.0)
    extra = {
        "epoch": 3,
        "best_dice": -math.inf,
        "history": [{"epoch": 1.0, "val_dice": math.nan}],
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
    }
    return model, extra


def test_round_trip_loads_with_weights_only_and_predicts_the_same(tmp_path):
    model, extra = _model_and_state()
    path = ck.save_checkpoint(
        tmp_path / "last.pt",
        model_state=model.state_dict(),
        config=CONFIG,
        extra_state=extra,
    )
    raw = torch.load(path, weights_only=True)  # the safety property itself: no pickled code needed
    assert raw[ck.FORMAT_KEY] == ck.FORMAT_VERSION
    loaded = ck.load_checkpoint(path)
    assert loaded.config == CONFIG
    assert loaded.config.data.label_mapping == {3: 1}
    assert loaded.label_map == KITS19
    assert set(loaded.versions) >= {"kidneyseg", "torch", "monai"}
    assert loaded.extra["epoch"] == 3 and loaded.extra["best_dice"] == -math.inf
    assert torch.equal(loaded.extra["torch_rng"], extra["torch_rng"])
    assert loaded.extra["python_rng"] == extra["python_rng"]
    assert loaded.extra["scheduler"] == extra["scheduler"]
    saved, back = extra["optimizer"], loaded.extra["optimizer"]
    assert back["param_groups"] == saved["param_groups"] and back["state"].keys() == saved["state"].keys()
    for index, state in saved["state"].items():
        assert back["state"][index].keys() == state.keys()
        assert all(torch.equal(back["state"][index][key], value) for key, value in state.items())
    torch.optim.AdamW(model.parameters()).load_state_dict(back)
    rebuilt = ck.build_model_from_checkpoint(loaded)
    x = torch.rand(1, 1, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_refuses_files_that_are_not_ours(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(KidneysegError, match="not a readable checkpoint"):
        ck.load_checkpoint(garbage)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(KidneysegError, match="not a kidneyseg checkpoint"):
        ck.load_checkpoint(other)
    pickled = tmp_path / "pickled.pt"
    torch.save({ck.FORMAT_KEY: 1, "config": KidneysegError("code")}, pickled)
    with pytest.raises(KidneysegError, match="pickled code"):
        ck.load_checkpoint(pickled)
    with pytest.raises(KidneysegError, match="no such checkpoint"):
        ck.load_checkpoint(tmp_path / "missing.pt")
    for text in (b"hello", b"abc"):  # torch's safe loader raised KeyError / IndexError on these
        (tmp_path / "short.pt").write_bytes(text)
        with pytest.raises(KidneysegError, match="not a readable checkpoint"):
            ck.load_checkpoint(tmp_path / "short.pt")


def test_refuses_a_future_format_and_a_truncated_file(tmp_path):
    model, _ = _model_and_state()
    path = ck.save_checkpoint(tmp_path / "c.pt", model_state=model.state_dict(), config=CONFIG)
    payload = torch.load(path, weights_only=True)
    payload[ck.FORMAT_KEY] = ck.FORMAT_VERSION + 1
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(KidneysegError, match="newer than this kidneyseg reads"):
        ck.load_checkpoint(tmp_path / "future.pt")
    for marker in (True, -5, 0, "2"):
        payload[ck.FORMAT_KEY] = marker
        torch.save(payload, tmp_path / "odd.pt")
        with pytest.raises(KidneysegError, match="is not a format version"):
            ck.load_checkpoint(tmp_path / "odd.pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(KidneysegError, match="corrupt, truncated"):
        ck.load_checkpoint(tmp_path / "cut.pt")


def test_full_disk_keeps_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model, _ = _model_and_state()
    path = ck.save_checkpoint(tmp_path / "last.pt", model_state=model.state_dict(), config=CONFIG)
    before = path.read_bytes()
    real_save = torch.save

    def save_then_disk_full(obj, f, *args, **kwargs):
        real_save({"partial": torch.zeros(1000)}, f)  # some bytes reach the disk, then ENOSPC
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save_then_disk_full)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    with pytest.raises(KidneysegError, match="No space left on device") as info:
        ck.save_checkpoint(path, model_state=model.state_dict(), config=CONFIG)
    assert str(path) in str(info.value)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    ck.load_checkpoint(path)


def test_resolve_checkpoint(tmp_path):
    model, _ = _model_and_state()
    with pytest.raises(KidneysegError, match="no such run folder"):
        ck.resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(KidneysegError, match="holds no checkpoint"):
        ck.resolve_checkpoint(tmp_path)
    last = ck.save_checkpoint(tmp_path / ck.LAST_NAME, model_state=model.state_dict(), config=CONFIG)
    assert ck.resolve_checkpoint(tmp_path) == last
    best = ck.save_checkpoint(tmp_path / ck.BEST_NAME, model_state=model.state_dict(), config=CONFIG)
    assert ck.resolve_checkpoint(tmp_path) == best
    assert ck.resolve_checkpoint(last) == last


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    model, _ = _model_and_state()
    four = RunConfig(labels="kits19", model=ModelConfig("unet_2d", {"channels": [4, 8], "out_channels": 4}))
    path = ck.save_checkpoint(tmp_path / "four.pt", model_state=model.state_dict(), config=four)
    with pytest.raises(KidneysegError, match="out_channels=4 but the kits19 label map has 3 classes"):
        ck.build_model_from_checkpoint(ck.load_checkpoint(path))
    wider = RunConfig(labels="kits19", model=ModelConfig("unet_2d", {"channels": [8, 16], "out_channels": 3}))
    path = ck.save_checkpoint(tmp_path / "c.pt", model_state=model.state_dict(), config=wider)
    with pytest.raises(KidneysegError, match="weights do not fit model 'unet_2d'"):
        ck.build_model_from_checkpoint(ck.load_checkpoint(path))


class _Exploit:
    """Pickles to a call of `os.system`: loading it unsafely would create `self.marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_never_execute_code(tmp_path):
    model, _ = _model_and_state()
    marker = tmp_path / "executed"
    pickled = tmp_path / "reduce.pt"
    torch.save({ck.FORMAT_KEY: 1, "model_state": _Exploit(marker)}, pickled)
    with pytest.raises(KidneysegError, match="pickled code"):
        ck.load_checkpoint(pickled)
    path = ck.save_checkpoint(tmp_path / "c.pt", model_state=model.state_dict(), config=CONFIG)
    payload = torch.load(path, weights_only=True)
    payload["config"] = f"!!python/object/apply:os.system ['touch {marker}']\n"
    torch.save(payload, tmp_path / "yaml.pt")
    with pytest.raises(KidneysegError, match=r"incomplete or damaged|invalid config"):
        ck.load_checkpoint(tmp_path / "yaml.pt")
    assert not marker.exists()


def test_the_label_map_is_stated_once_and_format_1_checkpoints_still_load(tmp_path):
    """New checkpoints hold the label map only in their config; format-1 files also hold it as
    JSON, which must name the config's classes."""
    from pathlib import Path

    import kidneyseg
    from kidneyseg.labels import KITS19, KITS23

    model, _ = _model_and_state()
    path = ck.save_checkpoint(tmp_path / "c.pt", model_state=model.state_dict(), config=CONFIG)
    assert "label_map" not in torch.load(path, weights_only=True)
    bundled = ck.load_checkpoint(Path(kidneyseg.__file__).parent / "weights" / "sca-unet-3d-transfer.pt")
    assert bundled.label_map == KITS23
    ck.build_model_from_checkpoint(bundled)
    legacy = torch.load(path, weights_only=True)
    legacy[ck.FORMAT_KEY] = 1
    legacy["label_map"] = json.dumps(KITS19.to_dict())
    torch.save(legacy, tmp_path / "legacy.pt")
    old = ck.load_checkpoint(tmp_path / "legacy.pt")
    assert old.format_version == 1 and old.label_map == KITS19
    legacy["label_map"] = json.dumps(KITS23.to_dict())  # disagrees with the config's kits19
    torch.save(legacy, tmp_path / "legacy.pt")
    with pytest.raises(KidneysegError, match="is not the classes of labels='kits19'"):
        ck.load_checkpoint(tmp_path / "legacy.pt")
