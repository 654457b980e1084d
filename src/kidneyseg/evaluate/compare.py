"""Compare models evaluated on the same cases, in the layout of the papers' tables.

Gohil & Lad (SCA-UNet, KiTS21) Table I and Rathnayaka et al. (attention U-Net, KiTS19)
Table 1 list one row per model and one column per class (Kidney / Tumor / Cyst) plus their
mean, for the validation and the training set. We add what those tables lack: a seeded
bootstrap 95 % confidence interval for every cell, a paired test between every two models
(Wilcoxon signed-rank and paired bootstrap on the same cases) and a box plot per class.

Input: the per-case CSVs written by `kidneyseg evaluate` (one per model and data set).
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np

from kidneyseg.errors import KidneysegError, some_names
from kidneyseg.evaluate.folder import CSV_NAME, read_csv
from kidneyseg.evaluate.stats import N_BOOTSTRAP, bootstrap_mean_of_means, bootstrap_means, paired_test
from kidneyseg.evaluate.tables import METRIC_SETS, fmt, markdown_table, scored_columns
from kidneyseg.io.stamps import recorded

COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"
PLOTS_KEY = "box_plots"
"""The key of `comparison.json` that records the box plots the run wrote: name -> `file_stamp`."""


def parse_named(spec: str, option: str) -> tuple[str, Path]:
    """Split `NAME=PATH`.

    Raises:
        KidneysegError: the text has no `=` or an empty name or path.
    """
    name, sep, path = spec.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise KidneysegError(f"{option} expects NAME=PATH, got {spec!r}")
    return name.strip(), Path(path.strip())


def scores_file(path: str | os.PathLike[str]) -> Path:
    """The per-case CSV of a `kidneyseg evaluate` output folder, or the file given."""
    path = Path(path)
    return path / CSV_NAME if path.is_dir() else path


def load_scores(path: str | os.PathLike[str]) -> list[dict]:
    """Per-case rows from a `kidneyseg evaluate` output folder or its `per_case.csv`."""
    return read_csv(scores_file(path))


def _aligned(models: dict[str, list[dict]], data_set: str) -> list[str]:
    """The common, sorted case ids; raise if the models were not evaluated on the same cases."""
    case_sets = {name: {r["case_id"] for r in rows} for name, rows in models.items()}
    first_name, first = next(iter(case_sets.items()))
    for name, cases in case_sets.items():
        if cases != first:
            only_first = some_names(sorted(first - cases)) or "none"
            only_this = some_names(sorted(cases - first)) or "none"
            raise KidneysegError(
                f"{data_set} set: models {first_name!r} and {name!r} were evaluated on different cases "
                f"(only {first_name}: {only_first}; only {name}: {only_this}); "
                "paired statistics need the same cases"
            )
    return sorted(first)


def _matrix(rows: list[dict], cases: list[str], columns: list[str], where: str) -> np.ndarray:
    by_case = {r["case_id"]: r for r in rows}
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise KidneysegError(
            f"{where}: the per-case CSV lacks columns {missing}; re-run kidneyseg evaluate "
            "(models compared must be scored in the same label map)"
        )
    return np.array([[by_case[case][c] for c in columns] for case in cases], dtype=np.float64)


def compare_models(
    data_sets: dict[str, dict[str, list[dict]]], n_boot: int = N_BOOTSTRAP, seed: int = 0
) -> dict:
    """Means with bootstrap CIs and paired tests for every metric set, model and data set.

    Args:
        data_sets: `{"validation": {model: per-case rows}, "training": {...}}`; the models of a
            data set must have been evaluated on the same cases.
        n_boot: bootstrap resamples.
        seed: seed of every bootstrap (each cell uses the same seed, so results are reproducible
            and paired resamples are comparable).

    Returns:
        A JSON-ready dict: `{"n_bootstrap", "seed", "sets": {data set: {"cases", "metrics":
        {metric set: {"title", "columns", "mean_leaves_out": {column: [model]}, "models": {model:
        {column: Interval}}, "paired": {"A vs B": {column: PairedTest}}}}}}}`.
    """
    out: dict = {"n_bootstrap": n_boot, "seed": seed, "confidence": 0.95, "sets": {}}
    for data_set, models in data_sets.items():
        if not models:
            continue
        cases = _aligned(models, data_set)
        metrics = {}
        for key, (title, all_columns) in METRIC_SETS.items():
            columns = scored_columns(all_columns, set().union(*(rows[0] for rows in models.values())))
            headings = [h for h, _ in columns]
            class_columns = [c for _, c in columns[:-1]]
            mean_column = columns[-1][1]
            values = {
                name: _matrix(rows, cases, [*class_columns, mean_column], f"{data_set} set, model {name}")
                for name, rows in models.items()
            }
            shared, left_out = _shared_classes(values, headings[:-1])
            per_model = {}
            for name, matrix in values.items():
                intervals = bootstrap_means(matrix[:, :-1], n_boot=n_boot, seed=seed)
                intervals.append(bootstrap_mean_of_means(matrix[:, :-1][:, shared], n_boot=n_boot, seed=seed))
                per_model[name] = {h: i.to_dict() for h, i in zip(headings, intervals, strict=True)}
                if left_out:  # each case's mean over the same classes, for the paired test
                    matrix[:, -1] = _case_means(matrix[:, :-1][:, shared])
            paired = {}
            for a, b in itertools.combinations(models, 2):
                paired[f"{a} vs {b}"] = {
                    h: paired_test(values[a][:, j], values[b][:, j], n_boot=n_boot, seed=seed).to_dict()
                    for j, h in enumerate(headings)
                }
            metrics[key] = {
                "title": title,
                "columns": headings,
                "mean_leaves_out": left_out,
                "models": per_model,
                "paired": paired,
            }
        out["sets"][data_set] = {"cases": cases, "metrics": metrics}
    return out


def _shared_classes(values: dict[str, np.ndarray], headings: list[str]) -> tuple[np.ndarray, dict]:
    """Which class columns every model has a defined value for (the Mean averages those for
    every model, so that no model's Mean is over other classes than another's), and the classes
    left out with the models that lack them: `{heading: [model, ...]}`."""
    has = {name: ~np.all(np.isnan(matrix[:, :-1]), axis=0) for name, matrix in values.items()}
    shared = np.logical_and.reduce(list(has.values()))
    left_out = {
        heading: [name for name, defined in has.items() if not defined[j]]
        for j, heading in enumerate(headings)
        if not shared[j] and any(defined[j] for defined in has.values())
    }
    return shared, left_out


def _case_means(values: np.ndarray) -> np.ndarray:
    """Each row's mean over its defined (not NaN) values; NaN for a row without any."""
    count = (~np.isnan(values)).sum(axis=1)
    return np.where(count > 0, np.nansum(values, axis=1) / np.maximum(count, 1), np.nan)


