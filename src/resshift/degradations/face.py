"""GFPGAN-style blind face degradation (Wang et al. 2021), batched in torch as ResShift's face restoration
config (``faceir_gfpgan512_lpips``) trains with it.

Order (GFPGAN ``FFHQDegradationDataset``):
  blur k -> bilinear resize by 1/s -> Gaussian noise -> JPEG -> bilinear resize back to (H, W)
  -> grey with ``gray_prob`` -> clamp and round to 8 bits.

Every parameter is drawn per image. The blur runs on the whole batch; the resize/noise/JPEG steps run per
image, since each image has its own low-resolution size.

Notation: ``k`` Gaussian blur kernel (iso or aniso, σ ~ U(blur_sigma), θ ~ U(-π, π)), ``s`` downsampling
factor ~ U(downsample_range) (s < 1 enlarges), ``sigma`` noise std in 8-bit levels, ``quality`` JPEG
quality (integer part of U(jpeg_range), as OpenCV takes it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from resshift.degradations.kernels import random_mixed_kernel
from resshift.configs import Config
from resshift.degradations.checks import check_kernel, check_prob, check_range
from resshift.degradations.realesrgan import add_gaussian_noise, check_batch, filter2d, jpeg

GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as OpenCV's RGB -> grey


@dataclass(frozen=True)
class FaceDegradation(Config):
    """GFPGAN degradation parameters; defaults = official ResShift ``faceir_gfpgan512_lpips`` (512x512 faces)."""

    blur_kernel_size: int = 41
    kernel_list: tuple[str, ...] = ("iso", "aniso")
    kernel_prob: tuple[float, ...] = (0.5, 0.5)
    blur_sigma: tuple[float, float] = (0.1, 15.0)
    downsample_range: tuple[float, float] = (0.8, 32.0)
    noise_range: tuple[float, float] = (0.0, 20.0)
    jpeg_range: tuple[float, float] = (30.0, 100.0)
    gray_prob: float = 0.01

    def __post_init__(self) -> None:
        check_kernel("", self.blur_kernel_size, self.kernel_list, self.kernel_prob, self.blur_sigma,
                      (1.0, 1.0), (1.0, 1.0))
        check_range("downsample_range", self.downsample_range, 1e-3, math.inf)
        check_range("noise_range", self.noise_range, 0.0, 255.0)
        check_range("jpeg_range", self.jpeg_range, 1.0, 100.0)
        check_prob("gray_prob", self.gray_prob)


def to_grey(x: Tensor) -> Tensor:
    """(N,3,H,W) -> (N,3,H,W) with each channel set to the BT.601 luma."""
    luma = torch.einsum("nchw,c->nhw", x, x.new_tensor(GREY_WEIGHTS))[:, None]  # (N,1,H,W)
    return luma.expand_as(x).contiguous()


def _uniform(g: torch.Generator, low: float, high: float, n: int) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=g, device=g.device)


def degrade_face_pair(hq: Tensor, config: FaceDegradation, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(gt, lq): :func:`degrade_face`'s LQ, and the HQ batch greyed where the LQ was greyed (the official
    config sets ``gt_gray: True``, so grey inputs are trained to give grey outputs)."""
    cfg, g = config, generator
    check_batch(hq, g, 1, cfg.blur_kernel_size // 2 + 1)  # reflect padding needs side > K // 2
    n, _, h, w = hq.shape
    x = hq.to(torch.promote_types(hq.dtype, torch.float32))
    kernels = random_mixed_kernel(n, cfg.blur_kernel_size, g, kernel_list=cfg.kernel_list,
                                  kernel_prob=cfg.kernel_prob, sigma_range=cfg.blur_sigma)  # (N,K,K)
    scale = _uniform(g, *cfg.downsample_range, n)
    sigma = _uniform(g, *cfg.noise_range, n)
    quality = _uniform(g, *cfg.jpeg_range, n).floor()
    grey = torch.rand(n, generator=g, device=g.device) < cfg.gray_prob

    x = filter2d(x, kernels)
    out = []
    for i in range(n):
        s = scale[i].item()
        size = (max(1, int(h // s)), max(1, int(w // s)))  # floor division, as the official int(w // scale)
        xi = F.interpolate(x[i:i + 1], size=size, mode="bilinear", align_corners=False)  # (1,3,h/s,w/s)
        xi = add_gaussian_noise(xi, sigma[i:i + 1], torch.zeros(1, dtype=torch.bool, device=x.device), g)
        xi = jpeg(xi, quality[i:i + 1])
        out.append(F.interpolate(xi, size=(h, w), mode="bilinear", align_corners=False))
    x = torch.cat(out)  # (N,3,H,W)
    flag = grey.view(n, 1, 1, 1)
    lq = torch.where(flag, to_grey(x), x)
    lq = ((lq * 255.0).round().clamp(0, 255) / 255.0).to(hq.dtype)
    gt = torch.where(flag, to_grey(hq), hq)
    return gt, lq


def degrade_face(hq: Tensor, config: FaceDegradation, generator: torch.Generator) -> Tensor:
    """GFPGAN degradation of HQ faces: (N,3,H,W) in [0,1] -> LQ (N,3,H,W) on the 1/255 grid (same size).

    All randomness comes from ``generator`` (on the images' device); dtype and device follow ``hq``.
    """
    return degrade_face_pair(hq, config, generator)[1]
