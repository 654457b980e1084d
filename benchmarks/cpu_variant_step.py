"""Training-step time of the `sca-unet-3d:cpu` network, against the same network with the
paper's spatial-attention kernel (7) and a last decoder block as wide as its input.

One step = forward, DiceCE (cross-entropy weighted as in the recipe), backward and AdamW on a
batch of 4 patches of 64 x 64 x 48 voxels (one loaded case's patches in the recipe). The two
networks alternate, `--repeats` times each after a warm-up, and medians are compared. On CPU the
full-resolution layers dominate: the backward pass of the 7 x 7 x 7 spatial-attention
convolution (2 -> 1 channels) and the transposed convolution of the last decoder block. Usage:

    python benchmarks/cpu_variant_step.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kidneyseg.models import build_model
from kidneyseg.recipes import load_recipe
from kidneyseg.train.losses import build_loss

PAPER_LAYERS = {"spatial_kernel_size": 7, "last_decoder_channels": None}


def step_seconds(net: torch.nn.Module, loss_fn: torch.nn.Module, lr: float) -> float:
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr)
    x = torch.rand(4, 1, 64, 64, 48)
    y = torch.randint(0, 4, (4, 1, 64, 64, 48))
    start = time.perf_counter()
    loss = loss_fn(net(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = load_recipe("sca-unet-3d:cpu")
    loss_fn = build_loss(config.train, config.label_map)
    variant = dict(config.model.kwargs)
    nets = {
        "cpu variant": build_model(config.model.name, out_channels=4, **variant),
        "paper layers": build_model(config.model.name, out_channels=4, **{**variant, **PAPER_LAYERS}),
    }
    times: dict[str, list[float]] = {name: [] for name in nets}
    for net in nets.values():
        step_seconds(net, loss_fn, config.train.lr)
    for _ in range(args.repeats):
        for name, net in nets.items():
            times[name].append(step_seconds(net, loss_fn, config.train.lr))
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"threads {args.threads}, {args.repeats} repeats, batch 4 x 64 x 64 x 48")
    for name, t in times.items():
        print(f"{name:13s} median {medians[name]:.2f} s  runs {' '.join(f'{s:.2f}' for s in t)}")
    print(f"speed-up of the cpu variant: {medians['paper layers'] / medians['cpu variant']:.2f}x")


if __name__ == "__main__":
    main()
