"""The whole pipeline on one machine: real CT with the bundled model, then phantoms → train →
predict → evaluate → report.

`run_demo` first segments a real CT (when one is given) with the bundled pretrained model and
writes its report; then it generates a phantom dataset, trains the CPU variant of a recipe on its
training split for the variant's number of epochs (starting from the bundled model's weights when
the recipe's network is the bundled model's, as for SCA-UNet 3D; the validation split chooses the
best epoch and the post-processing), predicts test phantoms that neither split holds back onto
their original CT grids, scores them with the KiTS metrics, writes a clinical report per test case
and an `index.html` that links everything. Every stage reuses what an earlier, interrupted demo in the
same folder already finished.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kidneyseg.demo.page import index_html, real_ct_line
from kidneyseg.demo.real_ct import segment_real_ct
from kidneyseg.errors import KidneysegError
from kidneyseg.io.atomic import write_text_atomic
from kidneyseg.labels import LabelMap

if TYPE_CHECKING:
    from kidneyseg.config import RunConfig

DEMO_OVERRIDES = ("data.val_fraction=0.2", "train.time_limit_minutes=40", "train.val_every=3")
"""The demo validates on a fifth of its training phantoms (6 of 30) whatever the recipe's own
split, so that the best epoch and the post-processing rest on more than a handful of cases. Its
training budget is the CPU variant's number of epochs, so its figures are the same on any
machine; the 40-minute time limit is only a safety net for a machine far slower than 2 free
cores (the demo says so when it fires). It validates every third epoch (the recipes, as the
papers, every epoch): validating every epoch took a fifth of the demo's training time on a
2-core machine."""

TEST_SEED_OFFSET = 1_000_000
"""The test phantoms' dataset seed is the demo's seed plus this: other cases than the training
phantoms of any demo seeded below it, and the same test set on every rerun."""

FINETUNE_OVERRIDES = ("train.lr=3e-4", "train.scheduler=cosine", "train.val_max_cases=6")
"""When the demo starts from the bundled model's weights it fine-tunes them at a tenth of the CPU
variant's from-scratch learning rate, decayed to 0 over the epochs, and chooses the best epoch on
all 6 validation phantoms. Chosen by a rule written beforehand, on another seed's 20 test
phantoms (docs/training.md): at the from-scratch rate the 60 epochs lost much of the tumor and
cyst Dice the bundled model had."""

FAST_OVERRIDES = ("train.epochs=8", "train.time_limit_minutes=1.5", "train.val_max_cases=2")
"""`--fast`: a few minutes end to end; enough to see every stage work, not to reach good Dice."""


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs.

    Attributes:
        recipe: the recipe whose `cpu` variant is trained (default: SCA-UNet 3D).
        cases: number of phantom cases to train and validate on.
        seed: seeds the phantoms (the recipe seeds training and the split).
        fast: the few-minute version (fewer cases, a short training).
        size: phantom size preset (`small` for the demo; `tiny` for tests).
        device: "auto", "cpu" or "cuda".
        overrides: extra `section.key=value` config overrides.
        real_ct: a real CT to segment with the bundled pretrained model first (None: skip).
        real_ct_labels: its kidney reference labels, if any (the demo then gives its Dice).
        from_bundled: start training from the bundled model's weights when the recipe's network
            and classes are the bundled model's (else, and when False, from random weights).
        hu_check: refuse a real CT that is clearly not CT in HU, as `predict` does.
        test_cases: number of test phantoms, made from the seed `seed + TEST_SEED_OFFSET` and
            scored as the demo's held-out figures: no epoch, setting or weight was chosen on them.
    """

    recipe: str = "sca-unet-3d"
    cases: int = 30
    seed: int = 0
    fast: bool = False
    size: str = "small"
    device: str = "auto"
    overrides: tuple[str, ...] = ()
    real_ct: Path | None = None
    real_ct_labels: Path | None = None
    from_bundled: bool = True
    hu_check: bool = True
    test_cases: int = 6

    @property
    def n_cases(self) -> int:
        return min(self.cases, 10) if self.fast else self.cases

    @property
    def n_test(self) -> int:
        return min(self.test_cases, 2) if self.fast else self.test_cases

    def all_overrides(self, finetune: bool) -> tuple[str, ...]:
        """The config overrides of the demo's run; `finetune`: it starts from the bundled weights."""
        finetuning = FINETUNE_OVERRIDES if finetune else ()
        return (*DEMO_OVERRIDES, *finetuning, *(FAST_OVERRIDES if self.fast else ()), *self.overrides)

    def record(self, finetune: bool) -> dict:
        """These settings as `demo.json` records them."""
        return {
            "recipe": self.recipe,
            "variant": "cpu",
            "cases": self.n_cases,
            "test_cases": self.n_test,
            "seed": self.seed,
            "test_seed": self.seed + TEST_SEED_OFFSET,
            "fast": self.fast,
            "from_bundled": self.from_bundled,
            "size": self.size,
            "overrides": list(self.all_overrides(finetune)),
        }


