"""Average the weights of networks fine-tuned from the same start (WiSE-FT, model soups).

Wortsman et al. showed that the weight-space average of a model and its fine-tunes often keeps
what a fine-tune gained while losing less of what the start knew (CVPR 2022, "Robust
fine-tuning of zero-shot models"; ICML 2022, "Model soups"). The networks must share one
architecture and start; the kidneyseg networks normalise per instance without running
statistics, so the average of the state dicts is the averaged network.

Run:
    python scripts/average_weights.py --weights src/kidneyseg/weights/sca-unet-3d-transfer.pt \
        --weights runs/ft/fat/best.pt --share 0.5 --share 0.5 --out soup.pt
The checkpoint written takes the first network's run configuration.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from kidneyseg.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint


def average_states(states: list[dict[str, torch.Tensor]], shares: list[float]) -> dict[str, torch.Tensor]:
    """`sum(share × state)` per tensor; every state must hold the same tensors of the same shapes."""
    first = states[0]
    for state in states[1:]:
        if state.keys() != first.keys() or any(state[k].shape != first[k].shape for k in first):
            raise ValueError("the networks differ in their tensors or shapes: not one architecture")
    return {
        key: sum(share * state[key].double() for share, state in zip(shares, states, strict=True)).to(
            first[key].dtype
        )
        for key in first
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--weights", action="append", required=True, help="A run folder or checkpoint (repeat)."
    )
    parser.add_argument("--share", action="append", type=float, help="Each network's share (default: equal).")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    shares = args.share or [1.0 / len(args.weights)] * len(args.weights)
    if len(shares) != len(args.weights) or not math.isclose(sum(shares), 1.0) or min(shares) < 0:
        raise SystemExit("give one non-negative --share per --weights, summing to 1")
    checkpoints = [load_checkpoint(resolve_checkpoint(w)) for w in args.weights]
    model = checkpoints[0].config.model
    for weights, ckpt in zip(args.weights, checkpoints, strict=True):
        if ckpt.config.model != model or ckpt.label_map != checkpoints[0].label_map:
            raise SystemExit(f"{weights}: another network or label map than {args.weights[0]}'s")
    state = average_states([c.model_state for c in checkpoints], shares)
    save_checkpoint(args.out, model_state=state, config=checkpoints[0].config)
    print(f"{args.out}: " + " + ".join(f"{s:g} × {w}" for s, w in zip(shares, args.weights, strict=True)))


if __name__ == "__main__":
    main()
