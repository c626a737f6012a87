"""Image quality metrics as super-resolution papers report them: PSNR/SSIM (BasicSR), NIQE (BasicSR),
and the shift-tolerant perceptual distance ST-LPIPS (also usable as a training loss)."""

from resshift.metrics.niqe import niqe
from resshift.metrics.psnr_ssim import psnr, rgb_to_y, ssim
from resshift.metrics.stlpips import STLPIPS

__all__ = ["STLPIPS", "niqe", "psnr", "rgb_to_y", "ssim"]
