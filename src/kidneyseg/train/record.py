"""What a run leaves for people and programs: metrics.csv, curves.png and run.json.

All three are rewritten atomically after every epoch from the metric history (which the last
checkpoint also holds, so a resumed run's files continue seamlessly).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kidneyseg.io.atomic import write_atomic, write_text_atomic
from kidneyseg.plaindata import json_text


def write_metrics_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """One row per epoch; columns in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in columns})
    return write_text_atomic(path, buf.getvalue())


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return "" if value is None else value


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """The rows of a metrics.csv as floats (empty cells as NaN)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [
            {k: float(v) if v != "" else float("nan") for k, v in row.items()} for row in csv.DictReader(f)
        ]


def plot_curves(path: Path, rows: Sequence[dict[str, Any]], class_names: Sequence[str], title: str) -> Path:
    """Training and validation loss (left) and validation Dice per class (right)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], marker=".", label="train loss")
    val = [(r["epoch"], r["val_loss"]) for r in rows if not math.isnan(r.get("val_loss", math.nan))]
    if val:
        ax_loss.plot(*zip(*val, strict=True), marker=".", label="validation loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    for name in ["mean", *class_names]:
        key = "val_dice" if name == "mean" else f"val_dice_{name}"
        pts = [(r["epoch"], r[key]) for r in rows if not math.isnan(r.get(key, math.nan))]
        if pts:
            style = {"linewidth": 2.5, "color": "black"} if name == "mean" else {}
            ax_dice.plot(*zip(*pts, strict=True), marker=".", label=name, **style)
    ax_dice.set_ylim(0, 1)
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("validation Dice")
    if ax_dice.lines:
        ax_dice.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: never over the points
    else:  # before the first validated epoch (train.val_every > 1)
        ax_dice.text(0.5, 0.5, "not validated yet", ha="center", va="center", transform=ax_dice.transAxes)
    ax_dice.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def write_run_record(path: Path, record: dict[str, Any]) -> Path:
    """The machine-readable run record (JSON; NaN written as null)."""
    return write_text_atomic(path, json_text(record))


def update_record(path: Path, changes: dict[str, Any], only_from: str | None = None) -> None:
    """Set keys of the run record at `path` (only if its status is `only_from`, when given),
    leaving the rest as written: the record written last matches the last checkpoint, while a
    stopped trainer's state may be ahead of both. A missing or unreadable record is left to
    `--resume`, which writes it again."""
    try:
        last = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(last, dict) and (only_from is None or last.get("status") == only_from):
        write_run_record(path, last | changes)


def epoch_line(row: dict[str, float], epochs: int, classes: Sequence[Any]) -> str:
    """The console line of an epoch: losses, validation Dice per class, speed and time."""
    parts = [f"epoch {int(row['epoch'])}/{epochs}", f"loss {row['train_loss']:.4f}"]
    if not math.isnan(row.get("val_dice", math.nan)):
        parts.append(f"val loss {row['val_loss']:.4f}")
        parts.append(f"val Dice {row['val_dice']:.3f}")
        parts.extend(f"{c.name} {row[f'val_dice_{c.name}']:.3f}" for c in classes)
    parts.append(f"{row['patches_per_second']:.2f} patches/s")
    parts.append(f"{row['epoch_seconds']:.0f} s")
    return "  ".join(parts)
