"""What domain randomisation adds to a CPU training step of `sca-unet-3d:transfer`.

One step of the recipe = forward, DiceCE, backward and AdamW on 4 patches of 64 x 64 x 48
(`cpu_variant_step.step_seconds`); with `data.synth_randomize = p` a share p of those patches is
re-rendered from its tissue map (`kidneyseg.data.synth.synthesize`). Both are timed alternately
on one thread on tissue patches cut from a `small` phantom, `--repeats` times after a warm-up;
the ratio of medians is the cost (the issue's budget: < 20 % of a step). Usage:

    python benchmarks/synth_cost.py [--repeats 9] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from cpu_variant_step import step_seconds
from kidneyseg.data.phantom import generate_case
from kidneyseg.data.synth import synthesize
from kidneyseg.models import build_model
from kidneyseg.recipes import load_recipe
from kidneyseg.train.losses import build_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = load_recipe("sca-unet-3d:transfer")
    net = build_model(config.model.name, out_channels=4, **dict(config.model.kwargs))
    loss_fn = build_loss(config.train, config.label_map)
    tissue = generate_case(1, size="small", orientation="RAS").tissue.array
    rng = np.random.default_rng(0)
    patches = [tissue[x : x + 64, y : y + 64, 10:58] for x, y in ((30, 40), (60, 50), (80, 70), (40, 90))]

    def synth_seconds() -> float:
        start = time.perf_counter()
        for patch in patches:
            synthesize(patch, config.preprocess.hu_window, rng)
        return time.perf_counter() - start

    step_seconds(net, loss_fn, config.train.lr)
    synth_seconds()
    steps, synths = [], []
    for _ in range(args.repeats):
        steps.append(step_seconds(net, loss_fn, config.train.lr))
        synths.append(synth_seconds())
    step, synth = statistics.median(steps), statistics.median(synths)
    share = config.data.synth_randomize
    print(f"threads {args.threads}, {args.repeats} repeats, 4 patches of 64 x 64 x 48")
    print(f"training step median {step:.3f} s; re-rendering all 4 patches median {synth:.3f} s")
    print(f"cost at synth_randomize={share}: {share * synth / step:.1%} of a step")
    print(f"cost with every patch re-rendered: {synth / step:.1%} of a step")


if __name__ == "__main__":
    main()
