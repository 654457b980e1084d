"""The post-processing a run's best weights get, chosen on its validation cases when training ends
(nnU-Net likewise chooses its post-processing on the validation predictions of its folds).

What is chosen: `inference.absorb_islands_ml` among `train.absorb_candidates_ml`
(`kidneyseg.predict.postprocess.absorb_lesion_islands`: tumor and cyst islands under that volume
take the class around them). Each validation case (all of the split, not only the
`train.val_max_cases` that chose the best epoch) is segmented with the best weights as
validation segments it, its two largest foreground components kept (by size: the preprocessed
grid holds no HU for the anatomy check) and scored, for absorbing nothing and for each
candidate, on its lesion figures (`kidneyseg.evaluate.metrics.lesion_figures`). The rule
(`choose`) is the one the bundled model's setting was chosen by (docs/pretrained.md, "Small
lesion islands").
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from kidneyseg.checkpoint import BEST_NAME, build_model_from_checkpoint, load_checkpoint, save_checkpoint
from kidneyseg.config import RunConfig
from kidneyseg.errors import KidneysegError, exception_line, warn_on_stderr
from kidneyseg.evaluate.metrics import lesion_figures
from kidneyseg.labels import lesion_classes
from kidneyseg.predict.postprocess import absorb_lesion_islands, keep_largest_components
from kidneyseg.train import record
from kidneyseg.train.data import CaseRecord, load_full_case
from kidneyseg.train.validation import segment_case, validation_inference

if TYPE_CHECKING:
    from kidneyseg.train.trainer import Trainer

MIN_GAIN = 0.02
"""A candidate is taken only if it raises the mean lesion figure by at least this much."""
MAX_LOSS = 0.005
"""... and lowers neither of the `GUARDED` figures by more than this."""
GUARDED = ("masses", "tumor")


def choose(table: list[dict[str, float]]) -> float:
    """The volume to absorb islands under, from one row per setting (the first: 0, absorbing
    nothing; then the candidates from small to large), each with `ml`, the mean of each lesion
    figure over the cases and their mean, `mean`: the row with the highest `mean` (the smaller
    volume of equal ones) if it gains `MIN_GAIN` over the first and loses at most `MAX_LOSS` on
    masses and on tumor; else 0."""
    base = table[0]
    best = max(table, key=lambda row: row["mean"])
    kept = all(best[k] >= base[k] - MAX_LOSS for k in GUARDED if k in base)
    return best["ml"] if best["mean"] >= base["mean"] + MIN_GAIN and kept else 0.0


def _means(rows: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's mean over the cases where it is defined (1 where no case defines it: no
    case holds that class on either side), and their mean (`mean`)."""
    means = {}
    for key in rows[0]:
        values = [r[key] for r in rows if not math.isnan(r[key])]
        means[key] = float(np.mean(values)) if values else 1.0
    return means | {"mean": float(np.mean(list(means.values())))}


def _candidates(config: RunConfig) -> list[float]:
    """The volumes to try besides 0 (absorbing nothing, always the first setting)."""
    return sorted(set(config.train.absorb_candidates_ml) - {0.0})


def choose_for_run(trainer: Trainer) -> None:
    """Choose the post-processing of a run that has ended (main rank only): `best.pt`'s
    `inference.absorb_islands_ml`, the run record's `postprocessing`, and a line saying so.
    It rests on all the run's validation cases, not only the `train.val_max_cases` that chose the
    best epoch. Nothing is chosen without candidates other than 0, validation cases or a best
    epoch. The record says `pending` while the choice runs (a run killed then is chosen for by
    `--resume`); a choice that fails leaves `best.pt` as it was and says why: the training itself
    has succeeded."""
    config, path = trainer.config, trainer.out / "run.json"
    cases, epoch = trainer.data.val, trainer.state.best_epoch
    if not (_candidates(config) and cases and epoch):
        return
    record.update_record(path, {"postprocessing": "pending"})
    print(f"choosing the post-processing on {len(cases)} validation case(s)", file=sys.stderr, flush=True)
    best = trainer.out / BEST_NAME
    try:
        found = choose_postprocessing(
            cases, trainer.data.lut, config, trainer.device, best, epoch, trainer.amp, trainer.progress
        )
    except Exception as exc:  # any: the training it follows has succeeded; interrupts pass
        reason = exception_line(exc)
        record.update_record(path, {"postprocessing": f"failed: {reason}"})
        warn_on_stderr(
            f"no post-processing was chosen: {reason}; best.pt's absorb_islands_ml stays as it was"
        )
        return
    record.update_record(path, {"postprocessing": found})
    print(postprocessing_line(found), file=sys.stderr, flush=True)


