"""scripts/average_weights.py: the weight-space average of networks of one architecture."""

import subprocess
import sys
from pathlib import Path

import torch

from kidneyseg.checkpoint import (
    build_model_from_checkpoint,
    build_model_from_config,
    load_checkpoint,
    save_checkpoint,
)
from kidneyseg.recipes import load_recipe

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "average_weights.py"


def _saved(path: Path, channels: str, seed: int) -> Path:
    config = load_recipe("sca-unet-3d:cpu", overrides=[f"model.kwargs.channels={channels}"])
    torch.manual_seed(seed)
    return save_checkpoint(path, model_state=build_model_from_config(config).state_dict(), config=config)


def _average(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_the_average_holds_each_weight_mixed_by_the_shares_and_loads_as_a_network(tmp_path):
    a, b = _saved(tmp_path / "a.pt", "[4,8,8,8]", 0), _saved(tmp_path / "b.pt", "[4,8,8,8]", 1)
    out = tmp_path / "soup.pt"
    done = _average(
        "--weights", str(a), "--weights", str(b), "--share", "0.25", "--share", "0.75", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    first, second, soup = (load_checkpoint(p) for p in (a, b, out))
    for key, value in soup.model_state.items():
        torch.testing.assert_close(value, 0.25 * first.model_state[key] + 0.75 * second.model_state[key])
    assert any(not torch.equal(first.model_state[k], second.model_state[k]) for k in first.model_state)
    network = build_model_from_checkpoint(soup).eval()
    with torch.no_grad():
        assert network(torch.rand(1, 1, 32, 32, 16)).shape == (1, 4, 32, 32, 16)
    self_soup = tmp_path / "self.pt"
    assert _average("--weights", str(a), "--weights", str(a), "--out", str(self_soup)).returncode == 0
    for key, value in load_checkpoint(self_soup).model_state.items():
        torch.testing.assert_close(value, first.model_state[key])


def test_networks_of_two_architectures_or_shares_not_summing_to_one_are_refused(tmp_path):
    a, wide = _saved(tmp_path / "a.pt", "[4,8,8,8]", 0), _saved(tmp_path / "wide.pt", "[8,16,16,16]", 0)
    out = tmp_path / "soup.pt"
    other = _average("--weights", str(a), "--weights", str(wide), "--out", str(out))
    assert other.returncode != 0 and f"{wide}: another network or label map than {a}'s" in other.stderr
    shares = _average(
        "--weights", str(a), "--weights", str(a), "--share", "0.5", "--share", "0.6", "--out", str(out)
    )
    assert shares.returncode != 0 and "summing to 1" in shares.stderr
    assert not out.exists()