@dataclass
class DemoResult:
    """Where the demo wrote its outputs, its held-out scores and how long each stage took."""

    out: Path
    index: Path
    scores: dict[str, float | None]
    seconds: dict[str, float] = field(default_factory=dict)
    reports: list[Path] = field(default_factory=list)
    real_ct: dict | None = None


def _timed(seconds: dict[str, float], stage: str, start: float) -> None:
    seconds[stage] = round(time.perf_counter() - start, 1)


SCORES = (
    ("kidney_dice", "dice_kidney"),
    ("tumor_dice", "dice_tumor"),
    ("cyst_dice", "dice_cyst"),
    ("mean_dice", "dice_mean"),
    ("kits_hec_dice_mean", "hec_dice_mean"),
    ("kits_hec_surface_dice_mean", "hec_sd_mean"),
)
"""The held-out scores the demo reports: (name in demo.json, evaluation summary column)."""


def run_demo(
    out: str | os.PathLike[str], settings: DemoSettings = DemoSettings(), progress: bool = True
) -> DemoResult:
    """Run the demo into `out` (created; an earlier demo there, same settings, is resumed stage by stage).

    Args:
        out: the output folder.
        settings: what to run.
        progress: print the stages and show progress bars.

    Raises:
        KidneysegError: a stage failed (its message says which file and why).
    """
    from kidneyseg.data.cases import discover
    from kidneyseg.data.phantom import generate_dataset

    out = Path(out)
    phantoms, test_phantoms = out / "phantoms", out / "test-phantoms"
    folders = (
        (phantoms, settings.n_cases, settings.seed),
        (test_phantoms, settings.n_test, settings.seed + TEST_SEED_OFFSET),
    )
    _check_settings(settings)
    _refuse_other_phantoms(folders, settings.size)
    seconds: dict[str, float] = {}
    config, init = _demo_config(settings)
    _refuse_another_run(out / "run", settings.recipe, config)

    real = None
    if settings.real_ct is not None:
        start = time.perf_counter()
        _say(progress, f"[0/5] segmenting the real CT {settings.real_ct} with the bundled pretrained model")
        real = segment_real_ct(settings, out / "real-ct", settings.device)
        _say(progress, "      " + real_ct_line(real))
        _timed(seconds, "real_ct", start)

    start = time.perf_counter()
    _say(progress, f"[1/5] {settings.n_cases} phantom CT cases to train on, {settings.n_test} to test on")
    for folder, n, seed in folders:
        if _phantom_count(folder) < n:
            generate_dataset(folder, n, seed=seed, size=settings.size, progress=progress)
    _timed(seconds, "phantoms", start)

    start = time.perf_counter()
    run_dir = out / "run"
    status = _train_stage(config, init, settings, phantoms, run_dir, progress)
    _timed(seconds, "train", start)

    start = time.perf_counter()
    evaluation = out / "evaluation"
    rows, summary = _evaluate_stage(config, settings, run_dir, test_phantoms, evaluation, progress)
    _timed(seconds, "predict_evaluate", start)

    start = time.perf_counter()
    _say(progress, "[4/5] writing a clinical report per test case")
    held_out = [r["case_id"] for r in rows]
    reports = _write_reports(
        discover(test_phantoms), held_out, evaluation / "test", out / "reports", config.label_map
    )
    _timed(seconds, "reports", start)

    _say(progress, "[5/5] writing index.html")
    scores = {name: summary["metrics"].get(column, {}).get("mean") for name, column in SCORES}
    record = {
        "settings": settings.record(finetune=init is not None),
        "training_status": status,
        **_run_facts(run_dir),
        "held_out_cases": held_out,
        "scores": scores,
        "real_ct": real,
        "seconds": seconds,
    }
    write_text_atomic(out / "demo.json", json.dumps(record, indent=2) + "\n")
    index = write_text_atomic(out / "index.html", index_html(out, record, reports))
    return DemoResult(out, index, scores, seconds, reports, real)


