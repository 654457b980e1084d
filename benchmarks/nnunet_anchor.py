"""nnU-Net v2 as the anchor: trained on the same phantoms for the same wall time as our recipe.

nnU-Net (Isensee et al., Nat Methods 2021) is what the field compares against. This script runs
it on this project's data without changing its method: the phantoms are handed over as an
nnU-Net raw dataset (links, no copies), planned and preprocessed by nnU-Net itself, trained with
its own trainer (loss, augmentation, deep supervision, SGD with poly learning rate) on the CPU for
a fixed wall time, and its predictions written as NIfTI label maps that `sim_to_real.py` (or
`kidneyseg evaluate`) scores beside ours. Three steps, each a sub-command:

    python benchmarks/nnunet_anchor.py prepare --data PHANTOMS --val-from RUN --work WORK
    python benchmarks/nnunet_anchor.py train --work WORK --minutes 70
    python benchmarks/nnunet_anchor.py predict --work WORK --cases HELD_OUT --real --out OUT
    python benchmarks/sim_to_real.py --labels nnU-Net=OUT --phantoms HELD_OUT ...

What differs from `nnUNetv2_train` (each needed to run on a CPU for a fixed time, none changes
what is learned per step):
- the training/validation split is the one our run used (`--val-from`), written as fold 0;
- an epoch is 10 training and 2 validation iterations (nnU-Net: 250 and 50, the same ratio), so
  that the poly learning rate, which nnU-Net steps once an epoch, runs over the epochs the wall
  time allows (re-estimated after every epoch) rather than over 1000 epochs that would never
  finish on a CPU; training stops at the first iteration past the wall time and keeps the
  weights it has then (nnU-Net's final-checkpoint rule);
- `-device cpu` with the torch threads and data-augmentation processes given (`--threads`,
  `--workers`; our recipe's run: one of each).

nnU-Net is not a dependency of kidneyseg: install it in its own environment
(`pip install torch==2.13.0 nnunetv2` on a machine without CUDA), with kidneyseg beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

DATASET_ID = 501
DATASET_NAME = f"Dataset{DATASET_ID}_KidneysegPhantoms"
ITERATIONS_PER_EPOCH = 10
VAL_ITERATIONS_PER_EPOCH = 2


def _paths(work: Path) -> dict[str, Path]:
    """nnU-Net's three folders under `work`, by the environment variable that names each."""
    return {
        "nnUNet_raw": work / "raw",
        "nnUNet_preprocessed": work / "preprocessed",
        "nnUNet_results": work / "results",
    }


def _environment(work: Path, threads: int, workers: int) -> None:
    """nnU-Net reads its folders and worker count from the environment when it is imported."""
    for name, path in _paths(work).items():
        path.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(path)
    os.environ["nnUNet_n_proc_DA"] = str(workers)  # noqa: SIM112 (nnU-Net spells it so)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def prepare(args: argparse.Namespace) -> None:
    """Link the phantoms as an nnU-Net raw dataset, plan, preprocess, write our split."""
    from kidneyseg.data.cases import discover
    from kidneyseg.labels import KITS23

    _environment(args.work, args.threads, args.workers)
    dataset = discover(args.data, require_labels=True)
    raw = _paths(args.work)["nnUNet_raw"] / DATASET_NAME
    (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw / "labelsTr").mkdir(parents=True, exist_ok=True)
    for case in dataset.labelled:
        image = raw / "imagesTr" / f"{case.case_id}_0000.nii.gz"
        label = raw / "labelsTr" / f"{case.case_id}.nii.gz"
        for link, target in ((image, case.image), (label, case.label)):
            if not link.exists():
                link.symlink_to(Path(target).resolve())
    description = {
        "channel_names": {"0": "CT"},
        "labels": {c.name: c.value for c in KITS23.classes},
        "numTraining": len(dataset.labelled),
        "file_ending": ".nii.gz",
        "name": "kidneyseg phantoms",
    }
    (raw / "dataset.json").write_text(json.dumps(description, indent=2))
    command = [
        str(Path(sys.executable).with_name("nnUNetv2_plan_and_preprocess")),
        "-d",
        str(DATASET_ID),
        "-c",
        "3d_fullres",
        "-np",
        str(args.processes),
        "--verify_dataset_integrity",
    ]
    subprocess.run(command, check=True)
    run = json.loads((args.val_from / "run.json").read_text())
    split = [{"train": run["train_cases"], "val": run["val_cases"]}]
    target = _paths(args.work)["nnUNet_preprocessed"] / DATASET_NAME / "splits_final.json"
    target.write_text(json.dumps(split, indent=2))
    print(f"{len(dataset.labelled)} cases; split of {args.val_from} written to {target}")


