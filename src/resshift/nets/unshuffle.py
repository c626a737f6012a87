"""A lossless, parameter-free latent space: pixel-unshuffle (space-to-depth) by a factor f.

Compact models diffuse in this space instead of a VQGAN's: an image (N, 3, H, W) in [-1, 1]
becomes a latent (N, 3 f^2, H/f, W/f) holding exactly the same numbers, so there is nothing to
ship or train, and decoding is exact. It offers the autoencoder interface of the VQGAN
(`encode`, `decode(z, quantize=...)`, `downsample_factor`, `embed_dim`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from resshift.configs import Config
from resshift.errors import ConfigError


@dataclass(frozen=True)
class UnshuffleConfig(Config):
    """factor: image side / latent side."""

    TYPE_NAME: ClassVar[str] = "unshuffle"

    factor: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.factor, int) or self.factor < 1:
            raise ConfigError(f"unshuffle factor must be a positive integer, got {self.factor!r}")

    @property
    def downsample_factor(self) -> int:
        return self.factor

    @property
    def embed_dim(self) -> int:
        return 3 * self.factor ** 2

    @property
    def global_attention(self) -> bool:
        """Nothing here looks beyond a pixel's own f x f cell."""
        return False



class PixelUnshuffleAutoencoder(nn.Module):
    """encode = pixel_unshuffle, decode = pixel_shuffle; exact inverses of each other.

    Like the VQGAN it has `encoder` and `decoder` submodules (parameter-free), which progress bars hook.
    """

    def __init__(self, config: UnshuffleConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = nn.PixelUnshuffle(config.factor)
        self.decoder = nn.PixelShuffle(config.factor)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, 3 f^2, H/f, W/f)
        return self.encoder(x)

    def decode(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        """`quantize` is accepted for interface parity with the VQGAN; this space has no codebook."""
        return self.decoder(z)
