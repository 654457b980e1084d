"""The phantom CT generator: determinism, KiTS23 layout, labels, HU, threshold-hardness, real anatomy, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from kidneyseg.cli import app
from kidneyseg.data.cases import discover
from kidneyseg.data.phantom import (
    SIZES,
    PhantomOptions,
    SizePreset,
    case_seeds,
    generate_case,
    generate_case_on,
    generate_dataset,
)
from kidneyseg.data.phantom.generate import _synthetic_scene
from kidneyseg.data.phantom.render import HU_RANGES, PHASES, render_ct, sample_hu
from kidneyseg.data.phantom.tissue import HEART_TISSUES, Tissue, label_lut, tissue_set
from kidneyseg.errors import KidneysegError
from kidneyseg.io.volume import Volume, read_volume, write_volume

REAL_CASES = ("case_00061", "case_00038")  # the two smallest KiTS19 masks (5 mm slices)


def test_same_seed_same_case_and_different_seed_different_case():
    a, b, c = generate_case(11, size="tiny"), generate_case(11, size="tiny"), generate_case(12, size="tiny")
    assert np.array_equal(a.ct.array, b.ct.array)
    assert np.array_equal(a.labels.array, b.labels.array)
    assert np.array_equal(a.ct.affine, b.ct.affine)
    assert a.truth == b.truth
    assert not np.array_equal(a.ct.array, c.ct.array) or a.ct.shape != c.ct.shape


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_geometry_of_each_size(size):
    case = generate_case(3, size=size)
    preset = SIZES[size]
    assert case.ct.orientation == "IPL"  # KiTS files: slices first, towards inferior
    assert case.ct.array.dtype == np.int16 and case.labels.array.dtype == np.uint8
    assert case.labels.same_grid(case.ct)
    nz, ny, nx = case.ct.shape
    assert nx == ny == preset.in_plane
    thickness, pixel, _ = case.ct.spacing
    assert preset.spacing[0] - 1e-6 <= pixel <= preset.spacing[1] + 1e-6
    if preset.slices:
        assert nz == preset.slices
    else:
        assert thickness in preset.thickness
    kidney_voxels_across = 50.0 / max(case.ct.spacing)  # a 5 cm wide kidney, at the coarsest axis
    assert kidney_voxels_across >= 7


def test_full_size_is_kits_like():
    case = generate_case(4, size="full")
    thickness, pixel, _ = case.ct.spacing
    assert case.ct.shape[1:] == (512, 512)
    assert 0.6 <= pixel <= 1.0 and 0.5 <= thickness <= 5.0
    assert (case.labels.array == 1).sum() * np.prod(case.ct.spacing) / 1000 > 100  # two kidneys: > 100 mL


def test_labels_and_lesion_counts_over_many_cases():
    seen_kinds = set()
    for seed in range(12):
        case = generate_case(seed, size="tiny")
        values = set(np.unique(case.labels.array).tolist())
        assert values <= {0, 1, 2, 3} and 1 in values
        counts = case.truth["counts"]
        assert 0 <= counts["tumor"] <= 3 and 0 <= counts["cyst"] <= 3
        assert (counts["tumor"] > 0) == (2 in values)
        assert (counts["cyst"] > 0) == (3 in values)
        seen_kinds |= {k for k, n in counts.items() if n}
        assert {k["side"] for k in case.truth["kidneys"]} == {"left", "right"}
    assert seen_kinds == {"tumor", "cyst"}


def test_truth_matches_the_label_map():
    """Every lesion voxel is in the truth. The last seed draws a tumor with a venous thrombus
    reaching out of the tumor's box, counted as its `thrombus_ml` (was: 8.7 mL of tumor label in no
    lesion; found by a hostile run)."""
    for seed in [*range(6), case_seeds(0, 3)[2]]:
        case = generate_case(seed, size="small", orientation="RAS")
        labels = case.labels.array
        voxel_ml = float(np.prod(case.ct.spacing)) / 1000
        inverse = np.linalg.inv(case.ct.affine)
        for value, kind in ((2, "tumor"), (3, "cyst")):
            lesions = [les for les in case.truth["lesions"] if les["kind"] == kind]
            total = sum(les["voxels"] + les.get("thrombus_voxels", 0) for les in lesions)
            assert total == (labels == value).sum()
            for les in lesions:
                assert les["volume_ml"] == pytest.approx(les["voxels"] * voxel_ml, abs=1e-3)
                assert les["axial_diameter_mm"] <= les["diameter_mm"] + 1e-6
                assert les["diameter_mm"] <= les["nominal_diameter_mm"] + 2 * max(case.ct.spacing)
                # every voxel lies in the sphere of diameter (largest centre distance + voxel diagonal)
                enclosing = les["diameter_mm"] + float(np.linalg.norm(case.ct.spacing))
                assert les["volume_ml"] <= np.pi / 6 * enclosing**3 / 1000
                i, j, k = np.rint(inverse @ [*les["centre_mm"], 1])[:3].astype(int)
                window = labels[max(i - 2, 0) : i + 3, max(j - 2, 0) : j + 3, max(k - 1, 0) : k + 2]
                assert (window == value).any()  # the centre lies in (or right beside) the lesion
        for kidney in case.truth["kidneys"]:
            i = np.rint(inverse @ [*kidney["centre_mm"], 1])[0]
            assert (i > labels.shape[0] / 2) == (kidney["side"] == "right")  # RAS: +x is the right


def test_tissue_hu_survive_blur_and_noise():
    """Median HU inside each tissue (away from edges) stays within its table range."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(5)
    scene = _synthetic_scene(SIZES["small"], rng, "nephrographic")
    canvas = scene.canvas
    tissue_map = canvas.tissue[:, :, canvas.centres]
    for phase in HU_RANGES:
        hu = sample_hu(phase, rng)
        axes = (canvas.xs, canvas.ys, canvas.zs)
        ct = render_ct(canvas.tissue.copy(), canvas.delta.copy(), hu, axes, 12, rng, canvas.sub)
        for tissue in (
            Tissue.SUBCUTANEOUS_FAT,
            Tissue.MUSCLE,
            Tissue.LIVER,
            Tissue.AORTA,
            Tissue.KIDNEY_CORTEX,
        ):
            core = ndi.binary_erosion(tissue_map == tissue, iterations=1)
            lo, hi = HU_RANGES[phase][tissue]
            assert lo - 15 <= np.median(ct[core]) <= hi + 15, (phase, tissue.name)
        assert np.median(ct[tissue_map == Tissue.BONE_CORTICAL]) > 250
        assert (ct[tissue_map == Tissue.OUTSIDE_FOV] == -1024).all()
        assert np.median(ct[tissue_map == Tissue.BOWEL_GAS]) < -500


