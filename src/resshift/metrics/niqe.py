"""NIQE, the "completely blind" image quality evaluator (Mittal, Soundararajan & Bovik 2013), as BasicSR
computes it (`basicsr/metrics/niqe.py`, which matches the official MATLAB release to 4 decimals).

Input contract: one RGB image (H, W, 3), uint8 in [0, 255] or float in [0, 1] (see `psnr_ssim`). It is
scored on its rounded BT.601 Y channel after removing `crop_border` pixels per side; lower is better.
Y is computed in float64 where BasicSR uses float32, so a few pixels near .5 can round the other way:
we match BasicSR to ~1e-13 on 50 of 57 RealSet65 images and to <= 4e-4 on the rest.
The pristine model `niqe_pris_params.npz` is vendored from BasicSR 1.4.2 (see NOTICE_niqe.md).

Notation (equation numbers of the paper, as BasicSR cites them):
    mscn            Î = (I - μ) / (σ + 1), mean-subtracted contrast-normalised coefficients [Eq. 1]
    alpha, beta_l/r α, βl, βr of the asymmetric generalised Gaussian (AGGD) fits [Eq. 7-8]
    mu_*, cov_*     ν, Σ of the multivariate Gaussians, pristine and of the test image [Eq. 10]
"""

from __future__ import annotations

import functools
import math
from importlib import resources

import numpy as np
import torch

from resshift.errors import InputError
from resshift.metrics.psnr_ssim import rgb_to_y

BLOCK = 96  # the official block size, no overlap
AGGD_ALPHAS = np.arange(0.2, 10.001, 0.001)  # grid searched for α, as in the MATLAB code
NEIGHBOURS = ((0, 1), (1, 0), (1, 1), (1, -1))  # horizontal, vertical and both diagonal products


@functools.cache
def pristine_params() -> dict[str, np.ndarray]:
    """ν (1, 36), Σ (36, 36) of the pristine corpus and the 7x7 Gaussian window, from BasicSR."""
    with resources.files(__package__).joinpath("niqe_pris_params.npz").open("rb") as f:
        data = np.load(f)
        return {k: data[k] for k in ("mu_pris_param", "cov_pris_param", "gaussian_window")}


@functools.cache
def _aggd_ratio_table() -> np.ndarray:
    """r(α) = Γ(2/α)² / (Γ(1/α) Γ(3/α)) on the α grid."""
    lgamma = np.vectorize(math.lgamma)
    inv = 1.0 / AGGD_ALPHAS
    return np.exp(2 * lgamma(2 * inv) - lgamma(inv) - lgamma(3 * inv))


def _rms(v: np.ndarray) -> np.floating:
    """Root mean square in v's precision; NaN for an empty selection, as numpy's mean of an empty slice."""
    return np.sqrt(np.mean(v**2)) if v.size else v.dtype.type(np.nan)


def aggd_params(block: np.ndarray) -> tuple[float, float, float]:
    """Moment-matching estimate of AGGD (α, βl, βr) by grid search over α (Lasmar et al. 2009).

    A block without negative or positive values gives NaN β (and α = 0.2), as in BasicSR."""
    v = block.ravel()
    left, right = _rms(v[v < 0]), _rms(v[v > 0])
    with np.errstate(invalid="ignore", divide="ignore"):
        gamma_hat = left / right
        r_hat = np.mean(np.abs(v)) ** 2 / np.mean(v**2)
        r_hat_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    alpha = float(AGGD_ALPHAS[np.argmin((_aggd_ratio_table() - r_hat_norm) ** 2)])
    scale = math.sqrt(math.gamma(1 / alpha) / math.gamma(3 / alpha))
    return alpha, float(left) * scale, float(right) * scale


def block_features(mscn: np.ndarray) -> list[float]:
    """The 18 features of one MSCN block: (α, (βl+βr)/2), then (α, η, βl, βr) per neighbour product [Eq. 7-8]."""
    alpha, beta_l, beta_r = aggd_params(mscn)
    feats = [alpha, (beta_l + beta_r) / 2]
    for shift in NEIGHBOURS:
        alpha, beta_l, beta_r = aggd_params(mscn * np.roll(mscn, shift, axis=(0, 1)))
        eta = (beta_r - beta_l) * math.gamma(2 / alpha) / math.gamma(1 / alpha)
        feats += [alpha, eta, beta_l, beta_r]
    return feats


