"""Are the phantoms learnable but not thresholdable? A small 2D CNN against the best HU window.

Generates `--cases` small phantoms (the last `--val` held out), trains MONAI's 2D `UNet`
(16-32-64-128, one thread, Adam 2e-3, DiceCE, 4 classes) on axial slices at half the in-plane
resolution (≈ 4.5 mm, clipped to [-80, 305] HU as in the SCA-UNet recipe) for `--minutes` of wall
time, and reports held-out kidney Dice. The same-run reference is the best single HU window
[lo, hi) (10 HU grid) chosen on the training cases and applied to the held-out ones. Usage:

    python benchmarks/phantom_learnability.py [--cases 30] [--val 6] [--minutes 6]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from kidneyseg.data.phantom import case_seeds, generate_case


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def best_window(cases: list[tuple[np.ndarray, np.ndarray]]) -> tuple[int, int]:
    edges = np.arange(-300, 1001, 10)
    every = sum(np.histogram(ct, edges)[0] for ct, _ in cases)
    kidney = sum(np.histogram(ct[labels == 1], edges)[0] for ct, labels in cases)
    ca, ck = np.concatenate([[0], np.cumsum(every)]), np.concatenate([[0], np.cumsum(kidney)])
    i, j = np.triu_indices(len(edges), 1)
    k = int(np.argmax(2 * (ck[j] - ck[i]) / (ca[j] - ca[i] + kidney.sum())))
    return int(edges[i[k]]), int(edges[j[k]])


def main() -> None:
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=30)
    parser.add_argument("--val", type=int, default=6)
    parser.add_argument("--minutes", type=float, default=6.0)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    start = time.perf_counter()
    raw = []
    for seed in case_seeds(123, args.cases):
        case = generate_case(seed, size="small", orientation="RAS")
        raw.append((case.ct.array[::2, ::2], case.labels.array[::2, ::2]))
    print(f"generated {args.cases} small phantoms in {time.perf_counter() - start:.0f} s")
    train, val = raw[: -args.val], raw[-args.val :]

    lo, hi = best_window(train)
    window = [dice((ct >= lo) & (ct < hi), labels == 1) for ct, labels in val]

    rng = np.random.default_rng(0)
    xs, ys = [], []
    for ct, labels in train:
        for k in range(ct.shape[2]):
            if labels[:, :, k].any() or rng.random() < 0.3:
                xs.append(np.clip((ct[:, :, k] + 80.0) / 385.0, 0, 1))
                ys.append(labels[:, :, k])
    x_all = torch.tensor(np.stack(xs), dtype=torch.float32)[:, None]
    y_all = torch.tensor(np.stack(ys).astype(np.int64))[:, None]
    net = UNet(2, 1, 4, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=1)
    optimizer = torch.optim.Adam(net.parameters(), 2e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < 60 * args.minutes:
        batch = torch.randint(0, len(x_all), (24,))
        loss = loss_fn(net(x_all[batch]), y_all[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    net.eval()
    cnn = []
    with torch.no_grad():
        for ct, labels in val:
            slices = torch.tensor(np.clip((np.moveaxis(ct, 2, 0) + 80.0) / 385.0, 0, 1), dtype=torch.float32)
            pred = np.moveaxis(net(slices[:, None]).argmax(1).numpy(), 0, 2)
            cnn.append(dice(pred == 1, labels == 1))
    print(f"held-out kidney Dice over {args.val} cases (train {len(train)} cases, {len(x_all)} slices):")
    print(
        f"  best HU window [{lo}, {hi}) chosen on the training cases: "
        f"{np.mean(window):.3f} {np.round(window, 3)}"
    )
    print(
        f"  2D UNet after {args.minutes:g} min ({steps} steps, 1 thread): "
        f"{np.mean(cnn):.3f} {np.round(cnn, 3)}"
    )


if __name__ == "__main__":
    main()
