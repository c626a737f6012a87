"""Colour correction of a restored image against its low-quality input, as in StableSR.

Diffusion restorers can drift in colour; these fixes pull the output's colour back to the input's.

| name        | meaning                                                            |
|-------------|--------------------------------------------------------------------|
| `output`    | the restored image, (N, 3, H, W) in [0, 1]                         |
| `reference` | the low-quality input resized to the output's size, (N, 3, H, W)   |
| low band    | what `levels` dilated blurs leave; high band: everything they remove |

The results are not clipped: values may leave [0, 1] slightly, and the caller clamps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from resshift.errors import InputError

__all__ = ["COLOR_FIXES", "adain_color_fix", "wavelet_color_fix"]


def adain_color_fix(output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Give each channel of `output` the mean and standard deviation of `reference` (AdaIN)."""
    _check_pair(output, reference)
    out_std, out_mean = torch.std_mean(output, dim=(-2, -1), keepdim=True, correction=0)
    ref_std, ref_mean = torch.std_mean(reference, dim=(-2, -1), keepdim=True, correction=0)
    # A flat output channel has nothing to scale: it becomes the reference mean.
    return (output - out_mean) / out_std.clamp_min(1e-6) * ref_std + ref_mean


def wavelet_color_fix(output: torch.Tensor, reference: torch.Tensor, *, levels: int = 5) -> torch.Tensor:
    """Keep the high band of `output` and take the low band from `reference` (StableSR's
    wavelet_reconstruction): detail from the restorer, colour from the input."""
    _check_pair(output, reference)
    return output - _low_band(output, levels) + _low_band(reference, levels)


def _low_band(image: torch.Tensor, levels: int) -> torch.Tensor:
    """What is left after blurs of dilation 1, 2, 4, ...; `image` minus it is the sum of the detail
    bands that StableSR adds up level by level."""
    for level in range(levels):
        image = _dilated_blur(image, 2**level)
    return image


def _dilated_blur(image: torch.Tensor, dilation: int) -> torch.Tensor:
    """3x3 binomial blur with taps `dilation` apart, edges replicated (the a-trous wavelet step)."""
    channels = image.shape[1]
    taps = torch.tensor([0.25, 0.5, 0.25], device=image.device, dtype=image.dtype)
    kernel = (taps[:, None] * taps[None, :]).expand(channels, 1, 3, 3)  # (C, 1, 3, 3), one per channel
    padded = F.pad(image, (dilation,) * 4, mode="replicate")
    return F.conv2d(padded, kernel, groups=channels, dilation=dilation)


def _check_pair(output: torch.Tensor, reference: torch.Tensor) -> None:
    if output.ndim != 4 or output.shape != reference.shape:
        raise InputError(
            f"colour fix needs output and reference of the same (N, C, H, W) shape, got "
            f"{tuple(output.shape)} and {tuple(reference.shape)}; resize the reference to the output first"
        )


# The fixes by the name the CLI, the web form and `RestoreOptions.color_fix` use.
COLOR_FIXES = {"none": None, "wavelet": wavelet_color_fix, "adain": adain_color_fix}
