"""A U-Net discriminator with spectral normalisation, as Real-ESRGAN trains against (its UNetDiscriminatorSN),
and the non-saturating GAN losses it is trained with.

The network answers "real or fake" for every pixel rather than once per image, so the generator learns
where its output looks wrong (a JPEG block edge, a smeared texture), not only that it does:

    conv_in (3x3)                              (N, C, H, W)      -> (N, f, H, W)          x0
    3 x [SN conv 4x4, stride 2]                x0 -> x1 -> x2 -> x3: (N, 2f, 4f, 8f, H/2, H/4, H/8)
    3 x [bilinear x2, SN conv 3x3] (+ skip)    x3 -> (4f, H/4) + x2 -> (2f, H/2) + x1 -> (f, H) + x0
    2 x SN conv 3x3, conv_out (3x3)            -> (N, 1, H, W) logits

f = `num_feat`; every convolution but the last is followed by LeakyReLU(0.2). As in Real-ESRGAN, the
first and last convolutions are plain (with a bias): spectral normalisation bounds the layers between,
while conv_in keeps the scale of the pixels and conv_out the scale of the logits free. With f = 64 and
RGB input the network has 4,376,897 parameters, Real-ESRGAN's count.

Spectral normalisation (Miyato et al. 2018) divides each weight by an estimate of its largest singular
value, refined by one power iteration per forward pass in training mode
(`torch.nn.utils.parametrizations.spectral_norm`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from resshift.configs import Config
from resshift.errors import ConfigError, InputError

__all__ = ["DiscriminatorConfig", "UNetDiscriminator", "discriminator_loss", "generator_loss"]

LEAK = 0.2
LEVELS = 3      # stride-2 convolutions: inputs must be multiples of 2 ** LEVELS


@dataclass(frozen=True)
class DiscriminatorConfig(Config):
    """num_feat: channels at full resolution (doubled at each level; 64 in Real-ESRGAN, 16-32 for CPU
    training); in_channels: of the images judged; skip_connection: add each encoder level to the decoder."""

    num_feat: int = 64
    in_channels: int = 3
    skip_connection: bool = True

    def __post_init__(self) -> None:
        for name in ("num_feat", "in_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"discriminator {name} must be a positive integer, got {value!r}")
        if not isinstance(self.skip_connection, bool):
            raise ConfigError(f"discriminator skip_connection must be true or false, got {self.skip_connection!r}")



def _sn_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Module:
    """A bias-free convolution that keeps the size (stride 1, 3x3) or halves it (stride 2, 4x4),
    its weight spectrally normalised."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=1, bias=False)
    return spectral_norm(conv)


class UNetDiscriminator(nn.Module):
    """(N, in_channels, H, W) images, H and W multiples of 8 -> (N, 1, H, W) real/fake logits per pixel."""

    def __init__(self, config: DiscriminatorConfig = DiscriminatorConfig()) -> None:
        super().__init__()
        self.config = config
        widths = [config.num_feat * 2 ** level for level in range(LEVELS + 1)]    # f, 2f, 4f, 8f
        self.conv_in = nn.Conv2d(config.in_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList(_sn_conv(widths[i], widths[i + 1], 4, stride=2) for i in range(LEVELS))
        self.up = nn.ModuleList(_sn_conv(widths[i + 1], widths[i], 3) for i in reversed(range(LEVELS)))
        self.refine = nn.ModuleList(_sn_conv(widths[0], widths[0], 3) for _ in range(2))
        self.conv_out = nn.Conv2d(widths[0], 1, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        multiple = 2 ** LEVELS
        if height % multiple or width % multiple:
            raise InputError(f"the discriminator needs sides that are multiples of {multiple}, got {height}x{width}")
        # In-place activations on fresh convolution outputs save one feature map per layer; autograd
        # does not need the values before them.
        skips = [F.leaky_relu(self.conv_in(images), LEAK, inplace=True)]           # (N, f, H, W)
        for conv in self.down:
            skips.append(F.leaky_relu(conv(skips[-1]), LEAK, inplace=True))       # (N, 2^k f, H/2^k, W/2^k)
        features = skips.pop()                                                   # (N, 8f, H/8, W/8)
        for conv in self.up:
            features = F.interpolate(features, scale_factor=2, mode="bilinear", align_corners=False)
            features = F.leaky_relu(conv(features), LEAK, inplace=True)          # half the channels
            skip = skips.pop()
            if self.config.skip_connection:
                features = features + skip
        for conv in self.refine:
            features = F.leaky_relu(conv(features), LEAK, inplace=True)          # (N, f, H, W)
        return self.conv_out(features)                                           # (N, 1, H, W)


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    return values.flatten(1).mean(dim=1) if values.ndim > 1 else values


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss per sample, (N,), of the non-saturating vanilla GAN (Goodfellow et al.
    2014), as Real-ESRGAN uses: binary cross-entropy on logits, real label 1, fake label 0, each the
    mean over a sample's logits: mean softplus(-real) + mean softplus(fake). Give it detached fakes."""
    return _per_sample(F.softplus(-real_logits)) + _per_sample(F.softplus(fake_logits))


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's loss per sample, (N,): BCE(fake, 1) = mean softplus(-fake) over a sample's logits
    (non-saturating: strong gradients while the discriminator still wins). Its weight is the trainer's."""
    return _per_sample(F.softplus(-fake_logits))
