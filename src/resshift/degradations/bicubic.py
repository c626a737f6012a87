"""MATLAB-exact bicubic ``imresize`` on batched (N, C, H, W) tensors.

MATLAB's ``imresize(x, scale, 'bicubic')`` (the resizer behind BasicSR's ``matlab_functions.imresize``
and behind most published SR test sets) differs from ``torch.nn.functional.interpolate``:

* kernel: Keys' cubic convolution with a = -0.5, support [-2, 2];
* antialiasing: when shrinking by ``scale < 1`` the kernel is stretched to ``h(x) = scale * cubic(scale * x)``
  (support 4 / scale), so it also low-passes;
* coordinates: output pixel ``i`` (1-based) samples input position ``u = i / scale + (1 - 1 / scale) / 2``;
* borders: taps outside the image are mirrored with the edge sample repeated ('symmetric' padding).

Each axis is a linear map, so it is written once as a dense (out, in) weight matrix, cached per
(in, out, scale, antialias), and applied with two batched matmuls: ``out = W_h @ x @ W_w^T``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from resshift.errors import ConfigError, InputError

KERNEL_WIDTH = 4.0  # support of the a = -0.5 cubic kernel


def cubic(x: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with a = -0.5, as MATLAB's ``imresize`` uses it."""
    ax = x.abs()
    ax2, ax3 = ax**2, ax**3
    inner = 1.5 * ax3 - 2.5 * ax2 + 1.0
    outer = -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    return torch.where(ax <= 1, inner, torch.where(ax <= 2, outer, torch.zeros_like(ax)))


@lru_cache(maxsize=64)
def _resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True) -> Tensor:
    """(out_len, in_len) float64 CPU matrix of MATLAB's bicubic weights along one axis."""
    shrink = antialias and scale < 1
    width = KERNEL_WIDTH / scale if shrink else KERNEL_WIDTH
    taps = math.ceil(width) + 2
    i = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = i / scale + 0.5 * (1 - 1 / scale)  # (out,) input-space centre, 1-based
    left = torch.floor(u - width / 2)
    j = left[:, None] + torch.arange(taps, dtype=torch.float64)  # (out, taps) 1-based input taps
    dist = u[:, None] - j
    w = scale * cubic(scale * dist) if shrink else cubic(dist)
    w = w / w.sum(dim=1, keepdim=True)
    # 'symmetric' extension: the sequence 1..n, n..1 repeats with period 2n
    j0 = torch.remainder(j.long() - 1, 2 * in_len)  # (out, taps) 0-based in [0, 2n)
    src = torch.where(j0 < in_len, j0, 2 * in_len - 1 - j0)
    matrix = torch.zeros(out_len, in_len, dtype=torch.float64)
    matrix.scatter_add_(1, src, w)
    return matrix


def _output_size(h: int, w: int, scale: float | tuple[float, float] | None,
                 size: tuple[int, int] | None) -> tuple[int, int, float, float]:
    """(out_h, out_w, scale_h, scale_w) following MATLAB: size wins its scale, a scale rounds up the size."""
    if (scale is None) == (size is None):
        raise ConfigError("imresize needs exactly one of `scale` (e.g. 0.25) or `size` (e.g. (64, 64)).")
    if size is not None:
        out_h, out_w = (int(s) for s in size)
        if out_h < 1 or out_w < 1:
            raise ConfigError(f"imresize size must be positive, got {size}.")
        return out_h, out_w, out_h / h, out_w / w
    sh, sw = (float(scale), float(scale)) if isinstance(scale, (int, float)) else tuple(map(float, scale))
    if sh <= 0 or sw <= 0:
        raise ConfigError(f"imresize scale must be positive, got {scale}.")
    return math.ceil(h * sh), math.ceil(w * sw), sh, sw


def imresize(x: Tensor, scale: float | tuple[float, float] | None = None,
             size: tuple[int, int] | None = None, antialias: bool = True) -> Tensor:
    """Resize (N, C, H, W) floats exactly like MATLAB ``imresize(..., 'bicubic')``; no clamping or rounding.

    Give either ``scale`` (output ``ceil(H * scale)``) or ``size=(out_h, out_w)``. Computes in the
    input's dtype (float64 reproduces MATLAB's arithmetic) on the input's device.
    """
    if x.ndim != 4 or not x.is_floating_point():
        raise InputError(f"imresize expects a float (N, C, H, W) tensor, got {tuple(x.shape)} {x.dtype}.")
    h, w = x.shape[-2:]
    out_h, out_w, sh, sw = _output_size(h, w, scale, size)
    wh = _resize_matrix(h, out_h, sh, antialias).to(device=x.device, dtype=x.dtype)  # (out_h, H)
    ww = _resize_matrix(w, out_w, sw, antialias).to(device=x.device, dtype=x.dtype)  # (out_w, W)
    return wh @ x @ ww.T  # (N, C, out_h, out_w)
