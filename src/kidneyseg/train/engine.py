"""Training runs: start, resume and fine-tune them (the loop itself is `kidneyseg.train.trainer`).

`train(config, data_dir, out)` runs a recipe from scratch, `resume(run_dir)` continues a run
from its last checkpoint, `finetune_tumor(from_run, data_dir, out)` is the attention U-Net's
stage 2 (Rathnayaka et al.): tumor-containing slices, shallow encoder levels frozen. A resumed
run produces the same epochs as an uninterrupted one (tested on CPU).

Run folder: `config.yaml` (resolved config), `metrics.csv`, `curves.png`, `run.json`,
`last.pt` (every epoch) and `best.pt` (best mean foreground validation Dice). Under torchrun
only rank 0 writes.

Kill safety: every file is written atomically, and `last.pt` is the run's one source of truth,
so a run killed between any two writes resumes to the same files as a run never killed (tested
by killing at every write). A run killed before its first `last.pt` (config and record written)
starts from scratch on `resume`, or again on `train` with the same folder. Temporary files left
by a killed writer are removed on start.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from kidneyseg.checkpoint import (
    EPOCHS_DIR,
    LAST_NAME,
    Checkpoint,
    build_model_from_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
)
from kidneyseg.config import RunConfig
from kidneyseg.errors import KidneysegError, exception_line, interrupt_behind
from kidneyseg.io.atomic import make_folder, remove_empty_folders, remove_stale_partials, write_text_atomic
from kidneyseg.plaindata import dump_yaml, from_dict, load_yaml
from kidneyseg.train.build import check_network_runs, resolve_model_config
from kidneyseg.train.distributed import (
    init_distributed,
    shutdown,
)
from kidneyseg.train.postprocessing import choose_for_run
from kidneyseg.train.prepare import prepare_data
from kidneyseg.train.rundir import (
    RUN_FILES,
    RecordedCases,
    cache_of,
    check_config_file,
    check_new_run_dir,
    forget_a_lost_best,
    stopped_before_first_checkpoint,
)
from kidneyseg.train.trainer import RunResult, RunState, Trainer


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
    cases: RecordedCases | None = None,
) -> RunResult:
    """Check the network, make the run folder, prepare the data, build the trainer and run it.
    A run folder this call made is removed again, if nothing was written in it, when the run
    fails before it started (its preprocessed cases are kept for the next try)."""
    ctx = init_distributed(device)
    created = False
    try:
        _configure_torch(config)
        data_dir = data_dir.resolve()
        cache_root = (Path(cache_root) if cache_root is not None else out / "preprocessed").resolve()
        config = resolve_model_config(config)
        check_network_runs(config)
        created = make_folder(out, "run") if ctx.is_main else False
        data = prepare_data(config, data_dir, cache_root, ctx, progress, cases)
        trainer = Trainer(
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
            try:
                trainer.load_state(*init)
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                reason = exception_line(exc)
                raise KidneysegError(
                    f"cannot resume: the checkpoint's training state does not fit this run ({reason})",
                    out / LAST_NAME,
                ) from None
        elif init_weights is not None:
            trainer.model.load_state_dict(init_weights[1])
        return _run(trainer, config, notice)
    except BaseException:
        if created:
            remove_empty_folders(out)
        raise
    finally:
        shutdown(ctx)


def _run(trainer: Trainer, config: RunConfig, notice: str | None) -> RunResult:
    """Write the run's record and config, then train; a run that stops on an interrupt or an
    error after its record was written says so in it (`interrupted`, `failed`)."""
    out, started = trainer.out, False
    try:
        if trainer.ctx.is_main:
            if notice:
                print(notice, file=sys.stderr, flush=True)
            remove_stale_partials(out)
            if (out / EPOCHS_DIR).is_dir():
                remove_stale_partials(out / EPOCHS_DIR)
            trainer.write_record("running")  # first: where the data is, for a resume without last.pt
            started = True
            write_text_atomic(out / "config.yaml", dump_yaml(config))
            trainer.restore_outputs()
        result = trainer.run()
        if trainer.ctx.is_main:
            choose_for_run(trainer)
        return result
    except BaseException as exc:  # Ctrl-C or SIGTERM (perhaps under a data loader's error)
        if interrupt_behind(exc) is not None:
            trainer.mark_interrupted()
        elif started:
            trainer.mark_failed()
        raise


def train(
    config: RunConfig,
    data_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    progress: bool = True,
    init_weights: str | os.PathLike[str] | None = None,
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
        init_weights: start from this run's best weights (or this checkpoint file) instead of
            random ones (nnU-Net's `-pretrained_weights`): same network and classes, nothing
            frozen, a fresh optimizer and epoch count. The run record names it.

    Raises:
        KidneysegError: bad data, bad config, a diverged loss, a failed write, or initial
            weights of another network.
    """
    out = Path(out)
    notice = check_new_run_dir(out)
    cache_root = Path(cache_dir) if cache_dir is not None else None
    start = _initial_weights(init_weights, config) if init_weights is not None else None
    return _start(
        config, Path(data_dir), out, cache_root, device, progress, init_weights=start, notice=notice
    )


