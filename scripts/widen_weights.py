"""Widen a trained SCA-UNet by a whole factor without changing what it computes (Net2WiderNet,
Chen et al. 2016), to fine-tune a larger network from a smaller one's weights.

Every feature map is repeated `factor` times: a layer's output channels are copied, and each
weight reading a repeated channel is split between its copies with random shares that sum to one,
so the wider network's logits equal the narrow one's (up to rounding) while the copies
get different gradients and can learn apart. The layers this relies on keep it exact: instance
normalisation without affine parameters and single-parameter PReLU act per channel alike, the
spatial attention reads the mean and maximum over channels (unchanged by repetition), and a
decoder's input is the stacked [skip, upsampled] pair, whose halves are repeated separately.

Run:
    python scripts/widen_weights.py --weights src/kidneyseg/weights/sca-unet-3d-transfer.pt \
        --factor 2 --out wide.pt
then train from it with the wider network:
    kidneyseg train --recipe sca-unet-3d:transfer --init-weights wide.pt \
        "model.kwargs.channels=[32,64,128,128]" model.kwargs.last_decoder_channels=32 ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from kidneyseg.checkpoint import (
    build_model_from_checkpoint,
    build_model_from_config,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from kidneyseg.config import RunConfig
from kidneyseg.plaindata import from_dict, to_dict


def wider_config(config: RunConfig, factor: int) -> RunConfig:
    """The config with every feature-map count multiplied by `factor`."""
    data = to_dict(config)
    kwargs = data["model"]["kwargs"]
    kwargs["channels"] = [c * factor for c in kwargs["channels"]]
    if kwargs.get("last_decoder_channels"):
        kwargs["last_decoder_channels"] *= factor
    return from_dict(RunConfig, data)


def _repeat_out(weight: torch.Tensor, dim: int, factor: int) -> torch.Tensor:
    return torch.cat([weight] * factor, dim=dim)


def _split_in(weight: torch.Tensor, dim: int, factor: int, halves: int, rng: torch.Generator) -> torch.Tensor:
    """Repeat input channels `factor` times within each of `halves` stacked groups, splitting
    every weight between its copies with random shares summing to one."""
    groups = weight.chunk(halves, dim=dim)
    out = []
    for group in groups:
        shares = torch.rand((factor, *group.shape), generator=rng, dtype=torch.float64) + 0.5
        shares = shares / shares.sum(dim=0)
        out.extend((group.double() * share).to(group.dtype) for share in shares)
    return torch.cat(out, dim=dim)


def widen_state(narrow: dict, wide_model: torch.nn.Module, factor: int, seed: int = 0) -> dict:
    """The narrow state dict laid out for `wide_model`, computing the same function."""
    rng = torch.Generator().manual_seed(seed)
    modules = dict(wide_model.named_modules())
    state = {}
    for name, target in wide_model.state_dict().items():
        value = narrow[name]
        module = modules[name.rsplit(".", 1)[0]]
        transposed = isinstance(module, torch.nn.modules.conv._ConvTransposeNd)
        out_dim, in_dim = (1, 0) if transposed else (0, 1)
        if value.ndim > 1 and target.shape[in_dim] == factor * value.shape[in_dim]:
            value = _split_in(value, in_dim, factor, 2 if transposed else 1, rng)
        if value.ndim == 1:
            out_dim = 0
        if target.shape[out_dim] == factor * value.shape[out_dim]:
            value = _repeat_out(value, out_dim, factor)
        if value.shape != target.shape:
            raise SystemExit(f"{name}: cannot widen {tuple(narrow[name].shape)} to {tuple(target.shape)}")
        state[name] = value.contiguous()
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="A run folder or checkpoint of an SCA-UNet.")
    parser.add_argument("--factor", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random shares.")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    ckpt = load_checkpoint(resolve_checkpoint(args.weights))
    channels = ckpt.config.model.kwargs.get("channels", [])
    if ckpt.config.model.name != "sca_unet_3d" or len(channels) < 2 or channels[-1] != channels[-2]:
        raise SystemExit(
            f"{args.weights}: widening needs an sca_unet_3d whose last two channel counts are equal"
        )
    narrow = build_model_from_checkpoint(ckpt)
    config = wider_config(ckpt.config, args.factor)
    wide = build_model_from_config(config).eval()
    wide.load_state_dict(widen_state(ckpt.model_state, wide, args.factor, args.seed))
    x = torch.rand(1, 1, *config.inference.roi_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        difference = (narrow(x) - wide(x)).abs().max().item()
    save_checkpoint(args.out, model_state=wide.state_dict(), config=config)
    parameters = sum(p.numel() for p in wide.parameters())
    print(
        f"{args.out}: {parameters:,} weights; "
        f"largest logit difference from the narrow network {difference:.2e}"
    )


if __name__ == "__main__":
    main()