def _check_settings(settings: DemoSettings) -> None:
    """Refuse settings the demo cannot run, before it writes anything."""
    from kidneyseg.device import pick_device

    if settings.n_cases < 2:
        raise KidneysegError(
            f"the demo needs at least 2 phantom cases (to train and validate on), got {settings.n_cases}"
        )
    if settings.n_test < 1:
        raise KidneysegError(f"the demo needs at least 1 test phantom, got {settings.n_test}")
    if settings.seed < 0:
        raise KidneysegError(f"the phantom seed must be at least 0, got {settings.seed}")
    if settings.real_ct_labels is not None and settings.real_ct is None:
        raise KidneysegError("--real-ct-labels were given without the CT they belong to (--real-ct)")
    pick_device(settings.device)


def _phantom_count(folder: Path) -> int:
    return len(list((folder / "dataset").glob("case_*/phantom.json")))


def _refuse_other_phantoms(folders: tuple[tuple[Path, int, int], ...], size: str) -> None:
    """Refuse a demo folder holding phantoms of another seed or size, or more than asked (an
    earlier demo with other `--seed`, `--cases` or `--test-cases`): the demo would train on or
    score them, not those its record states."""
    from kidneyseg.data.phantom.dataset import PhantomOptions, refuse_other_cases

    for folder, n, seed in folders:
        found = _phantom_count(folder)
        if found > n:
            asked = f"holds {found} phantom cases where this demo asks for {n} (--cases, --test-cases)"
            raise KidneysegError(f"{asked}: choose another --out", folder / "dataset")
        refuse_other_cases(folder / "dataset", seed, size, PhantomOptions())


def _evaluate_stage(
    config: RunConfig, settings: DemoSettings, run_dir: Path, test: Path, evaluation: Path, progress: bool
) -> tuple[tuple[dict, ...], dict]:
    """Predict and score the test phantoms into `evaluation`: the rows and the summary."""
    from kidneyseg.device import pick_device
    from kidneyseg.evaluate.folder import EvaluationResult, write_outputs
    from kidneyseg.evaluate.runs import evaluate_test_set

    _say(progress, "[3/5] predicting the test phantoms onto their original CT grids, then scoring them")
    device = str(pick_device(settings.device))
    rows = evaluate_test_set(run_dir, test, evaluation, device=device, progress=progress)
    result = EvaluationResult(
        rows, sources={"pred": str(evaluation / "test"), "ref": str(test)}, label_map=config.label_map
    )
    write_outputs(result, evaluation)
    return rows, result.summary()


def _train_stage(
    config: RunConfig,
    init: Path | None,
    settings: DemoSettings,
    phantoms: Path,
    run_dir: Path,
    progress: bool,
) -> str:
    """Train the demo's run on the phantoms from `init` (None: random weights), or resume or keep
    an earlier one; its status."""
    from kidneyseg.train.engine import resume, train

    status = _run_status(run_dir, settings.recipe)
    if status is None:
        start = f"the bundled model's weights ({init.stem})" if init else "random weights"
        _say(progress, f"[2/5] training {settings.recipe}:cpu for {config.train.epochs} epochs from {start}")
        status = train(
            config, phantoms, run_dir, device=settings.device, progress=progress, init_weights=init
        ).status
    elif status in ("finished", "time limit"):
        _say(progress, f"[2/5] keeping the earlier training in {run_dir} ({status})")
    else:
        _say(progress, f"[2/5] resuming the earlier training in {run_dir}")
        status = resume(run_dir, device=settings.device, progress=progress).status
    if status == "time limit":
        _say(
            progress,
            f"      the {config.train.time_limit_minutes:g}-minute safety limit stopped training before "
            f"epoch {config.train.epochs}: the figures below are those of a shorter run",
        )
    return status


