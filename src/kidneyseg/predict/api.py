"""`kidneyseg.segment`: a CT in any form to its label map in one call, with the command line's checks.

The CT may be a NIfTI file, a DICOM series folder, a `nibabel` image or a `kidneyseg` `Volume`.
The memory a prediction needs is checked against what is available (for a file, before any
voxel is read), and the image must be CT in Hounsfield units (`kidneyseg.predict.checks`).
`kidneyseg predict` reads every case through `read_checked` too.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import numpy as np

from kidneyseg.errors import KidneysegError
from kidneyseg.io.volume import Volume
from kidneyseg.predict.predictor import Predictor, PredictSettings
from kidneyseg.predict.settings import EVERY_AXIS, check_flag

if TYPE_CHECKING:
    from kidneyseg.predict.checks import Doubt

ModelSpec = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Predictor | None


def _check_memory(where: str | os.PathLike[str] | None, header, predictor: Predictor) -> None:
    from kidneyseg.predict.checks import check_memory, check_spacing, estimate_memory

    check_spacing(header.spacing, where)
    need = estimate_memory(header, predictor.config.preprocess, predictor.label_map.num_classes)
    check_memory(where or "image", need)


def read_checked(
    path: str | os.PathLike[str],
    predictor: Predictor,
    series_uid: str | None = None,
    dicom_files: tuple[str, ...] = (),
    hu_check: bool = True,
) -> tuple[Volume, list[Doubt]]:
    """Read the CT at `path` if memory allows, and check that it holds a body and is CT in HU;
    returns it and warnings.

    Raises:
        KidneysegError: the header cannot be read, the prediction needs more memory than is
            available (checked before reading voxels), or the image holds no body.
    """
    from kidneyseg.io.formats import read_header
    from kidneyseg.io.volume import read_volume

    _check_memory(path, read_header(path, dicom_files), predictor)
    ct = read_volume(path, series_uid)
    return ct, _doubts(ct, hu_check)


def _doubts(ct: Volume, hu_check: bool) -> list[Doubt]:
    """The warnings a CT's header (no orientation) and content give."""
    from kidneyseg.predict.checks import check_frames_agree, check_orientation_given, content_warnings

    header = [doubt for doubt in (check_orientation_given(ct), check_frames_agree(ct)) if doubt]
    return [*header, *content_warnings(ct, hu_check)]


_ARGUMENTS = (
    ("--no-hu-check", "hu_check=False"),
    ("--series ''", "series_uid=''"),
    ("--series UID", "series_uid=UID"),
)
"""The command line's options that messages name, as `segment()` takes them."""
_VALUED = re.compile(r"--(precision|backend) (\w+)")
"""Options with a value that messages name (`--precision int8`), as `segment()` and
`PredictSettings` take them (`precision='int8'`)."""


def _in_python(message: str, caller: str) -> str:
    """`message` with the command line's options named as `caller`'s caller passes them:
    arguments of `segment()`, which `Predictor.predict()` callers reach with the predictor."""
    for option, argument in _ARGUMENTS:
        call = argument if caller == "segment()" else f"kidneyseg.segment(ct, model=predictor, {argument})"
        message = message.replace(option, call)
    return _VALUED.sub(lambda match: f"{match[1]}={match[2]!r}", message)


def _python_error(error: KidneysegError, caller: str) -> KidneysegError:
    """`error`, or the same error with its message `_in_python`."""
    message = _in_python(error.message, caller)
    return error if message == error.message else KidneysegError(message, error.path)


def checked_volume(
    ct: Any,
    predictor: Predictor,
    series_uid: str | None = None,
    hu_check: bool = True,
    caller: str = "segment()",
) -> Volume:
    """`ct` (a CT file or DICOM series folder, a nibabel image or a `Volume`) as a `Volume`, with
    the command line's checks; what they find worth a warning is issued at the caller's caller
    (`warnings.warn`). `caller` names the function in the messages, which name Python arguments
    where the command line's name its options (`_in_python`).

    Raises:
        KidneysegError: as `read_checked`, and for a folder of cases, a series UID given for a
            file, or anything else (a numpy array has no spacing or orientation).
    """
    try:
        volume, doubts = as_checked_volume(ct, predictor, series_uid, hu_check, caller)
    except KidneysegError as error:
        raise _python_error(error, caller) from None
    for doubt in doubts:
        warnings.warn(doubt.message, stacklevel=3)
    return volume


