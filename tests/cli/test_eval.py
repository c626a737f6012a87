"""`resshift eval` and `evaluation.evaluate_folders`: hand-computed PSNR, inf handling, bad inputs,
JSON/CSV output, NIQE mode and the ST-LPIPS column."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resshift.cli import main
from resshift.errors import CheckpointError
from resshift.evaluation import evaluate_folders
from resshift.metrics import STLPIPS

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SET5 = DATA / "benchmarks" / "Set5"
REALSET65 = DATA / "resshift_testdata" / "RealSet65"
SIZE = 48
OFFSET = 10


def crop(index: int, size: int = SIZE) -> np.ndarray:
    """(size, size, 3) uint8: the top-left corner of Set5 image `index`, clipped to [0, 245]."""
    pixels = np.asarray(Image.open(SET5 / f"img_00{index}.png").convert("RGB"))[:size, :size]
    return np.minimum(pixels, 255 - OFFSET)


def save(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def folders(tmp_path):
    """gt: img_1..img_3; pred: img_1 identical, img_2 = gt + 10, img_3 another size, img_9 unmatched,
    a text file; gt also holds img_4 without a prediction."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for i in (1, 2, 3, 4):
        save(gt / f"img_{i}.png", crop(i))
    save(pred / "img_1.png", crop(1))
    save(pred / "img_2.png", crop(2) + OFFSET)
    save(pred / "img_3.png", crop(3, SIZE - 8))
    save(pred / "img_9.png", crop(5))
    (pred / "readme.txt").write_text("not an image")
    return pred, gt


@pytest.fixture
def run(capsys):
    def run_(*args):
        code = main(["eval", *map(str, args)])
        out, err = capsys.readouterr()
        return code, out, err
    return run_


def test_constant_offset_matches_hand_computed_psnr(folders):
    pred, gt = folders
    rgb = evaluate_folders(pred, gt, metrics=["psnr"], y_channel=False)
    y = evaluate_folders(pred, gt, metrics=["psnr"])
    row = {r.name: r.values["psnr"] for r in rgb.rows}
    assert row["img_2"] == pytest.approx(10 * math.log10(255**2 / OFFSET**2), abs=1e-4)  # MSE = 10² = 100
    y_offset = OFFSET * (65.481 + 128.553 + 24.966) / 255  # BT.601: ΔY = 219/255 ΔRGB
    assert {r.name: r.values["psnr"] for r in y.rows}["img_2"] == pytest.approx(
        20 * math.log10(255 / y_offset), abs=1e-4)


def test_identical_pair_is_inf_and_left_out_of_the_mean(folders):
    pred, gt = folders
    report = evaluate_folders(pred, gt, metrics=["psnr", "ssim"], y_channel=False)
    values = {r.name: r.values for r in report.rows}
    assert math.isinf(values["img_1"]["psnr"]) and values["img_1"]["ssim"] == pytest.approx(1.0)
    assert report.infinite["psnr"] == 1
    assert report.means["psnr"] == pytest.approx(values["img_2"]["psnr"])  # the finite values only
    assert report.means["ssim"] == pytest.approx((values["img_1"]["ssim"] + values["img_2"]["ssim"]) / 2)


def test_bad_inputs_are_reported_one_line_each_and_skipped(folders, run):
    pred, gt = folders
    code, out, err = run("--pred", pred, "--gt", gt, "--metrics", "psnr,ssim", "--per-image")
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 4
    assert any("img_9.png" in line and "no ground truth" in line for line in lines)
    assert any("img_4.png" in line and "no prediction" in line for line in lines)
    assert any("img_3.png" in line and "size 40x40 differs" in line for line in lines)
    assert any("readme.txt" in line and "not an image" in line for line in lines)
    assert "img_1" in out and "img_2" in out and "img_3" not in out
    assert "mean (n=2)" in out


def test_everything_scored_exits_0_and_mean_row_always_printed(tmp_path, run):
    save(tmp_path / "gt" / "a.png", crop(1))
    save(tmp_path / "pred" / "a.jpg", crop(1) + OFFSET)
    code, out, err = run("--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--metrics", "psnr")
    assert code == 0 and err == ""
    assert "mean (n=1)" in out and "\na " not in out  # per-image rows only with --per-image


def test_single_channel_image_is_scored_on_y(tmp_path):
    grey = crop(1)[..., 0]
    save(tmp_path / "gt" / "a.png", grey)
    save(tmp_path / "pred" / "a.png", grey + OFFSET)
    report = evaluate_folders(tmp_path / "pred", tmp_path / "gt", metrics=["psnr"])
    assert not report.problems
    assert report.rows[0].values["psnr"] == pytest.approx(20 * math.log10(255 / (OFFSET * 219 / 255)), abs=1e-4)


