"""The training loop: epochs of seeded samples, validation, checkpoints and the run record.

`train(config, data_dir, out)` runs a recipe from scratch, `resume(run_dir)` continues a run
from its last checkpoint, `finetune_tumor(from_run, data_dir, out)` is the attention U-Net's
stage 2 (Rathnayaka et al.): tumor-containing slices, shallow encoder levels frozen.

Exactness: every random draw of epoch e (dropout, patch sampling, augmentation, the data
order, the 2 % background slices, data-loader workers) is seeded from (seed, e, rank), and the
last checkpoint holds the model, optimizer, scheduler, AMP scaler, SmartCache position and
metric history; so a run killed after epoch e and resumed produces the same epoch e + 1 as an
uninterrupted run (tested on CPU).

Run folder: `config.yaml` (resolved config), `metrics.csv`, `curves.png`, `run.json`,
`last.pt` (every epoch) and `best.pt` (best mean foreground validation Dice). Under torchrun
only rank 0 writes.

Kill safety: every file is written atomically, and `last.pt` is the run's one source of truth,
written first each epoch; `best.pt`, `metrics.csv` and `curves.png` follow from it and are
rewritten from it on resume, so a run killed between any two writes resumes to the same files
as a run never killed (tested by killing at every write). A run killed before its first
`last.pt` (config and record written) starts from scratch on `resume`, or again on `train`
with the same folder. Temporary files left by a killed writer are removed on start.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
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

from kidneyseg.config import RunConfig, dump_yaml, from_dict, load_yaml
from kidneyseg.errors import KidneysegError
from kidneyseg.io.atomic import remove_stale_partials, write_atomic, write_text_atomic
from kidneyseg.train import record
from kidneyseg.train.build import (
    build_optimizer,
    build_scheduler,
    freeze_encoder,
    resolve_model_config,
)
from kidneyseg.train.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    build_model_from_config,
    library_versions,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from kidneyseg.train.data import TrainSamples, epoch_seed
from kidneyseg.train.distributed import (
    DistContext,
    all_reduce_sum,
    all_true,
    barrier,
    init_distributed,
    shutdown,
)
from kidneyseg.train.losses import build_loss
from kidneyseg.train.prepare import PreparedData, prepare_data
from kidneyseg.train.validation import validate, window_size

RUN_FILES = ("config.yaml", "metrics.csv", "curves.png", "run.json", LAST_NAME, BEST_NAME)


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


def _stopped_before_first_checkpoint(out: Path, files: list[str]) -> bool:
    """Whether `files` are what a run writes before its first checkpoint: its record (0 epochs
    done) and its config, both readable (a foreign `config.yaml` is not taken for a run's)."""
    if not set(files) <= {"run.json", "config.yaml"}:
        return False
    try:
        if "config.yaml" in files:
            from_dict(RunConfig, load_yaml(out / "config.yaml"), str(out / "config.yaml"))
        started = json.loads((out / "run.json").read_text(encoding="utf-8")) if "run.json" in files else {}
    except (KidneysegError, OSError, ValueError):
        return False
    return isinstance(started, dict) and started.get("epochs_done", 0) == 0


def _check_new_run_dir(out: Path) -> str | None:
    """Refuse a folder holding a run, or say so when starting again one that stopped before its
    first checkpoint."""
    if out.exists() and not out.is_dir():
        raise KidneysegError("--out is a file, not a folder", out)
    taken = [n for n in RUN_FILES if (out / n).exists()]
    if not taken:
        return None
    if _stopped_before_first_checkpoint(out, taken):
        return f"{out}: the run here stopped before its first checkpoint ({LAST_NAME}); starting it again"
    raise KidneysegError(
        f"folder already holds a run ({taken[0]}); use --resume to continue it or another --out", out
    )


class _Trainer:
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
        self.loss_fn = build_loss(train)
        self.roi = window_size(config.data.patch_size, self.two_d)

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
                raise KidneysegError(
                    f"training diverged: the loss is {float(loss.detach())} (here or on another rank) at "
                    f"epoch {epoch + 1}, step {step + 1}; the last good checkpoint is kept. "
                    "Resume with a lower learning rate, e.g. --resume RUN train.lr=...",
                    self.out / LAST_NAME,
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
        val = self.data.val
        if self.config.train.val_max_cases:
            val = val[: self.config.train.val_max_cases]
        return validate(
            self.model,
            val,
            self.data.lut,
            self.config.label_map,
            self.loss_fn,
            self.roi,
            self.two_d,
            self.config.train.val_overlap,
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
            "data_dir": str(self.data_dir),
            "cache_root": str(self.cache_root),
            "preprocessed_cache": str(self.data.cache_dir),
            "initial_weights": None if self.initial_weights is None else str(self.initial_weights),
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

    def _save_epoch(self, improved: bool) -> None:
        """`last.pt` first: what follows is derived from it, and `restore_outputs` rewrites it."""
        if not self.ctx.is_main:
            return
        save_checkpoint(
            self.out / LAST_NAME,
            model_state={k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            config=self.config,
            extra_state=self._extra(),
        )
        if improved:
            self._copy_last_to_best()
        self._write_history()
        self.write_record("running")

    def restore_outputs(self) -> None:
        """Bring the files derived from `last.pt` up to its epoch (a kill may have come first)."""
        s = self.state
        if not self.ctx.is_main or s.epoch == 0:
            return
        if s.best_epoch == s.epoch:
            self._copy_last_to_best()
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
            self.config.preprocess.hu_window,
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
                    line = _epoch_line(row, train.epochs, self.config.label_map.foreground)
                    print(f"{line}  ETA {eta / 60:.1f} min", file=sys.stderr, flush=True)
                limit = train.time_limit_minutes * 60
                if limit and s.epoch < train.epochs and all_true(s.train_seconds >= limit, self.ctx):
                    status = "time limit"
                    break
        except KidneysegError:
            self.write_record("diverged")
            raise
        finally:
            samples.shutdown()
        self.write_record(status)
        return RunResult(
            self.out, s.epoch, s.best_dice, s.best_epoch, status, s.history[-1] if s.history else {}
        )


def _epoch_line(row: dict[str, float], epochs: int, classes: Any) -> str:
    parts = [f"epoch {int(row['epoch'])}/{epochs}", f"loss {row['train_loss']:.4f}"]
    if not math.isnan(row.get("val_dice", math.nan)):
        parts.append(f"val loss {row['val_loss']:.4f}")
        parts.append(f"val Dice {row['val_dice']:.3f}")
        parts.extend(f"{c.name} {row[f'val_dice_{c.name}']:.3f}" for c in classes)
    parts.append(f"{row['patches_per_second']:.2f} patches/s")
    parts.append(f"{row['epoch_seconds']:.0f} s")
    return "  ".join(parts)


def _configure_torch(config: RunConfig) -> None:
    if config.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _start(
    config: RunConfig,
    data_dir: Path,
    out: Path,
    cache_root: Path | None,
    device: str,
    progress: bool,
    *,
    state: RunState | None = None,
    init: tuple[dict[str, Any], dict[str, Any]] | None = None,
    init_weights: tuple[Path, dict[str, Any]] | None = None,
    freeze_depth: int = 0,
    notice: str | None = None,
) -> RunResult:
    ctx = init_distributed(device)
    try:
        _configure_torch(config)
        data_dir = data_dir.resolve()
        cache_root = (Path(cache_root) if cache_root is not None else out / "preprocessed").resolve()
        config = resolve_model_config(config)
        data = prepare_data(config, data_dir, cache_root, ctx, progress)
        trainer = _Trainer(
            config,
            out,
            data,
            ctx,
            progress,
            state or RunState(),
            data_dir,
            cache_root,
            freeze_depth,
            init_weights[0] if init_weights is not None else None,
        )
        if init is not None:
            trainer.load_state(*init)
        elif init_weights is not None:
            trainer.model.load_state_dict(init_weights[1])
        if ctx.is_main:
            if notice:
                print(notice, file=sys.stderr, flush=True)
            out.mkdir(parents=True, exist_ok=True)
            remove_stale_partials(out)
            trainer.write_record("running")  # first: where the data is, for a resume without last.pt
            write_text_atomic(out / "config.yaml", dump_yaml(config))
            trainer.restore_outputs()
        return trainer.run()
    finally:
        shutdown(ctx)


def train(
    config: RunConfig,
    data_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    progress: bool = True,
) -> RunResult:
    """Train `config` on the labelled cases under `data_dir`, writing the run folder `out`.

    Args:
        config: a resolved run config (e.g. `kidneyseg.recipes.load_recipe("sca-unet-3d:cpu")`).
        data_dir: a dataset in any layout `kidneyseg.data.cases.discover` knows.
        out: the run folder; must not hold a run with a checkpoint (one without, e.g. killed
            in its first epoch, is started again).
        cache_dir: where preprocessed cases are cached (default `out/preprocessed`); runs with
            the same preprocessing config can share one.
        device: "auto", "cpu" or "cuda" (under torchrun each rank takes its LOCAL_RANK GPU).
        progress: show tqdm bars (else one log line per epoch).

    Raises:
        KidneysegError: bad data, bad config, a diverged loss, or a failed write.
    """
    out = Path(out)
    notice = _check_new_run_dir(out)
    cache_root = Path(cache_dir) if cache_dir is not None else None
    return _start(config, Path(data_dir), out, cache_root, device, progress, notice=notice)


def _state_from(extra: dict[str, Any]) -> RunState:
    return RunState(
        epoch=int(extra["epoch"]),
        best_dice=float(extra["best_dice"]),
        best_epoch=int(extra["best_epoch"]),
        history=[dict(r) for r in extra["history"]],
        train_seconds=float(extra["train_seconds"]),
        cpu_seconds=float(extra["cpu_seconds"]),
        last_val=dict(extra["last_val"]),
    )


def resume(
    run_dir: str | os.PathLike[str],
    *,
    epochs: int | None = None,
    time_limit_minutes: float | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    progress: bool = True,
) -> RunResult:
    """Continue a run from its last checkpoint, exactly as if it had never stopped; a run
    stopped before its first checkpoint starts from scratch (from its config.yaml and run.json).

    Args:
        run_dir: the run folder.
        epochs: a new total number of epochs (to extend a finished run).
        time_limit_minutes: a new limit on the run's total training time (0: none).
        data_dir: the dataset, if it moved since the run started.
        device: as for `train`.
        progress: as for `train`.

    Raises:
        KidneysegError: no last checkpoint and no config, or the run's data is gone.
    """
    run_dir = Path(run_dir)
    last = run_dir / LAST_NAME
    changes = {"epochs": epochs, "time_limit_minutes": time_limit_minutes}
    changes = {k: v for k, v in changes.items() if v is not None}
    if not last.is_file():
        return _restart(run_dir, changes, data_dir, device, progress)
    ckpt = load_checkpoint(last)
    extra = ckpt.extra
    if "optimizer" not in extra:
        raise KidneysegError("checkpoint holds no training state to resume from", last)
    config = ckpt.config
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, **changes))
    data = Path(data_dir) if data_dir is not None else Path(extra["data_dir"])
    return _start(
        config,
        data,
        run_dir,
        Path(extra["cache_root"]),
        device,
        progress,
        state=_state_from(extra),
        init=(ckpt.model_state, extra),
        freeze_depth=int(extra.get("freeze_depth", 0)),
    )


def _restart(
    run_dir: Path,
    changes: dict[str, Any],
    data_dir: str | os.PathLike[str] | None,
    device: str,
    progress: bool,
) -> RunResult:
    """`resume` of a run stopped before its first checkpoint: start it from scratch."""
    taken = [n for n in RUN_FILES if (run_dir / n).exists()]
    if "config.yaml" not in taken or not _stopped_before_first_checkpoint(run_dir, taken):
        raise KidneysegError(
            f"no {LAST_NAME} to resume from, nor the config.yaml of a run stopped in its first epoch; "
            "start the run with train --out",
            run_dir,
        )
    config = from_dict(RunConfig, load_yaml(run_dir / "config.yaml"), str(run_dir / "config.yaml"))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, **changes))
    try:
        started = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        started = {}
    data = data_dir if data_dir is not None else started.get("data_dir")
    if data is None:
        raise KidneysegError(f"no {LAST_NAME} yet and no run.json naming the data; give --data", run_dir)
    weights = started.get("initial_weights")
    return _start(
        config,
        Path(data),
        run_dir,
        Path(started["cache_root"]) if started.get("cache_root") else None,
        device,
        progress,
        init_weights=(Path(weights), load_checkpoint(weights).model_state) if weights else None,
        freeze_depth=config.train.freeze_depth if weights else 0,
        notice=f"{run_dir}: no {LAST_NAME} yet (the run stopped in its first epoch); starting from scratch",
    )


