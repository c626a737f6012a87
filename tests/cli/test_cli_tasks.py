"""`resshift inpaint` and `resshift restore-face` end to end with tiny random-weight models: files,
folders of matched masks, paste-back, bad masks, face crop sizes, and each command's task check."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from resshift.cli import main
from resshift.nets.swin_unet import SwinUNetConfig
from resshift.nets.vqgan import VQGANConfig
from resshift.pipeline import ResShiftPipeline
from resshift.presets import ModelConfig
from resshift.schedule import ScheduleConfig

from conftest import tiny_config
from test_cli_upscale import leftovers, photo, save_photos

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32


@pytest.fixture(scope="module")
def inpaint_model(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "tiny-inpaint"
    ResShiftPipeline.from_config(tiny_config(task="inpaint", scale=1, num_steps=2)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def face_model(tmp_path_factory):
    """A tiny face model on 512x512 crops: an 8-channel f8 VQGAN, as the official faceir."""
    torch.manual_seed(0)
    vqgan = VQGANConfig(embed_dim=8, z_channels=8, ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, n_embed=64)
    unet = SwinUNetConfig(in_channels=8, out_channels=8, model_channels=32, channel_mult=(1, 2),
                          num_res_blocks=(1, 1), attention_resolutions=(64, 32), swin_embed_dim=32,
                          num_head_channels=16, lq_size=64 * 8)
    config = ModelConfig(task="face", scale=1, schedule=ScheduleConfig(num_steps=1), unet=unet, autoencoder=vqgan)
    folder = tmp_path_factory.mktemp("models") / "tiny-face"
    ResShiftPipeline.from_config(config).save_pretrained(folder)
    return folder


@pytest.fixture
def cli(capsys):
    """Run `resshift COMMAND ARGS -q` in-process: (exit code, stdout, stderr)."""
    def run(*args, quiet: bool = True):
        code = main([*map(str, args)] + (["-q"] if quiet else []))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def save_mask(path: Path, box=(8, 8, 20, 20), size=(SIZE, SIZE), value=255) -> Path:
    """A black mask with a white box (x0, y0, x1, y1) to fill."""
    mask = np.zeros((size[1], size[0]), np.uint8)
    if box is not None:
        x0, y0, x1, y1 = box
        mask[y0:y1, x0:x1] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path)
    return path


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_help_lists_the_task_flags(capsys):
    for command, flags in (("inpaint", ("--mask", "--mask-dilate", "--no-paste-back", "--suffix", "--tile",
                                        "examples:")),
                           ("restore-face", ("--resize", "512x512", "--overwrite", "examples:"))):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        for flag in flags:
            assert flag in text, (command, flag)
        assert "--outscale" not in text and "--color-fix" not in text


def test_inpaint_file_keeps_known_pixels_and_resumes(tmp_path, cli, inpaint_model):
    source = save_photos(tmp_path / "in", 1)[0]
    mask = save_mask(tmp_path / "mask.png")
    code, out, err = cli("inpaint", "-i", source, "-m", mask, "-o", tmp_path / "out", "--model", inpaint_model,
                         quiet=False)
    assert code == 0, err
    assert "inpaint: 1 done, 0 skipped, 0 failed" in out
    result, original = pixels(tmp_path / "out" / "im1_out.png"), pixels(source)
    assert result.shape == original.shape
    known = np.ones((SIZE, SIZE), bool)
    known[8:20, 8:20] = False
    assert np.abs(result - original)[known].max() <= 1                # pasted back (8-bit rounding)
    assert np.abs(result - original)[~known].mean() > 2                # the hole is generated
    code, out, _ = cli("inpaint", "-i", source, "-m", mask, "-o", tmp_path / "out", "--model", inpaint_model,
                       quiet=False)
    assert code == 0 and "0 done, 1 skipped" in out
    assert leftovers(tmp_path / "out") == []


def test_inpaint_folder_matches_masks_by_stem_and_reports_missing(tmp_path, cli, inpaint_model):
    sources = save_photos(tmp_path / "in", 3)
    save_mask(tmp_path / "masks" / "im1.png")
    save_mask(tmp_path / "masks" / "im2.jpg", box=(0, 0, 16, 32))
    code, out, err = cli("inpaint", "-i", tmp_path / "in", "-m", tmp_path / "masks", "-o", tmp_path / "out",
                         "--model", inpaint_model, "--mask-dilate", "2", quiet=False)
    assert code == 1
    assert "2 done, 0 skipped, 1 failed" in out
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "im3.png" in lines[0] and "no mask" in lines[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["im1_out.png", "im2_out.png"]
    result, original = pixels(tmp_path / "out" / "im2_out.png"), pixels(sources[1])
    assert np.abs(result - original)[:, 20:].max() <= 1               # right of the dilated box: known


def test_no_paste_back_changes_known_pixels(tmp_path, cli, inpaint_model):
    source = save_photos(tmp_path / "in", 1)[0]
    mask = save_mask(tmp_path / "mask.png")
    code, _, err = cli("inpaint", "-i", source, "-m", mask, "-o", tmp_path / "out.png", "--no-paste-back",
                       "--model", inpaint_model)
    assert code == 0, err
    assert np.abs(pixels(tmp_path / "out.png") - pixels(source))[:, 24:].mean() > 2


def test_one_mask_serves_a_folder_and_is_not_an_input(tmp_path, cli, inpaint_model):
    save_photos(tmp_path / "in", 2)
    mask = save_mask(tmp_path / "in" / "mask.png")
    code, out, err = cli("inpaint", "-i", tmp_path / "in", "-m", mask, "-o", tmp_path / "out",
                         "--model", inpaint_model, quiet=False)
    assert code == 0, err
    assert "2 done" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["im1_out.png", "im2_out.png"]


def test_bad_masks(tmp_path, cli, inpaint_model):
    sources = save_photos(tmp_path / "in", 3)
    save_mask(tmp_path / "masks" / "im1.png", size=(SIZE + 4, SIZE))           # another size
    save_mask(tmp_path / "masks" / "im2.png", box=None)                        # empty
    save_mask(tmp_path / "masks" / "im3.png", box=(0, 0, SIZE, SIZE))          # all white
    code, out, err = cli("inpaint", "-i", tmp_path / "in", "-m", tmp_path / "masks", "-o", tmp_path / "out",
                         "--model", inpaint_model, quiet=False)
    assert code == 1
    assert "2 done, 0 skipped, 1 failed, 2 with notes" in out
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "im1.png" in errors[0] and "36x32" in errors[0] and "32x32" in errors[0]
    notes = " ".join(line for line in err.splitlines() if ": note: " in line)
    assert "im2.png" in notes and "empty" in notes and "im3.png" in notes and "all white" in notes
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["im2_out.png", "im3_out.png"]
    assert np.array_equal(pixels(tmp_path / "out" / "im2_out.png"), pixels(sources[1]))
    assert leftovers(tmp_path / "out") == []


def test_mask_usage_errors(tmp_path, cli, inpaint_model):
    source = save_photos(tmp_path / "in", 1)[0]
    code, _, err = cli("inpaint", "-i", source, "-m", tmp_path / "nope", "-o", tmp_path / "out",
                       "--model", inpaint_model)
    assert code == 2 and "no such file or folder" in err


@pytest.mark.parametrize("command, files", [
    ("inpaint", "resshift_inpainting_imagenet_s4.pth --autoencoder autoencoder_vq_f4.pth"),
    ("restore-face", "resshift_faceir_s4.pth --autoencoder ffhq512_vq_f8_dim8_face.pth")])
def test_tasks_without_a_bundled_model_name_their_official_files(tmp_path, cli, monkeypatch, command, files):
    """No --model and nothing bundled for the task: a usage error whose hint converts that task's checkpoints."""
    monkeypatch.setattr("resshift.models.DEFAULT_MODELS", {"sr": "realsr-x4"})   # whatever is bundled today
    source = save_photos(tmp_path / "in", 1)[0]
    mask_args = ["-m", save_mask(tmp_path / "mask.png")] if command == "inpaint" else []
    code, _, err = cli(command, "-i", source, *mask_args, "-o", tmp_path / "out")
    assert code == 2 and "no --model given" in err and files in err
    assert not any((tmp_path / "out").rglob("*"))


