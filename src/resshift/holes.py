"""What an inpainting network sees where the mask says "fill": the official constant or a smooth guess.

The official models set unknown pixels to -1 (black). With `predict_residual` the network then has to
add a large offset inside every hole and none outside, a step it overshoots at the hole border (a
bright halo) and cannot hold deep inside holes larger than its training crops (stripes). A smooth
fill from the known pixels around the hole (pull-push: average the known pixels down a pyramid, then
blend the coarse averages back up) starts the chain near the right colours, so the network only has
to add texture. Telea's fast-marching inpainting (OpenCV) goes further: it carries the colours of the
hole border inward along the image's level lines, so edges that enter a hole continue into it and
the network starts from the classical method's answer and only has to improve on it.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

HOLE_FILLS = ("constant", "smooth", "telea")
TELEA_RADIUS = 3      # OpenCV's documented example radius


def fill_holes(image: torch.Tensor, hole: torch.Tensor, how: str) -> torch.Tensor:
    """(N, C, H, W) image in [-1, 1], (N, 1, H, W) hole mask in {0, 1} -> the image with its holes filled.

    'constant': -1 (the official convention); 'smooth': `smooth_fill`; 'telea': `telea_fill`.
    """
    if how == "constant":
        return torch.where(hole > 0.5, -1.0, image)
    if how == "smooth":
        return smooth_fill(image, hole)
    if how == "telea":
        return telea_fill(image, hole)
    raise ValueError(f"unknown hole fill {how!r}; expected one of {HOLE_FILLS}")


def smooth_fill(image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Pull-push fill: known pixels unchanged, each hole pixel a smooth blend of the known ones around it.

    Pull: halve the premultiplied image and the known-pixel fraction until no cell is empty (or one
    cell is left). Push: from the coarsest level up, every cell keeps its known part and takes the
    rest, in proportion to how much of it is unknown, from the bilinear upsampling of the level
    above. An image with no known pixel becomes 0 (mid-grey).
    """
    known = 1.0 - (hole > 0.5).to(image.dtype)                    # (N, 1, H, W)
    levels = [(image * known, known)]                               # (known-weighted values, known fraction)
    while max(levels[-1][1].shape[-2:]) > 1 and bool((levels[-1][1] == 0).any()):
        values, weight = levels[-1]
        kernel = tuple(min(2, side) for side in weight.shape[-2:])    # a side already 1 stays 1
        levels.append((F.avg_pool2d(values, kernel, ceil_mode=True), F.avg_pool2d(weight, kernel, ceil_mode=True)))
    values, weight = levels[-1]
    filled = values / weight.clamp_min(1e-12)                       # empty cells: 0 / tiny = 0
    for values, weight in reversed(levels[:-1]):
        coarse = F.interpolate(filled, size=values.shape[-2:], mode="bilinear", align_corners=False)
        filled = values + (1 - weight) * coarse
    return filled


def telea_inpaint(pixels: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """(H, W, 3) float image in [0, 1], (H, W) hole mask -> OpenCV's Telea inpainting of its 8-bit copy,
    (H, W, 3) float32 in [0, 1] (every pixel on the 8-bit grid)."""
    eight_bit = np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)
    holes = (hole > 0.5).astype(np.uint8) * 255
    return cv2.inpaint(eight_bit, holes, TELEA_RADIUS, cv2.INPAINT_TELEA).astype(np.float32) / 255


def telea_fill(image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Known pixels unchanged, hole pixels from `telea_inpaint` (per image, on the CPU: OpenCV's)."""
    is_hole = (hole > 0.5).expand_as(image)
    pixels = ((image.detach().float().cpu() + 1) / 2).permute(0, 2, 3, 1).numpy()    # (N, H, W, 3)
    holes = is_hole[:, 0].cpu().numpy()
    inpainted = np.stack([telea_inpaint(p, h) for p, h in zip(pixels, holes)])
    guess = torch.from_numpy(inpainted).permute(0, 3, 1, 2).to(image.device, image.dtype) * 2 - 1
    return torch.where(is_hole, guess, image)