def postprocessing_line(found: dict[str, Any]) -> str:
    """What the choice was, in one line."""
    table = found["settings"]
    base, ml = table[0], found["absorb_islands_ml"]
    cases = f"{len(found['cases'])} validation case(s)"
    if not ml:
        best = max(table[1:], key=lambda row: row["mean"])
        return (
            f"post-processing: lesion islands kept as predicted (on {cases} the best candidate, "
            f"{best['ml']} mL, moved the mean lesion Dice {base['mean']:.3f} -> {best['mean']:.3f}; "
            f"taken only for a gain of {MIN_GAIN} without a loss over {MAX_LOSS} on masses or tumor)"
        )
    chosen = next(row for row in table if row["ml"] == ml)
    return (
        f"post-processing: tumor and cyst islands under {ml} mL take the class around them "
        f"(best.pt's inference.absorb_islands_ml; mean lesion Dice on {cases} "
        f"{base['mean']:.3f} -> {chosen['mean']:.3f})"
    )


@torch.no_grad()
def choose_postprocessing(
    records: Sequence[CaseRecord],
    lut: np.ndarray,
    config: RunConfig,
    device: torch.device,
    best: Path,
    epoch: int,
    amp: bool,
    progress: bool = False,
) -> dict[str, Any]:
    """Choose `inference.absorb_islands_ml` among `config.train.absorb_candidates_ml` for the
    weights in `best` (the checkpoint of `epoch`) on `records` and write it into that
    checkpoint's config; its weights and training state stay as they are. With `progress`, a
    bar over the cases on stderr.

    Returns:
        What the run record keeps (`postprocessing`): the chosen volume, the cases, and per
        setting (0, then each candidate) its mean figures.

    Raises:
        KidneysegError: `best` is unreadable, or not the checkpoint of `epoch`.
    """
    ckpt = load_checkpoint(best)
    if ckpt.extra.get("epoch") != epoch:
        raise KidneysegError(f"not the checkpoint of the run's best epoch ({epoch})", best)
    model = build_model_from_checkpoint(ckpt).to(device)
    label_map, inference = config.label_map, validation_inference(config)
    kidney, masses = label_map.value("kidney"), lesion_classes(label_map)["masses"]
    voxel_ml = float(np.prod(config.preprocess.spacing)) / 1000.0
    settings = [0.0, *_candidates(config)]
    rows: list[list[dict[str, float]]] = [[] for _ in settings]
    for case in tqdm(records, desc="choosing the post-processing", disable=not progress, leave=False):
        image, label = load_full_case(case, lut)
        logits = segment_case(model, image, inference, device, amp)
        pred = keep_largest_components(logits[0].argmax(dim=0).to(torch.uint8).cpu().numpy())
        del logits
        ref = label[0, 0].numpy()
        for i, ml in enumerate(settings):
            absorbed = pred.copy()
            absorb_lesion_islands(absorbed, voxel_ml, ml, masses, kidney)
            rows[i].append(lesion_figures(absorbed, ref, label_map))
    table = [{"ml": ml} | _means(r) for ml, r in zip(settings, rows, strict=True)]
    chosen = choose(table)
    config = replace(ckpt.config, inference=replace(ckpt.config.inference, absorb_islands_ml=chosen))
    save_checkpoint(best, model_state=ckpt.model_state, config=config, extra_state=ckpt.extra)
    rounded = [{k: round(v, 4) for k, v in row.items()} for row in table]
    return {"absorb_islands_ml": chosen, "cases": [r.case_id for r in records], "settings": rounded}