def finetune_tumor(
    from_run: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    overrides: list[str] | tuple[str, ...] = (),
    cache_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    progress: bool = True,
) -> RunResult:
    """Stage 2 of the attention U-Net recipe (Rathnayaka et al.): start from a stage-1 run's best
    weights and train on tumor-containing slices only, with the `train.freeze_depth` shallowest
    encoder levels frozen. The optimizer, schedule and epoch count start afresh.

    Raises:
        KidneysegError: the stage-1 run is not a 2D slice run, or its network has no encoder
            levels to freeze.
    """
    from kidneyseg.config import apply_overrides, from_dict, to_dict

    ckpt = load_checkpoint(resolve_checkpoint(from_run))
    base = to_dict(ckpt.config)
    base["data"]["slice_filter"] = "tumor"
    base["train"]["recipe"] = f"{ckpt.config.train.recipe}+finetune-tumor"
    config = from_dict(RunConfig, apply_overrides(base, list(overrides)), "config")
    if config.data.sampling != "slice2d":
        raise KidneysegError(
            "--finetune-tumor continues a 2D slice run (attention-unet-2d or unet-2d)", ckpt.path
        )
    out = Path(out)
    notice = _check_new_run_dir(out)
    return _start(
        config,
        Path(data_dir),
        out,
        Path(cache_dir) if cache_dir is not None else None,
        device,
        progress,
        init_weights=(ckpt.path.resolve(), ckpt.model_state),
        freeze_depth=config.train.freeze_depth,
        notice=notice,
    )