def test_bowel_fluid_is_water_in_every_loop():
    """Oral contrast is diluted differently in each loop; fluid loops stay water (0 ... 25 HU)."""
    from scipy import ndimage as ndi

    for seed in (0, 1, 3):
        case = generate_case(seed, size="small")
        core = ndi.binary_erosion(case.tissue.array == Tissue.BOWEL_FLUID, iterations=1)
        loops, n = ndi.label(core)
        sizes = ndi.sum_labels(core, loops, index=np.arange(1, n + 1))
        medians = ndi.median(case.ct.array, loops, index=np.flatnonzero(sizes >= 30) + 1)
        assert len(medians) >= 5, seed
        lo, hi = HU_RANGES["noncontrast"][Tissue.BOWEL_FLUID]
        assert all(lo - 5 <= m <= hi + 5 for m in medians), (seed, np.round(medians))


def test_collapsed_loops_are_solid_wall_and_change_nothing_else():
    """`collapsed_bowel=1`: every small-bowel loop a solid cord of wall, thinner than an open
    loop; only bowel changes, the labels and the truth are the case without it (a stream of its
    own), and at 0 it is that case exactly."""
    contents = [Tissue.BOWEL_FLUID, Tissue.BOWEL_CONTRAST, Tissue.BOWEL_GAS, Tissue.BOWEL_FECES]
    for seed in (0, 5):
        plain = generate_case(seed, size="small")
        assert np.array_equal(generate_case(seed, size="small", collapsed_bowel=0.0).ct.array, plain.ct.array)
        solid = generate_case(seed, size="small", collapsed_bowel=1.0)
        assert solid.truth["collapsed_bowel"] == 1.0
        assert {**solid.truth, "collapsed_bowel": 0.0} == plain.truth
        assert np.array_equal(solid.labels.array, plain.labels.array)
        before, after = plain.tissue.array, solid.tissue.array
        changed = before != after
        assert changed.any(), seed
        assert np.isin(before[changed], [Tissue.BOWEL_WALL, *contents]).all(), seed
        assert np.isin(after[changed], [Tissue.BOWEL_WALL, *contents]).mean() < 0.9, seed
        assert np.isin(after, contents).sum() < 0.6 * np.isin(before, contents).sum(), seed
        assert (after[changed] == Tissue.BOWEL_WALL).sum() > 0.1 * changed.sum(), seed


def test_ct_noise_has_the_requested_sd_and_is_spatially_correlated():
    shape, pixel = (160, 160, 6), 0.7
    tissue = np.full(shape, Tissue.MUSCLE, dtype=np.uint8, order="F")
    axes = (np.arange(160) * pixel, np.arange(160) * pixel, np.arange(6) * 2.5)
    hu = np.zeros(len(Tissue), dtype=np.float32)
    hu[Tissue.MUSCLE] = 50
    ct = render_ct(tissue, np.zeros(shape, np.float32, order="F"), hu, axes, 15.0, np.random.default_rng(0))
    noise = ct.astype(np.float64) - 50
    assert abs(noise.mean()) < 1 and 13 < noise.std() < 17

    def corr(lag: int) -> float:
        return float(np.corrcoef(noise[:-lag].ravel(), noise[lag:].ravel())[0, 1])

    assert corr(1) > 0.3  # neighbouring pixels share noise (white noise would give 0)
    assert corr(5) < corr(1) / 2  # and the correlation fades within a few pixels


def _best_window_dice(histograms: list[tuple[np.ndarray, np.ndarray]], edges: np.ndarray) -> float:
    """Best kidney Dice of any window [edges[i], edges[j]) over summed histograms."""
    all_voxels = sum(h[0] for h in histograms)
    kidney = sum(h[1] for h in histograms)
    ca = np.concatenate([[0], np.cumsum(all_voxels)])
    ck = np.concatenate([[0], np.cumsum(kidney)])
    i, j = np.triu_indices(len(edges), 1)
    return float((2 * (ck[j] - ck[i]) / (ca[j] - ca[i] + kidney.sum())).max())


def test_no_single_hu_window_segments_the_kidneys():
    """The best window [lo, hi) on a 10 HU grid, one for all cases, stays below kidney Dice 0.6
    (aorta, IVC, portal veins, spleen, bowel contrast and bone share the kidneys' HU)."""
    edges = np.arange(-300, 1001, 10)
    histograms = []
    for seed in case_seeds(0, 8):
        case = generate_case(seed, size="small")
        ct, kidney = case.ct.array, case.labels.array == 1
        histograms.append((np.histogram(ct, edges)[0], np.histogram(ct[kidney], edges)[0]))
    assert _best_window_dice(histograms, edges) < 0.6
    # and the grid search works: a window does find the kidney when nothing else shares its HU
    only_kidney = [(h[1] + np.histogram([-1000], edges)[0], h[1]) for h in histograms]
    assert _best_window_dice(only_kidney, edges) > 0.95


