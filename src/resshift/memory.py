"""How much memory an upscale needs, how much the machine has, and the largest tile that fits.

Memory model (bytes beyond the loaded model, which "available" already excludes):

    need ≈ FIXED_BYTES_PER_OUTPUT_PIXEL × output pixels     full-size buffers: the bicubic-upsampled input,
                                                           the blended decoder output and its weights,
                                                           the [0, 1] copy, the numpy image, the encoder's
                                                           temporaries
         + BYTES_PER_LATENT_PIXEL × latent tile pixels     one tile's activations, the decoder's first
                                                           levels (128 channels at 4x the latent side) first

| name                           | meaning                                                      |
|--------------------------------|--------------------------------------------------------------|
| latent tile                    | tile side on the latent grid (input pixels / `cond_scale`)   |
| `cond_scale`                   | input pixels per latent pixel (1 for x4 SR with the f4 VQGAN) |
| `BYTES_PER_LATENT_PIXEL`       | fp32 activations per latent pixel of one tile, official size |
| `FIXED_BYTES_PER_OUTPUT_PIXEL` | full-image buffers per output pixel (fp32)                   |

How they were measured (2-core CPU, fp32, torch 2.13; `benchmarks/bench_upscale.py --fit` repeats the
first one): peak RSS (`ru_maxrss`) of a fresh process running one untiled image through the official
realsr-v3 networks (random weights, 1 step), minus its RSS after loading the model and a warm-up run:
128x128 input (latent) 674 MiB, 192x192 1621 MiB, 256x256 3400 MiB, a slope of 58,200 bytes per latent
pixel from 128 to 256; the benchmark's fit of 64 and 128 (no warm-up) gave 57,400 and 63,800 bytes in
two runs. Rounded up to 64,000 bytes: a 128x128 tile, the cap, needs ~1.0 GiB.
The fixed part is network-free, so it was measured with the tests' tiny networks, whose tiles need
little: 512x512 -> 2048x2048 took 295 MiB (74 bytes per output pixel, tiles included) and
-> 4096x4096 with --outscale 8 took 558 MiB (35 bytes per final pixel); 64 bytes is an upper bound
for what is alive at once. Freed tile memory is reused for the full-size buffers, so adding the two
terms over-estimates: for 1024x1024 -> 4096x4096 on CPU the model gives ~1.0 + 1.0 GiB on top of the
~0.9-1.3 GiB resident process (weights 0.65 GiB), well under the 6 GiB target. Half precision halves the
activation term. For smaller networks (the tests' tiny ones) the estimate is merely conservative.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import torch

__all__ = ["AUTO_TILE_MAX_LATENT", "BYTES_PER_LATENT_PIXEL", "FIXED_BYTES_PER_OUTPUT_PIXEL",
           "available_memory", "auto_tile", "estimate_peak"]

BYTES_PER_LATENT_PIXEL = 64_000           # fp32 activations of the official networks (see above)
FIXED_BYTES_PER_OUTPUT_PIXEL = 64         # fp32 full-size buffers (see above)
AUTO_TILE_MAX_LATENT = 128                # beyond it, the autoencoder's global attention dominates the time
SAFE_DEFAULT_BYTES = 2 * 1024**3          # when the machine does not say how much memory is free
USABLE_FRACTION = 0.7                     # of the available memory, leaving room for the rest


def available_memory(device: torch.device) -> Optional[int]:
    """Bytes this process can still allocate on `device`, or None when the system does not say.

    CUDA: free memory plus what torch's caching allocator holds unused. CPU on Linux: MemAvailable
    from /proc/meminfo, lowered to the cgroup (container) limit when one is set, and divided among
    the processes that torchrun started on this machine (LOCAL_WORLD_SIZE). Elsewhere: None.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type != "cpu":
        return None
    available, limit = _meminfo_available(), _cgroup_headroom()
    if available is None or limit is not None:
        available = limit if available is None else min(available, limit)
    try:
        sharers = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    except ValueError:
        sharers = 1
    return None if available is None else available // sharers


def _meminfo_available() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024      # reported in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom() -> Optional[int]:
    """cgroup v2 memory.max - memory.current, or None without a limit."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((root / "memory.current").read_text()))
    except (OSError, ValueError):
        return None


def estimate_peak(output_pixels: int, latent_tile: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes beyond the loaded model that one image needs: full-size buffers plus one tile's work."""
    activation = BYTES_PER_LATENT_PIXEL * (0.5 if dtype in (torch.float16, torch.bfloat16) else 1.0)
    return int(FIXED_BYTES_PER_OUTPUT_PIXEL * output_pixels + activation * latent_tile**2)


def auto_tile(latent_size: tuple[int, int], output_pixels: int, *, multiple: int,
              device: torch.device, dtype: torch.dtype = torch.float32,
              available: Optional[int] = None,
              max_latent: Optional[int] = AUTO_TILE_MAX_LATENT) -> tuple[Optional[int], int]:
    """The largest latent tile side that fits in memory, or None when the whole image fits in one.

    Returns (latent tile or None, bytes needed by that choice). The tile is a multiple of `multiple`
    (the denoiser's window constraint), at most `max_latent` (AUTO_TILE_MAX_LATENT for an autoencoder
    with global attention, where larger tiles buy little and make that attention slow; None: memory is
    the only bound), and at least `multiple` even when the budget is smaller than that: the caller
    compares the returned need with the available memory.
    """
    if available is None:
        available = available_memory(device)
    budget = USABLE_FRACTION * (SAFE_DEFAULT_BYTES if available is None else available)
    fixed = estimate_peak(output_pixels, 0, dtype)
    per_pixel = estimate_peak(0, 1, dtype)
    side = math.isqrt(max(0, int(budget - fixed)) // max(1, per_pixel))
    side = max(multiple, min(side, max_latent or side) // multiple * multiple)
    height, width = latent_size
    if height * width <= side**2:
        return None, estimate_peak(output_pixels, math.isqrt(height * width - 1) + 1, dtype)
    return side, estimate_peak(output_pixels, side, dtype)
