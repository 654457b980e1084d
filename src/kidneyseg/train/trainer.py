"""One training run's loop: epochs of seeded samples, validation, checkpoints and the run record
(`Trainer`); `kidneyseg.train.engine` starts, resumes and fine-tunes runs with it.

Exactness: every random draw of epoch e (dropout, patch sampling, augmentation, the data
order, the 2 % background slices, data-loader workers) is seeded from (seed, e, rank), and the
last checkpoint holds the model, optimizer, scheduler, AMP scaler, SmartCache position and
metric history; so a run killed after epoch e and resumed produces the same epoch e + 1 as an
uninterrupted run.

Kill safety: `last.pt`, the run's one source of truth, is written first each epoch; `best.pt`,
`metrics.csv` and `curves.png` follow from it and are rewritten from it on resume (`restore_outputs`).
"""

from __future__ import annotations

import math
import random
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from kidneyseg.checkpoint import (
    BEST_NAME,
    EPOCHS_DIR,
    LAST_NAME,
    build_model_from_config,
    library_versions,
    save_checkpoint,
)
from kidneyseg.config import RunConfig
from kidneyseg.errors import KidneysegError
from kidneyseg.io.atomic import write_atomic
from kidneyseg.train import record
from kidneyseg.train.build import build_optimizer, build_scheduler, freeze_encoder
from kidneyseg.train.data import epoch_seed
from kidneyseg.train.distributed import DistContext, all_reduce_sum, all_true, barrier
from kidneyseg.train.losses import build_loss
from kidneyseg.train.prepare import PreparedData
from kidneyseg.train.samples import TrainSamples
from kidneyseg.train.validation import validate, validation_inference


class DivergedError(KidneysegError):
    """The training loss became NaN or infinite: the run's record says "diverged"."""


