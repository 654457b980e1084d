"""The demo's first stage: a real CT segmented and reported with the bundled pretrained model,
checked as `predict` checks a CT and its reference labels as `report` checks them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from kidneyseg.errors import warn_on_stderr

if TYPE_CHECKING:
    import numpy as np

    from kidneyseg.demo import DemoSettings
    from kidneyseg.io.volume import Volume
    from kidneyseg.predict import Predictor


def segment_real_ct(settings: DemoSettings, out_dir: Path, device: str) -> dict:
    """Segment `settings.real_ct` with the bundled model; write its labels and report."""
    from dataclasses import replace

    import numpy as np

    from kidneyseg.device import pick_device
    from kidneyseg.evaluate.metrics import kits_dice
    from kidneyseg.io.volume import write_labels
    from kidneyseg.predict import Predictor
    from kidneyseg.predict.pretrained import default_model
    from kidneyseg.report import write_report

    model = default_model()
    predictor = Predictor(model, device=str(pick_device(device)))
    ct, reference = _read_real_ct(settings, predictor)
    prediction = predictor.predict(ct)
    labels_path = write_labels(out_dir / "labels.nii.gz", prediction.labels.array, ct)
    labels = replace(prediction.labels, source=str(labels_path), dicom_files=())  # the report names the file
    report = write_report(ct, labels, out_dir, predictor.label_map, "real_ct", **prediction.report_facts)
    predicted = prediction.labels.array > 0
    measured = json.loads(report.json.read_text(encoding="utf-8"))
    unsure = [w["lesions"] for w in measured["warnings"] if w["code"] == "uncertain_lesions"]
    record: dict = {
        "ct": str(settings.real_ct),
        "model": model.stem,
        "kidney_ml": round(float(predicted.sum()) * float(np.prod(ct.spacing)) / 1000.0, 1),
        "confidence": None if prediction.confidence is None else round(prediction.confidence, 4),
        "lesions": len(measured["lesions"]),
        "uncertain_lesions": len(unsure[0]) if unsure else 0,
        "warnings": [w["code"] for w in measured["warnings"]],
        "report": report.html.relative_to(out_dir.parent).as_posix(),
        "kidney_dice": None,
    }
    if reference is not None:
        record["kidney_dice"] = round(kits_dice(reference > 0, predicted), 4)
    return record


def _read_real_ct(settings: DemoSettings, predictor: Predictor) -> tuple[Volume, np.ndarray | None]:
    """The real CT, with `predict`'s checks (memory, CT in HU, a body; its warnings on stderr),
    and its reference labels if given, with `report`'s (the CT's grid, whole numbers, classes of
    the model's label map): checked before anything is predicted or written.

    Raises:
        KidneysegError: naming the CT or the label file.
    """
    from kidneyseg.predict.api import as_checked_volume
    from kidneyseg.predict.label_files import read_label_file
    from kidneyseg.report.measure import validate_inputs

    ct, doubts = as_checked_volume(settings.real_ct, predictor, None, settings.hu_check, "--real-ct")
    for doubt in doubts:
        warn_on_stderr(doubt.message)
    if settings.real_ct_labels is None:
        return ct, None
    return ct, validate_inputs(ct, read_label_file(settings.real_ct_labels), predictor.label_map)