def test_orientation_only_relays_the_same_voxels():
    ras = generate_case(7, size="tiny", orientation="RAS")
    for code in ("IPL", "LPS"):
        other = generate_case(7, size="tiny", orientation=code)
        assert other.ct.orientation == code
        ornt = nib.orientations.ornt_transform(
            nib.orientations.axcodes2ornt(tuple(code)), nib.orientations.axcodes2ornt(("R", "A", "S"))
        )
        assert np.array_equal(nib.orientations.apply_orientation(other.ct.array, ornt), ras.ct.array)
        back = other.ct.affine @ nib.orientations.inv_ornt_aff(ornt, other.ct.shape)
        assert np.allclose(back, ras.ct.affine)
    assert np.allclose(ras.ct.direction, np.eye(3))
    with pytest.raises(KidneysegError, match="orientation"):
        generate_case(7, size="tiny", orientation="RAR")


def test_a_grid_of_your_own_takes_the_options_and_bad_options_are_refused():
    grid = SizePreset(40, (5.0, 6.0), (), (180, 200), slices=24)
    case = generate_case_on(grid, 7, PhantomOptions(orientation="las", chest=1.0))
    assert case.ct.shape == (40, 40, 24) and case.ct.orientation == "LAS"
    assert case.truth["size"] == "custom" and case.truth["orientation"] == "LAS"
    assert case.truth["chest_mm"] > 0
    plain = generate_case_on(grid, 7)
    assert plain.truth["orientation"] == "IPL" and plain.truth["chest_mm"] == 0
    for options, message in (
        (dict(orientation="RAR"), "three distinct axis codes"),
        (dict(chest=1.5), "chest-abdomen share must be between 0 and 1"),
        (dict(mirror=0.5), "mirroring label maps needs an anatomy folder"),
        (dict(collapsed_bowel=-0.1), "collapsed small-bowel loops must be between 0 and 1"),
        (dict(tumors_as_kidney=-0.1), "share of tumors painted as kidney must be between 0 and 1"),
    ):
        with pytest.raises(KidneysegError, match=message):
            PhantomOptions(**options)


def test_dataset_layout_is_kits23_and_readable(tmp_path):
    folders = generate_dataset(tmp_path, cases=2, seed=9, size="tiny", progress=False)
    assert [f.name for f in folders] == ["case_00000", "case_00001"]
    dataset = discover(tmp_path)
    assert dataset.layout == "kits23" and dataset.label_map.name == "kits23"
    assert [c.case_id for c in dataset.labelled] == ["case_00000", "case_00001"]
    expected = generate_case(case_seeds(9, 2)[1], size="tiny")
    image = read_volume(dataset.cases[1].image)
    labels = read_volume(dataset.cases[1].label)
    assert image.array.dtype == np.int16 and labels.array.dtype == np.uint8
    assert np.array_equal(image.array, expected.ct.array)
    assert np.array_equal(labels.array, expected.labels.array)
    assert image.same_grid(expected.ct) and labels.same_grid(image)
    truth = json.loads((folders[1] / "phantom.json").read_text())
    assert truth["case_id"] == "case_00001" and truth["seed"] == case_seeds(9, 2)[1]
    assert truth["lesions"] == json.loads(json.dumps(expected.truth["lesions"]))
    assert not list(tmp_path.rglob(".*partial*"))


def test_bad_sizes_and_counts_are_user_errors(tmp_path):
    with pytest.raises(KidneysegError, match="unknown phantom size 'huge'"):
        generate_case(0, size="huge")
    with pytest.raises(KidneysegError, match="at least 1"):
        generate_dataset(tmp_path, cases=0)
    assert not (tmp_path / "dataset").exists()


