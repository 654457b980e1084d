"""Does a model trained on phantoms find kidneys on real CT?

For every run given, predicts (with `kidneyseg`'s own predictor, default settings or those given
by `--setting`; over the whole body unless `--setting roi=kidneys` runs it behind the bundled
locator, as `kidneyseg predict` does), or for every folder of label maps given reads
(`--labels`, e.g. nnU-Net's predictions from `benchmarks/nnunet_anchor.py`, named as `REAL_CTS`
and the phantoms' case ids):

- the real labelled low-dose CT `../shared/data/real-ct/lowdose_abdomen_4mm.nii.gz`: kidney Dice
  of the predicted kidney + masses against its kidney label (the scan has no lesion labels), the
  volumes (mL) labelled outside that label and missed inside it, and those labelled tumor and cyst;
- a folder of labelled phantoms (e.g. built with `--anatomy` over KiTS19 cases the runs never
  saw): mean Dice of the KiTS regions kidney + masses, masses, tumor (KiTS's rule: 1 when
  reference and prediction are both empty), and of the cyst label (as `kidneyseg evaluate`: a
  case with neither a reference nor a predicted cyst does not count), the same within strata
  (contrast-enhanced or unenhanced phantoms; reference tumor volume up to or over that of a 4 cm
  sphere, the T1a limit), and the mean volume (mL) labelled kidney, tumor or cyst on the
  phantoms' heart (from their tissue maps; phantoms of chest-abdomen scans, `kidneyseg phantom
  --chest`, show the whole heart);
- the real CTs without labels (the contrast-enhanced DICOM series and the chest CT): predicted
  kidney volume (mL; the chest CT holds almost no kidney),

and draws one picture: a row per run, the low-dose CT, the DICOM series and the chest CT, with
the prediction (red kidney, yellow tumor, cyan cyst) and the reference kidney outline (green).

Usage:
    python benchmarks/sim_to_real.py --run NAME=RUN_DIR[,RUN_DIR...] [--run ...] \
        [--run-unchecked NAME=RUN_DIR ...] [--labels NAME=FOLDER ...] [--setting KEY=VALUE ...] \
        --phantoms HELD_OUT_DIR --picture docs/images/sim_to_real.png [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-ct"
LOWDOSE_LABELS = REAL / "lowdose_abdomen_4mm_kidneys.nii.gz"
REAL_CTS = {
    "lowdose": REAL / "lowdose_abdomen_4mm.nii.gz",
    "dicom": REAL / "dicom_series",
    "chest": REAL / "chest_ct_1.5mm.nii.gz",
}


class Predicted:
    """Label maps from `kidneyseg`'s own predictor with a run's model (default settings, or
    without post-processing's anatomy check)."""

    def __init__(self, model: str, anatomy_check: bool = True, **settings) -> None:
        from kidneyseg.predict import Predictor, PredictSettings

        models = model.split(",")  # several: an ensemble
        chosen = PredictSettings(**{"roi": "body", "anatomy_check": anatomy_check, **settings})
        self.predictor = Predictor(models, chosen)

    def labels(self, name: str, ct) -> tuple[np.ndarray, float | None]:
        prediction = self.predictor.predict(ct)
        return prediction.labels.array, prediction.confidence


class Unchecked(Predicted):
    """`Predicted` without post-processing's anatomy check (`kidneyseg.predict.anatomy`)."""

    def __init__(self, model: str, **settings) -> None:
        super().__init__(model, anatomy_check=False, **settings)


class FromFiles:
    """Label maps another tool wrote: `<name>.nii.gz` in one folder, named as `REAL_CTS` and
    the phantoms' case ids, on the grid of the CT as kidneyseg reads it."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def labels(self, name: str, ct) -> tuple[np.ndarray, float | None]:
        from kidneyseg.io.volume import read_volume

        path = self.folder / f"{name}.nii.gz"
        labels = read_volume(path).array
        if labels.shape != ct.array.shape:
            raise SystemExit(f"{path}: shape {labels.shape}, its CT has {ct.array.shape}")
        return labels, None


def score_run(source: Predicted | FromFiles, phantoms: Path | None) -> tuple[dict, dict]:
    """Figures and label maps (for the picture) of one run."""
    from kidneyseg.data.cases import discover
    from kidneyseg.evaluate.metrics import kits_dice
    from kidneyseg.io.volume import read_volume

    maps, row = {}, {}
    for name, path in REAL_CTS.items():
        ct = read_volume(path)
        maps[name], confidence = source.labels(name, ct)
        row[f"{name}_confidence"] = _rounded(confidence)
        if name == "lowdose":
            reference = read_volume(LOWDOSE_LABELS).array > 0
            found = maps[name] > 0
            row["lowdose_kidney_dice"] = round(kits_dice(reference, found), 4)
            ml = float(np.prod(ct.spacing)) / 1000
            row["lowdose_false_ml"] = round(float((found & ~reference).sum()) * ml, 1)
            row["lowdose_missed_ml"] = round(float((reference & ~found).sum()) * ml, 1)
            for value, lesion in ((2, "tumor"), (3, "cyst")):
                row[f"lowdose_{lesion}_ml"] = round(float((maps[name] == value).sum()) * ml, 1)
        else:
            voxels = (maps[name] > 0).sum()
            row[f"{name}_kidney_ml"] = round(float(voxels * np.prod(ct.spacing)) / 1000, 1)
    if phantoms is not None:
        cases = [_score_phantom(case, source) for case in discover(phantoms, require_labels=True).labelled]
        row.update(_means(cases, "phantom_"))
        for stratum, keep in _strata().items():
            chosen = [c for c in cases if keep(c)]
            row[f"phantom_{stratum}"] = {"cases": len(chosen), **_means(chosen, "", STRATUM_FIGURES)}
    return row, maps


STRATUM_FIGURES = ("kidney_and_masses", "masses", "tumor", "cyst")


def _strata() -> dict:
    """Phantoms by contrast phase, and by reference tumor volume up to or over that of a sphere
    as wide as the T1a limit (4 cm, `kidneyseg.report.staging`: 33.5 mL)."""
    from kidneyseg.report.staging import SIZE_CUTS_CM

    t1a_sphere_ml = np.pi / 6 * SIZE_CUTS_CM[0][0] ** 3
    return {
        "enhanced": lambda c: c["phase"] not in (None, "noncontrast"),
        "unenhanced": lambda c: c["phase"] == "noncontrast",
        "tumor_up_to_4cm": lambda c: c["tumor_ml"] <= t1a_sphere_ml,
        "tumor_over_4cm": lambda c: c["tumor_ml"] > t1a_sphere_ml,
    }


def _score_phantom(case, source: Predicted | FromFiles) -> dict:
    """One phantom's Dice figures, volume labelled on its heart, confidence, contrast phase and
    reference tumor volume (mL)."""
    from kidneyseg.data.phantom.tissue import HEART_TISSUES
    from kidneyseg.evaluate.metrics import kits_dice, lesion_figures
    from kidneyseg.io.volume import read_volume
    from kidneyseg.labels import KITS23, KITS_REGIONS

    ref = read_volume(case.label).array
    ct = read_volume(case.image)
    pred, confidence = source.labels(case.case_id, ct)
    voxel_ml = float(np.prod(ct.spacing)) / 1000
    truth_file = Path(case.image).parent / "phantom.json"  # absent for scans that are not phantoms
    phase = json.loads(truth_file.read_text())["phase"] if truth_file.exists() else None
    whole = KITS_REGIONS[0].values()  # kidney + masses
    scores = {"kidney_and_masses": kits_dice(np.isin(ref, whole), np.isin(pred, whole))}
    scores |= lesion_figures(pred, ref, KITS23)
    scores["confidence"] = confidence
    if case.tissue is not None:
        heart = np.isin(read_volume(case.tissue).array, HEART_TISSUES)
        scores["heart_ml"] = float((pred[heart] > 0).sum()) * voxel_ml
    return scores | {"phase": phase, "tumor_ml": float((ref == 2).sum()) * voxel_ml}


def _means(cases: list[dict], prefix: str, keys: tuple[str, ...] | None = None) -> dict:
    """Mean of each figure over the cases where it is defined (not None or NaN)."""
    if keys is None:
        keys = tuple(k for k in cases[0] if k not in ("phase", "tumor_ml")) if cases else ()
    means = {}
    for key in keys:
        values = [c[key] for c in cases if c.get(key) is not None and not np.isnan(c[key])]
        if values:
            means[f"{prefix}{key}"] = round(float(np.mean(values)), 4)
    return means


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def picture(results: dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from kidneyseg.io.volume import read_volume

    cts = {name: read_volume(path) for name, path in REAL_CTS.items()}
    ref = read_volume(LOWDOSE_LABELS).array > 0
    colours = ListedColormap([(0, 0, 0, 0), (1, 0, 0, 0.45), (1, 1, 0, 0.6), (0, 1, 1, 0.6)])
    fig, axes = plt.subplots(len(results), 3, figsize=(12, 4 * len(results)), squeeze=False)
    for row, (name, maps) in enumerate(results.items()):
        for col, (key, ct) in enumerate(cts.items()):
            image, labels, outline = _axial(ct.array, maps[key], ct.affine, ref if key == "lowdose" else None)
            ax = axes[row, col]
            ax.imshow(np.clip(image, -160, 240), cmap="gray", vmin=-160, vmax=240)
            ax.imshow(labels, cmap=colours, vmin=0, vmax=3, interpolation="nearest")
            if outline is not None:
                ax.contour(outline, [0.5], colors="lime", linewidths=0.8)
            ax.set_title(f"{name}: {key}", fontsize=10)
            ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)


def _axial(ct: np.ndarray, labels: np.ndarray, affine: np.ndarray, ref: np.ndarray | None):
    """CT, labels and reference outline on the axial slice through the most reference (or, without
    one, predicted) kidney, in the radiological view: patient's right on the left, anterior up."""
    import nibabel as nib

    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(("L", "P", "S"))
    )

    def lps(array: np.ndarray) -> np.ndarray:
        return nib.orientations.apply_orientation(array, ornt)

    ct_l, lab_l = lps(ct), lps(labels)
    ref_l = lps(ref.astype(np.uint8)) if ref is not None else None
    weight = (ref_l if ref_l is not None else lab_l > 0).sum(axis=(0, 1))
    z = int(np.argmax(weight)) if weight.any() else ct_l.shape[2] // 2
    return ct_l[:, :, z].T, lab_l[:, :, z].T, (ref_l[:, :, z].T if ref_l is not None else None)