def test_empty_folder_and_usage_errors_exit_2(tmp_path, run):
    (tmp_path / "empty").mkdir()
    save(tmp_path / "pred" / "a.png", crop(1))
    code, _, err = run("--pred", tmp_path / "empty")
    assert code == 2 and "no images found" in err and len(err.strip().splitlines()) == 1
    code, _, err = run("--pred", tmp_path / "pred", "--gt", tmp_path / "empty")
    assert code == 2 and "--gt" in err
    code, _, err = run("--pred", tmp_path / "pred", "--metrics", "psnr")
    assert code == 2 and "needs --gt" in err
    code, _, err = run("--pred", tmp_path / "missing")
    assert code == 2 and "not a folder" in err
    with pytest.raises(SystemExit) as exc:
        run("--pred", tmp_path / "pred", "--metrics", "fid")
    assert exc.value.code == 2


def test_json_and_csv_written_with_metric_columns(folders, tmp_path, run):
    pred, gt = folders
    out_json, out_csv = tmp_path / "out" / "scores.json", tmp_path / "scores.csv"
    (tmp_path / "out").mkdir()
    code, _, _ = run("--pred", pred, "--gt", gt, "--metrics", "psnr,ssim", "--rgb", "--crop-border", "2",
                     "--json", out_json, "--csv", out_csv)
    assert code == 1
    data = json.loads(out_json.read_text())
    assert data["metrics"] == ["psnr", "ssim"] and data["count"] == 2
    assert data["crop_border"] == 2 and data["y_channel"] is False
    assert set(data["mean"]) == {"psnr", "ssim"} and data["infinite"]["psnr"] == 1
    assert [im["name"] for im in data["images"]] == ["img_1", "img_2"]
    assert data["images"][0]["psnr"] == "inf"
    assert len(data["problems"]) == 4
    with out_csv.open() as fp:
        rows = list(csv.DictReader(fp))
    assert list(rows[0]) == ["image", "pred", "gt", "psnr", "ssim"]
    assert [r["image"] for r in rows] == ["img_1", "img_2"]
    assert float(rows[0]["psnr"]) == math.inf and float(rows[1]["psnr"]) > 20
    assert not [p for p in tmp_path.rglob("*") if p.suffix == ".tmp" or p.name.startswith(".")]


def test_niqe_mode_on_realset65_and_too_small_images_skipped(tmp_path, run):
    pred = tmp_path / "pred"
    pred.mkdir()
    for name in ("00003.png", "0003.jpg"):
        shutil.copy(REALSET65 / name, pred / name)
    code, out, err = run("--pred", pred, "--per-image")
    assert code == 0 and err == ""
    assert "NIQE" in out and "00003" in out and "0003" in out and "mean (n=2)" in out
    save(pred / "tiny.png", crop(1))
    report = evaluate_folders(pred)
    assert report.count == 2 and all(math.isfinite(r.values["niqe"]) for r in report.rows)
    assert len(report.problems) == 1 and "tiny.png" in str(report.problems[0]) and "96x96" in str(report.problems[0])


def test_stlpips_column_when_installed(folders):
    if importlib.util.find_spec("stlpips_pytorch") is None:
        pytest.skip("stlpips-pytorch is not installed")
    pred, gt = folders
    report = evaluate_folders(pred, gt)
    assert report.metrics == ("psnr", "ssim", "stlpips") and not report.notes
    values = {r.name: r.values["stlpips"] for r in report.rows}
    assert values["img_1"] == pytest.approx(0.0, abs=1e-6) and values["img_2"] > 0


def test_missing_stlpips_package_is_a_note_and_the_column_is_skipped(folders, tmp_path, monkeypatch, run):
    def missing(cls, net="vgg"):
        raise CheckpointError("ST-LPIPS weights need the stlpips-pytorch package: pip install resshift[metrics]")
    monkeypatch.setattr(STLPIPS, "from_package", classmethod(missing))
    save(tmp_path / "g" / "a.png", crop(1))
    save(tmp_path / "p" / "a.png", crop(1) + OFFSET)
    code, out, err = run("--pred", tmp_path / "p", "--gt", tmp_path / "g")
    assert code == 0
    assert "note: ST-LPIPS column skipped" in err and "pip install" in err
    assert "PSNR" in out and "ST-LPIPS" not in out
    code, _, err = run("--pred", tmp_path / "p", "--gt", tmp_path / "g", "--metrics", "stlpips")
    assert code == 2 and "stlpips-pytorch" in err


