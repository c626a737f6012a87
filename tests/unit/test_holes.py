"""What an inpainting network sees in the holes: the official -1, the pull-push fill and Telea's inpainting."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from resshift.holes import fill_holes, smooth_fill


def box_hole(height, width, top, bottom, left, right):
    hole = torch.zeros(1, 1, height, width)
    hole[..., top:bottom, left:right] = 1
    return hole


def test_constant_fill_is_the_official_minus_one():
    image = torch.rand(1, 3, 12, 20) * 2 - 1
    hole = box_hole(12, 20, 2, 9, 3, 15)
    filled = fill_holes(image, hole, "constant")
    assert torch.equal(filled[hole.expand_as(image) > 0], torch.full((3 * 7 * 12,), -1.0))
    assert torch.equal(filled[hole.expand_as(image) == 0], image[hole.expand_as(image) == 0])
    with pytest.raises(ValueError, match="unknown hole fill 'blur'"):
        fill_holes(image, hole, "blur")


@pytest.mark.parametrize("size", [(37, 75), (64, 64), (1, 9)])
def test_smooth_fill_keeps_known_pixels_and_stays_within_their_range(size):
    """Every filled value is a convex blend of known ones: within their per-channel min and max."""
    image = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    hole = box_hole(*size, size[0] // 4, max(1, 3 * size[0] // 4), size[1] // 5, 4 * size[1] // 5)
    filled = smooth_fill(image, hole)
    known = hole.expand_as(image) == 0
    assert torch.equal(filled[known], image[known])
    for channel in range(3):
        values = image[:, channel][known[:, channel]]
        inside = filled[:, channel][~known[:, channel]]
        assert values.min() - 1e-6 <= inside.min() and inside.max() <= values.max() + 1e-6


def test_smooth_fill_of_flat_and_split_images():
    """A flat image fills with its colour; a hole centred on a black | white edge fills with mid-grey
    along the edge (by symmetry) and leans to each side's colour away from it."""
    hole = box_hole(32, 32, 8, 24, 8, 24)
    flat = torch.full((1, 3, 32, 32), 0.25)
    torch.testing.assert_close(smooth_fill(flat, hole), flat, rtol=0, atol=1e-6)
    split = torch.cat([torch.full((1, 3, 32, 16), -1.0), torch.ones(1, 3, 32, 16)], dim=3)
    filled = smooth_fill(split, hole)
    torch.testing.assert_close(filled[..., 8:24, 15] + filled[..., 8:24, 16], torch.zeros(1, 3, 16),
                               rtol=0, atol=1e-5)
    assert (filled[..., 8:24, 9] < -0.3).all() and (filled[..., 8:24, 22] > 0.3).all()


def test_smooth_fill_without_known_pixels_is_mid_grey():
    image = torch.rand(1, 3, 16, 24) * 2 - 1
    assert torch.equal(smooth_fill(image, torch.ones(1, 1, 16, 24)), torch.zeros(1, 3, 16, 24))


def test_telea_fill_is_opencvs_inpainting_inside_the_holes_only():
    """Inside the holes: cv2.inpaint (Telea, radius 3) of the 8-bit image, per image of the batch; outside:
    the input, bit for bit (not rounded to 8 bits)."""
    image = torch.rand(2, 3, 24, 40, generator=torch.Generator().manual_seed(1)) * 2 - 1
    hole = torch.cat([box_hole(24, 40, 4, 15, 6, 20), box_hole(24, 40, 10, 22, 18, 37)])
    filled = fill_holes(image, hole, "telea")
    known = hole.expand_as(image) == 0
    assert torch.equal(filled[known], image[known])
    for index in range(2):
        pixels = np.round((image[index].permute(1, 2, 0).numpy() + 1) / 2 * 255).astype(np.uint8)
        reference = cv2.inpaint(pixels, hole[index, 0].numpy().astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA)
        expected = torch.from_numpy(reference).permute(2, 0, 1).float() / 255 * 2 - 1
        inside = hole[index].expand(3, -1, -1) > 0
        torch.testing.assert_close(filled[index][inside], expected[inside], rtol=0, atol=1e-6)


def test_telea_fill_continues_an_edge_across_a_hole():
    """A black | white edge through a hole: Telea carries each side's colour in and keeps the edge far
    sharper than the pull-push fill (mean |value| in the hole, 1 for a perfect edge)."""
    split = torch.cat([torch.full((1, 3, 32, 16), -1.0), torch.ones(1, 3, 32, 16)], dim=3)
    hole = box_hole(32, 32, 8, 24, 8, 24)
    filled = fill_holes(split, hole, "telea")
    assert (filled[..., 8:24, 8:12] < -0.75).all() and (filled[..., 8:24, 20:24] > 0.75).all()
    sharpness = filled[..., 8:24, 8:24].abs().mean()
    assert sharpness > 0.8 and sharpness > smooth_fill(split, hole)[..., 8:24, 8:24].abs().mean() + 0.2


def test_model_config_names_a_known_hole_fill():
    import dataclasses

    from conftest import tiny_config
    from resshift.errors import ConfigError
    config = tiny_config("inpaint", scale=1)
    assert config.hole_fill == "constant"                  # the official convention by default
    for how in ("smooth", "telea"):
        assert dataclasses.replace(config, hole_fill=how).to_dict()["hole_fill"] == how
    with pytest.raises(ConfigError, match="unknown hole_fill 'blur'"):
        dataclasses.replace(config, hole_fill="blur")