def test_restore_face_512_and_refuses_other_sizes(tmp_path, cli, face_model):
    folder = tmp_path / "in"
    folder.mkdir()
    photo(1, (512, 512)).save(folder / "crop.png")
    photo(2, (300, 200)).save(folder / "photo.png")
    code, out, err = cli("restore-face", "-i", folder, "-o", tmp_path / "out", "--model", face_model, quiet=False)
    assert code == 1
    assert "restore-face: 1 done, 0 skipped, 1 failed" in out
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "photo.png" in errors[0] and "300x200" in errors[0] and "512x512" in errors[0]
    assert "--resize" in errors[0]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["crop_out.png"]
    assert Image.open(tmp_path / "out" / "crop_out.png").size == (512, 512)


def test_restore_face_resize(tmp_path, cli, face_model):
    source = tmp_path / "small.png"
    photo(1, (48, 40)).save(source)
    code, _, err = cli("restore-face", "-i", source, "-o", tmp_path / "out", "--resize", "--model", face_model)
    assert code == 0, err
    assert "resized from 48x40 to 512x512 and back" in err
    assert Image.open(tmp_path / "out" / "small_out.png").size == (48, 40)


def test_commands_refuse_models_of_other_tasks(tmp_path, cli, inpaint_model, face_model, tiny_model_dir):
    source = save_photos(tmp_path / "in", 1)[0]
    mask = save_mask(tmp_path / "mask.png")
    for argv, hint in ((["upscale", "--model", inpaint_model], "an inpainting model"),
                       (["upscale", "--model", face_model], "a face restoration model"),
                       (["inpaint", "-m", mask, "--model", tiny_model_dir], "needs an inpainting model"),
                       (["restore-face", "--model", inpaint_model], "needs a face restoration model")):
        code, _, err = cli(*argv, "-i", source, "-o", tmp_path / "out")
        assert code == 2 and hint in err, err
    assert not any((tmp_path / "out").iterdir())


def test_inpaint_without_a_model_uses_the_bundled_one(tmp_path, cli):
    """`resshift inpaint` with no --model: the bundled inpaint-natural model keeps the known pixels and fills
    the hole close to OpenCV's Telea fill, where it starts (computed here by cv2 itself), not black."""
    source = tmp_path / "photo.png"
    photo(3, (64, 64)).save(source)
    mask = save_mask(tmp_path / "mask.png", box=(20, 20, 44, 44), size=(64, 64))
    code, out, err = cli("inpaint", "-i", source, "-m", mask, "-o", tmp_path / "out", quiet=False)
    assert code == 0, err
    assert "inpaint: 1 done, 0 skipped, 0 failed" in out
    result, original = pixels(tmp_path / "out" / "photo_out.png"), pixels(source)
    hole = np.zeros((64, 64), bool)
    hole[20:44, 20:44] = True
    assert np.abs(result - original)[~hole].max() <= 1
    holes = hole.astype(np.uint8) * 255
    telea = cv2.inpaint(np.ascontiguousarray(original.astype(np.uint8)), holes, 3, cv2.INPAINT_TELEA).astype(np.int16)
    assert np.abs(result - telea)[hole].mean() < 8 < np.abs(telea[hole]).mean()
