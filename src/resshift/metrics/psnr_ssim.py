"""PSNR and SSIM as super-resolution papers report them (BasicSR `calculate_psnr` / `calculate_ssim`).

Input contract: RGB images as numpy arrays of shape (H, W, 3), either uint8 in [0, 255] or floating
point in [0, 1]. Both are brought to float64 on the [0, 255] scale before anything is computed.

By default the metrics are computed on the Y channel of ITU-R BT.601 YCbCr (MATLAB `rgb2ycbcr`),
after removing `crop_border` pixels on each side; `y_channel=False` computes them on RGB instead
(SSIM is then the mean over the three channels).

Notation (Wang et al. 2004, "Image quality assessment: from error visibility to structural similarity"):
    mu_x, mu_y     μx, μy   Gaussian-weighted local means
    var_x, var_y   σx², σy² local variances
    cov_xy         σxy      local covariance
    c1, c2         C1 = (K1 L)², C2 = (K2 L)² with K1 = 0.01, K2 = 0.03, L = 255
"""

from __future__ import annotations

import math

import numpy as np

from resshift.errors import InputError

PEAK = 255.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = (0.01 * PEAK) ** 2
SSIM_C2 = (0.03 * PEAK) ** 2
BT601_Y = np.array([65.481, 128.553, 24.966])  # Y weights for R, G, B in [0, 1]; offset 16


def to_255(img: np.ndarray) -> np.ndarray:
    """An RGB image (H, W, 3), uint8 in [0, 255] or float in [0, 1], as float64 on the [0, 255] scale."""
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
        shape = getattr(img, "shape", type(img).__name__)
        raise InputError(f"expected an RGB numpy array of shape (H, W, 3), got {shape}")
    if img.dtype == np.uint8:
        return img.astype(np.float64)
    if not np.issubdtype(img.dtype, np.floating):
        raise InputError(f"expected uint8 in [0, 255] or float in [0, 1], got dtype {img.dtype}")
    if img.size and (img.min() < 0 or img.max() > 1):
        raise InputError("float images must lie in [0, 1]; pass uint8 for the [0, 255] range")
    return img.astype(np.float64) * PEAK


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Y of ITU-R BT.601 YCbCr (MATLAB `rgb2ycbcr`): 16 + 65.481 R + 128.553 G + 24.966 B, RGB in [0, 1].

    Takes the input contract of this module; returns (H, W) float64 in [16, 235], not rounded.
    """
    return 16.0 + to_255(img) @ BT601_Y / PEAK


def _prepare(
    img: np.ndarray, img2: np.ndarray, crop_border: int, y_channel: bool, min_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Both images as (H, W, C) float64 on [0, 255], cropped and converted to Y when asked."""
    if getattr(img, "shape", None) != getattr(img2, "shape", None):
        raise InputError(f"images differ in shape: {getattr(img, 'shape', None)} vs {getattr(img2, 'shape', None)}")
    if crop_border < 0:
        raise InputError(f"crop_border must be >= 0, got {crop_border}")
    h, w = img.shape[:2]
    if min(h, w) - 2 * crop_border < min_size:
        raise InputError(f"a {h}x{w} image minus crop_border={crop_border} on each side is below {min_size} pixels")
    crop = (slice(crop_border, h - crop_border), slice(crop_border, w - crop_border))
    if y_channel:
        return rgb_to_y(img)[crop][..., None], rgb_to_y(img2)[crop][..., None]
    return to_255(img)[crop], to_255(img2)[crop]


def psnr(img: np.ndarray, img2: np.ndarray, crop_border: int = 0, y_channel: bool = True) -> float:
    """PSNR in dB, 10 log10(255² / MSE); `inf` for identical images (BasicSR `calculate_psnr`)."""
    x, y = _prepare(img, img2, crop_border, y_channel, min_size=1)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(PEAK**2 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian (OpenCV `getGaussianKernel`); SSIM's 2-D window is its outer product."""
    t = np.arange(size) - (size - 1) / 2
    k = np.exp(-(t**2) / (2 * sigma**2))
    return k / k.sum()


def _filter_valid(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """'valid' 2-D filtering of (H, W) with the separable window outer(k, k): (H-n+1, W-n+1)."""
    n = k.size
    x = np.lib.stride_tricks.sliding_window_view(x, n, axis=0) @ k  # (H-n+1, W)
    return np.lib.stride_tricks.sliding_window_view(x, n, axis=1) @ k  # (H-n+1, W-n+1)


def _ssim_channel(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM map of one channel on [0, 255] (Wang et al. 2004, Eq. 13; BasicSR `_ssim`)."""
    k = gaussian_window()
    mu_x, mu_y = _filter_valid(x, k), _filter_valid(y, k)
    var_x = _filter_valid(x * x, k) - mu_x**2
    var_y = _filter_valid(y * y, k) - mu_y**2
    cov_xy = _filter_valid(x * y, k) - mu_x * mu_y
    num = (2 * mu_x * mu_y + SSIM_C1) * (2 * cov_xy + SSIM_C2)
    den = (mu_x**2 + mu_y**2 + SSIM_C1) * (var_x + var_y + SSIM_C2)
    return float(np.mean(num / den))


def ssim(img: np.ndarray, img2: np.ndarray, crop_border: int = 0, y_channel: bool = True) -> float:
    """SSIM, 11x11 Gaussian window (σ 1.5), 'valid' filtering; mean over channels (BasicSR `calculate_ssim`)."""
    x, y = _prepare(img, img2, crop_border, y_channel, min_size=SSIM_WINDOW)
    return float(np.mean([_ssim_channel(x[..., c], y[..., c]) for c in range(x.shape[2])]))
