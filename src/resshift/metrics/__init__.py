"""Image quality metrics as super-resolution papers report them: PSNR/SSIM (BasicSR), NIQE (BasicSR),
the shift-tolerant perceptual distance ST-LPIPS (also usable as a training loss), and the sub-pixel
phase variance that measures (and, as a loss, prevents) the grid of a space-to-depth latent, and the
no-reference JPEG blockiness of an upscaled photo."""

from resshift.metrics.blockiness import blockiness
from resshift.metrics.niqe import niqe
from resshift.metrics.phase import phase_variance
from resshift.metrics.psnr_ssim import psnr, rgb_to_y, ssim
from resshift.metrics.stlpips import STLPIPS

__all__ = ["STLPIPS", "blockiness", "niqe", "phase_variance", "psnr", "rgb_to_y", "ssim"]
