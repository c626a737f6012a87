"""Model configurations as data: what a model folder's config.json holds, and the official presets.

A preset names one official network with its official diffusion settings, so that
``ResShiftPipeline.from_official(unet=..., autoencoder=..., task="realsr-v3")`` rebuilds exactly
the official model. Tasks differ only in data (conditioning, autoencoder, scale), never in code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from .configs import Config
from .errors import ConfigError
from .holes import HOLE_FILLS
from .nets.autoencoders import AutoencoderConfig
from .nets.swin_unet import SwinUNetConfig
from .nets.vqgan import VQGAN_F4, VQGAN_F8_FACE, VQGANConfig
from .schedule import ScheduleConfig

Task = Literal["sr", "inpaint", "face"]


@dataclass(frozen=True)
class ModelConfig(Config):
    """Everything needed to rebuild a ResShift model; round-trips through config.json.

    scale:        output side / input side (4 for x4 SR, 1 for inpainting and faces).
    latent_scale: the official ``scale_factor`` multiplying encoded latents (1.0 everywhere).
    predict_residual: the network predicts x0 - z_y (a global skip from the LQ latent, so an untrained
                  network already returns the upsampled input) instead of the paper's x0 itself (Eq. 7);
                  the chain and the sampler are unchanged. False for every official model.
    hole_fill:    inpainting only, what the network input shows in the holes: 'constant' (-1, the official
                  convention) or 'smooth' (a pull-push fill from the known pixels, `resshift.holes`).
    """

    task: Task
    scale: int
    schedule: ScheduleConfig
    unet: SwinUNetConfig
    autoencoder: AutoencoderConfig
    latent_scale: float = 1.0
    predict_residual: bool = False
    hole_fill: str = "constant"

    def __post_init__(self) -> None:
        if self.task not in get_args(Task):
            raise ConfigError(f"unknown task {self.task!r}; expected one of {get_args(Task)}")
        if self.hole_fill not in HOLE_FILLS:
            raise ConfigError(f"unknown hole_fill {self.hole_fill!r}; expected one of {HOLE_FILLS}")
        if self.scale < 1:
            raise ConfigError(f"scale must be a positive integer, got {self.scale}")
        if self.unet.cond_mask != (self.task == "inpaint"):
            raise ConfigError("the UNet takes a mask exactly when the task is 'inpaint'")
        channels = self.autoencoder.embed_dim
        if (self.unet.in_channels, self.unet.out_channels) != (channels, channels):
            raise ConfigError(f"the UNet's in/out channels ({self.unet.in_channels}, "
                              f"{self.unet.out_channels}) must equal the latent's {channels}")


@dataclass(frozen=True)
class Preset:
    """An official ResShift model: its configuration and the file names it was released under."""

    name: str
    description: str
    config: ModelConfig
    unet_file: str | None      # as on the release page; None where no official weights were released
    autoencoder_file: str
    # Other names the UNet file goes by: the official inference script saves the inpainting
    # checkpoints it downloads as resshift_inpaint_* (the release says resshift_inpainting_*).
    unet_aliases: tuple[str, ...] = ()


def _official(task: Task, scale: int, num_steps: int, min_noise_level: float, *,
              lq_size: int, autoencoder: VQGANConfig = VQGAN_F4) -> ModelConfig:
    channels = autoencoder.embed_dim
    unet = SwinUNetConfig(in_channels=channels, out_channels=channels, lq_size=lq_size,
                          cond_mask=task == "inpaint")
    schedule = ScheduleConfig(num_steps=num_steps, kappa=2.0, power=0.3,
                              min_noise_level=min_noise_level, sqrt_eta_end=0.99, kind="official")
    return ModelConfig(task=task, scale=scale, schedule=schedule, unet=unet, autoencoder=autoencoder)


_REALSR_15 = _official("sr", 4, 15, 0.04, lq_size=64)

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("realsr-v1", "real-world x4 SR, NeurIPS 2023 release (15 steps)", _REALSR_15,
           "resshift_realsrx4_s15_v1.pth", "autoencoder_vq_f4.pth"),
    Preset("realsr-v2", "real-world x4 SR, improved NeurIPS model (15 steps)", _REALSR_15,
           "resshift_realsrx4_s15_v2.pth", "autoencoder_vq_f4.pth"),
    Preset("realsr-v3", "real-world x4 SR, journal model (4 steps)",
           _official("sr", 4, 4, 0.2, lq_size=64),
           "resshift_realsrx4_s4_v3.pth", "autoencoder_vq_f4.pth"),
    Preset("realsr-x2", "real-world x2 SR (4 steps)", _official("sr", 2, 4, 0.2, lq_size=128),
           None, "autoencoder_vq_f4.pth"),
    Preset("bicsr", "bicubic (MATLAB imresize) x4 SR (4 steps)", _official("sr", 4, 4, 0.2, lq_size=64),
           "resshift_bicsrx4_s4.pth", "autoencoder_vq_f4.pth"),
    Preset("inpaint-imagenet", "natural-image inpainting, 256x256 (4 steps)",
           _official("inpaint", 1, 4, 0.2, lq_size=256),
           "resshift_inpainting_imagenet_s4.pth", "autoencoder_vq_f4.pth",
           unet_aliases=("resshift_inpaint_imagenet_s4.pth",)),
    Preset("inpaint-face", "face inpainting, 256x256 (4 steps)",
           _official("inpaint", 1, 4, 0.2, lq_size=256),
           "resshift_inpainting_face_s4.pth", "celeba256_vq_f4_dim3_face.pth",
           unet_aliases=("resshift_inpaint_face_s4.pth",)),
    Preset("faceir", "blind face restoration of aligned 512x512 crops (4 steps)",
           _official("face", 1, 4, 0.2, lq_size=512, autoencoder=VQGAN_F8_FACE),
           "resshift_faceir_s4.pth", "ffhq512_vq_f8_dim8_face.pth"),
)}


def get_preset(name: str) -> Preset:
    key = name.strip().lower().replace("_", "-")
    if key not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[key]
