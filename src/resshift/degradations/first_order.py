"""First-order test degradation of the ResShift paper (Yue et al. 2023, appendix B.1, *ImageNet-Test*).

Real-ESRGAN without its second order, y = JPEG((x ⊛ k)↓ + n):
  blur: isotropic (p = 0.6) or anisotropic (p = 0.4) Gaussian, 13x13 window, σ (each axis) ~ U[0.2, 0.8];
  downsampling: ``torch.nn.functional.interpolate`` by 1/sf, mode drawn from area / bilinear / bicubic;
  noise: Gaussian (σ ~ U[1, 15] levels) or Poisson (scale ~ U[0.05, 0.3]) with probability [0.5, 0.5];
  JPEG with quality ~ U[70, 95]; finally clamp and round to 8 bits.
The paper gives no rotation range (Real-ESRGAN's U[-π, π] is used) and no grey noise (off by default).
Every choice is drawn per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from resshift.degradations.kernels import random_mixed_kernel
from resshift.degradations.checks import check_prob, check_probs, check_range
from resshift.degradations.realesrgan import (RESIZE_MODES, add_gaussian_noise, add_poisson_noise, check_batch,
                                              filter2d, jpeg)
from resshift.configs import Config
from resshift.errors import ConfigError, InputError


@dataclass(frozen=True)
class FirstOrderDegradation(Config):
    """Parameters of the paper's ImageNet-Test degradation; defaults are appendix B.1's values."""

    sf: int = 4
    kernel_size: int = 13
    kernel_prob: tuple[float, float] = (0.6, 0.4)  # isotropic, anisotropic Gaussian
    blur_sigma: tuple[float, float] = (0.2, 0.8)
    gaussian_noise_prob: float = 0.5  # otherwise Poisson
    noise_range: tuple[float, float] = (1.0, 15.0)
    poisson_scale_range: tuple[float, float] = (0.05, 0.3)
    gray_noise_prob: float = 0.0
    jpeg_range: tuple[float, float] = (70.0, 95.0)

    def __post_init__(self) -> None:
        if not isinstance(self.sf, int) or self.sf < 1:
            raise ConfigError(f"sf must be a positive integer, got {self.sf!r}.")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be a positive odd number, got {self.kernel_size}.")
        check_probs("kernel_prob", self.kernel_prob, 2)
        check_range("blur_sigma", self.blur_sigma, 1e-3, math.inf)
        check_range("noise_range", self.noise_range, 0.0, 255.0)
        check_range("poisson_scale_range", self.poisson_scale_range, 0.0, math.inf)
        check_range("jpeg_range", self.jpeg_range, 1.0, 100.0)
        check_prob("gaussian_noise_prob", self.gaussian_noise_prob)
        check_prob("gray_noise_prob", self.gray_noise_prob)


def _downsample(x: Tensor, size: tuple[int, int], modes: Tensor) -> Tensor:
    """Resize each image of (N,C,H,W) to ``size`` with its own mode index into RESIZE_MODES."""
    out = x.new_empty(x.shape[:2] + size)
    for i, mode in enumerate(RESIZE_MODES):
        chosen = (modes == i).nonzero().flatten()
        if chosen.numel():
            out[chosen] = F.interpolate(x[chosen], size=size, mode=mode)
    return out


def degrade_first_order(hr: Tensor, config: FirstOrderDegradation, generator: torch.Generator) -> Tensor:
    """Paper B.1 degradation of an HR batch: (N,3,H,W) in [0,1] -> LR (N,3,H/sf,W/sf) on the 1/255 grid.

    All randomness comes from ``generator`` (on the images' device); dtype and device follow ``hr``.
    """
    cfg, g = config, generator
    check_batch(hr, g, cfg.sf, min_lr_side=1)
    if min(hr.shape[-2:]) <= cfg.kernel_size // 2:
        raise InputError(f"{tuple(hr.shape[-2:])} images are too small for a {cfg.kernel_size}-pixel blur kernel.")
    n, _, h, w = hr.shape
    x = hr.to(torch.promote_types(hr.dtype, torch.float32))

    def uniform(low: float, high: float) -> Tensor:  # (n,) on the generator's device
        return low + (high - low) * torch.rand(n, generator=g, device=g.device)

    kernels = random_mixed_kernel(n, cfg.kernel_size, g, kernel_list=("iso", "aniso"),
                                  kernel_prob=cfg.kernel_prob, sigma_range=cfg.blur_sigma)  # (N,13,13)
    modes = torch.randint(len(RESIZE_MODES), (n,), generator=g, device=g.device)
    gaussian = uniform(0.0, 1.0) < cfg.gaussian_noise_prob
    gray = uniform(0.0, 1.0) < cfg.gray_noise_prob
    sigma = uniform(*cfg.noise_range)
    scale = uniform(*cfg.poisson_scale_range)
    quality = uniform(*cfg.jpeg_range)

    x = _downsample(filter2d(x, kernels), (h // cfg.sf, w // cfg.sf), modes)  # (N,3,H/sf,W/sf)
    x = torch.where(gaussian.view(n, 1, 1, 1), add_gaussian_noise(x, sigma, gray, g),
                    add_poisson_noise(x, scale, gray, g))
    x = jpeg(x, quality)
    return ((x * 255.0).round().clamp(0, 255) / 255.0).to(hr.dtype)
