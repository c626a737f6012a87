"""resshift.metrics.blockiness: closed forms on synthetic images, JPEG quality and upscaling on real photos."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch.nn.functional as F
from PIL import Image

from resshift.errors import InputError
from resshift.imageio import from_tensor, to_tensor
from resshift.metrics import blockiness
from resshift.metrics.blockiness import EPSILON

REALSET65 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "resshift_testdata" / "RealSet65"
needs_data = pytest.mark.skipif(not REALSET65.is_dir(), reason=f"test images not found at {REALSET65}")
PHOTOS = ("OST_009.png", "butterfly.png", "tiger.png")   # PNGs that score ~1: no earlier JPEG grid
Y_GAIN = (65.481 + 128.553 + 24.966) / 255  # dY per RGB level when R = G = B


def grey(levels: np.ndarray) -> np.ndarray:
    """(H, W) levels in [0, 255] -> (H, W, 3) uint8 with R = G = B."""
    return np.repeat(levels.astype(np.uint8)[..., None], 3, axis=2)


def nearest(img: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)


def bicubic(img: np.ndarray, scale: int) -> np.ndarray:
    pixels = img.astype(np.float32) / 255
    return from_tensor(F.interpolate(to_tensor(pixels), scale_factor=scale, mode="bicubic").clamp_(0, 1))


def jpeg(img: Image.Image, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def photo(name: str) -> Image.Image:
    return Image.open(REALSET65 / name).convert("RGB")


@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize("axis", [0, 1])
def test_ramp_scores_one(scale: int, axis: int) -> None:
    """Equal steps everywhere in one direction, none in the other: on and off agree, B = 1."""
    height, width = 72 * scale, 80 * scale
    ramp = np.linspace(0.1, 0.9, (height, width)[axis])
    levels = np.broadcast_to(ramp[:, None] if axis == 0 else ramp, (height, width))
    img = np.repeat(levels[..., None], 3, axis=2)                  # float RGB in [0, 1]
    assert blockiness(img, scale) == pytest.approx(1.0, abs=1e-9)


def test_flat_image_scores_one() -> None:
    assert blockiness(np.full((40, 40, 3), 128, np.uint8), 2) == 1.0


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_constant_blocks_score_their_mean_step_over_epsilon(scale: int) -> None:
    """Blocks of 8*scale pixels a side, each one grey level: no step off the grid, so B = (on + eps) / eps
    with `on` the mean of the horizontal and vertical mean |level differences| between neighbouring blocks."""
    levels = np.random.default_rng(scale).integers(0, 256, size=(5, 7))
    img = grey(nearest(levels, 8 * scale))
    step_h = np.abs(np.diff(levels, axis=1)).mean() * Y_GAIN
    step_v = np.abs(np.diff(levels, axis=0)).mean() * Y_GAIN
    expected = ((step_h + step_v) / 2 + EPSILON) / EPSILON
    assert blockiness(img, scale) == pytest.approx(expected, rel=1e-12)
    assert expected > 1000


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_nearest_upscale_scores_as_its_input(scale: int) -> None:
    """Only differences at the grid's sub-pixel phase count, so the steps nearest neighbour puts between
    every LR pixel do not look like blocking: the output scores exactly what the LR scores."""
    img = np.random.default_rng(0).integers(0, 256, size=(50, 60, 3), dtype=np.uint8)
    assert blockiness(nearest(img, scale), scale) == pytest.approx(blockiness(img), rel=1e-12)


@needs_data
@pytest.mark.parametrize("name", PHOTOS)
def test_jpeg_quality_10_scores_well_above_quality_95(name: str) -> None:
    low, high = blockiness(jpeg(photo(name), 10)), blockiness(jpeg(photo(name), 95))
    assert low > 1.5
    assert abs(high - 1) < 0.05
    assert blockiness(np.asarray(photo(name))) == pytest.approx(high, abs=0.02)


@needs_data
@pytest.mark.parametrize("name", PHOTOS)
def test_bicubic_x4_keeps_the_blocks_on_the_mapped_grid_only(name: str) -> None:
    """Bicubic x4 of a quality-10 JPEG: B > 1.5 on the grid mapped to the output (lines every 32 pixels,
    between columns 32k-1 and 32k); half a block off, the grid lines fall in the flat block centres and
    the real edges among the interior steps, so the control reads below 1. A clean photo reads ~1."""
    blocky = bicubic(jpeg(photo(name), 10), 4)
    assert blockiness(blocky, 4) > 1.5
    assert 0.6 < blockiness(blocky, 4, grid_offset=4) < 1.0
    assert abs(blockiness(bicubic(np.asarray(photo(name)), 4), 4) - 1) < 0.05


def test_rejects_images_without_a_grid_line_and_bad_scales() -> None:
    with pytest.raises(InputError, match="at least 33 pixels"):
        blockiness(np.zeros((32, 64, 3), np.uint8), 4)
    assert blockiness(np.zeros((33, 33, 3), np.uint8), 4) == 1.0
    with pytest.raises(InputError, match="positive integer"):
        blockiness(np.zeros((40, 40, 3), np.uint8), 0)