def test_bad_anatomy_folders(tmp_path):
    with pytest.raises(KidneysegError, match="does not exist"):
        generate_case(0, size="tiny", anatomy=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KidneysegError, match="no label maps found"):
        generate_case(0, size="tiny", anatomy=tmp_path / "empty")
    bad = tmp_path / "bad" / "case_00000" / "segmentation.nii.gz"
    values = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    write_volume(bad, Volume(values, np.eye(4)))
    with pytest.raises(KidneysegError, match=r"case_00000/segmentation.nii.gz: not a KiTS label map"):
        generate_case(0, size="tiny", anatomy=tmp_path / "bad")
    with pytest.raises(KidneysegError, match="no label maps"):
        generate_dataset(tmp_path / "out", 1, anatomy=tmp_path / "empty", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.fixture
def real_anatomy(shared_data, tmp_path) -> Path:
    """A folder with two real KiTS19 label maps (symlinked, not copied)."""
    folder = tmp_path / "anatomy"
    for name in REAL_CASES:
        source = shared_data / "kits19" / name / "segmentation.nii.gz"
        if not source.exists():
            pytest.skip(f"real mask {source} is absent")
        (folder / name).mkdir(parents=True)
        (folder / name / "segmentation.nii.gz").symlink_to(source)
    return folder


def test_real_anatomy_keeps_the_real_labels_and_grid(real_anatomy):
    case = generate_case(1, size="full", anatomy=real_anatomy)
    source = real_anatomy / case.truth["anatomy"]
    real = read_volume(source)
    assert case.ct.orientation == real.orientation == "IPL"
    assert case.ct.spacing == pytest.approx(real.spacing)
    # the phantom's grid is the real grid cropped along the slices: an integer shift of voxels
    to_real = np.linalg.inv(real.affine) @ case.ct.affine
    assert np.allclose(to_real[:3, :3], np.eye(3), atol=1e-5)
    offset = np.rint(to_real[:3, 3]).astype(int)
    assert np.allclose(to_real[:3, 3], offset, atol=1e-3) and offset[1] == offset[2] == 0
    window = real.array[offset[0] : offset[0] + case.ct.shape[0]]
    phantom = case.labels.array
    synthetic_cyst = phantom == 3
    assert np.array_equal(phantom[~synthetic_cyst], window[~synthetic_cyst])
    assert (window > 0).sum() == (real.array > 0).sum()  # the crop keeps every annotated voxel
    kidney_hu = np.median(case.ct.array[phantom == 1])
    assert 60 < kidney_hu < 260


def test_real_anatomy_small_size(real_anatomy):
    case = generate_case(2, size="small", anatomy=real_anatomy)
    assert case.ct.shape[1:] == (176, 176)
    assert case.truth["anatomy"].split("/")[0] in REAL_CASES
    assert (case.labels.array == 1).sum() * np.prod(case.ct.spacing) / 1000 > 50
    assert (case.labels.array == 2).any()  # every KiTS19 case has a tumor


def test_anatomy_in_order_takes_each_label_map_in_turn(real_anatomy, tmp_path):
    """Case i takes the i-th map (cycling), whatever its seed draws; the CLI says the same."""
    folders = generate_dataset(
        tmp_path / "out", 4, seed=5, size="tiny", anatomy=real_anatomy, progress=False, anatomy_in_order=True
    )
    sources = [json.loads((f / "phantom.json").read_text())["anatomy"].split("/")[0] for f in folders]
    assert sources == sorted(REAL_CASES) * 2
    args = ["phantom", "--out", str(tmp_path / "cli"), "--cases", "2", "--size", "tiny", "-q"]
    result = CliRunner().invoke(app, [*args, "--anatomy", str(real_anatomy), "--anatomy-in-order"])
    assert result.exit_code == 0, result.output
    cli = [json.loads(p.read_text())["anatomy"] for p in sorted((tmp_path / "cli").rglob("phantom.json"))]
    assert [a.split("/")[0] for a in cli] == sorted(REAL_CASES)
    result = CliRunner().invoke(app, [*args[:2], str(tmp_path / "none"), *args[3:], "--anatomy-in-order"])
    assert result.exit_code != 0 and "needs an anatomy folder" in result.output
    assert not (tmp_path / "none").exists()


def test_cli_writes_cases_and_reports_bad_input(tmp_path):
    runner = CliRunner()
    out = tmp_path / "phantoms"
    result = runner.invoke(
        app, ["phantom", "--out", str(out), "--cases", "2", "--size", "tiny", "--seed", "4"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 2 cases" in result.output
    written = read_volume(out / "dataset" / "case_00000" / "imaging.nii.gz")
    assert np.array_equal(written.array, generate_case(case_seeds(4, 2)[0], size="tiny").ct.array)

    for args, message in (
        (["--size", "huge"], "unknown phantom size"),
        (["--size", "tiny", "--orientation", "XYZ"], "orientation 'XYZ'"),
        (["--size", "tiny", "--anatomy", str(tmp_path / "nowhere")], "anatomy folder does not exist"),
        (["--size", "tiny", "-n", "0"], "the number of cases must be at least 1, got 0"),
    ):
        bad_out = tmp_path / "bad"
        result = runner.invoke(app, ["phantom", "--out", str(bad_out), *args])
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
        assert "Traceback" not in result.output
        assert not bad_out.exists()

    maps = tmp_path / "maps"  # the second map is junk: the first case is written, then removed
    maps.mkdir()
    shutil.copy(out / "dataset" / "case_00000" / "segmentation.nii.gz", maps / "a_good.nii.gz")
    (maps / "b_junk.nii.gz").write_text("junk")
    args = ["--anatomy", str(maps), "--anatomy-in-order", "-n", "2", "--size", "tiny"]
    result = runner.invoke(app, ["phantom", "--out", str(tmp_path / "half"), *args])
    assert result.exit_code == 2 and "b_junk.nii.gz" in result.output
    assert not (tmp_path / "half").exists()
    (maps / "b_junk.nii.gz").unlink()  # a dataset made before the failing run keeps its cases
    one = ["--anatomy", str(maps), "--anatomy-in-order", "-n", "1", "--size", "tiny"]
    assert runner.invoke(app, ["phantom", "--out", str(tmp_path / "kept"), *one]).exit_code == 0
    (tmp_path / "kept" / "dataset" / "case_00000" / "notes.txt").write_text("mine")
    (maps / "b_junk.nii.gz").write_text("junk")
    assert runner.invoke(app, ["phantom", "--out", str(tmp_path / "kept"), *args]).exit_code == 2
    assert [p.name for p in (tmp_path / "kept" / "dataset").iterdir()] == ["case_00000"]
    assert (tmp_path / "kept" / "dataset" / "case_00000" / "notes.txt").read_text() == "mine"


def test_a_window_chosen_for_each_case_misses_much_of_its_kidney():
    """Even the best window per case (an oracle) stays far from the kidney: median < 0.45 and
    max < 0.75 kidney Dice over 24 phantoms (real CT: ≈ 0.2; docs/phantom.md)."""
    edges = np.arange(-300, 1001, 10)
    scores = []
    for seed in case_seeds(0, 24):
        case = generate_case(seed, size="small")
        ct, kidney = case.ct.array, case.labels.array == 1
        histograms = [(np.histogram(ct, edges)[0], np.histogram(ct[kidney], edges)[0])]
        scores.append(_best_window_dice(histograms, edges))
    assert np.median(scores) < 0.45 and max(scores) < 0.75
    assert min(scores) > 0.02  # the search itself works: some kidney voxels are always in a window


def test_tissue_map_holds_the_labels_and_is_seeded():
    a = generate_case(11, size="tiny")
    b = generate_case(11, size="tiny")
    assert np.array_equal(a.tissue.array, b.tissue.array) and np.array_equal(a.ct.array, b.ct.array)
    assert a.tissue.array.shape == a.ct.array.shape and np.allclose(a.tissue.affine, a.ct.affine)
    assert np.array_equal(label_lut()[a.tissue.array], a.labels.array)
    assert len(np.unique(a.tissue.array)) > 15


def test_every_phase_dose_and_context_occurs():
    truths, tissues = [], set()
    for seed in case_seeds(0, 40):
        case = generate_case(seed, size="tiny")
        truths.append(case.truth)
        tissues.update(np.unique(case.tissue.array).tolist())
    assert {t["phase"] for t in truths} == set(PHASES)
    assert {t["dose"] for t in truths} == {"high", "routine", "low"}
    for tissue in (Tissue.LUNG, Tissue.TABLE, Tissue.CYST_SEPTUM, Tissue.TUMOR_CALCIFICATION):
        assert tissue in tissues, tissue.name


def test_excretory_collecting_system_is_dense_and_unenhanced_kidneys_are_soft_tissue():
    excretory = sample_hu("excretory", np.random.default_rng(0))
    unenhanced = sample_hu("noncontrast", np.random.default_rng(0))
    assert excretory[Tissue.RENAL_PELVIS] > 300 > excretory[Tissue.KIDNEY_CORTEX]
    assert 20 <= unenhanced[Tissue.KIDNEY_CORTEX] <= 45 and unenhanced[Tissue.AORTA] < 60


def test_venous_thrombus_fills_the_renal_vein_as_tumor():
    from kidneyseg.data.phantom.anatomy import paint_body
    from kidneyseg.data.phantom.body import sample_body
    from kidneyseg.data.phantom.generate import _sample_grid
    from kidneyseg.data.phantom.kidney import paint_renal_vessels, paint_thrombus, sample_kidneys
    from kidneyseg.data.phantom.shapes import Canvas

    rng = np.random.default_rng(4)
    body = sample_body(rng)
    canvas = Canvas(_sample_grid(SIZES["small"], body, rng))
    kidneys = sample_kidneys(body, rng)
    paint_body(canvas, body, rng, fov_radius=400.0)
    paint_renal_vessels(canvas, body, kidneys)
    veins_before = canvas.tissue == Tissue.IVC
    paint_thrombus(canvas, body, kidneys[0], instance=7, rng=rng)
    thrombus = canvas.tissue == Tissue.TUMOR
    assert thrombus.sum() > 20
    assert veins_before[thrombus].all()  # only inside the vein
    assert (canvas.instance[thrombus] == 7).all()  # measured with its tumor
    assert (label_lut()[canvas.tissue][thrombus] == 2).all()


def test_adrenals_sit_above_the_kidneys():
    case = generate_case(case_seeds(0, 1)[0], size="small", orientation="RAS")
    adrenal = np.argwhere(case.tissue.array == Tissue.ADRENAL)
    kidney = np.argwhere(case.labels.array == 1)
    assert len(adrenal) > 10
    assert np.median(adrenal[:, 2]) > np.median(kidney[:, 2])  # cranial to the kidneys


def _render_sphere(sub: int, top: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An untextured 50 HU ball (fluid) in -100 HU fat on 5 mm slices, its top `top` mm from a slice centre,
    rendered without noise; returns the CT, the voxel-centre tissue map and the slice centres (mm)."""
    from kidneyseg.data.phantom.render import render_ct
    from kidneyseg.data.phantom.shapes import Canvas, Grid, ellipsoid_level

    canvas = Canvas(Grid((24, 24, 12), (2.0, 2.0, 5.0), (-23.0, -23.0, -30.0)), sub)
    canvas.tissue[:] = Tissue.VISCERAL_FAT
    box = canvas.around((0, 0, 0), 30)
    level, _ = ellipsoid_level(box, (0.0, 0.0, top - 20.0), np.eye(3), (20.0, 20.0, 20.0))
    canvas.paint(box, level < 1, Tissue.BOWEL_FLUID)
    hu = np.zeros(len(Tissue), dtype=np.float32)
    hu[Tissue.VISCERAL_FAT], hu[Tissue.BOWEL_FLUID] = -100, 50
    axes = (canvas.xs, canvas.ys, canvas.zs)
    ct = render_ct(canvas.tissue, canvas.delta, hu, axes, 0.0, np.random.default_rng(0), sub)
    return ct, canvas.tissue[:, :, canvas.centres], canvas.output.axis(2)


def test_thick_slices_average_the_hu_across_the_slice_not_the_labels():
    """Partial volume: a 5 mm slice whose centre lies 1.5 mm above a ball's top (fat at the centre,
    so the labels say fat) still sees the ball in the lower part of its slab, as a real 5 mm slice
    does: its HU lies between the two. Rendered from the voxel centres only (one sample per
    slice, as before), the same slice is fat but for the 6 % overlap of the slice profile."""
    from kidneyseg.data.phantom.render import samples_per_slice

    assert samples_per_slice(5.0) == samples_per_slice(2.5) == 2 and samples_per_slice(1.25) == 1
    for sub, (low, high) in ((2, (-80, -30)), (1, (-100, -90))):
        ct, tissue, zs = _render_sphere(sub, top=-1.5)
        k = int(np.argmin(np.abs(zs - 0.0)))  # the slice whose centre is 1.5 mm above the top
        assert tissue[12, 12, k] == Tissue.VISCERAL_FAT and tissue[12, 12, k - 1] == Tissue.BOWEL_FLUID
        assert low <= ct[12, 12, k] <= high, (sub, ct[12, 12, k])
        assert ct[12, 12, k - 2] == 50 and ct[12, 12, k + 2] == -100  # away from the edge: pure tissue


def test_bony_pelvis_appears_when_the_scan_reaches_it():
    """Below the iliac crests the pelvis is bone in the tissue map and in the CT (iliac wings
    lateral to the spine, the sacrum under it); a scan ending above the crests holds no bone
    there (below the ribs, inside the body)."""
    bony = tissue_set(Tissue.BONE_CORTICAL, Tissue.BONE_CANCELLOUS)
    seen = set()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        scene = _synthetic_scene(SIZES["small"], rng, "nephrographic")
        canvas, body = scene.canvas, scene.body
        tissue = canvas.tissue[:, :, canvas.centres]
        x, z = canvas.xs[:, None, None], canvas.output.axis(2)[None, None, :]
        bone = bony[tissue]
        wings = bone & (np.abs(x) > 60) & (np.abs(x) < body.a) & (z < -60)
        sacrum = bone & (np.abs(x) < 30) & (z < body.sacrum_z - 10)
        bottom = float(z.min())
        if bottom < body.sacrum_z - 30 and "deep" not in seen:
            seen.add("deep")
            assert wings.sum() > 200 and sacrum.sum() > 50
            hu = sample_hu("noncontrast", rng)
            axes = (canvas.xs, canvas.ys, canvas.zs)
            ct = render_ct(canvas.tissue, canvas.delta, hu, axes, 10.0, rng, canvas.sub)
            assert np.median(ct[wings | sacrum]) > 120  # above every unenhanced soft tissue (≤ 70 HU)
            assert np.median(ct[(tissue == Tissue.BONE_CORTICAL) & wings]) > 400
        elif bottom > body.crest_z and "above" not in seen:
            seen.add("above")
            assert not wings.any() and not sacrum.any()
        if len(seen) == 2:
            break
    assert seen == {"deep", "above"}


def test_chest_abdomen_scans_cover_the_whole_heart_and_change_no_other_case():
    from kidneyseg.data.phantom.generate import CHEST_MM

    seeds = case_seeds(5, 6)
    cases = [generate_case(s, size="small", orientation="RAS", chest=0.5) for s in seeds]
    assert 0 < sum(c.truth["chest_mm"] > 0 for c in cases) < len(cases)
    for seed, case in zip(seeds, cases, strict=True):
        plain = generate_case(seed, size="small", orientation="RAS")
        if case.truth["chest_mm"] == 0:
            assert np.array_equal(case.ct.array, plain.ct.array) and case.truth == plain.truth
            continue
        assert CHEST_MM[0] <= case.truth["chest_mm"] <= CHEST_MM[1]
        top = case.ct.affine[2, 3] + case.ct.spacing[2] * (case.ct.shape[2] - 1)
        plain_top = plain.ct.affine[2, 3] + plain.ct.spacing[2] * (plain.ct.shape[2] - 1)
        assert top - plain_top == pytest.approx(case.truth["chest_mm"], abs=case.ct.spacing[2])
        heart = np.isin(case.tissue.array, HEART_TISSUES)
        assert heart.sum() > np.isin(plain.tissue.array, HEART_TISSUES).sum()
        assert not heart[:, :, -1].any()  # the whole heart is in view, below the top slice
        assert (case.tissue.array[:, :, -1] == Tissue.LUNG).any()


def _lung_canvas(spacing: float = 1.5, n: int = 110):
    from kidneyseg.data.phantom.shapes import Canvas, Grid

    canvas = Canvas(Grid((n, n, n), (spacing,) * 3, (-spacing * n / 2,) * 3))
    canvas.tissue[:] = Tissue.LUNG
    return canvas


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_heart_is_chambers_of_blood_walled_by_muscle_in_a_sac_of_fat(seed):
    from scipy import ndimage

    from kidneyseg.data.phantom.context import _paint_heart, sample_heart

    canvas, heart = _lung_canvas(), sample_heart(np.random.default_rng(seed))
    box = canvas.box((-90, -90, -90), (90, 90, 90))
    _paint_heart(canvas, box, np.ones((1, 1, 1), dtype=bool), np.zeros(3), heart)
    t = canvas.tissue
    blood, muscle = t == Tissue.HEART, t == Tissue.MYOCARDIUM
    assert blood.sum() > 0 and muscle.sum() > 0
    # the sac holds fat in the grooves between the chambers
    assert (t == Tissue.VISCERAL_FAT).sum() > 0.05 * (blood | muscle).sum()
    # blood reaches fat or lung only through a wall at least as thick as the thinnest (one voxel
    # of discretisation)
    depth = ndimage.distance_transform_edt(blood | muscle, sampling=1.5)
    assert depth[blood].min() >= min(heart.walls) - 1.5
    # the left ventricle's wall is the thick one: its blood lies deepest
    assert depth[blood].max() > heart.walls[0]


@pytest.mark.parametrize("forearm", [False, True])
def test_an_arm_has_one_bone_or_two_and_fat_planes_between_its_muscles(forearm):
    from dataclasses import replace

    from scipy import ndimage

    from kidneyseg.data.phantom.body import sample_body
    from kidneyseg.data.phantom.context import _paint_arm, sample_arms

    rng = np.random.default_rng(5)
    arms = replace(sample_arms(rng), forearm=forearm, gap=0.0, height=0.0, radius=40.0)
    body = replace(sample_body(rng), a=100.0)
    canvas = _lung_canvas(spacing=1.0, n=400)
    canvas.tissue[:] = Tissue.AIR
    _paint_arm(canvas, body, arms, side=1)
    middle = canvas.tissue[:, :, 200]
    _, bones = ndimage.label(middle == Tissue.BONE_CANCELLOUS)
    assert bones == (2 if forearm else 1)
    muscle, fat = middle == Tissue.MUSCLE, middle == Tissue.SUBCUTANEOUS_FAT
    inner = fat & ndimage.binary_erosion(
        ndimage.binary_fill_holes(
            muscle | fat | np.isin(middle, (Tissue.BONE_CORTICAL, Tissue.BONE_CANCELLOUS))
        ),
        iterations=8,
    )
    assert inner.sum() > 0 and ndimage.label(muscle)[1] >= 2


def test_cli_refuses_to_mix_chest_shares_in_one_dataset(tmp_path):
    out = tmp_path / "phantoms"
    args = ["phantom", "--out", str(out), "--cases", "1", "--size", "tiny", "--quiet"]
    assert CliRunner().invoke(app, args).exit_code == 0
    result = CliRunner().invoke(app, [*args, "--chest", "1"])
    assert result.exit_code == 2 and "chest share" in result.output
    bad = CliRunner().invoke(app, ["phantom", "--out", str(tmp_path / "bad"), "--chest", "1.5"])
    assert bad.exit_code == 2 and not (tmp_path / "bad").exists()


def test_a_real_lesion_touching_itself_at_a_corner_is_one_lesion(shared_data, tmp_path):
    """A KiTS19 tumor with one voxel joined to it only at a corner is one tumor in phantom.json,
    as evaluate and report count lesions (26-connected; was: a second, one-voxel tumor, found by
    a hostile run); the CT is painted as before."""
    image = nib.load(shared_data / "kits19" / "case_00061" / "segmentation.nii.gz")
    seg = np.asarray(image.dataobj).astype(np.uint8)
    tumor = np.argwhere(seg == 2)
    corner = tuple(tumor[np.argmax(tumor.sum(axis=1))] + 1)  # beyond the tumor's far corner
    assert seg[corner] == 0
    seg[corner] = 2
    (tmp_path / "case_00061").mkdir()
    nib.save(nib.Nifti1Image(seg, image.affine), tmp_path / "case_00061" / "segmentation.nii.gz")
    case = generate_case(3, size="full", anatomy=tmp_path, anatomy_index=0)
    tumors = [les for les in case.truth["lesions"] if les["kind"] == "tumor"]
    assert len(tumors) == 1 and tumors[0]["voxels"] == int((case.labels.array == 2).sum())


def _viable_tumor_medians(case) -> list[float]:
    """Median HU of each viable tumor part (tissue map) of a phantom, parts of over 30 voxels."""
    from scipy import ndimage as ndi

    ct = np.asarray(case.ct.array)
    parts, count = ndi.label(case.tissue.array == Tissue.TUMOR)
    return [float(np.median(ct[parts == i])) for i in range(1, count + 1) if (parts == i).sum() > 30]


UNENHANCED_SEEDS = (2, 3, 11, 12, 25, 32)  # seeds whose phantoms are unenhanced


def test_unenhanced_tumors_are_denser_than_a_simple_cyst(real_anatomy):
    """Without contrast there is no enhancement to differ by: tumors keep their unenhanced range
    (20-50 HU), above a simple cyst's (Bosniak 2019: a homogeneous -9 to 20 HU mass at unenhanced
    CT is a benign cyst), for procedural tumors and for tumors of real KiTS19 shapes alike."""
    medians = []
    for seed in UNENHANCED_SEEDS:
        for anatomy in (None, real_anatomy):
            case = generate_case(seed, size="small", anatomy=anatomy, orientation="RAS")
            assert case.truth["phase"] == "noncontrast"
            medians += _viable_tumor_medians(case)
    assert len(medians) >= 10
    assert min(medians) >= 18  # noise and partial volume: 2 HU below the range
    enhanced = [m for seed in (0, 1, 4) for m in _viable_tumor_medians(generate_case(seed, size="small"))]
    assert max(enhanced) > 50  # contrast phases still enhance the tumors


def test_tumors_painted_as_kidney_keep_the_outline_at_the_kidneys_density(real_anatomy):
    """`tumors_as_kidney=1`: every real tumor is kidney, labelled and imaged as the kidney around
    it (a pseudotumor's outline with no tumor); at 0.5, a case that keeps its tumors is exactly
    the case without the option (a stream of its own), and some cases lose one."""
    for seed in (0, 1):
        plain = generate_case(seed, size="small", anatomy=real_anatomy, orientation="RAS")
        painted = generate_case(
            seed, size="small", anatomy=real_anatomy, orientation="RAS", tumors_as_kidney=1.0
        )
        tumor = plain.labels.array == 2
        assert tumor.sum() > 100 and not (painted.labels.array == 2).any()
        assert painted.truth["counts"]["tumor"] == 0 and painted.truth["tumors_as_kidney"] == 1.0
        assert np.isin(painted.labels.array[tumor], (1, 3)).all()  # kidney, or a cyst drawn on it
        former = tumor & (painted.labels.array == 1)
        kidney = (plain.labels.array == 1) & (painted.labels.array == 1)
        density = [np.median(painted.ct.array[m]) for m in (former, kidney)]
        assert abs(density[0] - density[1]) < 0.25 * abs(density[1] - painted.truth["hu"]["tumor"]) + 15
    kept = lost = 0
    for seed in case_seeds(9, 6):
        plain = generate_case(seed, size="tiny", anatomy=real_anatomy)
        half = generate_case(seed, size="tiny", anatomy=real_anatomy, tumors_as_kidney=0.5)
        if half.truth["counts"]["tumor"] == plain.truth["counts"]["tumor"]:
            kept += 1
            assert np.array_equal(half.ct.array, plain.ct.array)
            assert {**half.truth, "tumors_as_kidney": 0.0} == plain.truth
        else:
            lost += 1
    assert kept and lost


def _kidneys_and_tumors(case, swap: bool = False) -> tuple[list, list]:
    """(side, volume) of a phantom's kidneys and of its tumors, sorted; with `swap`, each on the
    other side."""
    other = {"left": "right", "right": "left"} if swap else {"left": "left", "right": "right"}
    tumors = [item for item in case.truth["lesions"] if item["kind"] == "tumor"]
    return tuple(
        sorted((other[item["side"]], item["volume_ml"]) for item in items)
        for items in (case.truth["kidneys"], tumors)
    )


def test_mirrored_anatomy_swaps_the_sides_and_keeps_the_rest(real_anatomy):
    """`mirror=1`: the label map mirrored left to right, so each kidney and real tumor lies on
    the other side at nearly its volume (resampled onto the same grid; the synthetic cysts are
    drawn anew on the mirrored surface); at 0.5, a case left unmirrored is exactly the case
    without the option (a stream of its own), and some cases are mirrored."""
    for seed in (0, 1):
        plain = generate_case(seed, size="small", anatomy=real_anatomy, orientation="RAS")
        mirrored = generate_case(seed, size="small", anatomy=real_anatomy, orientation="RAS", mirror=1.0)
        assert mirrored.truth["mirrored"] and not plain.truth["mirrored"]
        assert plain.truth["counts"]["tumor"] > 0
        for before, after in zip(
            _kidneys_and_tumors(plain), _kidneys_and_tumors(mirrored, swap=True), strict=True
        ):
            assert [side for side, _ in after] == [side for side, _ in before]
            assert np.allclose([v for _, v in after], [v for _, v in before], rtol=0.05, atol=0.1)
    kept = flipped = 0
    for seed in case_seeds(9, 6):
        plain = generate_case(seed, size="tiny", anatomy=real_anatomy)
        half = generate_case(seed, size="tiny", anatomy=real_anatomy, mirror=0.5)
        if half.truth["mirrored"]:
            flipped += 1
        else:
            kept += 1
            assert np.array_equal(half.ct.array, plain.ct.array)
            assert {**half.truth, "mirror": 0.0} == plain.truth
    assert kept and flipped


def test_cli_paints_tumors_as_kidney_only_over_real_anatomy(real_anatomy, tmp_path):
    args = ["phantom", "--out", str(tmp_path / "p"), "--cases", "1", "--size", "tiny", "-q"]
    result = CliRunner().invoke(app, [*args, "--tumors-as-kidney", "0.5"])
    assert result.exit_code == 2 and "needs an anatomy folder" in result.output
    assert not (tmp_path / "p").exists()
    real = [*args, "--anatomy", str(real_anatomy)]
    assert CliRunner().invoke(app, [*real, "--tumors-as-kidney", "1"]).exit_code == 0
    truth = json.loads((tmp_path / "p" / "dataset" / "case_00000" / "phantom.json").read_text())
    assert truth["tumors_as_kidney"] == 1.0 and truth["counts"]["tumor"] == 0
    mixed = CliRunner().invoke(app, real)
    assert mixed.exit_code == 2 and "tumors-as-kidney, mirror or collapsed-bowel share" in mixed.output


def test_cli_mirrors_only_real_anatomy(real_anatomy, tmp_path):
    args = ["phantom", "--out", str(tmp_path / "p"), "--cases", "2", "--size", "tiny", "-q"]
    result = CliRunner().invoke(app, [*args, "--mirror", "0.5"])
    assert result.exit_code == 2 and "mirroring label maps needs an anatomy folder" in result.output
    assert not (tmp_path / "p").exists()
    real = [*args, "--anatomy", str(real_anatomy)]
    assert CliRunner().invoke(app, [*real, "--mirror", "1"]).exit_code == 0
    for case in ("case_00000", "case_00001"):
        truth = json.loads((tmp_path / "p" / "dataset" / case / "phantom.json").read_text())
        assert truth["mirror"] == 1.0 and truth["mirrored"]
    mixed = CliRunner().invoke(app, real)
    assert mixed.exit_code == 2 and "mirror or collapsed-bowel share" in mixed.output


def test_cli_collapses_bowel_and_refuses_mixing_shares(tmp_path):
    args = ["phantom", "--out", str(tmp_path / "p"), "--cases", "1", "--size", "tiny", "-q"]
    bad = CliRunner().invoke(app, [*args, "--collapsed-bowel", "1.5"])
    assert bad.exit_code == 2 and "--collapsed-bowel" in bad.output
    assert not (tmp_path / "p").exists()
    assert CliRunner().invoke(app, [*args, "--collapsed-bowel", "0.5"]).exit_code == 0
    truth = json.loads((tmp_path / "p" / "dataset" / "case_00000" / "phantom.json").read_text())
    assert truth["collapsed_bowel"] == 0.5
    mixed = CliRunner().invoke(app, args)
    assert mixed.exit_code == 2 and "collapsed-bowel share" in mixed.output