def _convolve_nearest(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """2-D convolution with edge replication, same size and dtype, accumulated in float64
    (scipy.ndimage.convolve, mode='nearest')."""
    n, (h, w) = window.shape[0], img.shape
    padded = np.pad(img.astype(np.float64), n // 2, mode="edge")
    flipped = window[::-1, ::-1]
    out = sum(flipped[i, j] * padded[i : i + h, j : j + w] for i in range(n) for j in range(n))
    return out.astype(img.dtype)


def mscn(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (I - μ) / (σ + 1) of a float32 image [Eq. 1].

    float32 as in BasicSR matters: in flat regions μ rounds to I exactly, so I - μ is 0 and left out of the
    AGGD fit, where float64 leaves ±1e-13 residues that count as samples (NIQE moves by up to ~0.2).
    """
    mu = _convolve_nearest(img, window)
    sigma = np.sqrt(np.abs(_convolve_nearest(np.square(img), window) - np.square(mu)))
    return (img - mu) / (sigma + 1)


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5, as MATLAB `imresize`."""
    ax = x.abs()
    near = (1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1).type_as(ax)
    far = (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)).type_as(ax)
    return near + far


def _half_taps(in_len: int) -> tuple[torch.Tensor, list[int], int]:
    """MATLAB `imresize` taps for scale 1/2, antialiased: weights (out, taps) float32, each output's first
    tap in the input padded by `pad` mirrored pixels per side, and `pad` (BasicSR `calculate_weights_indices`)."""
    scale, width = 0.5, 8.0  # the 4-tap cubic widened by 1/scale to antialias
    out_len = math.ceil(in_len * scale)
    u = torch.linspace(1, out_len, out_len) / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinates
    taps = math.ceil(width) + 2
    idx = torch.floor(u - width / 2)[:, None] + torch.linspace(0, taps - 1, taps)  # (out, taps)
    weights = scale * _cubic((u[:, None] - idx) * scale)
    weights = weights / weights.sum(dim=1, keepdim=True)
    used = (weights != 0).any(dim=0).nonzero()[:, 0]  # drop all-zero edge taps, as BasicSR does
    weights, idx = weights[:, used.min() : used.max() + 1], idx[:, used.min() : used.max() + 1].long() - 1
    pad = max(int(-idx.min()), int(idx.max()) - in_len + 1, 0)
    return weights, (idx[:, 0] + pad).tolist(), pad


def _pad_symmetric(x: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """Mirror `pad` pixels on both ends of `dim`, edge pixel repeated (MATLAB 'symmetric')."""
    n = x.shape[dim]
    return torch.cat([x.narrow(dim, 0, pad).flip(dim), x, x.narrow(dim, n - pad, pad).flip(dim)], dim)


def imresize_half(img: np.ndarray) -> np.ndarray:
    """MATLAB `imresize(img, 0.5)`, bicubic antialiased, of a 2-D float32 image (BasicSR `imresize`).

    It repeats BasicSR's float32 operations one output row and column at a time, so with the same torch
    build the result is bit-identical. That matters: NIQE counts exact zeros of the MSCN map differently
    from near-zeros, and rounding noise here moved NIQE by up to ~2e-3 on RealSet65.
    """
    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))  # (H, W)
    weights, starts, pad = _half_taps(x.shape[0])
    rows, k = _pad_symmetric(x, pad, 0), weights.shape[1]
    x = torch.stack([rows[s : s + k].t().mv(weights[i]) for i, s in enumerate(starts)])  # (H/2, W)
    weights, starts, pad = _half_taps(x.shape[1])
    cols, k = _pad_symmetric(x, pad, 1), weights.shape[1]
    return torch.stack([cols[:, s : s + k].mv(weights[i]) for i, s in enumerate(starts)], dim=1).numpy()


def _scale_features(img: np.ndarray, grid: tuple[int, int], window: np.ndarray) -> np.ndarray:
    """Features (blocks, 18) of the MSCN map of `img`, cut into a grid of equal non-overlapping blocks."""
    coeffs, (nh, nw) = mscn(img, window), grid
    bh, bw = img.shape[0] // nh, img.shape[1] // nw
    blocks = [coeffs[i * bh : (i + 1) * bh, j * bw : (j + 1) * bw] for j in range(nw) for i in range(nh)]
    return np.array([block_features(block) for block in blocks])


def niqe_y(y: np.ndarray) -> float:
    """NIQE of a rounded Y (or grey) image (H, W) on [0, 255] (BasicSR `niqe`, Eq. 10)."""
    if y.ndim != 2:
        raise InputError(f"expected a single-channel image (H, W), got shape {y.shape}")
    params, grid = pristine_params(), (y.shape[0] // BLOCK, y.shape[1] // BLOCK)
    if grid[0] * grid[1] < 2:
        raise InputError(f"NIQE needs at least two {BLOCK}x{BLOCK} blocks, got a {y.shape[0]}x{y.shape[1]} image")
    img = y[: grid[0] * BLOCK, : grid[1] * BLOCK].astype(np.float32)  # BasicSR's precision, see `mscn`
    half = imresize_half(img / np.float32(255)) * np.float32(255)
    window = params["gaussian_window"]
    feats = np.concatenate([_scale_features(img, grid, window), _scale_features(half, grid, window)], axis=1)
    complete = feats[~np.isnan(feats).any(axis=1)]  # (blocks, 36), blocks without a NaN feature
    if len(complete) < 2:
        raise InputError("NIQE is undefined for this image: fewer than two of its blocks have any texture")
    diff = params["mu_pris_param"][0] - np.nanmean(feats, axis=0)
    cov = (params["cov_pris_param"] + np.cov(complete, rowvar=False)) / 2
    return float(np.sqrt(diff @ np.linalg.pinv(cov) @ diff))


def niqe(img: np.ndarray, crop_border: int = 0) -> float:
    """NIQE of an RGB image on its rounded BT.601 Y channel (BasicSR `calculate_niqe`); lower is better."""
    y = rgb_to_y(img)
    if crop_border < 0 or min(y.shape) <= 2 * crop_border:
        raise InputError(f"crop_border={crop_border} does not fit a {y.shape[0]}x{y.shape[1]} image")
    if crop_border:
        y = y[crop_border:-crop_border, crop_border:-crop_border]
    return niqe_y(np.round(y))
