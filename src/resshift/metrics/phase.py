"""Sub-pixel phase variance: how strongly an error repeats with the period of a space-to-depth latent.

A network that predicts the f x f pixels of each latent cell as separate channels can let those f^2
"phases" drift apart; the result is a regular grid of period f over the whole image. ST-LPIPS barely sees
such a pattern (its anti-aliased pooling filters it out), so a perceptual loss can trade blur for a grid.
This measure isolates the pattern: split the error into its f^2 phases, average each phase over windows
of `window` cells, and take the variance across phases. A grid of amplitude a scores about a^2; an error
without phase structure (blur, colour shift, random texture) scores about 1 / window^2 of its energy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WINDOW = 8   # latent cells per side of the windows each phase is averaged over


def phase_variance(error: torch.Tensor, period: int = 4, window: int = WINDOW) -> torch.Tensor:
    """Per-image variance across the period x period sub-pixel phases of `error` (N, C, H, W), (N,).

    H and W are cropped to multiples of period * window; images smaller than one window raise."""
    n, c, h, w = error.shape
    cell = period * window
    if h < cell or w < cell:
        raise ValueError(f"phase_variance needs images of at least {cell}x{cell} pixels, got {h}x{w}")
    error = error[..., : h - h % cell, : w - w % cell]
    phases = F.pixel_unshuffle(error, period)                       # (N, C * p^2, H/p, W/p)
    means = F.avg_pool2d(phases, window)                            # per window, per phase
    means = means.view(n, c, period * period, *means.shape[-2:])
    return means.var(dim=2, unbiased=False).mean(dim=(1, 2, 3))