def _cell(interval: dict) -> str:
    if interval["low"] is None:
        return fmt(interval["mean"])
    return f"{fmt(interval['mean'])} [{fmt(interval['low'])}, {fmt(interval['high'])}]"


def _paired_cell(test: dict) -> str:
    if test["mean_difference"] is None:
        return "–"
    return f"{test['mean_difference']:+.3f}, p = {fmt(test['wilcoxon_p'])} / {fmt(test['bootstrap_p'])}"


def paper_table(result: dict, data_set: str = "validation", metric: str = "dice") -> str:
    """One markdown table in the papers' layout: a row per model, mean [95 % CI] per column."""
    entry = result["sets"][data_set]["metrics"][metric]
    rows = [[name, *[_cell(cells[h]) for h in entry["columns"]]] for name, cells in entry["models"].items()]
    notes = [
        f"\nThe Mean leaves out {heading} for every model: {', '.join(lacking)} "
        f"{'has' if len(lacking) == 1 else 'have'} no case with a {heading} value (the class in neither "
        "reference nor prediction), and Means over different classes would not compare.\n"
        for heading, lacking in entry.get("mean_leaves_out", {}).items()
    ]
    return markdown_table(["Model", *entry["columns"]], rows) + "".join(notes)


def comparison_markdown(result: dict) -> str:
    """The comparison as markdown: per data set and metric set, the papers' table (mean
    [95 % CI]) followed by the paired tests."""
    parts = [
        "# Model comparison\n",
        f"Cells: mean over cases [95 % bootstrap CI, {result['n_bootstrap']} resamples, "
        f"seed {result['seed']}]. "
        "Paired cells: mean difference (row's first model minus second) on the cases where both are "
        "defined, then p-values of the Wilcoxon signed-rank test / the paired bootstrap. The Mean column "
        "is the average of the class means; its paired test compares each case's own mean.\n",
    ]
    for data_set, entry in result["sets"].items():
        parts.append(f"## {data_set.capitalize()} set ({len(entry['cases'])} cases)\n")
        for key, metric in entry["metrics"].items():
            headings = metric["columns"]
            parts.append(f"### {metric['title']}\n\n" + paper_table(result, data_set, key))
            if metric["paired"]:
                paired_rows = [
                    [pair, *[_paired_cell(tests[h]) for h in headings]]
                    for pair, tests in metric["paired"].items()
                ]
                parts.append("Paired tests:\n\n" + markdown_table(["Models", *headings], paired_rows))
    return "\n".join(parts)


