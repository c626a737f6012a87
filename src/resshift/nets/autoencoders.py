"""The autoencoders a model can diffuse in: the interface they share, and one closed table config <-> network."""

from __future__ import annotations

from typing import Protocol, Union

import torch
from torch import nn

from .unshuffle import PixelUnshuffleAutoencoder, UnshuffleConfig
from .vqgan import VQGAN, VQGANConfig

AutoencoderConfig = Union[VQGANConfig, UnshuffleConfig]


class Autoencoder(Protocol):
    """What the pipeline and the trainer call on an autoencoder: images in [-1, 1] <-> latents.

    `decode(z, quantize=False)` skips the VQGAN's vector quantisation, so that a loss on decoded
    images sends gradients back to the latent (the pixel-unshuffle decoder is exact either way).
    """

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor: ...
# Each config type's network; a config.json names the type by the config class's TYPE_NAME.
NETWORKS: dict[type, type[nn.Module]] = {VQGANConfig: VQGAN, UnshuffleConfig: PixelUnshuffleAutoencoder}


def build_autoencoder(config: AutoencoderConfig) -> nn.Module:
    return NETWORKS[type(config)](config)