def _demo_config(settings: DemoSettings) -> tuple[RunConfig, Path | None]:
    """The demo run's config and the bundled checkpoint it starts from (None: random weights);
    a fine-tune of the bundled model takes `FINETUNE_OVERRIDES`."""
    from kidneyseg.recipes import load_recipe

    init = _bundled_init(load_recipe(settings.recipe, "cpu", settings.all_overrides(False)), settings)
    return load_recipe(settings.recipe, "cpu", settings.all_overrides(init is not None)), init


def _bundled_init(config: RunConfig, settings: DemoSettings) -> Path | None:
    """The bundled model's checkpoint if the demo starts from it, else None."""
    from kidneyseg.predict.pretrained import bundled_path
    from kidneyseg.train.engine import weights_fit

    path = bundled_path()
    return path if settings.from_bundled and path.is_file() and weights_fit(path, config) else None


def _run_facts(run_dir: Path) -> dict:
    """From the demo run's record: the name of the checkpoint it started from (None: random
    weights) and the island volume chosen for its best weights when it ended (None: none chosen)."""
    record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    init, chosen = record["initial_weights"], record.get("postprocessing")  # a dict once chosen
    return {
        "initial_weights": None if init is None else Path(init).stem,
        "absorb_islands_ml": chosen.get("absorb_islands_ml") if isinstance(chosen, dict) else None,
    }


def _refuse_another_run(run_dir: Path, recipe: str, config: RunConfig) -> None:
    """Refuse, before anything is written, an earlier run in the demo folder of another recipe or
    trained with other settings than this demo's: kept or resumed, it would be scored under a
    `demo.json` recording settings it was not trained with."""
    from kidneyseg.config import RunConfig
    from kidneyseg.plaindata import differences, from_dict, load_yaml
    from kidneyseg.train.build import resolve_model_config
    from kidneyseg.train.rundir import CHOSEN_AFTER_TRAINING

    if _run_status(run_dir, recipe) is None:
        return
    path = run_dir / "config.yaml"
    try:
        kept = from_dict(RunConfig, load_yaml(path), str(path))
    except (KidneysegError, OSError, ValueError):
        raise KidneysegError("cannot read the run's config; remove the folder to start again", path) from None
    odd = [d for d in differences(kept, resolve_model_config(config)) if d[0] not in CHOSEN_AFTER_TRAINING]
    if odd:
        key, was, asked = odd[0]
        raise KidneysegError(
            f"the run here was trained with {key}={was!r} where this demo asks for {asked!r} "
            f"({len(odd)} setting(s) differ); choose another --out",
            path,
        )


def _run_status(run_dir: Path, recipe: str) -> str | None:
    """The status in the training run's `run.json` (None if there is no run yet); a run of
    another recipe is an error rather than something to reuse."""
    path = run_dir / "run.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        status, run_recipe = str(record["status"]), str(record["recipe"])
    except (OSError, ValueError, KeyError):
        raise KidneysegError("cannot read the run record; remove the folder to start again", path) from None
    if run_recipe.partition(":")[0] != recipe:
        raise KidneysegError(
            f"this demo folder holds a {run_recipe} run, not {recipe}; choose another --out", run_dir
        )
    return status


def _write_reports(
    dataset, case_ids: list[str], pred_dir: Path, out_dir: Path, label_map: LabelMap
) -> list[Path]:
    """A report per case from its predicted labels (classes of the run's `label_map`)."""
    from kidneyseg.io.volume import read_volume
    from kidneyseg.report import write_report

    by_id = {c.case_id: c for c in dataset.cases}
    paths = []
    for case_id in case_ids:
        ct = read_volume(by_id[case_id].image)
        labels = read_volume(pred_dir / f"{case_id}.nii.gz")
        paths.append(write_report(ct, labels, out_dir, label_map, case_id=case_id).html)
    return paths


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, flush=True)