def _setting(item: str) -> tuple[str, object]:
    """`KEY=VALUE` with VALUE read as YAML (numbers, lists), as kidneyseg reads overrides; lists
    become tuples."""
    from kidneyseg.errors import KidneysegError
    from kidneyseg.plaindata import parse_override

    try:
        key, value = parse_override(item, "KEY=VALUE")
    except KidneysegError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return key, tuple(value) if isinstance(value, list) else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sources = parser.add_argument_group("rows, in the order given")
    for flag, kind, text in (
        ("--run", Predicted, "NAME=RUN_DIR[,RUN_DIR...] (repeatable; several: their ensemble)."),
        ("--run-unchecked", Unchecked, "NAME=RUN_DIR, predicted without post-processing's anatomy check."),
        ("--labels", FromFiles, "NAME=FOLDER of label maps another tool wrote."),
    ):
        sources.add_argument(
            flag, dest="sources", action="append", default=[], type=lambda v, k=kind: (v, k), help=text
        )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        type=_setting,
        help="KEY=VALUE of kidneyseg.predict.PredictSettings for the predicted rows, e.g. overlap=0.75 "
        "or mirror_axes=[0] (repeatable).",
    )
    parser.add_argument("--phantoms", type=Path, help="Held-out labelled phantoms (KiTS layout).")
    parser.add_argument("--picture", type=Path, help="PNG to draw.")
    parser.add_argument("--json", type=Path, help="Write the figures here too.")
    args = parser.parse_args()
    if not args.sources:
        parser.error("give at least one --run, --run-unchecked or --labels")
    settings = dict(args.setting)
    if settings and all(kind is FromFiles for _, kind in args.sources):
        parser.error("--setting applies to --run and --run-unchecked rows; none was given")
    rows, maps = {}, {}
    for spec, kind in args.sources:
        name, _, where = spec.partition("=")
        source = kind(where) if kind is FromFiles else kind(where, **settings)
        rows[name], maps[name] = score_run(source, args.phantoms)
        print(json.dumps({name: rows[name]}), flush=True)
    if args.picture:
        picture(maps, args.picture)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