@dataclass
class RunState:
    """What changes from epoch to epoch (and is restored on resume)."""

    epoch: int = 0
    best_dice: float = -math.inf
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    cpu_seconds: float = 0.0
    last_val: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResult:
    """The outcome of `train`/`resume`/`finetune_tumor`."""

    run_dir: Path
    epochs: int
    best_dice: float
    best_epoch: int
    status: str
    last_metrics: dict[str, float]


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy and Python's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Trainer:
    """One run of the loop; built by `train`, `resume` and `finetune_tumor`."""

    def __init__(
        self,
        config: RunConfig,
        out: Path,
        data: PreparedData,
        ctx: DistContext,
        progress: bool,
        state: RunState,
        data_dir: Path,
        cache_root: Path,
        freeze_depth: int,
        initial_weights: Path | None,
    ):
        self.config, self.out, self.data, self.ctx, self.progress = config, out, data, ctx, progress
        self.state, self.data_dir, self.cache_root, self.freeze_depth = (
            state,
            data_dir,
            cache_root,
            freeze_depth,
        )
        self.initial_weights = initial_weights
        train = config.train
        self.device = ctx.device
        self.cuda = self.device.type == "cuda"
        self.amp = train.amp and self.cuda
        self.two_d = config.data.sampling == "slice2d"
        seed_everything(train.seed)
        model = build_model_from_config(config)
        self.frozen = freeze_encoder(model, freeze_depth) if freeze_depth else []
        model = model.to(self.device)
        if self.cuda and train.channels_last:
            model = model.to(memory_format=torch.channels_last if self.two_d else torch.channels_last_3d)
        self.model = model
        self.net: nn.Module = model
        if ctx.distributed:
            self.net = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.cuda else None, find_unused_parameters=False
            )
        self.optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], train)
        self.scheduler = build_scheduler(self.optimizer, train)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.loss_fn = build_loss(train, config.label_map)
        self.val_inference = validation_inference(config)

    def load_state(self, model_state: dict[str, Any], extra: dict[str, Any]) -> None:
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(extra["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(extra["scheduler"])
        self.scaler.load_state_dict(extra["scaler"])

    # ---- one epoch -------------------------------------------------------------------------
    def _train_mode(self) -> None:
        self.net.train()
        for module in self.frozen:
            module.eval()

    def _train_epoch(self, samples: TrainSamples, epoch: int) -> dict[str, float]:
        train = self.config.train
        seed_everything(epoch_seed(train.seed, epoch, self.ctx.rank))
        loader = samples.loader(epoch)
        self._train_mode()
        fmt = torch.channels_last if self.two_d else torch.channels_last_3d
        sums = torch.zeros(3, dtype=torch.float64)
        last_dice = self.state.last_val.get("val_dice", math.nan)
        bar = tqdm(
            loader,
            total=len(loader),
            desc=f"epoch {epoch + 1}/{train.epochs}",
            disable=not (self.progress and self.ctx.is_main),
            leave=False,
            dynamic_ncols=True,
        )
        for step, batch in enumerate(bar):
            image = batch["image"].to(self.device, non_blocking=True)
            label = batch["label"].to(self.device, non_blocking=True)
            if self.cuda and train.channels_last:
                image = image.contiguous(memory_format=fmt)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, enabled=self.amp):
                logits = self.net(image)
            loss = self.loss_fn(logits.float(), label)
            if not all_true(bool(torch.isfinite(loss)), self.ctx):
                last = self.out / LAST_NAME
                advice = (
                    f"the last good checkpoint is kept; train a new run from it with a lower learning "
                    f"rate: --init-weights {last} train.lr=..."
                    if last.is_file()
                    else "no checkpoint was written yet; start again with a lower learning rate: train.lr=..."
                )
                raise DivergedError(
                    f"training diverged: the loss is {float(loss.detach())} (here or on another rank) at "
                    f"epoch {epoch + 1}, step {step + 1}; {advice}",
                    self.out,
                )
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            sums += torch.tensor([float(loss.detach()), 1.0, float(image.shape[0])], dtype=torch.float64)
            bar.set_postfix_str(f"loss {sums[0] / sums[1]:.4f}  val Dice {last_dice:.3f}")
        bar.close()
        samples.end_epoch()
        sums = all_reduce_sum(sums, self.ctx)
        return {"train_loss": float(sums[0] / max(sums[1], 1)), "patches": float(sums[2])}

    def _validate(self) -> dict[str, float]:
        return validate(
            self.model,
            self.data.validated,
            self.data.lut,
            self.config.label_map,
            self.loss_fn,
            self.val_inference,
            self.ctx,
            self.amp,
        )

    # ---- persistence -----------------------------------------------------------------------
    def _extra(self) -> dict[str, Any]:
        s = self.state
        return {
            "epoch": s.epoch,
            "best_dice": s.best_dice,
            "best_epoch": s.best_epoch,
            "history": s.history,
            "train_seconds": s.train_seconds,
            "cpu_seconds": s.cpu_seconds,
            "last_val": s.last_val,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "scaler": self.scaler.state_dict(),
            "freeze_depth": self.freeze_depth,
            "data_dir": str(self.data_dir),
            "cache_root": str(self.cache_root),
            "world": self.ctx.world,
            "train_cases": [r.case_id for r in self.data.train],
            "val_cases": [r.case_id for r in self.data.val],
            "case_file_sizes": self.data.file_sizes,
        }

    def _record(self, status: str) -> dict[str, Any]:
        s = self.state
        return {
            "status": status,
            "recipe": self.config.train.recipe,
            "model": self.config.model.name,
            "labels": self.config.label_map.names,
            "epochs_done": s.epoch,
            "epochs_planned": self.config.train.epochs,
            "best_val_dice": s.best_dice,
            "best_epoch": s.best_epoch,
            "last_metrics": s.history[-1] if s.history else {},
            "train_cases": [r.case_id for r in self.data.train],
            "val_cases": [r.case_id for r in self.data.val],
            "validated_cases": [r.case_id for r in self.data.validated],
            "case_file_sizes": self.data.file_sizes,
            "data_dir": str(self.data_dir),
            "cache_root": str(self.cache_root),
            "preprocessed_cache": str(self.data.cache_dir),
            "initial_weights": None if self.initial_weights is None else str(self.initial_weights),
            "freeze_depth": self.freeze_depth,
            "device": str(self.device),
            "world_size": self.ctx.world,
            "amp": self.amp,
            "threads": torch.get_num_threads(),
            "wall_seconds_training": s.train_seconds,
            "cpu_seconds_training": s.cpu_seconds,
            "versions": library_versions(),
        }

    def write_record(self, status: str) -> None:
        if self.ctx.is_main:
            record.write_run_record(self.out / "run.json", self._record(status))

    def mark_interrupted(self) -> None:
        if self.ctx.is_main:
            record.update_record(self.out / "run.json", {"status": "interrupted"})

    def mark_failed(self) -> None:
        """Say in the record that the run stopped on an error (a diverged run has said so)."""
        if self.ctx.is_main:
            record.update_record(self.out / "run.json", {"status": "failed"}, only_from="running")

    def _copy_last_to_best(self) -> None:
        write_atomic(self.out / BEST_NAME, lambda tmp: shutil.copyfile(self.out / LAST_NAME, tmp))

    def _write_history(self) -> None:
        record.write_metrics_csv(self.out / "metrics.csv", self.state.history)
        record.plot_curves(
            self.out / "curves.png",
            self.state.history,
            [c.name for c in self.config.label_map.foreground],
            f"{self.config.train.recipe or self.config.model.name}: {self.out.name}",
        )

    def _weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def _save_epoch_weights(self, weights: dict[str, torch.Tensor], only_if_missing: bool = False) -> None:
        """`train.keep_epoch_weights`: this epoch's weights alone, in `EPOCHS_DIR`."""
        path = self.out / EPOCHS_DIR / f"epoch_{self.state.epoch:04d}.pt"
        if self.config.train.keep_epoch_weights and not (only_if_missing and path.is_file()):
            save_checkpoint(path, model_state=weights, config=self.config)

    def _save_epoch(self, improved: bool) -> None:
        """`last.pt` first: what follows is derived from it, and `restore_outputs` rewrites it."""
        if not self.ctx.is_main:
            return
        weights = self._weights()
        save_checkpoint(
            self.out / LAST_NAME, model_state=weights, config=self.config, extra_state=self._extra()
        )
        if improved:
            self._copy_last_to_best()
        self._save_epoch_weights(weights)
        self._write_history()
        self.write_record("running")

    def restore_outputs(self) -> None:
        """Bring the files derived from `last.pt` up to its epoch (a kill may have come first)."""
        s = self.state
        if not self.ctx.is_main or s.epoch == 0:
            return
        if s.best_epoch == s.epoch:
            self._copy_last_to_best()
        self._save_epoch_weights(self._weights(), only_if_missing=True)
        self._write_history()

    # ---- the loop --------------------------------------------------------------------------
    def run(self) -> RunResult:
        train = self.config.train
        s = self.state
        samples = TrainSamples(
            self.data.train,
            self.config.data,
            train.augment,
            self.data.lut,
            train.seed,
            self.config.preprocess,
            self.ctx.rank,
            self.ctx.world,
            start_epoch=s.epoch,
        )
        status = "finished"
        samples.start()
        try:
            while s.epoch < train.epochs:
                epoch = s.epoch
                t0, c0 = time.perf_counter(), _cpu_seconds()
                row: dict[str, float] = {"epoch": float(epoch + 1)}
                row.update(self._train_epoch(samples, epoch))
                row["train_seconds"] = time.perf_counter() - t0
                row["patches_per_second"] = row["patches"] / max(row["train_seconds"], 1e-9)
                row["lr"] = float(self.optimizer.param_groups[0]["lr"])
                validated = (epoch + 1) % max(train.val_every, 1) == 0 or epoch + 1 == train.epochs
                if validated:
                    v0 = time.perf_counter()
                    metrics = self._validate()
                    row["val_seconds"] = time.perf_counter() - v0
                    s.last_val = metrics
                    if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                        self.scheduler.step(metrics["val_loss"])
                else:
                    metrics = {k: math.nan for k in s.last_val} or {
                        "val_loss": math.nan,
                        "val_dice": math.nan,
                    }
                    row["val_seconds"] = 0.0
                row.update(metrics)
                if isinstance(self.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
                    self.scheduler.step()
                wall = time.perf_counter() - t0
                cpu = all_reduce_sum(torch.tensor([_cpu_seconds() - c0], dtype=torch.float64), self.ctx)
                row["epoch_seconds"] = wall
                row["cpu_seconds"] = float(cpu[0])
                s.train_seconds += wall
                s.cpu_seconds += float(cpu[0])
                improved = (
                    validated and not math.isnan(metrics["val_dice"]) and metrics["val_dice"] > s.best_dice
                )
                if improved:
                    s.best_dice, s.best_epoch = metrics["val_dice"], epoch + 1
                s.history.append(row)
                s.epoch = epoch + 1
                self._save_epoch(improved)
                barrier(self.ctx)
                if self.ctx.is_main:
                    eta = s.train_seconds / s.epoch * (train.epochs - s.epoch)
                    line = record.epoch_line(row, train.epochs, self.config.label_map.foreground)
                    print(f"{line}  ETA {eta / 60:.1f} min", file=sys.stderr, flush=True)
                limit = train.time_limit_minutes * 60
                if limit and s.epoch < train.epochs and all_true(s.train_seconds >= limit, self.ctx):
                    status = "time limit"
                    break
        except DivergedError:  # other errors: the engine records the run as failed
            self.write_record("diverged")
            raise
        finally:
            samples.shutdown()
        self.write_record(status)
        return RunResult(
            self.out, s.epoch, s.best_dice, s.best_epoch, status, s.history[-1] if s.history else {}
        )
