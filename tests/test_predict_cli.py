"""`kidneyseg predict` end to end: folder mode, resume, DICOM in/SEG out, and every kind of bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kidneyseg.cli import app
from kidneyseg.io.volume import write_volume
from kidneyseg.predict.run_record import RECORD_NAME
from test_predict import TINY_3D, _dicom_copy, huge_header_file, save_tiny

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "tiny3d.pt", TINY_3D, seed=0)


def phantom_file(path: Path, seed: int, orientation: str = "IPL") -> Path:
    from kidneyseg.data.phantom import generate_case

    write_volume(path, generate_case(seed, size="tiny", orientation=orientation).ct)
    return path


def predict(*args: str | Path):
    return runner.invoke(app, ["predict", *map(str, args)])


def test_folder_mode_goes_on_after_a_bad_case_and_resumes(ckpt, tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    phantom_file(cases / "alpha.nii.gz", 1)
    phantom_file(cases / "gamma.nii.gz", 2, orientation="RAS")
    (cases / "beta.nii.gz").write_bytes(b"this is not a NIfTI file")
    out = tmp_path / "out"

    result = predict("-i", cases, "-o", out, "--model", ckpt, "-q")
    assert result.exit_code == 1, result.output
    assert "beta" in result.output and "cannot read the NIfTI header" in result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "alpha.nii.gz",
        "gamma.nii.gz",
        "kits23_ColorTable.ctbl",
        RECORD_NAME,
        "statistics.csv",
    ]
    for name in ("alpha", "gamma"):
        ct, labels = nib.load(cases / f"{name}.nii.gz"), nib.load(out / f"{name}.nii.gz")
        assert labels.shape == ct.shape
        np.testing.assert_allclose(labels.affine, ct.affine, atol=1e-6)
    record = json.loads((out / RECORD_NAME).read_text())
    status = {c["case_id"]: c["status"] for c in record["cases"]}
    assert status == {"alpha": "done", "beta": "failed", "gamma": "done"}
    done = next(c for c in record["cases"] if c["case_id"] == "alpha")
    assert done["total_seconds"] > 0 and done["windows"]["computed"] > 0
    assert record["environment"]["versions"]["torch"] == torch.__version__
    assert record["environment"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert record["settings"]["resolved_inference"]["overlap"] == TINY_3D.inference.overlap

    before = (out / "alpha.nii.gz").stat().st_mtime_ns
    again = predict("-i", cases, "-o", out, "--model", ckpt, "-q")
    assert again.exit_code == 1
    assert "0 predicted, 2 already done, 1 failed" in again.output
    assert (out / "alpha.nii.gz").stat().st_mtime_ns == before


def test_a_run_writing_the_same_record_is_refused_while_another_holds_it(ckpt, tmp_path):
    """Was: two runs into one folder at once both exited 0, and the run record and statistics.csv
    kept only the cases of the run that finished last."""
    from kidneyseg.io.atomic import exclusive

    ct = phantom_file(tmp_path / "alpha.nii.gz", 1)
    out = tmp_path / "out"
    out.mkdir()
    with exclusive(out / f".{RECORD_NAME}.lock", "held by the test"):
        busy = predict("-i", ct, "-o", out, "--model", ckpt, "-q")
        assert busy.exit_code == 2 and busy.output.splitlines() == [
            f"error: {out}: another kidneyseg predict is writing into this folder (its run record "
            f"{RECORD_NAME}): wait for it to finish, or predict into another --out (--shard shares a "
            "folder's cases out between jobs)"
        ]
        assert [p.name for p in out.iterdir()] == [f".{RECORD_NAME}.lock"]
        shard = predict("-i", ct.parent, "-o", out, "--model", ckpt, "-q", "--shard", "1/1")
        assert shard.exit_code == 0, shard.output  # a shard writes its own record
    assert not any(p.name.startswith(".") for p in out.iterdir())  # each lock went with its run
    left = out / ".alpha.kidneyseg-staging-x1y2z3"  # what a run killed while writing alpha left
    (left / ".earlier").mkdir(parents=True)
    (out / ".budget.partial-2025.xlsx").write_text("a user's file, not ours")
    again = predict("-i", ct, "-o", out, "--model", ckpt, "-q", "--overwrite")
    assert again.exit_code == 0 and (out / RECORD_NAME).is_file(), again.output
    assert not left.exists() and (out / ".budget.partial-2025.xlsx").is_file()


def test_kits_layout_with_options(ckpt, tmp_path):
    case = tmp_path / "data" / "dataset" / "case_00007"
    case.mkdir(parents=True)
    phantom_file(case / "imaging.nii.gz", 7)
    out = tmp_path / "out"
    result = predict(
        "-i", tmp_path / "data", "-o", out, "--model", ckpt, "--probabilities", "--tta", "--overlap", "0.25"
    )
    assert result.exit_code == 0, result.output
    probs = nib.load(out / "case_00007_probabilities.nii.gz")
    assert probs.shape[-1] == 4
    np.testing.assert_allclose(np.asarray(probs.dataobj).sum(-1), 1.0, atol=4 * 0.5 / 255)
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["settings"]["resolved_inference"]["mirror_axes"] == [0, 1, 2]
    assert record["settings"]["resolved_inference"]["overlap"] == 0.25


def test_report_option_writes_the_case_report(ckpt, tmp_path):
    ct = phantom_file(tmp_path / "one.nii.gz", 3)
    result = predict("-i", ct, "-o", tmp_path / "out", "--model", ckpt, "--report", "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "one_report.json").read_text())
    assert (tmp_path / "out" / "one_report.html").is_file() and (
        tmp_path / "out" / "one_preview.png"
    ).is_file()
    record = json.loads((tmp_path / "out" / RECORD_NAME).read_text())
    (case,) = record["cases"]
    assert report["inputs"]["ct"] == str(ct)
    assert report["inputs"]["labels"] == case["outputs"]["labels"] != str(ct)
    # the prediction's votes reach the report: every lesion has its sure fraction
    assert report["lesions"] and all(0.0 <= r["sure_fraction"] <= 1.0 for r in report["lesions"])
    # the untrained network is sure of none of them: the warning, and the console says so
    assert "uncertain_lesions" in [w["code"] for w in report["warnings"]]
    assert "the model was unsure of" in result.output
    out = tmp_path / "absorbing"  # the islands post-processing relabels are in the report
    assert (
        predict("-i", ct, "-o", out, "--model", ckpt, "--report", "--absorb-islands-ml", "5", "-q").exit_code
        == 0
    )
    (case,) = json.loads((out / RECORD_NAME).read_text())["cases"]
    report = json.loads((out / "one_report.json").read_text())
    assert case["absorbed_islands"] and report["inputs"]["absorbed_islands"] == case["absorbed_islands"]
    assert "absorbed_islands" in [w["code"] for w in report["warnings"]]


@pytest.mark.parametrize(
    "fails", ["moving the report into place", "an interrupt moving a mask", "writing the label map"]
)
def test_a_failed_rerun_leaves_the_earlier_outputs_as_they_were(ckpt, tmp_path, monkeypatch, fails):
    """Was: a re-run that could not replace `one_report.json` (a file made immutable, or locked by a
    viewer on a share) left the new page beside the old JSON and label map; one that failed at the
    label map deleted the earlier report it had already replaced."""
    import os

    import kidneyseg.predict.label_files as label_files
    import kidneyseg.predict.outputs as outputs
    from kidneyseg.errors import KidneysegError
    from kidneyseg.predict.outputs import STAGING

    out = tmp_path / "out"
    options = ["--model", ckpt, "--report", "--per-class"]
    first = predict("-i", phantom_file(tmp_path / "a" / "one.nii.gz", 3), "-o", out, *options)
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    if fails == "writing the label map":

        def write_label_image(path, *args, **kwargs):  # as the atomic writer fails on a full disk
            raise KidneysegError("could not write (No space left on device)", path)

        monkeypatch.setattr(label_files, "write_label_image", write_label_image)
    else:  # a move into the output folder itself (not the writes into the staging folder)
        replace, name = os.replace, "one_report.json" if fails.startswith("moving") else "one_tumor.nii.gz"

        def refuse(source, target):  # the move in fails, once: putting the earlier file back works
            if Path(target) == out / name and STAGING in Path(source).parent.name:
                if name == "one_tumor.nii.gz":
                    raise KeyboardInterrupt
                raise PermissionError(1, "Operation not permitted")
            replace(source, target)

        monkeypatch.setattr(outputs.os, "replace", refuse)
    other = phantom_file(tmp_path / "b" / "one.nii.gz", 4)  # another CT of the same name
    again = predict("-i", other, "-o", out, *options, "-q")
    assert again.exit_code != 0 and len(again.output.strip().splitlines()) == 1, again.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    if fails.startswith("moving"):
        assert again.output == (
            f"error: {out / 'one_report.json'}: could not write (Operation not permitted); the case's "
            "earlier outputs are kept\n"
        )
    elif fails.startswith("writing"):  # named where it goes, not in the staging folder
        assert (
            again.output == f"error: {out / 'one_kidney.nii.gz'}: could not write (No space left on device)\n"
        )


@pytest.fixture(scope="module")
def two_series(shared_data, tmp_path_factory) -> tuple[Path, list[str]]:
    from pydicom.uid import generate_uid

    folder = tmp_path_factory.mktemp("two_series")
    study = generate_uid()
    uids = []
    for prefix in ("a", "b"):
        uid = generate_uid()
        part = _dicom_copy(shared_data / "real-ct" / "dicom_series", folder / prefix, study, uid)
        for f in part.iterdir():
            f.rename(folder / f"{prefix}_{f.name}")
        part.rmdir()
        uids.append(uid)
    return folder, uids


def test_dicom_folder_with_several_series_asks_for_one(ckpt, two_series, tmp_path):
    import highdicom as hd

    folder, uids = two_series
    out = tmp_path / "out"
    result = predict("-i", folder, "-o", out, "--model", ckpt, "--dicom-seg", "-q")
    assert result.exit_code == 2
    assert "--series" in result.output and all(uid in result.output for uid in uids)
    assert not out.exists()

    result = predict("-i", folder, "-o", out, "--model", ckpt, "--dicom-seg", "--series", uids[1], "-q")
    assert result.exit_code == 0, result.output
    seg = hd.seg.segread(out / f"{folder.name}_seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == uids[1]
    labels = nib.load(out / f"{folder.name}.nii.gz")
    assert labels.shape == (512, 512, 20)


def _bad_checkpoints(tmp_path: Path) -> dict[str, Path]:
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    return {"not a kidneyseg checkpoint": foreign, "not a readable checkpoint": corrupt}


def test_bad_inputs_give_one_line_and_no_output(ckpt, tmp_path):
    good = phantom_file(tmp_path / "good.nii.gz", 4)
    normalised = tmp_path / "normalised.nii.gz"
    image = nib.load(good)
    array = (np.asarray(image.dataobj).astype(np.float32) + 1000) / 3000
    nib.save(nib.Nifti1Image(array, image.affine), normalised)
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[:400])
    blocker = tmp_path / "a_file"
    blocker.write_text("x")

    cases = [
        (["-i", truncated, "--model", ckpt], "cannot read"),
        (["-i", normalised, "--model", ckpt], "already normalised"),
        (["-i", huge_header_file(tmp_path / "huge.nii"), "--model", ckpt], "needs about"),
        (["-i", tmp_path / "missing.nii.gz", "--model", ckpt], "no such file"),
        (["-i", good, "--model", tmp_path / "no_run"], "no such run folder"),
        (["-i", good, "--model", ckpt, "--backend", "tensorrt"], "backend must be one of"),
    ] + [(["-i", good, "--model", path], message) for message, path in _bad_checkpoints(tmp_path).items()]
    for args, message in cases:
        out = tmp_path / "out"
        result = predict(*args, "-o", out, "-q")
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert not out.exists(), args

    result = predict("-i", good, "-o", blocker / "out", "--model", ckpt, "-q")
    assert result.exit_code == 2 and "cannot create the output folder" in result.output

    result = predict("-i", normalised, "-o", tmp_path / "out", "--model", ckpt, "-q", "--no-hu-check")
    assert result.exit_code == 0, result.output
    written = nib.load(tmp_path / "out" / "normalised.nii.gz")  # on the CT's grid
    assert written.shape == image.shape and np.allclose(written.affine, image.affine)
    record = json.loads((tmp_path / "out" / "predict_run.json").read_text())
    assert record["settings"]["hu_check"] is False


def _nifti_faults(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """NIfTI files that must each give one line naming them (issue 19)."""
    image = nib.load(good)
    array = np.asarray(image.dataobj)
    air = tmp_path / "air.nii.gz"
    nib.save(nib.Nifti1Image(np.full(array.shape, -1000, np.int16), image.affine), air)
    complex_ = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(array.astype(np.complex64), image.affine), complex_)
    singular_affine = image.affine.copy()
    singular_affine[:3, 2] = singular_affine[:3, 0]
    singular = tmp_path / "singular.nii.gz"
    nib.save(nib.Nifti1Image(array, singular_affine), singular)
    sheared_affine = image.affine.copy()  # axes at 70°: volumes would be off by 6 % (was: read)
    sheared_affine[1, 2] += np.tan(np.radians(20)) * np.linalg.norm(sheared_affine[:3, 2])
    sheared = tmp_path / "sheared.nii.gz"
    nib.save(nib.Nifti1Image(array, sheared_affine), sheared)
    plain = tmp_path / "plain.nii"
    nib.save(nib.Nifti1Image(array, image.affine), plain)
    short = tmp_path / "short.nii"
    short.write_bytes(plain.read_bytes()[: plain.stat().st_size // 2])
    return {
        "air": (air, "no body in the image: nothing above -500 HU"),
        "complex": (complex_, "complex values (complex64)"),
        "singular": (singular, "the image affine is singular: two voxel axes point the same way"),
        "short": (short, "truncated: the header promises"),
        "sheared": (sheared, "the image affine is sheared (voxel axes at 70.0° instead of 90°)"),
    }


def _checkpoint_faults(tmp_path: Path, ckpt: Path) -> dict[str, tuple[Path, str]]:
    from kidneyseg.checkpoint import load_checkpoint, save_checkpoint
    from kidneyseg.config import ModelConfig

    loaded = load_checkpoint(ckpt)
    state = {k: v.clone() for k, v in loaded.model_state.items()}
    next(v for v in state.values() if v.is_floating_point())[0] = float("nan")
    nan = save_checkpoint(tmp_path / "nan.pt", model_state=state, config=loaded.config)
    config = replace(loaded.config, model=ModelConfig("no_such_net", {}))
    unknown = save_checkpoint(tmp_path / "unknown.pt", model_state=loaded.model_state, config=config)
    return {
        "nan": (nan, "checkpoint holds NaN or infinite weights"),
        "unknown": (unknown, "unknown model 'no_such_net'"),
    }


def test_silent_nonsense_gets_one_line_naming_the_file(ckpt, tmp_path):
    good = phantom_file(tmp_path / "good.nii.gz", 4)
    runs = [
        (["-i", path, "--model", ckpt], path, message)
        for path, message in _nifti_faults(tmp_path, good).values()
    ]
    runs += [
        (["-i", good, "--model", path], path, message)
        for path, message in _checkpoint_faults(tmp_path, ckpt).values()
    ]
    for args, path, message in runs:
        out = tmp_path / "out"
        result = predict(*args, "-o", out, "-q")
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith(f"error: {path}: "), result.output
        assert message in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert not out.exists(), args


def test_interrupt_is_one_line_and_exit_130(ckpt, tmp_path, monkeypatch):
    import kidneyseg.predict.runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(kidneyseg.predict.runner, "run_prediction", interrupted)
    result = predict("-i", phantom_file(tmp_path / "ct.nii.gz", 1), "-o", tmp_path / "out", "--model", ckpt)
    assert result.exit_code == 130
    assert result.output == "interrupted\n"
