"""JPEG blockiness of an image or of its upscaled version, without a reference.

A JPEG's luma is coded in 8x8 blocks whose grid starts at pixel (0, 0); at low quality the blocks come
out flat and meet at visible steps. An upscaler that keeps the artefact puts the same steps every
8 * scale output pixels: LR columns 8k-1 | 8k become output columns 8k*scale-1 | 8k*scale.

The measure compares the luma steps across those grid lines with the steps across the other LR pixel
boundaries, inside the blocks:

    B = (on + eps) / (off + eps),   1 = no blocking, > 1 = steps on the grid

Notation (per direction; the same on rows for vertical steps):
    s          scale        output pixels per LR pixel (1: the LR image itself)
    m          boundary     between LR columns m-1 and m, i.e. between output columns m*s-1 and m*s
    d[m]                    mean over rows of |Y[:, m*s] - Y[:, m*s-1]|, Y the BT.601 luma in [16, 235]
    on                      mean of d[m] over grid lines, m = 8k (+ grid_offset)
    off                     mean of d[m] over m = 8k+2 ... 8k+6: block interiors
    eps        EPSILON      0.01 luma levels

`on` and `off` are the means of the horizontal and vertical values, so that an image with steps in one
direction only (a ramp) still scores 1. Three choices keep a smooth upscale at 1:
  * only differences at the same sub-pixel phase as the grid line (between output columns m*s-1 and
    m*s) are compared, so a pattern of period `scale` that any upscaler leaves (nearest neighbour puts
    every step there) is not taken for blocking;
  * the boundaries next to a grid line (m = 8k +- 1) are left out of `off`: an upscaler or a deblocking
    decoder spreads a block edge over them, which would count the artefact in both terms;
  * `eps` keeps the ratio finite when the block interiors are flat (constant blocks score
    (on + eps) / eps, flat images 1) and is far below the off-grid steps of any real photo (> 1 level).

`grid_offset` (LR pixels) moves the grid: at 4, half a block, no grid line is a JPEG block edge. That
control reads about 1 on an image without blocks and below 1 on a blocky one (0.7-0.85 for bicubic x4
of a quality-10 JPEG), whose lines then fall in flat block centres and whose edges fall in `off`. An
image cropped after compression has its grid elsewhere; this measure assumes the origin.

Published alternatives: the generalized block-edge impairment metric (GBIM, Wu & Yuen 1997) takes the
same ratio of grid-line to in-block differences but weights each by luminance and texture masking;
Wang, Bovik & Evans (ICIP 2000) read blockiness from the peaks of the differenced signal's power
spectrum at multiples of 1/8. The plain ratio is used here because it has closed forms for test images
and needs no perceptual constants.
"""

from __future__ import annotations

import numpy as np

from resshift.errors import InputError
from resshift.metrics.psnr_ssim import rgb_to_y

BLOCK = 8           # JPEG block side, LR pixels
EPSILON = 0.01      # luma levels added to both means (see the module docstring)


def blockiness(img: np.ndarray, scale: int = 1, grid_offset: int = 0) -> float:
    """B = (on + eps) / (off + eps) of an RGB image (H, W, 3), uint8 or float in [0, 1]: the mean luma
    step across the JPEG grid lines of its LR input (upscaled `scale` times) over the mean step
    inside the blocks; 1 means no blocking. See the module docstring.

    The image must hold a grid line in each direction: at least 8 * scale + 1 pixels a side.
    """
    if not isinstance(scale, int) or scale < 1:
        raise InputError(f"scale must be a positive integer, got {scale!r}")
    luma = rgb_to_y(img)                                            # (H, W) float64
    on_h, off_h = _grid_means(luma, scale, grid_offset)
    on_v, off_v = _grid_means(luma.T, scale, grid_offset)
    on, off = (on_h + on_v) / 2, (off_h + off_v) / 2
    return float((on + EPSILON) / (off + EPSILON))


def _grid_means(luma: np.ndarray, scale: int, grid_offset: int) -> tuple[float, float]:
    """(on, off): mean |horizontal step| of `luma` (H, W) across grid lines and in block interiors."""
    boundaries = np.arange(1, (luma.shape[1] - 1) // scale + 1)    # m: LR columns m-1 | m
    right = boundaries * scale                                      # output columns m*s (left: m*s - 1)
    steps = np.abs(luma[:, right] - luma[:, right - 1]).mean(axis=0)  # d[m], (M,)
    phase = (boundaries - grid_offset) % BLOCK
    on, off = steps[phase == 0], steps[(phase >= 2) & (phase <= BLOCK - 2)]
    if on.size == 0 or off.size == 0:
        raise InputError(f"a {luma.shape[1]}-pixel side holds no JPEG grid line at scale {scale}: "
                         f"blockiness needs at least {BLOCK * scale + 1} pixels a side")
    return float(on.mean()), float(off.mean())
