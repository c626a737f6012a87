"""ResShiftPipeline: one path from a degraded image to its restoration, for every task.

Contract (what `pipe(image, mask=None, ...)` accepts and returns):

* ``image``: a PIL image (any mode; converted to RGB), a uint8 numpy array (H, W, 3), or a float
  tensor (N, 3, H, W) with values in [0, 1]; or grey: a uint8 array (H, W) or (H, W, 1), a tensor
  (N, 1, H, W). The result has the same kind and layout, is ``scale`` times larger, and (for
  tensors) lies in [0, 1]. Grey images are restored as RGB and come back as BT.601 luma.
* ``mask`` (inpainting only): the same kinds with one channel (or RGB, averaged); 1/white marks the
  pixels to fill. Known pixels are pasted back into the result unless ``paste_back=False``.
* Any size: the input is reflect-padded to the multiple the networks need and the output is
  cropped back. Randomness comes only from ``generator`` (or the given prior ``noise``); a list of
  generators, one per image of a batch, gives each image what it gets alone.

Inside, images live in [-1, 1] and the chain runs in the autoencoder's latent space:
``z_y = encode(upsample(y))``, ``x0 = sample(denoiser, z_y)``, ``image = decode(x0)``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import diffusion, hub
from .checkpoints import (WEIGHTS_NAME, detect_autoencoder, detect_presets, load_weights, read_model_config,
                          read_official, read_safetensors, write_model_folder)
from .errors import CheckpointError, InputError
from .holes import fill_holes
from .imageio import BT601_LUMA
from .nets.autoencoders import build_autoencoder
from .nets.swin_unet import SwinUNet
from .presets import ModelConfig, get_preset
from .schedule import Schedule
from .tiling import tiled_map



def image_to_tensor(image: Any, what: str = "image") -> tuple[torch.Tensor, str]:
    """Any accepted input kind -> (N, C, H, W) float32 in [0, 1], and the kind's name."""
    if isinstance(image, Image.Image):
        mode = "L" if what == "mask" else "RGB"
        array = np.asarray(image.convert(mode))
        return torch.from_numpy(array.copy()).float().div(255).reshape(
            1, array.shape[0], array.shape[1], -1).permute(0, 3, 1, 2), "pil"
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise InputError(f"{what}: numpy input must be uint8 (H, W) or (H, W, C), got "
                             f"{image.dtype} {image.shape}")
        array = image if image.ndim == 3 else image[:, :, None]
        kind = "numpy" if image.ndim == 3 else "numpy-2d"
        return torch.from_numpy(array.copy()).float().div(255).permute(2, 0, 1)[None], kind
    if isinstance(image, torch.Tensor):
        if image.ndim != 4 or not image.is_floating_point():
            raise InputError(f"{what}: tensor input must be float (N, C, H, W), got "
                             f"{image.dtype} {tuple(image.shape)}")
        low, high = image.min().item(), image.max().item()
        if low < -1e-6 or high > 1 + 1e-6 or math.isnan(low + high):
            raise InputError(f"{what}: tensor values must lie in [0, 1], got [{low:.3g}, {high:.3g}]")
        return image.float(), "tensor"
    raise InputError(f"{what}: expected a PIL image, a uint8 numpy array or a float tensor, "
                     f"got {type(image).__name__}")