def _timed_trainer(minutes: float):
    """nnU-Net's trainer with a wall-time budget (see the module docstring)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class TimeUp(Exception):
        pass

    class TimedTrainer(nnUNetTrainer):
        # nnU-Net records its trainer's arguments by name: the signature must stay its own.
        def __init__(self, plans, configuration, fold, dataset_json, device):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_iterations_per_epoch = ITERATIONS_PER_EPOCH
            self.num_val_iterations_per_epoch = VAL_ITERATIONS_PER_EPOCH
            self.budget_seconds = minutes * 60
            self.started = time.monotonic()
            self.iterations_done = 0

        def train_step(self, batch):
            if time.monotonic() - self.started >= self.budget_seconds:
                raise TimeUp
            result = super().train_step(batch)
            self.iterations_done += 1
            return result

        def on_epoch_end(self):
            super().on_epoch_end()
            # The poly schedule ends where the budget is expected to end, re-estimated every
            # epoch and always beyond the next epoch (the schedule is undefined past its end).
            elapsed = time.monotonic() - self.started
            left = (self.budget_seconds - elapsed) / (elapsed / self.current_epoch)
            self.lr_scheduler.max_steps = self.current_epoch + 1 + max(0, math.ceil(left))

    # Folder and checkpoint carry nnU-Net's own trainer name: its predictor rebuilds the network
    # by that name, and the network and method are its default trainer's.
    TimedTrainer.__name__ = nnUNetTrainer.__name__
    return TimedTrainer, TimeUp


def train(args: argparse.Namespace) -> None:
    """Train fold 0 of 3d_fullres for `--minutes` of wall time on the CPU."""
    _environment(args.work, args.threads, args.workers)
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json

    torch.set_num_threads(args.threads)
    preprocessed = _paths(args.work)["nnUNet_preprocessed"] / DATASET_NAME
    plans = load_json(str(preprocessed / "nnUNetPlans.json"))
    plans["continue_training"] = False  # what nnUNetv2_train adds for a new run
    dataset_json = load_json(str(preprocessed / "dataset.json"))
    trainer_class, time_up = _timed_trainer(args.minutes)
    trainer = trainer_class(plans, "3d_fullres", 0, dataset_json, device=torch.device("cpu"))
    start = time.monotonic()
    try:
        trainer.run_training()
    except time_up:
        trainer.save_checkpoint(os.path.join(trainer.output_folder, "checkpoint_final.pth"))
    usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    record = {
        "wall_seconds": round(time.monotonic() - start, 1),
        "cpu_seconds": round(sum(u.ru_utime + u.ru_stime for u in usage), 1),
        "epochs_done": trainer.current_epoch,
        "iterations_done": trainer.iterations_done,
        "patch_size": list(trainer.configuration_manager.patch_size),
        "batch_size": trainer.configuration_manager.batch_size,
        "spacing": list(trainer.configuration_manager.spacing),
        "threads": args.threads,
        "workers": args.workers,
        "nnunetv2": _version("nnunetv2"),
        "torch": torch.__version__,
    }
    out = Path(trainer.output_folder) / "anchor_run.json"
    out.write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _inputs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(name, CT file) pairs: the cases of KiTS-layout folders and, with `--real`, the shared real
    CTs under the names `sim_to_real.py` reads (a DICOM series written as NIfTI first: nnU-Net's
    reader takes files)."""
    from kidneyseg.data.cases import discover
    from kidneyseg.io.volume import read_volume, write_volume
    from sim_to_real import REAL_CTS

    pairs = [(case.case_id, Path(case.image)) for folder in args.cases for case in discover(folder).cases]
    if args.real:
        for name, path in REAL_CTS.items():
            if path.is_dir():
                converted = args.work / "inputs" / f"{name}.nii.gz"
                converted.parent.mkdir(parents=True, exist_ok=True)
                write_volume(converted, read_volume(path))
                path = converted
            pairs.append((name, path))
    return pairs


def predict(args: argparse.Namespace) -> None:
    """Predict CTs with the trained fold; label maps `<name>.nii.gz` in `--out`."""
    _environment(args.work, args.threads, args.workers)
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    torch.set_num_threads(args.threads)
    predictor = nnUNetPredictor(
        tile_step_size=args.step_size,
        use_gaussian=True,
        use_mirroring=args.mirroring,
        device=torch.device("cpu"),
        verbose=False,
        allow_tqdm=True,
    )
    model = _paths(args.work)["nnUNet_results"] / DATASET_NAME / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    predictor.initialize_from_trained_model_folder(
        str(model), use_folds=(0,), checkpoint_name=args.checkpoint
    )
    args.out.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for name, image in _inputs(args):
        start = time.monotonic()
        predictor.predict_from_files(
            [[str(image)]],
            [str(args.out / name)],
            save_probabilities=False,
            overwrite=True,
            num_processes_preprocessing=1,
            num_processes_segmentation_export=1,
        )
        seconds[name] = round(time.monotonic() - start, 1)
        print(f"{args.out / name}.nii.gz: {seconds[name]} s", flush=True)
    record = {"seconds": seconds, "mirroring": args.mirroring, "step_size": args.step_size}
    (args.out / "anchor_predict.json").write_text(json.dumps(record, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="Torch threads (default 1).")
    parser.add_argument("--workers", type=int, default=1, help="Augmentation processes.")
    steps = parser.add_subparsers(dest="step", required=True)
    step = steps.add_parser("prepare", help="Raw dataset, plans, preprocessing, our split.")
    step.add_argument("--data", type=Path, required=True, help="Phantoms (KiTS layout).")
    step.add_argument("--val-from", type=Path, required=True, help="Run whose split to use.")
    step.add_argument("--processes", type=int, default=2)
    step = steps.add_parser("train", help="Train fold 0 for a wall time.")
    step.add_argument("--minutes", type=float, required=True)
    step = steps.add_parser("predict", help="Predict CTs with the trained fold.")
    step.add_argument("--cases", type=Path, nargs="*", default=[], help="KiTS-layout folders.")
    step.add_argument("--real", action="store_true", help="Also the shared real CTs.")
    step.add_argument("--out", type=Path, required=True)
    step.add_argument("--checkpoint", default="checkpoint_final.pth")
    step.add_argument("--step-size", type=float, default=0.5, help="nnU-Net's default 0.5.")
    step.add_argument("--mirroring", action="store_true", help="nnU-Net's TTA (8× slower).")
    for sub in steps.choices.values():
        sub.add_argument("--work", type=Path, required=True, help="nnU-Net's folders.")
    args = parser.parse_args()
    {"prepare": prepare, "train": train, "predict": predict}[args.step](args)


if __name__ == "__main__":
    main()