def as_checked_volume(
    ct: Any, predictor: Predictor, series_uid: str | None, hu_check: bool, caller: str
) -> tuple[Volume, list[Doubt]]:
    """`checked_volume`, its warnings returned rather than issued: the volume and the warnings."""
    from kidneyseg.io.formats import ImageHeader
    from kidneyseg.io.volume import NiftiFrames

    if isinstance(ct, str | os.PathLike):
        from kidneyseg.predict.inputs import find_inputs, refuse_series_of_a_file

        ct = os.path.expanduser(ct)
        refuse_series_of_a_file(ct, series_uid, "series_uid")
        cases, folder_mode = find_inputs(ct, series_uid)
        if folder_mode:
            raise KidneysegError(
                f"{caller} takes one CT; for a folder of cases use `kidneyseg predict` or "
                "kidneyseg.predict.run_prediction",
                ct,
            )
        return read_checked(cases[0].path, predictor, cases[0].series_uid, cases[0].dicom_files, hu_check)
    if isinstance(ct, np.ndarray):
        raise KidneysegError(
            f"{caller} takes no bare numpy array: it has no voxel spacing or orientation; pass "
            "kidneyseg.io.Volume(array, affine) or a nibabel image"
        )
    if not isinstance(ct, Volume):
        if not hasattr(ct, "dataobj") or not hasattr(ct, "affine"):
            raise KidneysegError(
                f"{caller} takes a file or folder path, a nibabel image or a Volume, not {type(ct).__name__}"
            )
        array = np.asanyarray(ct.dataobj)
        if array.ndim == 4 and array.shape[3] == 1:
            array = array[..., 0]
        name = ct.get_filename() if hasattr(ct, "get_filename") else None
        frames = NiftiFrames.of(ct.header) if "sform_code" in getattr(ct, "header", {}) else None
        ct = Volume(np.asarray(array), ct.affine, source=name or "nibabel image", frames=frames)
    _check_memory(ct.source, ImageHeader(ct.shape, ct.spacing, int(ct.array.dtype.itemsize)), predictor)
    return ct, _doubts(ct, hu_check)  # a nibabel image without orientation warns as its file does


def _predictor(model: ModelSpec, device: str, options: dict[str, Any]) -> Predictor:
    from kidneyseg.predict.pretrained import default_model

    if isinstance(model, Predictor):
        if options:
            raise KidneysegError(f"options {sorted(options)} are fixed by the Predictor passed as model=")
        if model.settings.probabilities:
            raise KidneysegError(
                "segment() returns the label map only, and the Predictor passed as model= computes "
                "class probabilities it would drop; use predictor.predict(ct).probabilities"
            )
        return model
    known = {f.name for f in fields(PredictSettings)} | {"tta"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise KidneysegError(f"unknown option(s) {unknown}; segment() takes {sorted(known)}")
    for flag in ("tta", "probabilities"):
        check_flag(flag, options.get(flag, False))
    if options.get("probabilities"):
        raise KidneysegError(
            "segment() returns the label map only; for the class probabilities use "
            "Predictor(model, PredictSettings(probabilities=True)).predict(ct).probabilities"
        )
    if options.pop("tta", False):
        options["mirror_axes"] = EVERY_AXIS
    models = default_model() if model is None else model
    return Predictor(models, PredictSettings(**options), device=device)


def segment(
    ct: Any,
    model: ModelSpec = None,
    *,
    report: bool = False,
    series_uid: str | None = None,
    device: str = "auto",
    hu_check: bool = True,
    **options: Any,
):
    """Segment kidneys, tumors and cysts in one CT; the label map comes back on the CT's grid.

    Example:
        >>> import kidneyseg
        >>> kidneyseg.segment("ct.nii.gz", model="runs/sca").to_filename("seg.nii.gz")

    Args:
        ct: a NIfTI file, a DICOM series folder, a nibabel image or a `kidneyseg.io.Volume`,
            in Hounsfield units.
        model: a run folder or checkpoint, a list of them (an ensemble), or a `Predictor` to
            reuse across calls; None means the bundled pretrained model
            (`kidneyseg.predict.pretrained.default_model`).
        report: also return the case report (the dict `kidneyseg predict --report` writes as JSON,
            with the model's confidence and each lesion's sure fraction).
        series_uid: the series to read when a DICOM folder holds several.
        device: "auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N".
        hu_check: refuse images that are not CT in Hounsfield units.
        **options: inference settings, as `PredictSettings` fields (`overlap`, `blend`,
            `sw_batch_size`, `precision`, `backend`, `postprocess`, ...) or `tta=True`.

    Returns:
        A uint8 `nibabel.Nifti1Image` with the CT's shape and affine whose header names the
        classes; with `report=True`, the pair (image, report).

    Raises:
        KidneysegError: no model, a bad model or option, an input that cannot be read, is not
            CT in HU, or needs more memory than is available.
    """
    from kidneyseg.predict.label_files import label_image

    for name, value in (("report", report), ("hu_check", hu_check)):
        check_flag(name, value)
    try:
        predictor = _predictor(model, device, dict(options))
    except KidneysegError as error:
        raise _python_error(error, "segment()") from None
    volume = checked_volume(ct, predictor, series_uid, hu_check)
    prediction = predictor.predict(volume)
    image = label_image(prediction.labels.array, volume.affine, predictor.label_map, volume.frames)
    if not report:
        return image
    from kidneyseg.report import measure

    labels = Volume(prediction.labels.array, volume.affine, None, frames=volume.frames)  # no labels file
    return image, measure(volume, labels, predictor.label_map, **prediction.report_facts)