def tensor_to_kind(tensor: torch.Tensor, kind: str) -> Any:
    """(N, C, H, W) in [0, 1] -> the kind the caller gave."""
    if kind == "tensor":
        return tensor
    array = (tensor[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    if kind == "pil":
        return Image.fromarray(array)
    return array[:, :, 0] if kind == "numpy-2d" else array


def _as_rgb(tensor: torch.Tensor, what: str) -> torch.Tensor:
    """3 channels as they are, a grey one repeated."""
    if tensor.shape[1] in (1, 3):
        return tensor.expand(-1, 3, -1, -1)
    raise InputError(f"{what}: expected 1 (grey) or 3 colour channels, got {tensor.shape[1]}")


def to_luma(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) BT.601 luma, as image files store grey (imageio, Pillow's 'L')."""
    weights = torch.tensor(BT601_LUMA, dtype=rgb.dtype, device=rgb.device)
    return torch.einsum("nchw,c->nhw", rgb, weights)[:, None]


def _as_mask(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.shape[1] not in (1, 3):
        raise InputError(f"mask: expected 1 or 3 channels, got {tensor.shape[1]}")
    return (tensor.mean(dim=1, keepdim=True) > 0.5).float()      # (N, 1, H, W), 1 = fill


class ResShiftPipeline:
    """A ResShift model ready to restore images: `pipe(image)`; see the module docstring."""

    def __init__(self, unet: SwinUNet, autoencoder: torch.nn.Module, config: ModelConfig) -> None:
        self.unet = unet.eval().requires_grad_(False)
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.config = config

    # ------------------------------------------------------------------ building and saving
    @classmethod
    def from_config(cls, config: ModelConfig, *, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> "ResShiftPipeline":
        """A pipeline with freshly initialised (untrained) networks."""
        with torch.device(device):
            unet, autoencoder = SwinUNet(config.unet), build_autoencoder(config.autoencoder)
        return cls(unet, autoencoder, config).to(device, dtype)

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "ResShiftPipeline":
        """Load a folder written by `save_pretrained` (config.json + safetensors weights), or a model
        by name: a bundled one ("realsr-x4") or an official preset ("realsr-v3", downloaded and
        converted into the cache on first use, see `resshift.hub`)."""
        folder = hub.model_folder(str(folder))
        config = read_model_config(folder)
        with torch.device("meta"):
            pipe = cls(SwinUNet(config.unet), build_autoencoder(config.autoencoder), config)
        load_weights(pipe.networks(), read_safetensors(folder / WEIGHTS_NAME), str(folder / WEIGHTS_NAME))
        return pipe.to(device, dtype)

    @classmethod
    def from_official(cls, unet: str | Path, autoencoder: str | Path, task: Optional[str] = None, *,
                      device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32) -> "ResShiftPipeline":
        """Load the official `.pth` files of one preset (e.g. task="realsr-v3").

        Without `task` the preset is recognised from the UNet's keys and file name when that
        is unambiguous.
        """
        unet_state = read_official(unet)
        matches = detect_presets(unet_state, filename=str(unet))
        if task is None:
            if len(matches) != 1:
                raise CheckpointError(
                    f"{unet}: cannot tell the preset from the file alone "
                    f"({'candidates: ' + ', '.join(matches) if matches else 'no official UNet matches'}); "
                    f"pass task=...")
            task = matches[0]
        preset = get_preset(task)
        auto_state = read_official(autoencoder)
        found = detect_autoencoder(auto_state)
        if found is not None and found != preset.config.autoencoder:
            raise CheckpointError(f"{autoencoder}: this autoencoder does not belong to preset {preset.name} "
                                  f"(latent channels {found.embed_dim}, expected {preset.config.autoencoder.embed_dim})")
        config = preset.config
        with torch.device("meta"):
            pipe = cls(SwinUNet(config.unet), build_autoencoder(config.autoencoder), config)
        load_weights(pipe.unet, unet_state, f"{unet} (preset {preset.name})")
        load_weights(pipe.autoencoder, auto_state, str(autoencoder))
        return pipe.to(device, dtype)

    def save_pretrained(self, folder: str | Path, *, dtype: torch.dtype | None = None) -> None:
        """Write config.json and model.safetensors (both networks; optionally cast, e.g. to fp16)."""
        write_model_folder(folder, self.config, self.networks(), dtype)

    def networks(self) -> torch.nn.ModuleDict:
        """Both networks under one state_dict, the layout of model.safetensors."""
        return torch.nn.ModuleDict({"unet": self.unet, "autoencoder": self.autoencoder})

    def to(self, device: str | torch.device | None = None,
           dtype: torch.dtype | None = None) -> "ResShiftPipeline":
        self.unet.to(device=device, dtype=dtype)
        self.autoencoder.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        """Where the denoiser runs (an ONNX Runtime denoiser, `resshift.export`, says the CPU)."""
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def schedule(self, steps: Optional[int] = None) -> Schedule:
        return Schedule.from_config(self.config.schedule, steps)

    @property
    def input_multiple(self) -> int:
        """Input height and width are padded to a multiple of this."""
        latent_multiple = self.unet.config.size_multiple
        factor = self.config.autoencoder.downsample_factor
        return max(1, latent_multiple * factor // self.config.scale)

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def __call__(self, image: Any, mask: Any = None, *, generator: diffusion.Generators = None,
                 noise: Optional[torch.Tensor] = None, steps: Optional[int] = None,
                 paste_back: bool = True, tile: Optional[int] = None, tile_overlap: Optional[int] = None,
                 callback: Optional[Callable[[dict], None]] = None,
                 sampler: diffusion.Sampler = "ancestral") -> Any:
        """Restore `image`; `tile` (input pixels) bounds memory for large images, see `restore`;
        `sampler` "deterministic" takes no noise after the prior (`diffusion.deterministic_step`)."""
        lq, kind = image_to_tensor(image)
        grey = lq.shape[1] == 1
        lq = _as_rgb(lq, "image").to(self.device)
        fill = self._prepare_mask(mask, lq)
        height, width = lq.shape[-2:]
        restored = self.restore(lq, fill, generator=generator, noise=noise, steps=steps,
                                tile=tile, tile_overlap=tile_overlap, callback=callback, sampler=sampler)
        restored = restored[..., : height * self.config.scale, : width * self.config.scale]
        if fill is not None and paste_back:
            restored = restored * fill + lq * (1 - fill)
        restored = restored.clamp(0, 1)
        return tensor_to_kind(to_luma(restored) if grey else restored, kind)

    def _prepare_mask(self, mask: Any, lq: torch.Tensor) -> Optional[torch.Tensor]:
        if self.config.task != "inpaint":
            if mask is not None:
                raise InputError(f"mask: the {self.config.task!r} model takes no mask")
            return None
        if mask is None:
            raise InputError("mask: an inpainting model needs a mask (white = fill)")
        fill = _as_mask(image_to_tensor(mask, "mask")[0]).to(lq.device)
        if fill.shape[-2:] != lq.shape[-2:]:
            raise InputError(f"mask: size {tuple(fill.shape[-2:])} differs from the image's "
                             f"{tuple(lq.shape[-2:])}")
        return fill.expand(lq.shape[0], -1, -1, -1)

    def restore(self, lq: torch.Tensor, fill: Optional[torch.Tensor] = None, *,
                generator: diffusion.Generators = None, noise: Optional[torch.Tensor] = None,
                steps: Optional[int] = None, tile: Optional[int] = None,
                tile_overlap: Optional[int] = None, callback: Optional[Callable[[dict], None]] = None,
                sampler: diffusion.Sampler = "ancestral") -> torch.Tensor:
        """(N, 3, h, w) in [0, 1] -> (N, 3, h'*scale, w'*scale) in [0, 1], h' and w' padded.

        With `tile` (in input pixels; default overlap a quarter of it), the encoder, the denoiser
        and the decoder run tile by tile on the latent grid and blend the tiles smoothly; the chain's
        noise is still drawn once for the whole latent, so tiling changes the result only near tile
        borders, and memory depends on the tile size, not the image size.
        """
        y = self._pad(lq * 2 - 1)                                  # (N, 3, h', w') in [-1, 1]
        conditions = [y]
        if fill is not None:
            fill = self._pad(fill)
            y = self.fill_holes(y, fill)
            conditions = [y, fill * 2 - 1]
        factor = self.config.autoencoder.downsample_factor
        cond_scale = factor // self.config.scale                   # input pixels per latent pixel
        grid = self._tile_grid(tile, tile_overlap, cond_scale, y.shape[-2:])
        z_y = tiled_map(self.encode, [(self.upsample(y), factor)], out_scale=1, **grid)
        model_dtype = self.dtype

        def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            def one_tile(x_tile: torch.Tensor, lq_tile: torch.Tensor, *mask_tile: torch.Tensor):
                extra = {"mask": mask_tile[0].to(model_dtype)} if mask_tile else {}
                return self.unet(x_tile.to(model_dtype), t, lq=lq_tile.to(model_dtype), **extra).float()

            output = tiled_map(one_tile, [(x_t, 1)] + [(c, cond_scale) for c in conditions],
                               out_scale=1, **grid)
            return self.x0_from_output(output, z_y)

        if noise is not None and noise.shape != z_y.shape:
            raise InputError(f"noise: shape {tuple(noise.shape)} differs from the latent's {tuple(z_y.shape)}")
        x0 = diffusion.sample(denoise, z_y, self.schedule(steps), generator=generator,
                              noise=noise, callback=callback, sampler=sampler)
        return (tiled_map(self.decode, [(x0, 1)], out_scale=factor, **grid) + 1) / 2

    def fill_holes(self, y: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        """The network's view of a [-1, 1] image with holes (`fill` 1): the model's `hole_fill`."""
        return fill_holes(y, fill, self.config.hole_fill)

    def x0_from_output(self, output: torch.Tensor, z_y: torch.Tensor) -> torch.Tensor:
        """The x0 prediction from the network's output: itself, or plus z_y (`predict_residual`)."""
        return output + z_y if self.config.predict_residual else output

    def _tile_grid(self, tile: Optional[int], overlap: Optional[int], cond_scale: int,
                   size: torch.Size) -> dict[str, int]:
        """Input-pixel tile and overlap -> latent-grid values for `tiled_map`."""
        latent_size = max(size) // cond_scale
        if tile is None:
            return {"tile": latent_size, "overlap": 0}
        if tile < 1 or (overlap is not None and not 0 <= overlap < tile):
            raise InputError(f"need tile >= 1 and 0 <= tile overlap < tile, got {tile} and {overlap}")
        multiple = self.unet.config.size_multiple
        latent_tile = max(multiple, -(-tile // cond_scale // multiple) * multiple)
        latent_overlap = (tile // 4 if overlap is None else overlap) // cond_scale
        return {"tile": latent_tile, "overlap": min(latent_overlap, latent_tile - 1)}

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        multiple = self.input_multiple
        pad_h, pad_w = (-x.shape[-2]) % multiple, (-x.shape[-1]) % multiple
        if not pad_h and not pad_w:
            return x
        mode = "reflect" if pad_h < x.shape[-2] and pad_w < x.shape[-1] else "replicate"
        return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)

    def upsample(self, y: torch.Tensor) -> torch.Tensor:
        """The official bicubic upsampling of the input before encoding (SR only)."""
        if self.config.scale == 1:
            return y
        return F.interpolate(y, scale_factor=self.config.scale, mode="bicubic")

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """[-1, 1] image -> float32 latent, times the model's latent scale."""
        z = self.autoencoder.encode(image.to(self.dtype)).float()
        return z * self.config.latent_scale

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """float32 latent -> float32 image in [-1, 1] (quantised, as the official sampler)."""
        image = self.autoencoder.decode((latent / self.config.latent_scale).to(self.dtype))
        return image.float().clamp(-1, 1)
