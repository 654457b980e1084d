"""What domain randomisation and lesion pasting add to a CPU training step of `sca-unet-3d:transfer`.

One step of the recipe = forward, DiceCE, backward and AdamW on 4 patches of 64 x 64 x 48
(`cpu_variant_step.step_seconds`); with `data.synth_randomize = p` a share p of those patches is
re-rendered from its tissue map (`kidneyseg.data.synth.synthesize`), and with
`data.synth_lesions = q` a share q gets a pasted lesion (`kidneyseg.data.paste.paste_lesion`).
The three are timed in turn on one thread on patches cut from a `small` phantom (pasting: 4
patches around its kidneys), `--repeats` times after a warm-up; the ratio of medians is the cost
(the synthetic-CT issue's budget: < 20 % of a step). Usage:

    python benchmarks/synth_cost.py [--repeats 9] [--threads 1] [--share 0.5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from cpu_variant_step import step_seconds
from kidneyseg.data.paste import paste_lesion
from kidneyseg.data.phantom import generate_case
from kidneyseg.data.phantom.tissue import KIDNEY_TISSUES, label_lut
from kidneyseg.data.synth import synthesize
from kidneyseg.labels import label_lut as run_lut
from kidneyseg.models import build_model
from kidneyseg.preprocess.intensity import window
from kidneyseg.recipes import load_recipe
from kidneyseg.train.losses import build_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--share", type=float, default=0.5, help="share for a setting the recipe leaves at 0")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = load_recipe("sca-unet-3d:transfer")
    net = build_model(config.model.name, out_channels=4, **dict(config.model.kwargs))
    loss_fn = build_loss(config.train, config.label_map)
    phantom = generate_case(1, size="small", orientation="RAS")
    tissue = phantom.tissue.array
    rng = np.random.default_rng(0)
    patches = [tissue[x : x + 64, y : y + 64, 10:58] for x, y in ((30, 40), (60, 50), (80, 70), (40, 90))]
    hu_window = config.preprocess.hu_window
    image = window(np.asarray(phantom.ct.array, dtype=np.float32), hu_window)
    lut = run_lut(config.label_map, {})
    kidney = np.argwhere(np.isin(tissue, KIDNEY_TISSUES))
    corners = [
        np.clip(kidney[i] - (32, 32, 24) + shift, 0, np.array(tissue.shape) - (64, 64, 48))
        for i in (0, len(kidney) - 1)
        for shift in ((0, 0, 0), (8, -8, 4))
    ]
    around_kidneys = [
        tuple(slice(c, c + n) for c, n in zip(corner, (64, 64, 48), strict=True)) for corner in corners
    ]

    def synth() -> None:
        for patch in patches:
            synthesize(patch, hu_window, rng)

    def paste() -> None:
        for box in around_kidneys:
            ids = tissue[box].astype(np.uint8)
            labels = lut[label_lut()[ids]]
            paste_lesion(image[box].copy(), labels, ids, phantom.tissue.spacing, hu_window, lut, rng)

    def seconds(work) -> float:
        start = time.perf_counter()
        work()
        return time.perf_counter() - start

    step_seconds(net, loss_fn, config.train.lr)
    synth()
    paste()
    steps, synths, pastes = [], [], []
    for _ in range(args.repeats):
        steps.append(step_seconds(net, loss_fn, config.train.lr))
        synths.append(seconds(synth))
        pastes.append(seconds(paste))
    step = statistics.median(steps)
    print(f"threads {args.threads}, {args.repeats} repeats, 4 patches of 64 x 64 x 48")
    print(f"training step median {step:.3f} s")
    for name, times, setting in (
        ("re-rendering", synths, "synth_randomize"),
        ("pasting a lesion in", pastes, "synth_lesions"),
    ):
        cost = statistics.median(times)
        share = getattr(config.data, setting) or args.share
        print(f"{name} all 4 patches: median {cost:.3f} s, {cost / step:.1%} of a step")
        print(f"  at {setting}={share}: {share * cost / step:.1%} of a step")


if __name__ == "__main__":
    main()
