"""Parameters, GFLOPs and CPU forward / training-step time of every registered model.

One input per model, as the papers train: a 64×128×128 CT patch for the 3D models (array shape
(1, 1, 128, 128, 64), RAS x, y, z) and one 512×512 axial slice for the 2D models. GFLOPs are counted
for one forward pass with `torch.utils.flop_counter.FlopCounterMode` on the meta device (convolutions
and matrix products, 2 FLOPs per multiply-add; element-wise operations such as norms and attention
products are not counted). Times are medians over `--repeats` runs after one warm-up; when the
warm-up shows that the repeats would exceed `--budget` seconds, the warm-up run is the only
measurement (the table gives the number of runs, forward/training step).

Timings on a shared CPU drift with the load, so every time is also given as a ratio to a reference
measured in the same run, before and after the models: MONAI's plain stride-2 `UNet` with channels
(32, 64, 128, 128) on the 3D patch (the SCA-UNet backbone without attention).

Usage:
    python benchmarks/models_speed.py [--repeats 3] [--budget 60] [--models a,b] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from kidneyseg.models import build_model, list_models, model_info

SHAPE_3D = (1, 1, 128, 128, 64)
SHAPE_2D = (1, 1, 512, 512)


def seconds(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def timed_runs(step: Callable[[], None], repeats: int, budget: float) -> list[float]:
    """Seconds per call of `step`: a warm-up call, then `repeats` timed calls.

    If the warm-up call alone shows that the repeats would exceed `budget` seconds, that first call
    is the only measurement (it then includes the one-off warm-up cost, small next to such a run).
    """
    first = seconds(step)
    if first * repeats > budget:
        return [first]
    return [seconds(step) for _ in range(repeats)]


def forward_gflops(model_factory: Callable[[], torch.nn.Module], shape: tuple[int, ...]) -> float:
    """FLOPs of one forward pass, counted on the meta device (shapes only, no computation)."""
    with torch.device("meta"):
        model = model_factory()
        x = torch.empty(shape)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def measure(
    model_factory: Callable[[], torch.nn.Module], shape: tuple[int, ...], repeats: int, budget: float
) -> dict:
    torch.manual_seed(0)
    model = model_factory()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=generator)
    classes = model.out_channels
    target = torch.randint(0, classes, (shape[0], *shape[2:]), generator=generator)

    model.eval()

    def forward() -> None:
        with torch.inference_mode():
            model(x)

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), target).backward()

    forward_runs = timed_runs(forward, repeats, budget)
    model.train()
    train_runs = timed_runs(train_step, repeats, budget)
    return {
        "gflops_forward": forward_gflops(model_factory, shape),
        "forward_s": statistics.median(forward_runs),
        "forward_runs": len(forward_runs),
        "train_step_s": statistics.median(train_runs),
        "train_runs": len(train_runs),
    }


def reference() -> torch.nn.Module:
    return UNet(3, 1, 4, (32, 64, 128, 128), (2, 2, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument(
        "--budget", type=float, default=60.0, help="seconds per measurement before cutting runs"
    )
    parser.add_argument("--models", default=",".join(list_models()), help="comma-separated registry names")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    names = [n for n in args.models.split(",") if n]
    ref_runs = [measure(reference, SHAPE_3D, args.repeats, args.budget)]
    results = {}
    for name in tqdm(names, desc="models", unit="model"):
        info = model_info(name)
        shape = SHAPE_3D if info["spatial_dims"] == 3 else SHAPE_2D
        results[name] = {"parameters": info["parameters"], "input": list(shape)}
        results[name].update(measure(partial(build_model, name), shape, args.repeats, args.budget))
    ref_runs.append(measure(reference, SHAPE_3D, args.repeats, args.budget))
    ref_forward = statistics.median(r["forward_s"] for r in ref_runs)
    ref_train = statistics.median(r["train_step_s"] for r in ref_runs)

    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}")
    print(
        f"reference MONAI UNet (32, 64, 128, 128) on {SHAPE_3D}: {ref_runs[0]['gflops_forward']:.1f} GFLOP, "
        f"forward {ref_forward:.2f} s, training step {ref_train:.2f} s "
        f"(before/after: {ref_runs[0]['train_step_s']:.2f} / {ref_runs[1]['train_step_s']:.2f} s)"
    )
    print()
    print("| model | input | parameters | GFLOP (forward) | forward s (× ref) | fwd+bwd s (× ref) | runs |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        size = "×".join(map(str, r["input"][2:]))
        print(
            f"| `{name}` | {size} | {r['parameters']:,} | {r['gflops_forward']:.1f} | "
            f"{r['forward_s']:.2f} ({r['forward_s'] / ref_forward:.1f}) | "
            f"{r['train_step_s']:.2f} ({r['train_step_s'] / ref_train:.1f}) | "
            f"{r['forward_runs']}/{r['train_runs']} |"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "reference": {"forward_s": ref_forward, "train_step_s": ref_train, "runs": ref_runs},
                    "models": results,
                },
                fh,
                indent=2,
            )


if __name__ == "__main__":
    main()
