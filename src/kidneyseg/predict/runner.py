"""`kidneyseg predict` as a function: find the cases, predict each, write outputs and a run record.

An input is a CT file (NIfTI), a DICOM series folder, or a folder of cases (KiTS19/21/23
layout, `images/` + `labels/`, a flat folder of NIfTI files, or one DICOM series per
sub-folder). Per case the outputs are, in the output folder:

- `<case>.nii.gz`: the label map, exactly on the CT's grid (written last: it marks the case
  as finished, so a re-run skips it);
- `<case>_probabilities.nii.gz` (option): class probabilities on the network grid, 4D, uint8
  scaled to [0, 1], with that grid's own affine (they overlay the CT in world coordinates);
- `<case>_seg.dcm` (option, DICOM input): a DICOM SEG referencing the source series;
- `<case>_report.json` / `.html` (option): the case report.

`predict_run.json` records versions, device, models, settings and per-case time. Every file
is written atomically, and a case that fails leaves none of its files behind; in folder mode
the other cases go on and the failures are listed at the end.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg.errors import KidneysegError
from kidneyseg.io.atomic import write_atomic, write_text_atomic
from kidneyseg.io.volume import NIFTI_SUFFIXES, choose_series, list_dicom_series
from kidneyseg.predict.backends import backend_version
from kidneyseg.predict.predictor import Prediction, Predictor, PredictSettings

RECORD_NAME = "predict_run.json"


@dataclass(frozen=True)
class CaseInput:
    """One CT to predict: an id (names its outputs), its file or DICOM folder, a series UID."""

    case_id: str
    path: Path
    series_uid: str | None = None
    dicom_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutputOptions:
    """What to write besides the label map, and how to treat finished cases and odd images."""

    dicom_seg: bool = False
    report: bool = False
    overwrite: bool = False
    hu_check: bool = True


@dataclass
class RunRecord:
    """The JSON run record (`predict_run.json`)."""

    started: str
    command: dict[str, Any]
    environment: dict[str, Any]
    models: list[dict[str, Any]]
    settings: dict[str, Any]
    cases: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [c for c in self.cases if c["status"] == "failed"]


def _nifti_case_id(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name[:-5] if name.endswith("_0000") else name


def _dicom_case(folder: Path, series_uid: str | None, case_id: str) -> CaseInput | None:
    series = list_dicom_series(folder)
    if not series:
        return None
    series_uid = choose_series(series, series_uid, folder)
    return CaseInput(case_id, folder, series_uid, series[series_uid])


def find_inputs(path: str | os.PathLike[str], series_uid: str | None = None) -> tuple[list[CaseInput], bool]:
    """The cases an input path holds, and whether it is a folder of cases (folder mode).

    Raises:
        KidneysegError: the path does not exist, holds no CT, or holds several DICOM series
            and `series_uid` does not choose one.
    """
    from kidneyseg.data.cases import discover

    path = Path(path)
    if not path.exists():
        raise KidneysegError("no such file or folder", path)
    if path.is_file():
        if not path.name.endswith(NIFTI_SUFFIXES):
            raise KidneysegError("not a NIfTI file (.nii, .nii.gz) or a DICOM folder", path)
        return [CaseInput(_nifti_case_id(path), path)], False
    for layout in ("auto", "plain"):
        try:
            dataset = discover(path, layout=layout)
        except KidneysegError:
            continue
        return [CaseInput(c.case_id, c.image) for c in dataset.cases], True
    single = _dicom_case(path, series_uid, path.name)
    if single is not None:
        return [single], False
    cases = [
        c
        for d in sorted(p for p in path.iterdir() if p.is_dir())
        if (c := _dicom_case(d, series_uid, d.name))
    ]
    if cases:
        return cases, True
    raise KidneysegError(
        "no CT found: expected a NIfTI file, a DICOM series folder, or a folder of cases "
        "(KiTS layout, images/, NIfTI files, or DICOM series sub-folders)",
        path,
    )


def case_outputs(
    out_dir: Path, case_id: str, settings: PredictSettings, options: OutputOptions
) -> dict[str, Path]:
    """The files a case writes (the report writer names its own files beside them)."""
    outputs = {"labels": out_dir / f"{case_id}.nii.gz"}
    if settings.probabilities:
        outputs["probabilities"] = out_dir / f"{case_id}_probabilities.nii.gz"
    if options.dicom_seg:
        outputs["dicom_seg"] = out_dir / f"{case_id}_seg.dcm"
    if options.report:
        outputs["report"] = out_dir / f"{case_id}_report.json"
    return outputs


def write_probabilities(path: Path, prediction: Prediction) -> Path:
    """Class probabilities as a 4D NIfTI (x, y, z, class), uint8 scaled by 1/255, network grid."""
    import nibabel as nib

    probs = np.moveaxis(prediction.probabilities, 0, -1)
    quantised = np.rint(np.clip(probs, 0.0, 1.0) * 255.0).astype(np.uint8)
    image = nib.Nifti1Image(quantised, prediction.probabilities_affine)
    image.header.set_slope_inter(1.0 / 255.0, 0.0)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(prediction.probabilities_affine, code=1)
    image.set_sform(prediction.probabilities_affine, code=1)
    return write_atomic(path, lambda tmp: nib.save(image, str(tmp)))


def check_output_folder(out_dir: Path) -> bool:
    """Make sure `out_dir` can be written; returns True if it had to be created."""
    existed = out_dir.exists()
    if existed and not out_dir.is_dir():
        raise KidneysegError("the output path exists and is not a folder", out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KidneysegError(f"cannot create the output folder ({exc.strerror})", out_dir) from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise KidneysegError("the output folder is not writable", out_dir)
    return not existed


def predict_case(
    predictor: Predictor,
    case: CaseInput,
    out_dir: Path,
    options: OutputOptions,
    progress: bool = False,
    warn: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Predict one case and write its outputs; returns its run-record entry.

    Raises:
        KidneysegError: the case cannot be read, is not CT in HU, needs more memory than is
            available, or its outputs cannot be written; nothing of it is left on disk.
    """
    from kidneyseg.io.volume import read_volume, write_labels
    from kidneyseg.predict.checks import check_hounsfield, check_memory, estimate_memory, read_header

    start = time.perf_counter()
    header = read_header(case.path, case.dicom_files)
    check_memory(
        case.path, estimate_memory(header, predictor.config.preprocess, predictor.label_map.num_classes)
    )
    ct = read_volume(case.path, case.series_uid)
    warnings = []
    if options.hu_check:
        message = check_hounsfield(ct.array, str(case.path))
        if message:
            warnings.append(message)
            warn(f"warning: {message}")
    seconds_read = time.perf_counter() - start
    prediction = predictor.predict(ct, progress=progress)
    outputs = case_outputs(out_dir, case.case_id, predictor.settings, options)
    written: list[Path] = []
    t = time.perf_counter()
    try:
        if "probabilities" in outputs:
            written.append(write_probabilities(outputs["probabilities"], prediction))
        if "dicom_seg" in outputs:
            from kidneyseg.predict.dicom_seg import write_dicom_seg

            written.append(write_dicom_seg(outputs["dicom_seg"], prediction.labels, predictor.label_map))
        if "report" in outputs:
            from kidneyseg.report import write_report

            # The report names the label file this case writes, not the CT the labels came from.
            labels = replace(prediction.labels, source=str(outputs["labels"]), dicom_files=())
            paths = write_report(ct, labels, out_dir, predictor.label_map, case.case_id)
            written += [paths.json, paths.html, paths.preview]
        written.append(write_labels(outputs["labels"], prediction.labels.array, ct))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    seconds = {"read": seconds_read, **prediction.seconds, "write": time.perf_counter() - t}
    return {
        "case_id": case.case_id,
        "input": str(case.path),
        "status": "done",
        "outputs": {k: str(v) for k, v in outputs.items()},
        "shape": list(ct.shape),
        "spacing": list(ct.spacing),
        "windows": prediction.windows,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "total_seconds": round(time.perf_counter() - start, 3),
        "warnings": warnings,
    }


