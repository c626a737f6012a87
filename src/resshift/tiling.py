"""Seamless tiled processing: run a function tile by tile and blend the tiles back together.

One mechanism serves the denoiser (latent in, latent out), the decoder (latent in, image out) and the
encoder (image in, latent out). Tiles are laid out on a base grid, the latent grid of size (h, w):

| name        | meaning                                                                        |
|-------------|--------------------------------------------------------------------------------|
| `tile`      | tile side on the base grid (latent pixels)                                     |
| `overlap`   | least overlap of neighbouring tiles on the base grid                           |
| `scale`     | an input's size over the base grid's: 4 for lq in x4 SR and the encoder's image |
| `out_scale` | the output's size over the base grid's: 1 for the denoiser, 4 for the decoder  |

Outputs are weighted by `blend_window` (a raised-cosine ramp where a tile meets a neighbour), summed,
and divided by the summed weights, so a pixel that one tile alone covers gets that tile's value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from resshift.errors import InputError

__all__ = ["blend_window", "tile_starts", "tiled_map"]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of size `tile` covering [0, length), neighbours overlapping by at least `overlap`.

    Tiles step by `tile - overlap` and the last one is moved back to end at `length`; a single tile
    starting at 0 when length <= tile.
    """
    if tile < 1 or not 0 <= overlap < tile:
        raise InputError(f"need tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((length - tile) / stride) + 1
    return [i * stride for i in range(count - 1)] + [length - tile]


def blend_window(
    h: int,
    w: int,
    overlap_h: int,
    overlap_w: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    top: bool = True,
    bottom: bool = True,
    left: bool = True,
    right: bool = True,
) -> torch.Tensor:
    """(h, w) blending weights: a raised-cosine ramp over the overlap on each side that meets a
    neighbour (flag True), 1 elsewhere; strictly positive, so every pixel gets weight."""
    rows = _ramp(h, overlap_h, top, bottom, device, dtype)
    cols = _ramp(w, overlap_w, left, right, device, dtype)
    return rows[:, None] * cols[None, :]  # (h, w)


def _ramp(
    n: int, overlap: int, start: bool, end: bool, device: torch.device | str | None, dtype: torch.dtype
) -> torch.Tensor:
    """1-D weights rising as sin^2 over the first `overlap` samples and falling over the last.

    Sampled at pixel centres, (i + 0.5) / overlap, so no weight is 0 and two ramps meeting over exactly
    `overlap` samples sum to 1.
    """
    weights = torch.ones(n, dtype=torch.float64)
    overlap = min(overlap, n)
    if overlap > 0:
        rise = torch.sin(math.pi / 2 * (torch.arange(overlap, dtype=torch.float64) + 0.5) / overlap) ** 2
        if start:
            weights[:overlap] *= rise
        if end:
            weights[n - overlap :] *= rise.flip(0)
    return weights.to(device=device, dtype=dtype)


def tiled_map(
    fn: Callable[..., torch.Tensor],
    inputs: Sequence[tuple[torch.Tensor, int]],
    *,
    tile: int,
    overlap: int,
    out_scale: int,
    out_channels: int | None = None,
) -> torch.Tensor:
    """Apply `fn` tile by tile to `inputs` and blend the results into one (N, C, h*out_scale, w*out_scale).

    Each input is (tensor (N, C, h*scale, w*scale), scale); `fn(*tiles)` gets each input's region of the
    current base tile and returns that region at out_scale. When the base grid fits in one tile, `fn`
    runs once on the full inputs, so the result is bit-identical to the untiled call. `out_channels`,
    when given, is checked against the first tile's output. Memory: the output, its weights, one tile.
    """
    if out_scale < 1:
        raise InputError(f"out_scale must be >= 1, got {out_scale}")
    h, w = _base_size(inputs)
    starts_y, starts_x = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    if len(starts_y) == len(starts_x) == 1:
        return fn(*(tensor for tensor, _ in inputs))
    tile_h, tile_w = min(tile, h), min(tile, w)
    out_h, out_w = tile_h * out_scale, tile_w * out_scale
    out = weight_sum = None
    for y in starts_y:
        for x in starts_x:
            crops = [t[..., y * s : (y + tile_h) * s, x * s : (x + tile_w) * s] for t, s in inputs]
            result = fn(*crops)  # (N, C, out_h, out_w)
            _check_tile(result, out_h, out_w)
            if out is None:
                out, weight_sum = _buffers(result, h * out_scale, w * out_scale, out_channels)
            window = blend_window(
                out_h,
                out_w,
                overlap * out_scale,
                overlap * out_scale,
                device=out.device,
                dtype=out.dtype,
                # Ramp only where a neighbour takes over; at the image border the tile is alone.
                top=y > 0,
                bottom=y + tile_h < h,
                left=x > 0,
                right=x + tile_w < w,
            )
            oy, ox = y * out_scale, x * out_scale
            region = (..., slice(oy, oy + out_h), slice(ox, ox + out_w))
            out[region] += result.to(out.dtype) * window
            weight_sum[region[1:]] += window
    return (out / weight_sum).to(result.dtype)


def _base_size(inputs: Sequence[tuple[torch.Tensor, int]]) -> tuple[int, int]:
    """The base grid (h, w) that every input's spatial size is a `scale` multiple of."""
    if not inputs:
        raise InputError("tiled_map needs at least one input")
    if any(scale < 1 for _, scale in inputs):
        raise InputError(f"input scales must be >= 1, got {[scale for _, scale in inputs]}")
    first, scale = inputs[0]
    h, w = first.shape[-2] // scale, first.shape[-1] // scale
    for tensor, scale in inputs:
        if tuple(tensor.shape[-2:]) != (h * scale, w * scale):
            raise InputError(
                f"input of spatial size {tuple(tensor.shape[-2:])} with scale {scale} does not fit the "
                f"base grid {h}x{w} (it should be {h * scale}x{w * scale})"
            )
    return h, w


def _buffers(
    result: torch.Tensor, height: int, width: int, out_channels: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeroed output (accumulated in at least float32, so half-precision tiles lose nothing when
    summed) and weight-sum buffers."""
    if out_channels is not None and result.shape[-3] != out_channels:
        raise InputError(f"fn returned {result.shape[-3]} channels, expected out_channels={out_channels}")
    dtype = torch.promote_types(result.dtype, torch.float32)
    out = torch.zeros(*result.shape[:-2], height, width, device=result.device, dtype=dtype)
    return out, torch.zeros(height, width, device=result.device, dtype=dtype)


def _check_tile(result: torch.Tensor, height: int, width: int) -> None:
    if tuple(result.shape[-2:]) != (height, width):
        raise InputError(
            f"fn returned a tile of spatial size {tuple(result.shape[-2:])}, expected {height}x{width} "
            "(the input tile's size on the base grid times out_scale)"
        )
