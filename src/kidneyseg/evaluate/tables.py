"""Markdown tables: an evaluation summary, and model comparisons in the layout of the papers'
tables (Gohil & Lad, Table I; Rathnayaka et al., Table 1): one row per model, one column per
class and their mean."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

from kidneyseg.evaluate.lesions import BIN_NAMES
from kidneyseg.labels import KITS_REGIONS

BIN_LABELS = dict(zip(BIN_NAMES, ("< 1 cm", "1–4 cm", "4–7 cm", "> 7 cm"), strict=True))

METRIC_SETS = {
    "dice": (
        "Dice per label",
        (("Kidney", "dice_kidney"), ("Tumor", "dice_tumor"), ("Cyst", "dice_cyst"), ("Mean", "dice_mean")),
    ),
    "hec_dice": (
        "KiTS21/23 Dice (hierarchical classes)",
        (
            ("Kidney+masses", "hec_dice_kidney_and_masses"),
            ("Masses", "hec_dice_masses"),
            ("Tumor", "hec_dice_tumor"),
            ("Mean", "hec_dice_mean"),
        ),
    ),
    "hec_sd": (
        "KiTS21/23 Surface Dice (tolerances "
        + " / ".join(f"{r.tolerance_mm:.4f} mm" for r in KITS_REGIONS)
        + ")",
        (
            ("Kidney+masses", "hec_sd_kidney_and_masses"),
            ("Masses", "hec_sd_masses"),
            ("Tumor", "hec_sd_tumor"),
            ("Mean", "hec_sd_mean"),
        ),
    ),
    "kits19": (
        "KiTS19 composite",
        (
            ("Kidney (labels > 0)", "kits19_kidney_dice"),
            ("Tumor", "kits19_tumor_dice"),
            ("Mean", "kits19_composite"),
        ),
    ),
}
"""Each metric set: a title and its (column heading, per-case CSV column) pairs."""


def scored_columns(columns: Sequence[tuple[str, str]], scored: Collection[str]) -> list[tuple[str, str]]:
    """The (heading, column) pairs of a metric set that were scored: a case scored in the KITS19
    label map has no cyst column."""
    return [(heading, column) for heading, column in columns if column in scored]


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table; `–` when undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _mean_note(metrics: dict, columns: Sequence[tuple[str, str]]) -> list[str]:
    """Where cases lack a class, the table's Mean (each case's mean over its defined classes,
    then over cases) differs from the average of the class columns, which `compare` and the
    papers call the Mean: a line giving the latter."""
    *classes, (_, mean_column) = columns
    class_means = [metrics[c]["mean"] for _, c in classes]
    if any(v is None or math.isnan(v) for v in class_means) or metrics[mean_column]["mean"] is None:
        return []
    average = sum(class_means) / len(class_means)
    if fmt(average) == fmt(metrics[mean_column]["mean"]):
        return []
    return [
        "Mean: each case's mean over the classes it holds, averaged over cases. The average of the "
        f"class columns' means, the Mean of `kidneyseg compare` and of the papers' tables: {fmt(average)}.\n"
    ]


def evaluation_markdown(summary: dict) -> str:
    """The summary of one `kidneyseg evaluate` run as markdown."""
    metrics = summary["metrics"]
    parts = [f"# Evaluation of {summary['n_cases']} cases\n"]
    if summary.get("pred"):
        parts.append(f"Predictions `{summary['pred']}`, references `{summary['ref']}`.\n")
    for title, all_columns in METRIC_SETS.values():
        columns = scored_columns(all_columns, metrics)
        header = ["", *[heading for heading, _ in columns]]
        mean_row = ["mean", *[fmt(metrics[c]["mean"]) for _, c in columns]]
        median_row = ["median", *[fmt(metrics[c]["median"]) for _, c in columns]]
        n_row = ["cases", *[str(metrics[c]["n"]) for _, c in columns]]
        parts.append(f"## {title}\n\n" + markdown_table(header, [mean_row, median_row, n_row]))
        parts.extend(_mean_note(metrics, columns))
    rows = []
    for name, entry in summary["lesions"].items():
        for key, label in [("all", "all sizes"), *BIN_LABELS.items()]:
            d = entry if key == "all" else entry["bins"][key]
            rows.append(
                [
                    name,
                    label,
                    str(d["ref"]),
                    str(d["detected"]),
                    fmt(d["sensitivity"]),
                    str(d["fp"]),
                    fmt(d["fp_per_case"], 2),
                ]
            )
    parts.append(
        "## Lesion detection (26-connected components, one-to-one match at Dice > 0.1)\n\n"
        + markdown_table(
            [
                "class",
                "size (equivalent diameter)",
                "lesions",
                "detected",
                "sensitivity",
                "false positives",
                "FP per case",
            ],
            rows,
        )
    )
    parts.append(_missed_as(summary["lesions"]))
    for key, what in (
        ("missing_predictions", "reference cases without a prediction"),
        ("missing_references", "predictions without a reference"),
    ):
        if summary[key]:
            parts.append(f"**{len(summary[key])} {what}:** {', '.join(summary[key])}\n")
    return "\n".join(parts)


def _missed_as(lesions: dict) -> str:
    """The missed lesions of each class by the predicted class covering most of each."""
    names = list(next(iter(lesions.values()))["missed_as"])
    rows = [
        [name, str(entry["ref"] - entry["detected"]), *[str(entry["missed_as"][c]) for c in names]]
        for name, entry in lesions.items()
    ]
    return "## Missed lesions, by the predicted class covering most of each\n\n" + markdown_table(
        ["class", "missed", *names], rows
    )