def _plot_path(out_dir: Path, data_set: str, heading: str) -> Path:
    return out_dir / f"boxplot_{data_set}_{heading.lower()}.png"


def box_plots(models: dict[str, list[dict]], out_dir: str | os.PathLike[str], data_set: str) -> list[Path]:
    """One PNG per class of the per-label Dice (and their per-case mean): a box per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kidneyseg.io.atomic import atomic_path

    out_dir = Path(out_dir)
    paths = []
    scored = set().union(*(rows[0] for rows in models.values()))
    for heading, column in scored_columns(METRIC_SETS["dice"][1], scored):
        data = []
        for rows in models.values():
            values = np.array([r[column] for r in rows], dtype=np.float64)
            data.append(values[~np.isnan(values)])
        fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(models), 4.0), dpi=120)
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(
            range(1, len(models) + 1), [f"{n}\n(n={len(d)})" for n, d in zip(models, data, strict=True)]
        )
        ax.set_ylabel("Dice")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{heading} Dice, {data_set} set")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = _plot_path(out_dir, data_set, heading)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        paths.append(path)
    return paths


def _recorded_plots(out_dir: Path) -> dict[str, dict]:
    """The box plots an earlier comparison in `out_dir` recorded in its `comparison.json`, by
    file name, with their stamps (none if it recorded none or cannot be read)."""
    plots = recorded(out_dir / COMPARISON_JSON, PLOTS_KEY)
    return (
        {name: stamp for name, stamp in plots.items() if isinstance(stamp, dict)}
        if isinstance(plots, dict)
        else {}
    )


def write_comparison(
    data_sets: dict[str, dict[str, list[dict]]],
    out_dir: str | os.PathLike[str],
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, list[Path]]:
    """Compute the comparison and write `comparison.json` (with the stamps of the box plots,
    `PLOTS_KEY`), `comparison.md` and the box plots; then remove the box plots that an earlier
    comparison in `out_dir` recorded, that this one does not write again (e.g. a training set's)
    and that are still as that run wrote them, so that no plot belongs to another comparison and
    a file compare did not write stays. Returns the paths written (`json`, `markdown`, `plots`)
    and removed (`removed`)."""
    from kidneyseg.evaluate.runs import SPLIT_KEYS
    from kidneyseg.io.atomic import write_text_atomic
    from kidneyseg.io.stamps import as_stamped, file_stamp

    result = compare_models(data_sets, n_boot=n_boot, seed=seed)
    out_dir = Path(out_dir)
    earlier = _recorded_plots(out_dir)
    plots = [p for name, models in data_sets.items() if models for p in box_plots(models, out_dir, name)]
    record = {**result, PLOTS_KEY: {p.name: file_stamp(p) for p in plots}}
    written = {
        "json": [write_text_atomic(out_dir / COMPARISON_JSON, json.dumps(record, indent=2) + "\n")],
        "markdown": [write_text_atomic(out_dir / COMPARISON_MD, comparison_markdown(result))],
        "plots": plots,
    }
    ours = [_plot_path(out_dir, s, h) for s in SPLIT_KEYS for h, _ in METRIC_SETS["dice"][1]]
    removed = [p for p in ours if p not in plots and p.name in earlier and as_stamped(p, earlier[p.name])]
    for path in removed:
        path.unlink()
    return {**written, "removed": removed}