def _environment(predictor: Predictor) -> dict[str, Any]:
    import torch

    from kidneyseg.train.checkpoint import library_versions

    return {
        "versions": library_versions(),
        "platform": platform.platform(),
        "device": predictor.device,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "backend": predictor.backend,
        "backend_version": backend_version(predictor.backend),
        "backend_compile_seconds": round(predictor.compile_seconds, 3),
        "backend_fallback": predictor.backend_fallback,
    }


def _finished(outputs: dict[str, Path]) -> bool:
    return all(p.exists() for p in outputs.values())


def run_prediction(
    input_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    models: list[str | os.PathLike[str]],
    settings: PredictSettings | None = None,
    options: OutputOptions | None = None,
    series_uid: str | None = None,
    device: str = "cpu",
    progress: bool = True,
    warn: Callable[[str], None] = print,
) -> RunRecord:
    """Predict every case of `input_path` into `out_dir` (see the module docstring).

    Returns:
        The run record (also written as `out_dir/predict_run.json`); failed cases are in
        `record.failures` with their reason.

    Raises:
        KidneysegError: bad models, input or output folder; or the only case failed.
    """
    from tqdm import tqdm

    settings = settings or PredictSettings()
    options = options or OutputOptions()
    out_dir = Path(out_dir)
    cases, folder_mode = find_inputs(input_path, series_uid)
    if options.dicom_seg and not any(c.dicom_files for c in cases):
        raise KidneysegError("--dicom-seg needs DICOM input", input_path)
    predictor = Predictor(models, settings, device=device)
    if predictor.backend_fallback:
        warn(f"warning: {predictor.backend_fallback}")
    created = check_output_folder(out_dir)
    record = RunRecord(
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        command={"input": str(input_path), "output": str(out_dir), "series_uid": series_uid},
        environment=_environment(predictor),
        models=[
            {
                "path": str(c.path),
                "model": c.config.model.name,
                "model_kwargs": dict(c.config.model.kwargs),
                "label_map": c.label_map.name,
                "written_by": c.versions,
            }
            for c in predictor.checkpoints
        ],
        settings={**asdict(settings), "resolved_inference": asdict(predictor.inference), **asdict(options)},
    )
    start = time.perf_counter()
    bar = tqdm(cases, unit="case", disable=not (progress and folder_mode), dynamic_ncols=True)
    for case in bar:
        bar.set_postfix_str(case.case_id)
        outputs = case_outputs(out_dir, case.case_id, settings, options)
        if options.dicom_seg and not case.dicom_files:
            outputs.pop("dicom_seg")
        if not options.overwrite and _finished(outputs):
            record.cases.append({"case_id": case.case_id, "input": str(case.path), "status": "skipped"})
            continue
        case_options = (
            options if case.dicom_files else OutputOptions(**{**asdict(options), "dicom_seg": False})
        )
        try:
            entry = predict_case(
                predictor, case, out_dir, case_options, progress=progress and not folder_mode, warn=warn
            )
        except KidneysegError as exc:
            if not folder_mode:
                _remove_if_empty(out_dir, created)
                raise
            entry = {"case_id": case.case_id, "input": str(case.path), "status": "failed", "reason": str(exc)}
        except Exception as exc:  # one bad case must not stop the others in folder mode
            if not folder_mode:
                _remove_if_empty(out_dir, created)
                raise
            reason = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
            entry = {"case_id": case.case_id, "input": str(case.path), "status": "failed", "reason": reason}
        record.cases.append(entry)
    bar.close()
    record.seconds = round(time.perf_counter() - start, 3)
    if all(c["status"] == "failed" for c in record.cases):
        _remove_if_empty(out_dir, created)
    else:
        write_text_atomic(out_dir / RECORD_NAME, json.dumps(asdict(record), indent=2) + "\n")
    return record


def _remove_if_empty(out_dir: Path, created: bool) -> None:
    if created and out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