def weights_fit(source: str | os.PathLike[str], config: RunConfig) -> bool:
    """Whether the weights of `source` (a run folder or checkpoint) can start a run of `config`:
    the same network and classes."""
    return _other_network(load_checkpoint(resolve_checkpoint(source)), config) is None


def _other_network(ckpt: Checkpoint, config: RunConfig) -> str | None:
    """Why `ckpt`'s weights cannot start a run of `config` (another network or classes), or None."""
    wanted = resolve_model_config(config)
    if ckpt.config.model == wanted.model and ckpt.config.label_map.names == wanted.label_map.names:
        return None
    return (
        f"initial weights are of another network ({ckpt.config.model.name} "
        f"{ckpt.config.model.kwargs}, classes {list(ckpt.config.label_map.names)}) than this "
        f"recipe's ({wanted.model.name} {wanted.model.kwargs}, classes {list(wanted.label_map.names)})"
    )


def _initial_weights(source: str | os.PathLike[str], config: RunConfig) -> tuple[Path, dict[str, Any]]:
    """The weights of `source` (a run folder or checkpoint), refused unless its network and
    classes are `config`'s."""
    ckpt = load_checkpoint(resolve_checkpoint(source))
    mismatch = _other_network(ckpt, config)
    if mismatch is not None:
        raise KidneysegError(mismatch, ckpt.path)
    build_model_from_checkpoint(ckpt)  # refuses weights that are not finite or do not fit
    return ckpt.path.resolve(), ckpt.model_state


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
    cache_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    progress: bool = True,
) -> RunResult:
    """Continue a run from its last checkpoint, exactly as if it had never stopped; a run
    stopped before its first checkpoint starts from scratch (from its config.yaml and run.json).

    Args:
        run_dir: the run folder.
        epochs: a new total number of epochs (to extend a finished run).
        time_limit_minutes: a new limit on the run's total training time (0: none).
        data_dir: the dataset, if it moved since the run started (its cases must be the run's).
        cache_dir: the preprocessed-case cache to use (default: the run's, `rundir.cache_of`).
        device: as for `train`.
        progress: as for `train`.

    Raises:
        KidneysegError: no last checkpoint and no config, the run's data is gone, or it holds
            other cases than those the run was trained and validated on.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KidneysegError("no such run folder", run_dir)
    last = run_dir / LAST_NAME
    changes = {"epochs": epochs, "time_limit_minutes": time_limit_minutes}
    changes = {k: v for k, v in changes.items() if v is not None}
    if not last.is_file():
        return _restart(run_dir, changes, data_dir, cache_dir, device, progress)
    ckpt = load_checkpoint(last)
    extra = ckpt.extra
    if "optimizer" not in extra:
        raise KidneysegError("checkpoint holds no training state to resume from", last)
    build_model_from_checkpoint(ckpt)  # refuses weights that are not finite or do not fit
    config = ckpt.config
    check_config_file(run_dir / "config.yaml", config)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, **changes))
    try:
        data = Path(data_dir) if data_dir is not None else Path(extra["data_dir"])
        cache_root, state, freeze_depth = (
            cache_of(run_dir, extra["cache_root"], cache_dir),
            _state_from(extra),
            int(extra.get("freeze_depth", 0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise KidneysegError(
            f"checkpoint's training state is incomplete or damaged ({exception_line(exc)})", last
        ) from None
    if config.train.epochs < state.epoch:
        raise KidneysegError(
            f"the run has done {state.epoch} epochs: a new total (train.epochs) must be at least that, "
            f"got {config.train.epochs}",
            run_dir,
        )
    return _start(
        config,
        data,
        run_dir,
        cache_root,
        device,
        progress,
        state=state,
        init=(ckpt.model_state, extra),
        freeze_depth=freeze_depth,
        cases=RecordedCases.of_run(run_dir, extra),
        notice=forget_a_lost_best(run_dir, state, ckpt.config),
    )


def _restart(
    run_dir: Path,
    changes: dict[str, Any],
    data_dir: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str] | None,
    device: str,
    progress: bool,
) -> RunResult:
    """`resume` of a run stopped before its first checkpoint: start it from scratch."""
    taken = [n for n in RUN_FILES if (run_dir / n).exists()]
    if "config.yaml" not in taken or not stopped_before_first_checkpoint(run_dir, taken):
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
        cache_of(run_dir, started.get("cache_root"), cache_dir),
        device,
        progress,
        init_weights=(Path(weights), load_checkpoint(weights).model_state) if weights else None,
        freeze_depth=int(started.get("freeze_depth", 0)),
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
    from kidneyseg.plaindata import apply_overrides, from_dict, to_dict

    ckpt = load_checkpoint(resolve_checkpoint(from_run))
    base = to_dict(ckpt.config)
    base["inference"]["absorb_islands_ml"] = 0.0  # chosen for stage 1's weights; stage 2 chooses its own
    base["data"]["slice_filter"] = "tumor"
    base["train"]["recipe"] = f"{ckpt.config.train.recipe}+finetune-tumor"
    config = from_dict(RunConfig, apply_overrides(base, list(overrides)), "config")
    if config.data.sampling != "slice2d":
        raise KidneysegError(
            "--finetune-tumor continues a 2D slice run (attention-unet-2d or unet-2d)", ckpt.path
        )
    out = Path(out)
    notice = check_new_run_dir(out)
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
