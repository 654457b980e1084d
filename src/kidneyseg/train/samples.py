"""The training data of one rank, epoch by epoch: datasets (SmartCache, full cache or none),
the 2D slice sampler of the attention U-Net paper and the seeded loaders.

Every random draw derives from `(seed, epoch, rank)` (`kidneyseg.train.data.epoch_seed`), so an
epoch is reproducible on its own: that is what makes `--resume` exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from monai import transforms as mt
from monai.data import CacheDataset, Dataset, SmartCacheDataset, list_data_collate
from torch.utils.data import DataLoader, Sampler

from kidneyseg.config import AugmentConfig, DataConfig, PreprocessConfig
from kidneyseg.errors import KidneysegError
from kidneyseg.train.data import MAX_SEED, CaseRecord, epoch_seed, train_transforms


class SliceEpochSampler(Sampler[int]):
    """Indices of the 2D training slices of one epoch (attention U-Net paper, Rathnayaka et al.).

    Every slice in `keep` is used each epoch; a fresh random `fraction` of `optional`
    (background-only slices) joins it. The order is shuffled, then split across `world`
    ranks (padded by repetition so that each rank takes the same number of steps).

    Args:
        keep: dataset indices used every epoch.
        optional: dataset indices of which `fraction` is drawn each epoch.
        fraction: share of `optional` drawn per epoch (0.02 in the paper).
        seed: the run seed.
        rank: this process's rank.
        world: number of processes.
    """

    def __init__(
        self,
        keep: Sequence[int],
        optional: Sequence[int],
        fraction: float,
        seed: int,
        rank: int = 0,
        world: int = 1,
    ):
        self.keep = np.asarray(keep, dtype=np.int64)
        self.optional = np.asarray(optional, dtype=np.int64)
        self.fraction = fraction
        self.seed, self.rank, self.world = seed, rank, world
        self.epoch = 0
        total = len(self.keep) + math.ceil(len(self.optional) * fraction)
        self.per_rank = math.ceil(total / world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_indices(self) -> np.ndarray:
        """This epoch's indices for this rank."""
        rng = np.random.default_rng(epoch_seed(self.seed, self.epoch, 0, stream=1))
        n_optional = math.ceil(len(self.optional) * self.fraction)
        drawn = rng.choice(self.optional, size=n_optional, replace=False) if n_optional else self.optional[:0]
        order = rng.permutation(np.concatenate([self.keep, drawn]))
        if len(order) == 0:
            return order
        padded = np.resize(order, self.per_rank * self.world)
        return padded[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(int(i) for i in self.epoch_indices())

    def __len__(self) -> int:
        return self.per_rank


def _seed_workers(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None)
    if isinstance(transform, mt.Randomizable):
        transform.set_random_state(seed=info.seed % MAX_SEED)


class TrainSamples:
    """The training data of one rank: dataset, per-epoch sampler and loader.

    3D runs cache the rank's share of the training cases (SmartCache, full cache or none);
    2D runs read slices straight from the memory-mapped cache. `loader(epoch)` seeds every
    random transform from `(seed, epoch, rank)` and returns the epoch's DataLoader.

    For an exact resume, the SmartCache window position is part of the state: the data list
    is rotated so that the cache holds exactly what it held after `start_epoch` updates.
    """

    def __init__(
        self,
        records: Sequence[CaseRecord],
        data: DataConfig,
        aug: AugmentConfig,
        lut: np.ndarray,
        seed: int,
        preprocess: PreprocessConfig,
        rank: int = 0,
        world: int = 1,
        start_epoch: int = 0,
    ):
        self.data, self.seed, self.rank, self.world = data, seed, rank, world
        self.transform = train_transforms(data, aug, lut, preprocess)
        self.smart: SmartCacheDataset | None = None
        self.sampler: SliceEpochSampler | None = None
        if data.sampling == "patch3d":
            self.dataset = self._volume_dataset(records, start_epoch)
        elif data.sampling == "slice2d":
            self.dataset = self._slice_dataset(records)
        else:
            raise KidneysegError(f"data.sampling must be 'patch3d' or 'slice2d', got {data.sampling!r}")

    def _volume_dataset(self, records: Sequence[CaseRecord], start_epoch: int) -> Any:
        ordered = [records[i] for i in np.random.default_rng(self.seed).permutation(len(records))]
        per_rank = math.ceil(len(ordered) / self.world)
        shard = [ordered[i % len(ordered)] for i in range(self.rank, per_rank * self.world, self.world)]
        items = [{"case": str(r.folder)} for r in shard]
        cache = self.data.cache
        cache_num = max(1, round(len(items) * self.data.cache_rate))
        if cache == "smart" and cache_num < len(items):
            replace_num = min(math.ceil(cache_num * self.data.replace_rate), len(items) - cache_num)
            offset = (start_epoch * replace_num) % len(items)
            items = items[offset:] + items[:offset]
            self.smart = SmartCacheDataset(
                items,
                transform=self.transform,
                replace_rate=self.data.replace_rate,
                cache_num=cache_num,
                num_init_workers=1,
                num_replace_workers=1,
                shuffle=False,
                progress=False,
            )
            return self.smart
        if cache in ("smart", "full"):
            return CacheDataset(
                items, transform=self.transform, cache_rate=1.0, num_workers=1, progress=False
            )
        if cache == "none":
            return Dataset(items, transform=self.transform)
        raise KidneysegError(f"data.cache must be 'smart', 'full' or 'none', got {cache!r}")

    def _slice_dataset(self, records: Sequence[CaseRecord]) -> Dataset:
        if self.data.slice_filter not in ("foreground", "tumor"):
            raise KidneysegError(
                f"data.slice_filter must be 'foreground' or 'tumor', got {self.data.slice_filter!r}"
            )
        items: list[dict[str, Any]] = []
        keep: list[int] = []
        optional: list[int] = []
        for r in records:
            wanted = set(r.tumor_slices if self.data.slice_filter == "tumor" else r.foreground_slices)
            for z in range(r.shape[2]):
                (keep if z in wanted else optional).append(len(items))
                items.append({"case": str(r.folder), "z": z})
        if not keep:
            what = "tumor" if self.data.slice_filter == "tumor" else "foreground"
            raise KidneysegError(f"no training slice holds {what}; nothing to train on")
        fraction = 0.0 if self.data.slice_filter == "tumor" else self.data.background_slice_fraction
        self.sampler = SliceEpochSampler(keep, optional, fraction, self.seed, self.rank, self.world)
        return Dataset(items, transform=self.transform)

    def start(self) -> None:
        """Start SmartCache replacement (no-op for other datasets)."""
        if self.smart is not None:
            self.smart.start()

    def end_epoch(self) -> None:
        """Swap in the SmartCache replacements prepared during the epoch."""
        if self.smart is not None:
            self.smart.update_cache()

    def shutdown(self) -> None:
        if self.smart is not None and self.smart.is_started():
            self.smart.shutdown()

    def loader(self, epoch: int) -> DataLoader:
        """The DataLoader of `epoch`, with every random draw seeded from (seed, epoch, rank)."""
        self.transform.set_random_state(seed=epoch_seed(self.seed, epoch, self.rank, stream=2))
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, self.rank, stream=3))
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
            sampler: Sampler[int] = self.sampler
        else:
            sampler = torch.utils.data.RandomSampler(self.dataset, generator=generator)
        workers = self.data.num_workers
        return DataLoader(
            self.dataset,
            batch_size=self.data.batch_size,
            sampler=sampler,
            num_workers=workers,
            collate_fn=list_data_collate,
            worker_init_fn=_seed_workers if workers else None,
            generator=generator,
            persistent_workers=False,
            drop_last=False,
        )
