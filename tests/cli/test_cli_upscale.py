"""`resshift upscale` end to end with a tiny random-weight model: files, folders, real-photo formats,
resuming, bad inputs, tiling, and a two-rank torchrun run."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from resshift import memory
from resshift.cli import main
from resshift.batch import Inputs, choose_tile, plan_jobs, resize
from resshift.models import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

SET5 = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "benchmarks" / "Set5"
SIZE = 32


def photo(index: int = 1, size: tuple[int, int] = (SIZE, SIZE)) -> Image.Image:
    """A small real photo: Set5 image `index`, resized."""
    return Image.open(SET5 / f"img_00{index}.png").convert("RGB").resize(size, Image.Resampling.BICUBIC)


def save_photos(folder: Path, count: int, prefix: str = "im") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{prefix}{i}.png" for i in range(1, count + 1)]
    for i, path in enumerate(paths):
        photo(i % 5 + 1).save(path)
    return paths




ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture
def upscale(tiny_model_dir, capsys):
    """Run `resshift upscale ARGS --model tiny -q` in-process: (exit code, stdout, stderr)."""
    def run(*args: str, model: bool = True, quiet: bool = True):
        argv = ["upscale", *map(str, args)] + (["--model", str(tiny_model_dir)] if model else [])
        code = main(argv + (["-q"] if quiet else []))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["upscale", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--input", "--output", "--recursive", "--outscale", "--model", "--autoencoder", "--task",
                 "--steps", "--seed", "--device", "--dtype", "--tile", "--tile-overlap", "--color-fix",
                 "--suffix", "--ext", "--overwrite", "--max-pixels", "--quiet", "examples:",
                 "resshift convert", "exit status"):
        assert flag in text, flag


def test_file_and_folder_end_to_end(tmp_path, upscale):
    sources = save_photos(tmp_path / "in", 3)
    code, out, err = upscale("-i", sources[1], "-o", tmp_path / "single", "--steps", "2", quiet=False)
    assert code == 0 and err == "" and "1 done, 0 skipped, 0 failed" in out
    single = tmp_path / "single" / "im2_out.png"
    assert Image.open(single).size == (4 * SIZE, 4 * SIZE)

    code, out, err = upscale("-i", tmp_path / "in", "-o", tmp_path / "all", "--steps", "2", quiet=False)
    assert code == 0 and "3 done" in out
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["im1_out.png", "im2_out.png", "im3_out.png"]
    # One seed per image: an image's result does not depend on the batch around it.
    in_batch = tmp_path / "all" / "im2_out.png"
    np.testing.assert_array_equal(np.asarray(Image.open(single)), np.asarray(Image.open(in_batch)))

    code, _, _ = upscale("-i", sources[0], "-o", tmp_path / "named.jpg", "--steps", "1")  # -o names the file
    assert code == 0 and Image.open(tmp_path / "named.jpg").format == "JPEG"
    code, _, _ = upscale("-i", str(tmp_path / "in" / "im[12].png"), "-o", tmp_path / "glob", "--ext", "webp",
                         "--steps", "1")
    assert code == 0 and sorted(p.name for p in (tmp_path / "glob").iterdir()) == ["im1_out.webp", "im2_out.webp"]


def test_outscale_resizes_the_model_output(tmp_path, upscale):
    save_photos(tmp_path / "in", 1)
    for scale, side in (("2", 2 * SIZE), ("1.5", 48), ("6", 6 * SIZE)):
        code, _, _ = upscale("-i", tmp_path / "in", "-o", tmp_path / scale, "-s", scale, "--steps", "1")
        assert code == 0 and Image.open(tmp_path / scale / "im1_out.png").size == (side, side)


def test_resize_enlarges_with_lanczos_and_shrinks_by_area():
    ramp = np.tile(np.linspace(0, 1, 8, dtype=np.float32), (8, 1))
    up, down = resize(ramp, (16, 16)), resize(ramp, (4, 4))
    assert up.shape == (16, 16) and up.dtype == np.float32
    np.testing.assert_allclose(down, ramp.reshape(4, 2, 4, 2).mean(axis=(1, 3)), atol=1e-6)


def test_alpha_grey_16bit_orientation_and_icc_round_trip(tmp_path, upscale):
    folder = tmp_path / "in"
    folder.mkdir()
    rgba = np.dstack([np.asarray(photo(1)), np.tile(np.linspace(0, 255, SIZE).astype(np.uint8), (SIZE, 1))])
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    photo(2).convert("L").save(folder / "grey.png")
    wide = (np.asarray(photo(3)).astype(np.uint16) * 257)[..., ::-1]        # BGR for OpenCV
    cv2.imwrite(str(folder / "wide.png"), np.ascontiguousarray(wide))
    exif = Image.Exif()
    exif[0x0112] = 6                                                     # stored sideways: rotate 90°
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    photo(4, (SIZE, SIZE // 2)).save(folder / "turned.jpg", exif=exif, icc_profile=icc, quality=95)

    code, _, err = upscale("-i", folder, "-o", tmp_path / "out", "--steps", "1")
    assert code == 0, err
    out = tmp_path / "out"
    with Image.open(out / "alpha_out.png") as im:
        assert im.mode == "RGBA" and im.size == (4 * SIZE, 4 * SIZE)
        alpha = np.asarray(im)[..., 3].astype(np.float32) / 255
    expected = np.clip(resize(rgba[..., 3].astype(np.float32) / 255, (4 * SIZE, 4 * SIZE)), 0, 1)
    assert np.abs(alpha - expected).max() <= 1 / 255 + 1e-6                # alpha resized, not restored
    with Image.open(out / "grey_out.png") as im:
        assert im.mode == "L" and im.size == (4 * SIZE, 4 * SIZE)
    wide_out = cv2.imread(str(out / "wide_out.png"), cv2.IMREAD_UNCHANGED)
    assert wide_out.dtype == np.uint16 and wide_out.shape == (4 * SIZE, 4 * SIZE, 3)
    assert len(np.unique(wide_out % 257)) > 1                             # not 8-bit values stretched
    with Image.open(out / "turned_out.jpg") as im:
        assert im.size == (2 * SIZE, 4 * SIZE)                           # upright: 16x32 -> 64x128
        assert im.getexif().get(0x0112, 1) == 1 and im.info.get("icc_profile") == icc


def test_resume_skips_finished_outputs_and_overwrite_redoes_them(tmp_path, upscale):
    save_photos(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert upscale("-i", tmp_path / "in", "-o", out, "--steps", "1")[0] == 0
    (out / "im1_out.png").unlink()                                       # as if killed after one image
    before = (out / "im2_out.png").stat().st_mtime_ns
    code, text, _ = upscale("-i", tmp_path / "in", "-o", out, "--steps", "1", quiet=False)
    assert code == 0 and "1 done, 1 skipped" in text
    assert (out / "im1_out.png").is_file() and (out / "im2_out.png").stat().st_mtime_ns == before
    code, text, _ = upscale("-i", tmp_path / "in", "-o", out, "--steps", "1", "--overwrite", quiet=False)
    assert code == 0 and "2 done, 0 skipped" in text
    assert (out / "im2_out.png").stat().st_mtime_ns != before
    # A folder upscaled into itself: earlier outputs are recognised and not taken as inputs.
    code, text, _ = upscale("-i", tmp_path / "in", "-o", tmp_path / "in", "--steps", "1", quiet=False)
    assert code == 0 and "2 done" in text
    code, text, _ = upscale("-i", tmp_path / "in", "-o", tmp_path / "in", "--steps", "1", quiet=False)
    assert code == 0 and "0 done, 2 skipped" in text


def test_bad_inputs_fail_alone_with_one_line_naming_the_file(tmp_path, upscale):
    folder = tmp_path / "in"
    good = save_photos(folder, 2)
    (folder / "text.png").write_text("not an image\n")
    (folder / "empty.jpg").write_bytes(b"")
    data = good[0].read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    photo(3, (64, 64)).save(folder / "huge.png")                          # 4096 pixels > --max-pixels
    (folder / "notes.txt").write_text("ignored: not an image extension\n")
    sub = folder / "sub"
    save_photos(sub, 1, prefix="deep")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where the output subfolder should be\n")
    bad = ["text.png", "empty.jpg", "truncated.png", "huge.png", "deep1.png"]
    if os.geteuid() != 0:                                                # root reads everything
        (folder / "locked.png").write_bytes(data)
        (folder / "locked.png").chmod(0)
        bad.append("locked.png")

    code, text, err = upscale("-i", folder, "-o", out, "--recursive", "--max-pixels", "2000",
                              "--steps", "1", quiet=False)
    assert code == 1
    assert "2 done, 0 skipped, " + str(len(bad)) + " failed" in text
    assert (out / "im1_out.png").is_file() and (out / "im2_out.png").is_file()
    errors = [line for line in err.splitlines() if not line.startswith(("failed:", "  "))]
    assert len(errors) == len(bad), err
    for name in bad:
        assert sum(name in line for line in errors) == 1, (name, err)
    for name, reason in (("text.png", "not an image"), ("empty.jpg", "empty"), ("truncated.png", "truncated"),
                         ("huge.png", "--max-pixels"), ("deep1.png", "output folder")):
        assert reason in next(line for line in errors if name in line)
    assert "Traceback" not in err and leftovers(out) == []
    assert sorted(p.name for p in out.iterdir()) == ["im1_out.png", "im2_out.png", "sub"]


def test_a_full_disk_fails_each_output_alone_and_keeps_existing_ones(tmp_path, upscale, full_disk):
    save_photos(tmp_path / "in", 3)
    out = tmp_path / "out"
    assert upscale("-i", tmp_path / "in" / "im1.png", "-o", out, "--steps", "1")[0] == 0
    kept = (out / "im1_out.png").read_bytes()
    full_disk(after=1000)
    code, text, err = upscale("-i", tmp_path / "in", "-o", out, "--steps", "1", "--overwrite", quiet=False)
    assert code == 1 and "0 done, 0 skipped, 3 failed" in text
    errors = [line for line in err.splitlines() if "No space left on device" in line]
    assert len(errors) == 3 and "Traceback" not in err
    for index, line in enumerate(errors, 1):
        assert line.startswith(f"resshift upscale: error: {tmp_path / 'in' / f'im{index}.png'}: ")
        assert f"{out / f'im{index}_out.png'}: cannot write the output" in line
    assert sorted(p.name for p in out.iterdir()) == ["im1_out.png"] and leftovers(out) == []
    assert (out / "im1_out.png").read_bytes() == kept                    # a failed overwrite keeps the old file
    full_disk(None)
    code, text, _ = upscale("-i", tmp_path / "in", "-o", out, "--steps", "1", quiet=False)
    assert code == 0 and "2 done, 1 skipped, 0 failed" in text


def test_output_equal_to_input_is_refused(tmp_path, upscale):
    source = save_photos(tmp_path, 1)[0]
    data = source.read_bytes()
    code, _, err = upscale("-i", source, "-o", source)
    assert code == 1 and err.count("overwrite an input") == 1 and str(source) in err
    code, _, err = upscale("-i", tmp_path, "-o", tmp_path, "--suffix", "")
    assert code == 1 and "overwrite an input" in err
    assert source.read_bytes() == data


def test_plan_refuses_targets_that_are_inputs_or_shared(tmp_path):
    files = [tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "b.png"]
    jobs = plan_jobs(Inputs(files, tmp_path, single=False), tmp_path, suffix="", ext="png")
    errors = {job.source.name: job.error for job in jobs}
    assert "another input" in errors["a.jpg"] and "input itself" in errors["a.png"]
    jobs = plan_jobs(Inputs(files, tmp_path, single=False), tmp_path / "out", suffix="_x", ext="png")
    assert [job.error is None for job in jobs] == [True, False, True] and "also the output" in jobs[1].error


@pytest.mark.parametrize("argv, message", [
    (["-i", "{tmp}/missing", "-o", "{tmp}/out"], "no such file"),
    (["-i", "{tmp}/empty", "-o", "{tmp}/out"], "no images found"),
    (["-i", "{tmp}/in", "-o", "{tmp}/out.png"], "names one file"),
    (["-i", "{tmp}/in", "-o", "{tmp}/in/im1.png/x"], "cannot create the output folder"),
    (["-i", "{tmp}/in", "-o", "{tmp}/out", "--model", "{tmp}/nowhere"], "not the name of a bundled model"),
    (["-i", "{tmp}/in", "-o", "{tmp}/out", "--model", "{tmp}/in/im1.png"], "--autoencoder"),
    (["-i", "{tmp}/in", "-o", "{tmp}/out", "--model", "{model}", "--autoencoder", "{tmp}/in/im1.png"],
     "only apply to an official UNet"),
    pytest.param(["-i", "{tmp}/in", "-o", "{tmp}/out", "--device", "cuda"], "no CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, tiny_model_dir, capsys, argv, message):
    save_photos(tmp_path / "in", 1)
    (tmp_path / "empty").mkdir()
    argv = [a.format(tmp=tmp_path, model=tiny_model_dir) for a in argv]
    code = main(["upscale", *argv] + ([] if "--model" in argv else ["--model", str(tiny_model_dir)]))
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_without_a_model_the_bundled_default_runs(tmp_path, upscale):
    save_photos(tmp_path / "in", 1)
    code, _, err = upscale("-i", tmp_path / "in", "-o", tmp_path / "out", model=False)
    assert code == 0, err
    (source,), (result,) = (tmp_path / "in").iterdir(), (tmp_path / "out").iterdir()
    assert Image.open(result).size == tuple(4 * side for side in Image.open(source).size)


def test_no_model_says_how_to_get_one(tmp_path, upscale, monkeypatch):
    monkeypatch.setattr("resshift.models.DEFAULT_MODELS", {})   # a task with no bundled model yet
    save_photos(tmp_path / "in", 1)
    code, _, err = upscale("-i", tmp_path / "in", "-o", tmp_path / "out", model=False)
    assert code == 2 and "resshift convert" in err


def test_tiled_output_is_close_to_untiled(tmp_path, upscale):
    photo(5, (64, 64)).save(tmp_path / "big.png")
    for tile in ("0", "32"):
        code, _, err = upscale("-i", tmp_path / "big.png", "-o", tmp_path / tile, "--tile", tile,
                               "--tile-overlap", "16")
        assert code == 0, err
    untiled, tiled = (np.asarray(Image.open(tmp_path / t / "big_out.png")).astype(np.float32) / 255
                      for t in ("0", "32"))
    assert tiled.shape == untiled.shape == (256, 256, 3)
    assert np.abs(tiled - untiled).mean() < 0.1


def test_subprocess_reports_failures_without_traceback(tmp_path, tiny_model_dir):
    save_photos(tmp_path / "in", 1)
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = subprocess.run(
        [sys.executable, "-m", "resshift", "upscale", "-i", tmp_path / "in", "-o", tmp_path / "out",
         "--model", tiny_model_dir, "--steps", "1", "--color-fix", "wavelet"],
        capture_output=True, text=True, timeout=120, env=ONE_THREAD_ENV)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "1 done, 0 skipped, 1 failed" in result.stdout
    assert [line for line in result.stderr.splitlines() if "broken.png" in line][0].count("broken.png") == 1
    assert (tmp_path / "out" / "im1_out.png").is_file() and leftovers(tmp_path / "out") == []


def test_sigkill_mid_batch_leaves_whole_outputs_and_the_rerun_does_the_rest(tmp_path, tiny_model_dir):
    count = 12
    save_photos(tmp_path / "in", count)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".keep").write_text("a user's hidden file")
    process = subprocess.Popen(
        [sys.executable, "-m", "resshift", "upscale", "-i", tmp_path / "in", "-o", out, "--model", tiny_model_dir,
         "--steps", "1", "-q"], env=ONE_THREAD_ENV, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(out.glob("*.png"))) < 3:
        assert process.poll() is None and time.monotonic() < deadline, "no outputs appeared"
        time.sleep(0.005)
    process.kill()
    assert process.wait(30) == -signal.SIGKILL
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert 3 <= len(finished) < count, "the kill came too late to test anything"
    for path in out.glob("*.png"):                                       # whole images only
        with Image.open(path) as image:
            image.load()
    stale = out / f".im{count}_out.png.0123abcd.tmp"                    # as if killed while writing it
    stale.write_bytes(b"\x89PNG half")
    hidden = {p.name for p in out.iterdir() if p.name.startswith(".")}
    assert hidden <= {".keep", stale.name} | {p.name for p in out.glob(".im*_out.png.*.tmp")}

    code = main(["upscale", "-i", str(tmp_path / "in"), "-o", str(out), "--model", str(tiny_model_dir),
                 "--steps", "1", "-q"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([".keep"] + [f"im{i}_out.png" for i in range(1, count + 1)])
    assert {name: (out / name).stat().st_mtime_ns for name in finished} == finished     # not redone


@pytest.mark.slow
def test_torchrun_splits_a_folder_across_two_ranks(tmp_path, tiny_model_dir):
    save_photos(tmp_path / "in", 4)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "resshift", "upscale", "-i", tmp_path / "in", "-o", tmp_path / "out",
         "--model", tiny_model_dir, "--steps", "1", "--device", "cpu"],
        capture_output=True, text=True, timeout=180, env=ONE_THREAD_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [line for line in result.stdout.splitlines() if line.startswith("upscale:")]
    assert summaries == [summaries[0]] and "4 done, 0 skipped, 0 failed" in summaries[0], result.stdout
    assert "on 2 ranks" in summaries[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"im{i}_out.png" for i in range(1, 5)]


def test_auto_tile_follows_free_memory(tmp_path, upscale, monkeypatch):
    gib, cpu = 2**30, torch.device("cpu")
    assert memory.auto_tile((32, 32), 128 * 128, multiple=16, device=cpu, available=8 * gib)[0] is None
    tile, need = memory.auto_tile((1024, 1024), 4096**2, multiple=16, device=cpu, available=8 * gib)
    assert tile == memory.AUTO_TILE_MAX_LATENT and need < 6 * gib - 2 * gib      # weights and process: < 2 GiB
    small, _ = memory.auto_tile((1024, 1024), 4096**2, multiple=16, device=cpu, available=int(2.2 * gib))
    assert 16 <= small < tile and small % 16 == 0
    # An output whose full-size buffers alone cannot fit fails alone, with a reason.
    save_photos(tmp_path / "in", 1)
    monkeypatch.setattr(memory, "available_memory", lambda device: 2**16)
    code, _, err = upscale("-i", tmp_path / "in", "-o", tmp_path / "out")
    assert code == 1 and "GiB is free" in err and "im1.png" in err


def test_only_a_vqgan_caps_the_automatic_tile(tiny_model_dir):
    """The cap exists for the VQGAN's global attention; the bundled models' pixel-unshuffle latent has none,
    and four overlapping 128-pixel tiles made their 256x256 upscale take twice the untiled time."""
    gib = 2**30
    bundled, vqgan = load_model("realsr-x4"), load_model(tiny_model_dir)
    assert not bundled.config.autoencoder.global_attention and vqgan.config.autoencoder.global_attention
    assert choose_tile(bundled, 256, 256, 4, available=8 * gib)[0] is None
    # memory-bound: isqrt((0.7 x 8 GiB - 64 B x 4096^2) / 64,000 B) = 277 latent pixels, down to a multiple of 32
    assert choose_tile(bundled, 1024, 1024, 4, available=8 * gib)[0] == 256
    assert choose_tile(vqgan, 1024, 1024, 4, available=8 * gib)[0] == memory.AUTO_TILE_MAX_LATENT


def test_max_pixels_also_bounds_the_padded_input(tmp_path, upscale, tiny_model_dir):
    """Found by benchmarks/fuzz_inputs.py: a 65535x1 strip passed --max-pixels 65536 but the networks saw
    it padded to 65536x16, and it took minutes."""
    Image.fromarray(np.zeros((1, 4000, 3), np.uint8)).save(tmp_path / "strip.png")
    photo(1, (40, 30)).save(tmp_path / "photo.png")
    code, _, err = upscale("-i", tmp_path / "strip.png", "-o", tmp_path / "out", "--max-pixels", "8000")
    assert code == 1 and "strip.png: 4000x1 is padded to 4000x16 = 64000 pixels for the networks" in err
    assert "--max-pixels 64000" in err and len(err.strip().splitlines()) == 3      # the line, "failed:", the file
    code, _, err = upscale("-i", tmp_path / "photo.png", "-o", tmp_path / "out", "--max-pixels", "1200",
                           "--steps", "1")
    assert code == 1 and "40x30 is padded to 48x32 = 1536 pixels" in err
    assert upscale("-i", tmp_path / "photo.png", "-o", tmp_path / "out", "--max-pixels", "1536", "--steps", "1")[0] == 0


def test_a_corrupt_tiff_is_one_line_without_libtiff_or_pillow_chatter(tmp_path, tiny_model_dir, capfd, recwarn):
    """Found by benchmarks/fuzz_inputs.py: libtiff printed its own decoding errors on stderr ("ZIPDecode:
    Decoding error ...") beside resshift's one line, and Pillow its warnings about broken tags."""
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)     # 3 kB of deflate data
    Image.fromarray(noise).save(buffer, "TIFF", compression="tiff_deflate")
    folder = tmp_path / "in"
    folder.mkdir()
    data = bytearray(buffer.getvalue())
    data[300:340] = bytes(40)                                   # inside the deflate stream
    (folder / "zip.tif").write_bytes(bytes(data))
    data = bytearray(buffer.getvalue())
    ifd = int.from_bytes(data[4:8], "little")
    data[ifd + 2 + 24 + 8: ifd + 2 + 24 + 12] = (2**31).to_bytes(4, "little")   # BitsPerSample: off the file
    (folder / "tags.tif").write_bytes(bytes(data))
    code = main(["upscale", "-i", str(folder), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir), "-q"])
    lines = capfd.readouterr().err.splitlines()
    assert code == 1 and len(lines) == 5, lines
    assert lines[0].startswith(f"resshift upscale: error: {folder / 'tags.tif'}: not an image")
    assert lines[1].startswith(f"resshift upscale: error: {folder / 'zip.tif'}: the image data is truncated")
    assert lines[2:] == ["failed:", f"  {folder / 'tags.tif'}", f"  {folder / 'zip.tif'}"]
    assert [str(w.message) for w in recwarn if "PIL" in w.filename] == []


def test_a_result_too_wide_for_its_format_fails_before_the_model_runs(tmp_path, upscale, monkeypatch):
    """A 4100x1 WebP at x4 would be 16400 wide, over WebP's 16383: refused at once, naming the file."""
    Image.fromarray(np.zeros((1, 4100, 3), np.uint8)).save(tmp_path / "strip.webp", lossless=True)
    monkeypatch.setattr("resshift.tasks.restore_image", lambda *args, **kwargs: pytest.fail("the model ran"))
    code, _, err = upscale("-i", tmp_path / "strip.webp", "-o", tmp_path / "out", "--max-pixels", "100000")
    assert code == 1 and err.count("\n") == 3, err
    assert "strip.webp: " in err and "a 16400x4 result is over WEBP's limit of 16383 pixels per side" in err
    assert "--ext png" in err and list((tmp_path / "out").iterdir()) == []
