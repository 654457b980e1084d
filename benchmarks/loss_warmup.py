"""How many steps does each loss need before the 3D network finds the kidney?

Why `sca-unet-3d:cpu` weighs the cross-entropy term of the paper's DiceCE by 0.1: with the
paper's layers, DiceCE with weight 1 first teaches the network to predict background everywhere,
which a CPU budget of ~1,500 steps cannot afford. This benchmark isolates the loss, with nothing
else varying. (Soft Dice alone finds the kidney fastest, but a whole training run with it paints
tumor over other organs: that shows only in whole runs, see docs/training.md.)

Generates `--cases` small phantoms, preprocesses them with the `sca-unet-3d:cpu` recipe
(3 mm, HU [-80, 305] -> [0, 1]), cuts one kidney-centred 64x64x48 patch from each, and trains
the recipe's network (SCA-UNet 16-32-64-64; with `--paper-layers` the paper's spatial-attention
kernel and last decoder width) with AdamW at the recipe's learning rate, batch 1, the same seed
and the same patch order, once per loss (`NAME` or `dice_ce:CE_WEIGHT`) for `--steps` steps on
one thread. Every `--every` steps it scores kidney Dice of the argmax on all patches. Reports per
loss the first step with kidney Dice >= 0.5 and the final Dice. Usage:

    python benchmarks/loss_warmup.py [--cases 8] [--steps 160] [--every 20] [--paper-layers]
        [--losses dice_ce dice_ce:0.1 dice]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from kidneyseg.config import TrainConfig
from kidneyseg.data.phantom import case_seeds, generate_case
from kidneyseg.models import build_model
from kidneyseg.preprocess import preprocess
from kidneyseg.recipes import load_recipe
from kidneyseg.train.build import build_optimizer
from kidneyseg.train.losses import build_loss

PATCH = (64, 64, 48)


def kidney_patches(cases: int) -> tuple[torch.Tensor, torch.Tensor]:
    config = load_recipe("sca-unet-3d:cpu")
    rng = np.random.default_rng(0)
    images, labels = [], []
    for seed in case_seeds(7, cases):
        case = generate_case(seed, size="small")
        pre = preprocess(case.ct, config.preprocess, case.labels)
        kidney = np.argwhere(pre.labels == 1)
        centre = kidney[rng.integers(len(kidney))]
        start = [
            int(np.clip(c - p // 2, 0, max(n - p, 0)))
            for c, p, n in zip(centre, PATCH, pre.image.shape, strict=True)
        ]
        box = tuple(slice(a, a + p) for a, p in zip(start, PATCH, strict=True))
        pad = [(0, p - n) for p, n in zip(PATCH, pre.image[box].shape, strict=True)]
        images.append(np.pad(pre.image[box], pad))
        labels.append(np.pad(pre.labels[box], pad).astype(np.int64))
    return torch.from_numpy(np.stack(images))[:, None], torch.from_numpy(np.stack(labels))[:, None]


def kidney_dice(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.inference_mode():
        predicted = net(x).argmax(1) == 1
    truth = y[:, 0] == 1
    return float(2 * (predicted & truth).sum() / max(int(predicted.sum() + truth.sum()), 1))


PAPER_LAYERS = {"spatial_kernel_size": 7, "last_decoder_channels": None}


def run(spec: str, x: torch.Tensor, y: torch.Tensor, steps: int, every: int, paper_layers: bool) -> dict:
    config = load_recipe("sca-unet-3d:cpu")
    torch.manual_seed(0)
    kwargs = {**config.model.kwargs, **(PAPER_LAYERS if paper_layers else {})}
    net = build_model(config.model.name, out_channels=4, **kwargs)
    optimizer = build_optimizer(net.parameters(), config.train)
    name, _, weight = spec.partition(":")
    loss_fn = build_loss(TrainConfig(loss=name, ce_weight=float(weight or 1.0)), config.label_map)
    curve, start = [], time.perf_counter()
    for step in range(1, steps + 1):
        i = (step - 1) % len(x)
        loss = loss_fn(net(x[i : i + 1]), y[i : i + 1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % every == 0:
            curve.append((step, round(kidney_dice(net, x, y), 3)))
            print(f"{spec:13s} step {step:4d}  kidney Dice {curve[-1][1]:.3f}", flush=True)
    reached = next((s for s, d in curve if d >= 0.5), None)
    return {
        "loss": spec,
        "steps_to_0.5": reached,
        "final_dice": curve[-1][1],
        "curve": curve,
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--losses", nargs="+", default=["dice_ce", "dice_ce:0.1", "dice"])
    parser.add_argument(
        "--paper-layers",
        action="store_true",
        help="Spatial-attention kernel 7 and a last decoder block as wide as its input, as in the paper.",
    )
    parser.add_argument("--json", help="Also write the results to this JSON file.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, y = kidney_patches(args.cases)
    results = [run(name, x, y, args.steps, args.every, args.paper_layers) for name in args.losses]
    print(f"\n| loss | first step with kidney Dice >= 0.5 | kidney Dice after {args.steps} steps |")
    print("| --- | --- | --- |")
    for r in results:
        print(f"| `{r['loss']}` | {r['steps_to_0.5'] or 'not reached'} | {r['final_dice']:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
