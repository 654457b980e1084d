"""The demo's `index.html`: held-out scores, the real CT's line, links to every output."""

from __future__ import annotations

import html
from pathlib import Path


def real_ct_line(real: dict) -> str:
    """What the bundled model found on the real CT, in one line (console and page)."""
    dice = (
        "" if real["kidney_dice"] is None else f", kidney Dice {real['kidney_dice']:.3f} against its labels"
    )
    found = f"{real['kidney_ml']:.0f} mL labelled kidney, tumor or cyst"
    lesions = f"; {real['lesions']} lesion(s), the model unsure of {real['uncertain_lesions']}"
    warnings = f"; report warnings: {', '.join(real['warnings'])}" if real["warnings"] else ""
    return f"{found} (confidence {_fmt(real['confidence'])}){dice}{lesions}{warnings}"


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _real_ct_html(real: dict | None) -> str:
    if real is None:
        return ""
    return f"""<h2>Real CT, bundled pretrained model</h2>
<p>{html.escape(real["ct"])} segmented with <b>{html.escape(real["model"])}</b> (trained on phantoms only):
{html.escape(real_ct_line(real))}. <a href="{html.escape(real["report"])}">Report</a>.</p>"""


def _init_html(init: str | None) -> str:
    return (
        "from random weights" if init is None else f"starting from the weights of <b>{html.escape(init)}</b>"
    )


def _postprocessing_html(ml: float | None) -> str:
    if ml is None:
        return ""
    chosen = f"tumor and cyst islands under {ml} mL take the class around them" if ml else "every island kept"
    return f" Post-processing chosen on its validation cases when training ended: {chosen}."


def index_html(out: Path, record: dict, reports: list[Path]) -> str:
    scores = record["scores"]
    settings = record["settings"]
    summary_md = (out / "evaluation" / "summary.md").read_text(encoding="utf-8")
    links = (
        (html.escape(p.relative_to(out).as_posix()), html.escape(p.stem.removesuffix("_report")))
        for p in reports
    )
    rows = "".join(f'<li><a href="{href}">{name}</a></li>' for href, name in links)
    times = ", ".join(f"{k} {v:.0f} s" for k, v in record["seconds"].items())
    chosen = _postprocessing_html(record["absorb_islands_ml"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>kidneyseg demo</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2rem .6rem;text-align:right}}
pre{{background:#f6f6f6;padding:1rem;overflow-x:auto}}img{{max-width:100%}}</style></head>
<body>
<h1>kidneyseg demo</h1>
<p>Recipe <b>{html.escape(settings["recipe"])}:cpu</b>, {_init_html(record["initial_weights"])},
trained on the training split of {settings["cases"]} synthetic phantom cases
(seed {settings["seed"]}{", fast" if settings["fast"] else ""}), its validation split choosing the best epoch;
the {settings["test_cases"]} test phantoms below (seed {settings["test_seed"]}), which training and
validation never saw, were predicted onto their original CT grids.{chosen}
Phantoms are synthetic: these numbers show that the pipeline works, not how a model performs on
patients.</p>
<h2>Held-out Dice (test phantoms)</h2>
<table><tr><th>Kidney</th><th>Tumor</th><th>Cyst</th><th>Mean</th><th>KiTS HEC Dice</th>
<th>KiTS HEC Surface Dice</th></tr>
<tr><td>{_fmt(scores["kidney_dice"])}</td><td>{_fmt(scores["tumor_dice"])}</td><td>{_fmt(scores["cyst_dice"])}</td>
<td>{_fmt(scores["mean_dice"])}</td><td>{_fmt(scores["kits_hec_dice_mean"])}</td>
<td>{_fmt(scores["kits_hec_surface_dice_mean"])}</td></tr></table>
<p>Full evaluation: <a href="evaluation/summary.md">summary.md</a>,
<a href="evaluation/summary.json">summary.json</a>,
<a href="evaluation/per_case.csv">per_case.csv</a>. Stage times: {html.escape(times)}.</p>
{_real_ct_html(record.get("real_ct"))}
<h2>Case reports</h2><ul>{rows}</ul>
<h2>Training curve</h2><p><img src="run/curves.png" alt="training curves"></p>
<p>Run folder: <a href="run/config.yaml">config.yaml</a>, <a href="run/metrics.csv">metrics.csv</a>,
<a href="run/run.json">run.json</a>.</p>
<h2>Evaluation summary</h2><pre>{html.escape(summary_md)}</pre>
</body></html>
"""
