"""The training loss of one batch, term by term (notation: `resshift.training.trainer`).

    mse                   mean (pred - z0)^2: Eq. 8 without its weights, as the official code trains
    perceptual            ST-LPIPS(decode(pred), hq), the journal's pixel-space term, times its weight
    phase                 phase_variance(decode(pred) - hq, optim.phase_period or f): keeps the f x f
                          sub-pixel phases of a space-to-depth latent together (ours; the perceptual term
                          alone lets them drift)
    shift                 mean (roll^-1 pred(rolled batch) - pred)^2 in the holes (whole image for SR): the
                          same batch rolled by a random offset must give the rolled prediction, so nothing
                          the network adds may depend on where the latent cells and Swin windows fall
                          (ours: on featureless holes the perceptual term otherwise draws a plaid)
    gan                   generator_loss(D(decode(pred))): the non-saturating adversarial term against a
                          per-pixel discriminator D (Real-ESRGAN's), which the trainer updates in turn

`training_loss` returns every term per sample, unweighted, and `loss`, their weighted sum.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from resshift import diffusion
from resshift.data import KEY_NOISE, KEY_SHIFT, keyed_generator
from resshift.errors import CheckpointError, ConfigError
from resshift.metrics import phase_variance
from resshift.metrics.phase import WINDOW as PHASE_WINDOW
from resshift.nets.autoencoders import Autoencoder
from resshift.nets.discriminator import generator_loss
from resshift.nets.unshuffle import UnshuffleConfig
from resshift.pipeline import ResShiftPipeline

SHIFT_RANGE = 64     # input pixels: offsets of the shift term cover the compact UNet's 1/2-stage Swin window
SHIFT_MARGIN = 16    # output pixels by each border that the shift term leaves out: the wrapped seam's reach


def decode_for_loss(pipe: ResShiftPipeline, latent: torch.Tensor) -> torch.Tensor:
    """Latent -> image in [-1, 1] with gradients, not quantised (as the official perceptual loss)."""
    autoencoder: Autoencoder = pipe.autoencoder
    image = autoencoder.decode((latent / pipe.config.latent_scale).to(pipe.dtype), quantize=False)
    return image.float().clamp(-1, 1)


def build_perceptual(weight: float, net: str, device: torch.device) -> Optional[torch.nn.Module]:
    if weight == 0:
        return None
    try:
        from resshift.metrics.stlpips import STLPIPS
        return STLPIPS.from_package(net).to(device).eval()
    except (ImportError, CheckpointError) as exc:
        raise ConfigError(f"optim.perceptual_weight={weight} needs the ST-LPIPS weights ({exc}). Install them "
                          f"with `pip install stlpips-pytorch==0.0.2`, or set optim.perceptual_weight=0") from exc


def check_phase_crop(weight: float, crop_size: int, period: int) -> None:
    smallest = period * PHASE_WINDOW
    if weight > 0 and crop_size < smallest:
        raise ConfigError(f"optim.phase_weight needs data.crop_size >= {smallest} (windows of {PHASE_WINDOW} latent "
                          f"cells of {period} px), got {crop_size}")


def draw_t_and_noise(samples: torch.Tensor, seed: int, num_steps: int,
                     like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample id: t ~ U{0..T-1} and a standard normal latent, from a CPU generator keyed by the id."""
    ts, noise = [], []
    for sample in samples.tolist():
        g = keyed_generator(seed, KEY_NOISE, sample)
        ts.append(torch.randint(num_steps, (1,), generator=g))
        noise.append(torch.randn(like.shape[1:], generator=g))
    return torch.cat(ts).to(like.device), torch.stack(noise).to(like.device, like.dtype)


def check_shift(weight: float, pipe: ResShiftPipeline, crop_size: int) -> None:
    if weight > 0 and not isinstance(pipe.config.autoencoder, UnshuffleConfig):
        raise ConfigError("optim.shift_weight needs the pixel-unshuffle latent (model.config.autoencoder.type: "
                          "unshuffle), whose latent rolls by any number of pixels")
    if weight > 0 and crop_size * pipe.config.scale <= 4 * SHIFT_MARGIN:
        raise ConfigError(f"optim.shift_weight needs HQ crops over {4 * SHIFT_MARGIN} pixels, got "
                          f"{crop_size * pipe.config.scale}")


def draw_shift(samples: torch.Tensor, seed: int) -> tuple[int, int]:
    """The batch's roll for the shift term, (dy, dx) in input pixels, keyed by its first sample id."""
    dy, dx = torch.randint(1, SHIFT_RANGE, (2,), generator=keyed_generator(seed, KEY_SHIFT, int(samples[0])))
    return int(dy), int(dx)


def roll_latent(latent: torch.Tensor, shift: tuple[int, int], factor: int) -> torch.Tensor:
    """A pixel-unshuffle latent of the image rolled by `shift` pixels (exact: the latent is a permutation)."""
    return F.pixel_unshuffle(torch.roll(F.pixel_shuffle(latent, factor), shift, dims=(-2, -1)), factor)


