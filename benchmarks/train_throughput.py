"""Training throughput (patches/s) of `sca-unet-3d:cpu` through kidneyseg's engine vs a plain
MONAI training loop with the same model, transforms, SmartCache and data, in the same run.

Both sides train from the same preprocessed cases; runs alternate (ours, reference, ours, ...)
so that the machine's load affects both alike, and the medians of the per-epoch patches/s are
compared as a ratio. Validation is excluded from both (the engine's `patches_per_second` counts
the training part of an epoch only).

    python benchmarks/train_throughput.py [--data DIR] [--repeats 3] [--epochs 2]

Without --data, small phantoms are generated in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from kidneyseg.checkpoint import build_model_from_config
from kidneyseg.data.phantom import generate_dataset
from kidneyseg.recipes import load_recipe
from kidneyseg.train.build import resolve_model_config
from kidneyseg.train.distributed import DistContext
from kidneyseg.train.engine import train
from kidneyseg.train.prepare import prepare_data
from kidneyseg.train.record import read_metrics_csv


def _seed_worker_transforms(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    info.dataset.transform.set_random_state(seed=info.seed % (2**32 - 1))


def plain_monai_epochs(config, data, epochs: int) -> list[float]:
    """The reference: the textbook MONAI loop (SmartCacheDataset + DataLoader + DiceCELoss + AdamW)."""
    from monai.data import DataLoader, SmartCacheDataset
    from monai.losses import DiceCELoss

    from kidneyseg.train.data import epoch_seed, train_transforms

    torch.manual_seed(config.train.seed)
    model = build_model_from_config(config)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay
    )
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    transform = train_transforms(config.data, config.train.augment, data.lut, config.preprocess.hu_window)
    items = [{"case": str(r.folder)} for r in data.train]
    dataset = SmartCacheDataset(
        items,
        transform=transform,
        replace_rate=config.data.replace_rate,
        cache_num=max(1, round(len(items) * config.data.cache_rate)),
        num_init_workers=1,
        num_replace_workers=1,
        progress=False,
    )
    rates = []
    dataset.start()
    for epoch in range(epochs):
        # the same random draws as the engine's epoch (same patches, same augmentations), so that
        # both sides do the same work and only the loops differ
        transform.set_random_state(seed=epoch_seed(config.train.seed, epoch, 0, stream=2))
        generator = torch.Generator().manual_seed(epoch_seed(config.train.seed, epoch, 0, stream=3))
        loader = DataLoader(
            dataset,
            batch_size=config.data.batch_size,
            sampler=torch.utils.data.RandomSampler(dataset, generator=generator),
            generator=generator,
            num_workers=config.data.num_workers,
            worker_init_fn=_seed_worker_transforms,
        )
        model.train()
        t0, patches = time.perf_counter(), 0
        for batch in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(batch["image"]), batch["label"])
            loss.backward()
            optimizer.step()
            patches += batch["image"].shape[0]
        dataset.update_cache()  # inside the timing, as in the engine: waiting for the swap is training time
        rates.append(patches / (time.perf_counter() - t0))
    dataset.shutdown()
    return rates


def ours_epochs(config, data_dir: Path, cache: Path, out: Path, epochs: int) -> list[float]:
    train(config, data_dir, out, cache_dir=cache, device="cpu", progress=False)
    return [row["patches_per_second"] for row in read_metrics_csv(out / "metrics.csv")][:epochs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="KiTS-layout dataset (default: generate phantoms)")
    parser.add_argument("--cases", type=int, default=8, help="phantoms to generate without --data")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kidneyseg-train-bench-"))
    data_dir = args.data
    if data_dir is None:
        data_dir = work / "phantoms"
        generate_dataset(data_dir, cases=args.cases, seed=0, size="small", progress=False)
    overrides = [f"train.epochs={args.epochs}", "train.val_max_cases=1", "train.time_limit_minutes=0"]
    config = load_recipe("sca-unet-3d:cpu", overrides=overrides)
    config = resolve_model_config(config)
    cache = work / "cache"
    data = prepare_data(config, data_dir, cache, DistContext(), progress=False)

    ours: list[float] = []
    reference: list[float] = []
    for repeat in range(args.repeats):
        ours += ours_epochs(config, data_dir, cache, work / f"run{repeat}", args.epochs)
        reference += plain_monai_epochs(config, data, args.epochs)
        print(
            f"repeat {repeat + 1}: ours {ours[-args.epochs :]}  plain MONAI {reference[-args.epochs :]}",
            flush=True,
        )
    result = {
        "recipe": "sca-unet-3d:cpu",
        "patches_per_epoch": max(1, round(len(data.train) * config.data.cache_rate))
        * config.data.samples_per_case,
        "threads": torch.get_num_threads(),
        "ours_patches_per_s": ours,
        "plain_monai_patches_per_s": reference,
        "ours_median": statistics.median(ours),
        "plain_monai_median": statistics.median(reference),
    }
    result["ratio_ours_over_monai"] = result["ours_median"] / result["plain_monai_median"]
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
