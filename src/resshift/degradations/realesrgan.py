"""Real-ESRGAN second-order degradation (Wang et al. 2021), batched in torch as ResShift trains with it.

Order (BasicSR ``RealESRGANModel.feed_data`` / ResShift ``trainer.prepare_data``):
  stage 1: blur k1 -> random resize -> Gaussian | Poisson noise -> JPEG
  stage 2 (with ``second_order_prob``): [blur k2 with ``second_blur_prob``] -> resize to (H/sf)·s -> noise
  then, in random order: [resize to (H/sf, W/sf) + sinc filter] and JPEG; clamp and round to 8 bits.

Per image: blur kernels, final sinc filter, noise strength, grey-vs-colour noise, JPEG quality.
Per batch (resizing changes the tensor shape): resize direction/scale/mode, Gaussian-vs-Poisson,
whether stage 2 and its blur run, the order of the final two steps — the same split as BasicSR.

Notation: ``sf`` scale factor, ``k1, k2`` stage blur kernels, ``sigma`` Gaussian noise std in 8-bit
levels, ``scale`` Poisson noise gain, ``quality`` JPEG quality in [1, 100].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from resshift.degradations.checks import check_kernel, check_prob, check_probs, check_range
from resshift.degradations.kernels import KERNEL_PROB, KERNEL_TYPES, random_blur_kernel, random_final_sinc
from resshift.configs import Config
from resshift.errors import ConfigError, InputError

RESIZE_MODES = ("area", "bilinear", "bicubic")

# JPEG (ITU-T T.81 Annex K) quantisation tables, row = vertical frequency.
LUMA_TABLE = ((16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55),
              (14, 13, 16, 24, 40, 57, 69, 56), (14, 17, 22, 29, 51, 87, 80, 62),
              (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
              (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99))
CHROMA_TABLE = ((17, 18, 24, 47) + (99,) * 4, (18, 21, 26, 66) + (99,) * 4,
                (24, 26, 56, 99) + (99,) * 4, (47, 66, 99, 99) + (99,) * 4) + ((99,) * 8,) * 4
# JFIF RGB -> YCbCr (offsets 0, 128, 128) and its inverse
RGB_TO_YCC = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
YCC_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))
LUMA_WEIGHTS = (0.2989, 0.587, 0.114)  # grey image for grey Poisson noise (torchvision rgb_to_grayscale)


# ----------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class RealESRGANDegradation(Config):
    """Real-ESRGAN degradation parameters; defaults = official ResShift ``realsr_swinunet_realesrgan256`` (x4).

    Field names follow the official YAML. Blur kernel supports are drawn among the odd sizes
    3 .. ``blur_kernel_size`` - 2 and zero-padded to ``blur_kernel_size`` (ResShift's dataset).
    """

    sf: int = 4
    # stage 1
    blur_kernel_size: int = 21
    kernel_list: tuple[str, ...] = KERNEL_TYPES
    kernel_prob: tuple[float, ...] = KERNEL_PROB
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)
    # stage 2
    second_order_prob: float = 0.5
    second_blur_prob: float = 0.8
    blur_kernel_size2: int = 15
    kernel_list2: tuple[str, ...] = KERNEL_TYPES
    kernel_prob2: tuple[float, ...] = KERNEL_PROB
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[float, float] = (30.0, 95.0)
    # final sinc filter (support drawn like stage-2 kernels, padded to blur_kernel_size2)
    final_sinc_prob: float = 0.8
    # how often the final JPEG comes after the resize to the LR size, so that its 8x8 blocks lie on the LR
    # grid as in a saved JPEG photo (official: 0.5, either order alike); more teaches deblocking
    jpeg_last_prob: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.sf, int) or self.sf < 1:
            raise ConfigError(f"sf must be a positive integer, got {self.sf!r}.")
        check_kernel("", self.blur_kernel_size, self.kernel_list, self.kernel_prob, self.blur_sigma,
                      self.betag_range, self.betap_range)
        check_kernel("2", self.blur_kernel_size2, self.kernel_list2, self.kernel_prob2, self.blur_sigma2,
                      self.betag_range2, self.betap_range2)
        for s in ("", "2"):
            check_probs(f"resize_prob{s}", getattr(self, f"resize_prob{s}"), 3)
            check_range(f"resize_range{s}", getattr(self, f"resize_range{s}"), 1e-3, math.inf, contains=1.0)
            check_range(f"noise_range{s}", getattr(self, f"noise_range{s}"), 0.0, 255.0)
            check_range(f"poisson_scale_range{s}", getattr(self, f"poisson_scale_range{s}"), 0.0, math.inf)
            check_range(f"jpeg_range{s}", getattr(self, f"jpeg_range{s}"), 1.0, 100.0)
            for name in ("sinc_prob", "gaussian_noise_prob", "gray_noise_prob"):
                check_prob(name + s, getattr(self, name + s))
        for name in ("second_order_prob", "second_blur_prob", "final_sinc_prob", "jpeg_last_prob"):
            check_prob(name, getattr(self, name))


def realesrgan_x2() -> RealESRGANDegradation:
    """Official ResShift ``realsr_realesrgan256_x2`` degradation: the x4 values with sf = 2."""
    return RealESRGANDegradation(sf=2)


# ----------------------------------------------------------------------------- random helpers

def _uniform(g: torch.Generator, low: float, high: float, n: int) -> Tensor:
    """(n,) float32 samples of U(low, high) on the generator's device."""
    return low + (high - low) * torch.rand(n, generator=g, device=g.device)


def _chance(g: torch.Generator, p: float) -> bool:
    return torch.rand((), generator=g, device=g.device).item() < p


def _pick(g: torch.Generator, probs: Sequence[float]) -> int:
    weights = torch.tensor(probs, dtype=torch.float32, device=g.device)
    return int(torch.multinomial(weights, 1, generator=g).item())


def _random_scale(g: torch.Generator, probs: Sequence[float], scale_range: Sequence[float]) -> float:
    """Resize factor: up U(1, high), down U(low, 1) or keep 1, chosen with ``probs``."""
    direction = _pick(g, probs)
    bounds = ((1.0, scale_range[1]), (scale_range[0], 1.0), (1.0, 1.0))[direction]
    return float(_uniform(g, *bounds, 1).item())


def _random_mode(g: torch.Generator) -> str:
    return RESIZE_MODES[int(torch.randint(len(RESIZE_MODES), (), generator=g, device=g.device).item())]


# ----------------------------------------------------------------------------- filtering

def filter2d(x: Tensor, kernels: Tensor) -> Tensor:
    """Correlate each image with its own kernel, reflect-padded (BasicSR ``filter2D``): (N,C,H,W), (N,k,k)."""
    n, c, h, w = x.shape
    k = kernels.shape[-1]
    padded = F.pad(x, (k // 2,) * 4, mode="reflect").reshape(1, n * c, h + k - 1, w + k - 1)
    weight = kernels.to(x).repeat_interleave(c, dim=0)[:, None]  # (N*C, 1, k, k)
    return F.conv2d(padded, weight, groups=n * c).reshape(n, c, h, w)


# ----------------------------------------------------------------------------- noise

def add_gaussian_noise(x: Tensor, sigma: Tensor, gray: Tensor, generator: torch.Generator) -> Tensor:
    """x + N(0, (sigma/255)²) per image, one noise map shared by the channels where ``gray``; clamped to [0, 1].

    x (N,C,H,W); sigma (N,) in 8-bit levels; gray (N,) bool.
    """
    n, _, h, w = x.shape
    colour = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    grey = torch.randn((n, 1, h, w), generator=generator, device=x.device, dtype=x.dtype)
    noise = torch.where(gray.view(n, 1, 1, 1), grey, colour) * (sigma.to(x) / 255.0).view(n, 1, 1, 1)
    return (x + noise).clamp(0.0, 1.0)


def _shot_noise(img: Tensor, generator: torch.Generator) -> Tensor:
    """Poisson noise of (N,C,H,W) images quantised to 8 bits, photon count = 2^⌈log2(#grey levels)⌉ (BasicSR)."""
    n = img.shape[0]
    levels = (img * 255.0).round().clamp(0, 255)
    ids = levels.long() + 256 * torch.arange(n, device=img.device).view(n, 1, 1, 1)
    histogram = torch.bincount(ids.flatten(), minlength=256 * n).view(n, 256)
    distinct = (histogram > 0).sum(dim=1).to(img.dtype)
    vals = (2.0 ** torch.ceil(torch.log2(distinct))).view(n, 1, 1, 1)
    quantised = levels / 255.0
    return torch.poisson(quantised * vals, generator=generator) / vals - quantised


def add_poisson_noise(x: Tensor, scale: Tensor, gray: Tensor, generator: torch.Generator) -> Tensor:
    """x + scale · Poisson noise per image, from the luma image where ``gray``; clamped to [0, 1].

    x (N,3,H,W); scale (N,); gray (N,) bool.
    """
    n = x.shape[0]
    colour = _shot_noise(x, generator)
    luma = torch.einsum("nchw,c->nhw", x, x.new_tensor(LUMA_WEIGHTS))[:, None]  # (N,1,H,W)
    grey = _shot_noise(luma, generator)
    noise = torch.where(gray.view(n, 1, 1, 1), grey, colour) * scale.to(x).view(n, 1, 1, 1)
    return (x + noise).clamp(0.0, 1.0)


def _random_noise(x: Tensor, g: torch.Generator, gaussian_prob: float, sigma_range: Sequence[float],
                  scale_range: Sequence[float], gray_prob: float) -> Tensor:
    """Gaussian (with ``gaussian_prob``) or Poisson noise for the whole batch, strengths per image."""
    n = x.shape[0]
    gray = torch.rand(n, generator=g, device=g.device) < gray_prob
    if _chance(g, gaussian_prob):
        return add_gaussian_noise(x, _uniform(g, *sigma_range, n), gray, g)
    return add_poisson_noise(x, _uniform(g, *scale_range, n), gray, g)


# ----------------------------------------------------------------------------- JPEG

def _dct_matrix(like: Tensor) -> Tensor:
    """(8, 8) orthonormal DCT-II matrix D[u, x]; a block's coefficients are D @ B @ Dᵀ."""
    u = torch.arange(8, dtype=torch.float64)[:, None]
    x = torch.arange(8, dtype=torch.float64)[None, :]
    d = torch.cos((2 * x + 1) * u * math.pi / 16) * 0.5
    d[0] /= math.sqrt(2)
    return d.to(like)


def _quantise_blocks(plane: Tensor, table: Tensor) -> Tensor:
    """DCT -> divide by ``table`` -> round -> multiply -> inverse DCT over 8x8 blocks.

    plane (N,C,H,W) level-shifted, H and W multiples of 8; table (N,8,8).
    """
    n, c, h, w = plane.shape
    blocks = plane.reshape(n, c, h // 8, 8, w // 8, 8).transpose(3, 4)  # (N,C,H/8,W/8,8,8)
    d = _dct_matrix(plane)
    q = table.view(n, 1, 1, 1, 8, 8)
    coeffs = torch.round(d @ blocks @ d.T / q) * q
    return (d.T @ coeffs @ d).transpose(3, 4).reshape(n, c, h, w)


def quality_to_scale(quality: Tensor) -> Tensor:
    """IJG quality scaling of the quantisation tables: 50/q below 50, 2 - q/50 from 50 (as BasicSR DiffJPEG)."""
    return torch.where(quality < 50, 50.0 / quality, 2.0 - quality / 50.0)


def jpeg(x: Tensor, quality: Tensor | float) -> Tensor:
    """Batched JPEG compress/decompress in torch (after BasicSR's DiffJPEG): 4:2:0 YCbCr, 8x8 DCT,
    Annex-K tables scaled per image by ``quality`` (IJG rule, entries floored at 1), hard rounding.

    x (N,3,H,W) in [0, 1]; quality float or (N,) in [1, 100]. Sizes are padded to multiples of 16 by
    edge replication (as encoders do) and cropped back. Returns (N,3,H,W) in [0, 1], not 8-bit rounded.
    """
    n, _, h, w = x.shape
    quality = torch.as_tensor(quality, dtype=x.dtype, device=x.device).expand(n)
    factor = quality_to_scale(quality).view(n, 1, 1)
    luma_q = (x.new_tensor(LUMA_TABLE) * factor).clamp_min(1.0)  # (N,8,8)
    chroma_q = (x.new_tensor(CHROMA_TABLE) * factor).clamp_min(1.0)
    padded = F.pad(x, (0, -w % 16, 0, -h % 16), mode="replicate") * 255.0
    ycc = torch.einsum("nchw,dc->ndhw", padded, x.new_tensor(RGB_TO_YCC))  # (N,3,H16,W16), Cb/Cr around 0
    y = _quantise_blocks(ycc[:, :1] - 128.0, luma_q) + 128.0
    cbcr = _quantise_blocks(F.avg_pool2d(ycc[:, 1:], 2), chroma_q)  # (N,2,H16/2,W16/2)
    cbcr = cbcr.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    rgb = torch.einsum("nchw,dc->ndhw", torch.cat([y, cbcr], dim=1), x.new_tensor(YCC_TO_RGB))
    return (rgb.clamp(0.0, 255.0) / 255.0)[:, :, :h, :w]


def _random_jpeg(x: Tensor, g: torch.Generator, quality_range: Sequence[float]) -> Tensor:
    quality = _uniform(g, *quality_range, x.shape[0])
    return jpeg(x.clamp(0.0, 1.0), quality)


# ----------------------------------------------------------------------------- pipeline

def check_batch(hr: Tensor, generator: torch.Generator, sf: int, min_lr_side: int) -> None:
    """Raise InputError unless ``hr`` is a float (N,3,H,W) batch that ``sf`` divides, on the generator's device."""
    if hr.ndim != 4 or hr.shape[1] != 3 or not hr.is_floating_point():
        raise InputError(f"Expected float RGB images (N, 3, H, W) in [0, 1], got {tuple(hr.shape)} {hr.dtype}.")
    h, w = hr.shape[-2:]
    if h % sf or w % sf or min(h, w) // sf < min_lr_side:
        raise InputError(f"H and W must be multiples of sf={sf} with H/sf, W/sf >= {min_lr_side}; got {h}x{w}. "
                         f"Crop the images (e.g. to 256x256) first.")
    if torch.device(generator.device) != hr.device:
        raise InputError(f"The generator is on {generator.device} but the images are on {hr.device}; "
                         f"pass torch.Generator(device={str(hr.device)!r}).")


def _min_lr_side(cfg: RealESRGANDegradation) -> int:
    """Smallest H/sf for which every reflect padding (pad < side) and resize of the pipeline is defined."""
    need = cfg.blur_kernel_size2 // 2 + 1  # stage-2 blur and final sinc
    return max(need,
               math.ceil((cfg.blur_kernel_size // 2 + 1) / cfg.sf),  # stage-1 blur on the HR image
               math.ceil(need / (cfg.sf * cfg.resize_range[0])),  # stage-2 blur after the stage-1 shrink
               math.ceil(1 / cfg.resize_range2[0]))  # stage-2 resize keeps at least one pixel


def degrade(hr: Tensor, config: RealESRGANDegradation, generator: torch.Generator) -> Tensor:
    """Real-ESRGAN second-order degradation of an HR batch: (N,3,H,W) in [0,1] -> LR (N,3,H/sf,W/sf) on the
    1/255 grid. All randomness comes from ``generator`` (on the images' device); dtype and device follow ``hr``."""
    cfg, g = config, generator
    check_batch(hr, g, cfg.sf, _min_lr_side(cfg))
    n, _, h, w = hr.shape
    lr_size = (h // cfg.sf, w // cfg.sf)
    x = hr.to(torch.promote_types(hr.dtype, torch.float32))
    k1 = random_blur_kernel(n, cfg.blur_kernel_size, g, sinc_prob=cfg.sinc_prob, kernel_list=cfg.kernel_list,
                            kernel_prob=cfg.kernel_prob, sigma_range=cfg.blur_sigma,
                            betag_range=cfg.betag_range, betap_range=cfg.betap_range)  # (N,21,21)
    k2 = random_blur_kernel(n, cfg.blur_kernel_size2, g, sinc_prob=cfg.sinc_prob2, kernel_list=cfg.kernel_list2,
                            kernel_prob=cfg.kernel_prob2, sigma_range=cfg.blur_sigma2,
                            betag_range=cfg.betag_range2, betap_range=cfg.betap_range2)  # (N,15,15)
    sinc = random_final_sinc(n, cfg.blur_kernel_size2, cfg.final_sinc_prob, g)  # (N,15,15)

    # stage 1
    x = filter2d(x, k1)
    scale = _random_scale(g, cfg.resize_prob, cfg.resize_range)
    x = F.interpolate(x, scale_factor=scale, mode=_random_mode(g))  # (N,3,⌊H·s⌋,⌊W·s⌋)
    x = _random_noise(x, g, cfg.gaussian_noise_prob, cfg.noise_range, cfg.poisson_scale_range, cfg.gray_noise_prob)
    x = _random_jpeg(x, g, cfg.jpeg_range)

    # stage 2
    if _chance(g, cfg.second_order_prob):
        if _chance(g, cfg.second_blur_prob):
            x = filter2d(x, k2)
        scale = _random_scale(g, cfg.resize_prob2, cfg.resize_range2)
        size = (int(h / cfg.sf * scale), int(w / cfg.sf * scale))
        x = F.interpolate(x, size=size, mode=_random_mode(g))
        x = _random_noise(x, g, cfg.gaussian_noise_prob2, cfg.noise_range2, cfg.poisson_scale_range2,
                          cfg.gray_noise_prob2)

    # [resize to the LR size + sinc] and JPEG, in random order
    if _chance(g, cfg.jpeg_last_prob):
        x = filter2d(F.interpolate(x, size=lr_size, mode=_random_mode(g)), sinc)
        x = _random_jpeg(x, g, cfg.jpeg_range2)
    else:
        x = _random_jpeg(x, g, cfg.jpeg_range2)
        x = filter2d(F.interpolate(x, size=lr_size, mode=_random_mode(g)), sinc)
    return ((x * 255.0).round().clamp(0, 255) / 255.0).to(hr.dtype)  # (N,3,H/sf,W/sf)