def shift_inconsistency(predict, pipe: ResShiftPipeline, x_t: torch.Tensor, z_y: torch.Tensor,
                        cond: dict[str, torch.Tensor], pred: torch.Tensor, shift: tuple[int, int],
                        hole: Optional[torch.Tensor]) -> torch.Tensor:
    """Per sample: mean squared difference, in the holes (or everywhere) away from the borders, between
    `pred` and the prediction for the batch rolled by `shift` input pixels, rolled back. `predict(x_t,
    z_y, cond)` is the network's x0 prediction; the roll wraps, so the seam lands on the borders."""
    factor, scale = pipe.config.autoencoder.downsample_factor, pipe.config.scale
    out_shift = (shift[0] * scale, shift[1] * scale)
    rolled = predict(roll_latent(x_t, out_shift, factor), roll_latent(z_y, out_shift, factor),
                     {key: torch.roll(value, shift, dims=(-2, -1)) for key, value in cond.items()})
    back = roll_latent(rolled, (-out_shift[0], -out_shift[1]), factor)
    inner = (..., slice(SHIFT_MARGIN, -SHIFT_MARGIN), slice(SHIFT_MARGIN, -SHIFT_MARGIN))
    diff = F.pixel_shuffle(back - pred, factor)[inner]                          # (N, C, H', W')
    weight = torch.ones_like(diff[:, :1]) if hole is None else hole[inner].to(diff)
    return (diff.square() * weight).sum(dim=(1, 2, 3)) / (weight.sum(dim=(1, 2, 3)) * diff.shape[1]).clamp_min(1)


def training_loss(model: torch.nn.Module, pipe: ResShiftPipeline, batch: dict[str, torch.Tensor], *,
                  etas: torch.Tensor, seed: int, perceptual: Optional[torch.nn.Module],
                  perceptual_weight: float = 0.0, phase_weight: float = 0.0,
                  phase_period: Optional[int] = None, shift_weight: float = 0.0,
                  discriminator: Optional[torch.nn.Module] = None, gan_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """Per-sample terms {loss, mse, perceptual, phase, shift, gan}, each (N,), for a batch {hq, lq,
    sample[, mask]}; all but loss are unweighted, loss is their weighted sum. The phase period defaults to
    the latent's downsampling factor. With a discriminator, "image" is the decoded prediction, detached,
    (N, 3, H, W) in [0, 1], for the discriminator's own step."""
    hq, lq = batch["hq"], batch["lq"]                                # (N, 3, H, W), (N, 3, H/s, W/s)
    kappa = pipe.config.schedule.kappa
    y = lq * 2 - 1
    cond = {}
    if "mask" in batch:
        y = pipe.fill_holes(y, batch["mask"])                         # as inference shows the holes
        cond["mask"] = batch["mask"] * 2 - 1
    cond["lq"] = y
    with torch.no_grad():
        z0 = pipe.encode(hq * 2 - 1)                                  # (N, C, h, w)
        z_y = pipe.encode(pipe.upsample(y))                          # the conditioning inference uses
    t, noise = draw_t_and_noise(batch["sample"], seed, len(etas), z0)
    eta = etas[t].view(-1, 1, 1, 1)                                   # (N, 1, 1, 1)

    def predict(x_t: torch.Tensor, z_y: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        return pipe.x0_from_output(model(diffusion.scale_model_input(x_t, eta, kappa), t, **cond).float(), z_y)

    x_t = diffusion.q_sample(z0, z_y, eta, kappa, noise)
    pred = predict(x_t, z_y, cond)
    mse = (pred - z0).square().mean(dim=(1, 2, 3))
    terms = {key: torch.zeros_like(mse) for key in ("perceptual", "phase", "shift", "gan")} | {"mse": mse}
    if shift_weight > 0:
        terms["shift"] = shift_inconsistency(predict, pipe, x_t, z_y, cond, pred, draw_shift(batch["sample"], seed),
                                             batch.get("mask"))
    if perceptual is not None or phase_weight > 0 or discriminator is not None:
        image = (decode_for_loss(pipe, pred) + 1) / 2                 # (N, 3, H, W) in [0, 1]
        period = (phase_period or pipe.config.autoencoder.downsample_factor) if phase_weight > 0 else 0
        terms |= image_terms(image, hq, perceptual, period, discriminator)
    terms["loss"] = (mse + perceptual_weight * terms["perceptual"] + phase_weight * terms["phase"]
                     + shift_weight * terms["shift"] + gan_weight * terms["gan"])
    return terms


def image_terms(image: torch.Tensor, hq: torch.Tensor, perceptual: Optional[torch.nn.Module], phase_period: int,
                discriminator: Optional[torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The terms measured on the decoded prediction: perceptual (with a loss network), phase (with a
    period, 0 for none) and gan (with a discriminator, which also returns the detached image)."""
    terms = {}
    if perceptual is not None:
        terms["perceptual"] = perceptual(image, hq).float()
    if phase_period:
        terms["phase"] = phase_variance(image - hq, phase_period)
    if discriminator is not None:
        terms["gan"] = generator_loss(discriminator(image).float())
        terms["image"] = image.detach()
    return terms
