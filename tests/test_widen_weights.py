"""scripts/widen_weights.py: a widened SCA-UNet computes what the narrow one did."""

import importlib.util
from pathlib import Path

import pytest
import torch

from kidneyseg.checkpoint import build_model_from_config
from kidneyseg.recipes import load_recipe

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "widen_weights.py"
spec = importlib.util.spec_from_file_location("widen_weights", SCRIPT)
widen_weights = importlib.util.module_from_spec(spec)
spec.loader.exec_module(widen_weights)


def _narrow(channels: str, last: int):
    config = load_recipe(
        "sca-unet-3d:cpu",
        overrides=[f"model.kwargs.channels={channels}", f"model.kwargs.last_decoder_channels={last}"],
    )
    torch.manual_seed(0)
    model = build_model_from_config(config).eval()
    with torch.no_grad():  # trained-looking weights: PReLU slopes and biases away from their initial values
        for name, value in model.named_parameters():
            if name.endswith("A.weight") or name.endswith("bias"):
                value.uniform_(-0.5, 0.5)
    return config, model


@pytest.mark.parametrize("factor", [2, 3])
def test_the_wider_network_gives_the_narrow_networks_logits_and_its_copies_differ(factor):
    config, narrow = _narrow("[4,8,16,16]", 4)
    wide_config = widen_weights.wider_config(config, factor)
    assert wide_config.model.kwargs["channels"] == [4 * factor, 8 * factor, 16 * factor, 16 * factor]
    assert wide_config.model.kwargs["last_decoder_channels"] == 4 * factor
    wide = build_model_from_config(wide_config).eval()
    wide.load_state_dict(widen_weights.widen_state(narrow.state_dict(), wide, factor))
    x = torch.rand(2, 1, 32, 32, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = narrow(x), wide(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-4 * float(expected.abs().max()))
    first = wide.state_dict()["model.1.submodule.0.conv.weight"]  # 8 * factor outputs, 4 * factor inputs
    assert not torch.equal(first[:, :4], first[:, 4:8])  # the shares differ between an input's copies
    assert torch.equal(first[:8], first[8:16])  # an output channel's copies start equal


def test_a_network_whose_stacked_bottleneck_halves_differ_is_refused(tmp_path, monkeypatch):
    from kidneyseg.checkpoint import save_checkpoint

    config, narrow = _narrow("[4,8,16,32]", 4)
    source = save_checkpoint(tmp_path / "narrow.pt", model_state=narrow.state_dict(), config=config)
    monkeypatch.setattr(
        "sys.argv", ["widen_weights.py", "--weights", str(source), "--out", str(tmp_path / "w.pt")]
    )
    with pytest.raises(SystemExit, match="last two channel counts are equal"):
        widen_weights.main()
    assert not (tmp_path / "w.pt").exists()
