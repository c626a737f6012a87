"""`resshift degrade --preset inpaint | face`: folders and names, masks and their hole fractions, exact
reproducibility, face sizes, the contact sheet, and bad inputs skipped as the SR presets skip them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resshift.cli import main
from resshift.batch import find_inputs, plan_jobs
from resshift.tasks import match_masks

pytestmark = pytest.mark.usefixtures("one_thread")

CELL, GAP, LABEL = 256, 6, 16  # contact_sheet's layout


def write_photos(folder: Path, sizes: list[tuple[int, int]]) -> list[str]:
    """Smooth colour images of the given (width, height), named img_00.png, ...; returns the stems."""
    folder.mkdir(parents=True, exist_ok=True)
    stems = []
    for i, (width, height) in enumerate(sizes):
        yy, xx = np.mgrid[0:height, 0:width]
        rgb = np.stack([(xx * (3 + i)) % 256, (yy * 5) % 256, ((xx + yy) * 2) % 256], axis=2).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"img_{i:02d}.png")
        stems.append(f"img_{i:02d}")
    return stems


def degrade(source: Path, out: Path, *flags: str) -> int:
    return main(["degrade", "-i", str(source), "-o", str(out), *flags])


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def sheet_size(items: int, panels: int, columns: int = 3) -> tuple[int, int]:
    rows = -(-items // columns)
    return columns * (panels * (CELL + GAP) + GAP), rows * (CELL + LABEL + GAP) + GAP


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("hr")
    return folder, write_photos(folder, [(128, 128), (160, 128), (128, 144), (128, 128)])


def test_inpaint_writes_gt_holes_and_white_masks_named_alike(photos, tmp_path):
    source, stems = photos
    assert degrade(source, tmp_path / "out", "--preset", "inpaint", "--seed", "3") == 0
    out = tmp_path / "out"
    for folder in ("gt", "lq", "mask"):
        assert sorted(p.stem for p in (out / folder).iterdir()) == stems
    for stem in stems:
        gt, lq, mask = (read(out / folder / f"{stem}.png") for folder in ("gt", "lq", "mask"))
        assert mask.ndim == 2 and set(np.unique(mask)) == {0, 255}, "one-channel, binary, white = hole"
        assert 0.10 <= (mask == 255).mean() <= 0.40, "the default hole range"
        holes = mask == 255
        assert (lq[holes] == 0).all() and (lq[~holes] == gt[~holes]).all(), "black holes, as the official lq"
    jobs = match_masks(plan_jobs(find_inputs(str(out / "lq")), tmp_path / "filled"), str(out / "mask"), out / "lq")
    assert len(jobs) == len(stems) and all(job.error is None and job.mask is not None for job in jobs)
    assert Image.open(out / "contact_sheet.png").size == sheet_size(len(stems), panels=3)


def test_inpaint_hole_ratio_option(photos, tmp_path):
    source, stems = photos
    assert degrade(source, tmp_path / "out", "--preset", "inpaint", "--hole-ratio", "0.2", "0.25") == 0
    for stem in stems:
        ratio = (read(tmp_path / "out" / "mask" / f"{stem}.png") == 255).mean()
        assert 0.2 <= ratio <= 0.25


@pytest.mark.parametrize("preset", ["inpaint", "face"])
def test_same_seed_same_bytes_other_seed_other_files(tmp_path, preset):
    source = tmp_path / "hr"
    write_photos(source, [(512, 512)] * 2 if preset == "face" else [(128, 128)] * 2)
    for run, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert degrade(source, tmp_path / run, "--preset", preset, "--seed", seed) == 0
    a, b, c = (files(tmp_path / run) for run in "abc")
    assert a == b
    assert a.keys() == c.keys() and a["gt/img_00.png"] == c["gt/img_00.png"] != b"" and a != c
    assert all(a[name] != c[name] for name in a if name.startswith(("lq/", "mask/")))


def test_face_writes_same_size_pairs_of_512_crops(tmp_path, capsys):
    source = tmp_path / "faces"
    write_photos(source, [(512, 512), (300, 300), (600, 540)])
    assert degrade(source, tmp_path / "out", "--preset", "face") == 0
    printed = capsys.readouterr().out
    assert "img_01.png: is 300x300; the face preset takes aligned 512x512" in printed
    assert "img_02.png: is 600x540" in printed
    for folder in ("gt", "lq"):
        assert [p.name for p in sorted((tmp_path / "out" / folder).iterdir())] == ["img_00.png"]
        assert Image.open(tmp_path / "out" / folder / "img_00.png").size == (512, 512)
    assert Image.open(tmp_path / "out" / "contact_sheet.png").size == sheet_size(1, panels=2)
    assert degrade(source, tmp_path / "cropped", "--preset", "face", "--crop", "512") == 0  # 600x540 -> 512
    assert sorted(p.name for p in (tmp_path / "cropped" / "lq").iterdir()) == ["img_00.png", "img_02.png"]


@pytest.mark.parametrize("preset", ["realesrgan", "inpaint"])
def test_bad_files_and_small_images_are_skipped_alike(tmp_path, capsys, preset):
    source = tmp_path / "hr"
    write_photos(source, [(128, 128), (40, 40)])                   # 40 < the masks' 51-pixel minimum side
    (source / "broken.png").write_bytes(b"not an image")
    (source / "notes.txt").write_text("not an image either")
    assert degrade(source, tmp_path / "out", "--preset", preset, "--crop", "128") == 0
    printed = capsys.readouterr().out
    assert "skipped" in printed and "broken.png" in printed and "img_01.png" in printed
    assert [p.name for p in (tmp_path / "out" / "lq").iterdir()] == ["img_00.png"]
    (source / "img_00.png").unlink()
    assert degrade(source, tmp_path / "none", "--preset", preset) == 2    # nothing usable: an error