def test_corrupt_image_is_reported_with_its_name(tmp_path, run):
    save(tmp_path / "g" / "a.png", crop(1))
    save(tmp_path / "g" / "b.png", crop(2))
    save(tmp_path / "p" / "a.png", crop(1))
    (tmp_path / "p" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code, out, err = run("--pred", tmp_path / "p", "--gt", tmp_path / "g", "--metrics", "psnr")
    assert code == 1 and "mean (n=1)" in out
    [line] = err.strip().splitlines()
    assert line.startswith(f"resshift eval: {tmp_path / 'p' / 'b.png'}: ") and line.count("b.png") == 1


def test_pred_suffix_pairs_upscale_outputs_with_their_ground_truth(tmp_path, run):
    save(tmp_path / "gt" / "photo.png", crop(1))
    save(tmp_path / "pred" / "photo_out.png", crop(1) + OFFSET)
    save(tmp_path / "pred" / "photo.png", crop(1))          # same key once the suffix is removed
    code, _, err = run("--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--metrics", "psnr")
    assert code == 1 and "photo_out.png: no ground truth" in err   # without the option: unmatched
    report = evaluate_folders(tmp_path / "pred", tmp_path / "gt", metrics=["psnr"], y_channel=False,
                              pred_suffix="_out")
    [row] = report.rows
    assert row.name == "photo" and row.pred.name == "photo_out.png"
    assert row.values["psnr"] == pytest.approx(10 * math.log10(255**2 / OFFSET**2), abs=1e-4)
    [problem] = report.problems
    assert problem.file.name == "photo.png" and "--pred-suffix '_out'" in problem.reason
    (tmp_path / "pred" / "photo.png").unlink()
    code, out, err = run("--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--metrics", "psnr",
                         "--rgb", "--pred-suffix", "_out", "--per-image")
    assert code == 0 and err == "" and "photo " in out and "mean (n=1)" in out
    assert f"{10 * math.log10(255**2 / OFFSET**2):.2f}" in out


def test_blockiness_of_upscaled_jpegs_by_scale(tmp_path, run):
    import io

    from PIL import Image as PILImage

    from resshift.imageio import read_image
    from resshift.metrics import blockiness

    source = PILImage.open(REALSET65 / "00003.png").convert("RGB")
    pred = tmp_path / "pred"
    pred.mkdir()
    for quality in (10, 95):
        buffer = io.BytesIO()
        source.save(buffer, "JPEG", quality=quality)
        jpeg = PILImage.open(io.BytesIO(buffer.getvalue()))
        jpeg.resize((jpeg.width * 4, jpeg.height * 4), PILImage.Resampling.BICUBIC).save(pred / f"q{quality}.png")
    code, out, err = run("--pred", pred, "--scale", "4", "--metrics", "blockiness", "--per-image")
    assert code == 0 and "Blockiness" in out
    report = evaluate_folders(pred, metrics=["blockiness"], scale=4)
    values = {r.name: r.values["blockiness"] for r in report.rows}
    assert values["q10"] == pytest.approx(blockiness(read_image(pred / "q10.png").pixels, 4), rel=1e-9)
    assert values["q10"] > 1.5 * values["q95"] and values["q95"] < 1.3
    assert evaluate_folders(pred).metrics == ("niqe", "blockiness")          # the no-reference default


def test_phase_variance_of_a_grid_tied_error_is_the_tiles_variance(tmp_path):
    """pred = gt + a 4x4 tile repeated: every phase's window mean is its tile value, so the metric is the
    variance of the 16 tile values (exactly, on the 8-bit grid); a flat error scores 0."""
    tile = np.arange(16).reshape(4, 4) * 2                                     # 0 .. 30 levels
    gt = np.full((64, 64, 3), 100, dtype=np.uint8)
    grid = np.tile(tile, (16, 16))[..., None].repeat(3, axis=2)
    save(tmp_path / "gt" / "a.png", gt)
    save(tmp_path / "pred" / "a.png", (gt + grid).astype(np.uint8))
    save(tmp_path / "flat" / "a.png", gt + 10)
    report = evaluate_folders(tmp_path / "pred", tmp_path / "gt", metrics=["phase"], scale=4)
    assert report.rows[0].values["phase"] == pytest.approx((tile / 255).var(), rel=1e-5)
    flat = evaluate_folders(tmp_path / "flat", tmp_path / "gt", metrics=["phase"], scale=4)
    assert flat.rows[0].values["phase"] == pytest.approx(0.0, abs=1e-12)
