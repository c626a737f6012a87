"""The ResShift training loop: one function, `train`, that reads top to bottom.

Notation (code name <-> paper symbol, 001 Sec. 3 and the journal 002):

    hq, lq      x, y      a high-quality crop in [0, 1] and its degraded version
    z0          x_0       encode(2 hq - 1), the clean latent
    z_y         y_0       encode(upsample(2 lq - 1)), the degraded latent
    t, eta      t, eta_t  t ~ U{1..T} (0-based here), eta_t from the model's schedule
    x_t         x_t       q_sample(z0, z_y, eta_t, kappa, noise)                      (Eq. 2)
    pred        f_theta   UNet(x_t / sqrt(kappa^2 eta_t + 1), t, lq): an x0 prediction (Eq. 7)
    mse                   mean (pred - z0)^2: Eq. 8 without its weights, as the official code trains
    perceptual            ST-LPIPS(decode(pred), hq), the journal's pixel-space term, times its weight
    phase                 phase_variance(decode(pred) - hq, optim.phase_period or f): keeps the f x f
                          sub-pixel phases of a space-to-depth latent together (ours; the perceptual term
                          alone lets them drift)
    shift                 mean (roll^-1 pred(rolled batch) - pred)^2 in the holes (whole image for SR): the
                          same batch rolled by a random offset must give the rolled prediction, so nothing
                          the network adds may depend on where the latent cells and Swin windows fall
                          (ours: on featureless holes the perceptual term otherwise draws a plaid)

A step is `grad_accum` micro-batches on each of the processes; `optim.batch_size` is the global number
of images per optimizer step. Every random draw is keyed by (seed, step or sample): crops and data
order (data.py), timestep and noise per sample, and the LR degradation per (step, rank, micro-batch).
So a resumed run repeats an uninterrupted one exactly, and 1 process with batch 2b computes the same
step as 2 processes with b each (bar the batch-level choices of the Real-ESRGAN degradation).
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import math
import os
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
import yaml
from torch.nn.parallel import DistributedDataParallel

from resshift import diffusion
from resshift.checkpoints import load_weights, read_official, read_safetensors
from resshift.data import (KEY_DEGRADE, KEY_INIT, KEY_NOISE, KEY_SHIFT, KEY_VALIDATION, HRFolderDataset,
                           StreamBatchSampler, keyed_generator, keyed_seed, load_validation_set, make_loader,
                           synthesize_batch)
from resshift.errors import CheckpointError, ConfigError
from resshift.metrics import phase_variance, psnr
from resshift.metrics.phase import WINDOW as PHASE_WINDOW
from resshift.models import model_folder
from resshift.nets.unshuffle import UnshuffleConfig
from resshift.pipeline import CONFIG_NAME, ResShiftPipeline
from resshift.presets import ModelConfig, get_preset
from resshift.training import distributed
from resshift.training.checkpoint import (checkpoint_path, load_checkpoint, prune_checkpoints, rng_state,
                                          save_checkpoint, set_rng_state)
from resshift.training.config import ModelSpec, OptimConfig, TrainConfig, check_task, config_differences
from resshift.training.logs import MetricsLog, draw_curves, sample_grid, to_uint8

log = logging.getLogger(__name__)
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
SHIFT_RANGE = 64     # input pixels: offsets of the shift term cover the compact UNet's 1/2-stage Swin window
SHIFT_MARGIN = 16    # output pixels by each border that the shift term leaves out: the wrapped seam's reach


# --------------------------------------------------------------------------- the model

def pretrained_folder(name: str) -> Path:
    """model.pretrained: a from_pretrained folder or a bundled model's name."""
    folder = model_folder(name)
    if folder is None or not (folder / CONFIG_NAME).is_file():
        raise ConfigError(f"model.pretrained={name}: not a model folder (with {CONFIG_NAME}) nor a bundled "
                          "model name (`resshift models` lists them)")
    return folder


def model_config_of(spec: ModelSpec) -> Optional[ModelConfig]:
    """The architecture a spec names, without loading weights (None when only the weights tell)."""
    if spec.config is not None:
        return spec.config
    if spec.pretrained is not None:
        data = json.loads((pretrained_folder(spec.pretrained) / CONFIG_NAME).read_text())
        data.pop("format_version", None)
        return ModelConfig.from_dict(data)
    return get_preset(spec.preset).config if spec.preset is not None else None


def with_config(pipe: ResShiftPipeline, config: Optional[ModelConfig]) -> ResShiftPipeline:
    """`pipe` under `config` (None: its own), which may change anything but the networks."""
    if config is None:
        return pipe
    for part in ("unet", "autoencoder"):
        if getattr(config, part) != getattr(pipe.config, part):
            raise ConfigError(f"model.config.{part} differs from model.pretrained's: a fine-tune keeps the networks")
    return ResShiftPipeline(pipe.unet, pipe.autoencoder, config)


def build_pipeline(spec: ModelSpec, seed: int) -> ResShiftPipeline:
    """The pipeline to train, on the CPU in float32: fine-tuned weights, or a seeded random UNet whose
    output layer starts at zero."""
    if spec.pretrained is not None:
        return with_config(ResShiftPipeline.from_pretrained(pretrained_folder(spec.pretrained)), spec.config)
    if spec.official_unet is not None:
        return ResShiftPipeline.from_official(spec.official_unet, spec.autoencoder_weights, task=spec.preset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(keyed_seed(seed, KEY_INIT))
        pipe = ResShiftPipeline.from_config(model_config_of(spec))
    # As the official UNet's zero_module: training starts from a zero output (with predict_residual, the input)
    torch.nn.init.zeros_(pipe.unet.out[-1].weight)
    torch.nn.init.zeros_(pipe.unet.out[-1].bias)
    if any(True for _ in pipe.autoencoder.parameters()):
        path = spec.autoencoder_weights
        if path is not None:
            state = read_safetensors(path) if str(path).endswith(".safetensors") else read_official(path)
            load_weights(pipe.autoencoder, autoencoder_part(state), str(path))
        elif not spec.random_autoencoder:
            raise ConfigError("the autoencoder needs trained weights: set model.autoencoder_weights to the official "
                              "autoencoder .pth (e.g. autoencoder_vq_f4.pth) or a model folder's model.safetensors")
        else:
            log.warning("the autoencoder has RANDOM weights (model.random_autoencoder): results are meaningless")
    return pipe


def autoencoder_part(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The autoencoder's entries of a model.safetensors (prefix "autoencoder."), or `state` itself."""
    prefix = "autoencoder."
    if not any(key.startswith(prefix) for key in state):
        return state
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def pipeline_from_checkpoint(state: dict[str, Any], source: str) -> ResShiftPipeline:
    config = ModelConfig.from_dict(state["model_config"])
    with torch.device("meta"):
        pipe = ResShiftPipeline.from_config(config, device="meta")
    load_weights(pipe.unet, state["unet"], f"{source} (unet)")
    load_weights(pipe.autoencoder, state["autoencoder"], f"{source} (autoencoder)")
    return pipe


def decode_for_loss(pipe: ResShiftPipeline, latent: torch.Tensor) -> torch.Tensor:
    """Latent -> image in [-1, 1] with gradients, not quantised (as the official perceptual loss)."""
    z = (latent / pipe.config.latent_scale).to(pipe.dtype)
    decode = pipe.autoencoder.decode
    image = decode(z, quantize=False) if "quantize" in inspect.signature(decode).parameters else decode(z)
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


# --------------------------------------------------------------------------- one step's pieces

def lr_factor(step: int, optim: OptimConfig) -> float:
    """Multiplier of optim.lr at optimizer step `step` (0-based): linear warm-up, cosine to min_lr."""
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    span = max(1, optim.total_steps - optim.warmup_steps)
    progress = min(1.0, (step - optim.warmup_steps) / span)
    low = optim.min_lr / optim.lr
    return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress))


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
                  phase_period: Optional[int] = None, shift_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """Per-sample terms {loss, mse, perceptual, phase, shift}, each (N,), for a batch {hq, lq, sample[, mask]};
    perceptual, phase and shift are unweighted, loss is their weighted sum with mse. The phase period
    defaults to the latent's downsampling factor."""
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
        z_y = pipe.encode(pipe._upsample(y))                          # the conditioning inference uses
    t, noise = draw_t_and_noise(batch["sample"], seed, len(etas), z0)
    eta = etas[t].view(-1, 1, 1, 1)                                   # (N, 1, 1, 1)

    def predict(x_t: torch.Tensor, z_y: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        return pipe.x0_from_output(model(diffusion.scale_model_input(x_t, eta, kappa), t, **cond).float(), z_y)

    x_t = diffusion.q_sample(z0, z_y, eta, kappa, noise)
    pred = predict(x_t, z_y, cond)
    mse = (pred - z0).square().mean(dim=(1, 2, 3))
    terms = {key: torch.zeros_like(mse) for key in ("perceptual", "phase", "shift")} | {"mse": mse}
    if shift_weight > 0:
        terms["shift"] = shift_inconsistency(predict, pipe, x_t, z_y, cond, pred, draw_shift(batch["sample"], seed),
                                             batch.get("mask"))
    if perceptual is not None or phase_weight > 0:
        image = (decode_for_loss(pipe, pred) + 1) / 2                 # (N, 3, H, W) in [0, 1]
        if perceptual is not None:
            terms["perceptual"] = perceptual(image, hq).float()
        if phase_weight > 0:
            terms["phase"] = phase_variance(image - hq, phase_period or pipe.config.autoencoder.downsample_factor)
    terms["loss"] = (mse + perceptual_weight * terms["perceptual"] + phase_weight * terms["phase"]
                     + shift_weight * terms["shift"])
    return terms


def ema_decay_at(step: int, decay: float, warmup: bool) -> float:
    """EMA decay after optimizer step `step` (1-based): with warm-up, min(decay, (1 + step) / (10 + step)),
    so that the initial weights do not linger (0.999 alone keeps 22 % of them after 1500 steps)."""
    return min(decay, (1 + step) / (10 + step)) if warmup else decay


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)
    for mine, theirs in zip(ema.buffers(), model.buffers()):
        mine.copy_(theirs)


@torch.no_grad()
def validate(pipe: ResShiftPipeline, ema: torch.nn.Module, val_set: list[dict], *, seed: int,
             steps: Optional[int], batch: int, autocast) -> tuple[float, list]:
    """Mean PSNR-Y (border = scale) of the EMA model on the cached validation set, and grid rows."""
    sampler = ResShiftPipeline(ema, pipe.autoencoder, pipe.config)
    scores, rows = [], []
    chunks: list[list[dict]] = []                                     # consecutive images of one size
    for item in val_set:
        if chunks and len(chunks[-1]) < batch and chunks[-1][0]["hq"].shape == item["hq"].shape:
            chunks[-1].append(item)
        else:
            chunks.append([item])
    for index, chunk in enumerate(chunks):
        lq = torch.cat([item["lq"] for item in chunk]).to(pipe.device)
        mask = torch.cat([item["mask"] for item in chunk]).to(pipe.device) if "mask" in chunk[0] else None
        with autocast:
            out = sampler.restore(lq, mask, generator=keyed_generator(seed, KEY_VALIDATION, 1_000_000 + index),
                                  steps=steps).float()
        for item, image in zip(chunk, out):
            hq = item["hq"][0]
            image = image[:, : hq.shape[-2], : hq.shape[-1]].cpu()
            scores.append(psnr(to_uint8(image), to_uint8(hq), crop_border=pipe.config.scale))
            rows.append((item["lq"][0], image, hq))
    return sum(scores) / len(scores), rows


# --------------------------------------------------------------------------- the loop

def check_setup(cfg: TrainConfig, model: ModelConfig, world_size: int) -> None:
    d, multiple = cfg.data, model.autoencoder.downsample_factor * model.unet.size_multiple
    check_task(d, model)
    if d.crop_size % multiple or d.crop_size % model.scale:
        raise ConfigError(f"data.crop_size {d.crop_size} must be a multiple of {multiple} for this model")
    if d.degradation == "paired" and d.val_dir is not None and d.val_lq_dir is None:
        raise ConfigError("with data.degradation 'paired', set data.val_lq_dir for the validation images")
    sf = {"realesrgan": d.realesrgan.sf, "first-order": d.first_order.sf}.get(d.degradation, model.scale)
    if sf != model.scale:
        raise ConfigError(f"the degradation's sf is {sf} but the model's scale is {model.scale}")
    if cfg.optim.batch_size % (world_size * cfg.optim.grad_accum):
        raise ConfigError(f"optim.batch_size {cfg.optim.batch_size} must be divisible by "
                          f"{world_size} processes x optim.grad_accum {cfg.optim.grad_accum}")


def train(config: TrainConfig, run_dir: str | Path, *, resume: str | Path | None = None,
          device: str | torch.device | None = None, stop_after: Optional[int] = None) -> list[dict]:
    """Train (or resume) into run_dir; returns the logged rows. `stop_after` ends early, as if killed."""
    ddp = distributed.setup(device)
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        return _train(config, Path(run_dir), ddp, resume, stop_after)
    finally:
        torch.use_deterministic_algorithms(deterministic)
        distributed.cleanup(ddp)


def _train(cfg: TrainConfig, run_dir: Path, ddp: distributed.Distributed, resume, stop_after) -> list[dict]:
    o, d, seed, device = cfg.optim, cfg.data, cfg.run.seed, ddp.device
    if not d.train_dirs:
        raise ConfigError("data.train_dirs is empty: give at least one folder of HR images")
    if cfg.run.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)

    # ---- model: from a checkpoint, or fresh / fine-tuned
    state = load_checkpoint(resume) if resume is not None else None
    if state is not None:
        wanted = model_config_of(cfg.model)
        if wanted is not None and wanted.to_dict() != state["model_config"]:
            keys = config_differences(wanted.to_dict(), state["model_config"])
            raise CheckpointError(f"{resume}: trained with another architecture (differs in {', '.join(keys)}); "
                                  f"resume with the run's own config (`resshift train --resume {resume}`)")
        changed = config_differences(cfg.to_dict(), state["config"])
        if changed and ddp.is_main:
            log.warning("resuming with settings that differ from the checkpoint's: %s", ", ".join(changed))
        pipe = pipeline_from_checkpoint(state, str(resume))
    else:
        pipe = build_pipeline(cfg.model, seed)
    check_setup(cfg, pipe.config, ddp.world_size)
    pipe.to(device)
    unet = pipe.unet.train().requires_grad_(True)
    ema = copy.deepcopy(unet).eval().requires_grad_(False) if ddp.is_main else None   # main process only
    model = DistributedDataParallel(unet, device_ids=[device] if device.type == "cuda" else None) \
        if ddp.enabled else unet
    optimizer = torch.optim.AdamW(unet.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, optim=o))
    scaler = torch.amp.GradScaler(device.type, enabled=o.amp == "fp16")
    autocast = torch.autocast(device.type, dtype=AMP_DTYPES.get(o.amp), enabled=o.amp != "none")
    step = 0
    if state is not None:
        if ema is not None:
            load_weights(ema, state["ema"], f"{resume} (ema)")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        if len(state.get("rng", [])) == ddp.world_size:
            set_rng_state(state["rng"][ddp.rank])
        del state
    perceptual = build_perceptual(o.perceptual_weight, o.perceptual_net, device)
    phase_period = o.phase_period or pipe.config.autoencoder.downsample_factor
    check_phase_crop(o.phase_weight, cfg.data.crop_size, phase_period)
    check_shift(o.shift_weight, pipe, cfg.data.crop_size)
    etas = pipe.schedule().etas.to(device, torch.float32)             # (T,)

    # ---- data: a keyed stream from `step` on; LR made on the device
    dataset = HRFolderDataset(d.train_dirs, d.crop_size, seed=seed, scale=pipe.config.scale,
                              lq_dir=d.lq_dir if d.degradation == "paired" else None,
                              hflip=d.hflip, rotate=d.rotate)
    sampler = StreamBatchSampler(len(dataset), o.batch_size, seed=seed, start_step=step, total_steps=o.total_steps,
                                 rank=ddp.rank, world=ddp.world_size, accum=o.grad_accum)
    batches = iter(make_loader(dataset, sampler, num_workers=d.num_workers, seed=seed, rank=ddp.rank,
                               pin_memory=device.type == "cuda"))
    degradations = {"realesrgan": d.realesrgan, "first_order": d.first_order, "masks": d.masks, "face": d.face}

    def next_batch(micro: int) -> dict[str, torch.Tensor]:
        batch = next(batches)
        hq = batch["hq"].to(device, non_blocking=True)
        if "lq" in batch:
            return {"hq": hq, "lq": batch["lq"].to(device, non_blocking=True), "sample": batch["sample"]}
        g = keyed_generator(seed, KEY_DEGRADE, step, ddp.rank, micro, device=device)
        return {**synthesize_batch(hq, d.degradation, pipe.config.scale, g, **degradations),
                "sample": batch["sample"]}

    # ---- main-process outputs
    val_set, metrics = None, None
    if ddp.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        metrics = MetricsLog(run_dir, resume_step=step if resume is not None else None)
        if d.val_dir is not None and d.val_count > 0 and cfg.run.val_interval > 0:
            val_set = load_validation_set(
                d.val_dir, d.val_count, crop=d.val_crop, scale=pipe.config.scale, multiple=pipe.input_multiple
                * pipe.config.scale, kind=d.degradation, seed=seed, lq_folder=d.val_lq_dir, **degradations)
        log.info("training %s from step %d to %d on %d process(es), %s; %d images; %.1fM parameters",
                 pipe.config.task, step, o.total_steps, ddp.world_size, device, len(dataset),
                 sum(p.numel() for p in unet.parameters()) / 1e6)

    def checkpoint() -> None:
        rngs = distributed.gather_objects(rng_state(), ddp)
        if not ddp.is_main:
            return
        payload = {"step": step, "config": cfg.to_dict(), "model_config": pipe.config.to_dict(),
                   "unet": unet.state_dict(), "ema": ema.state_dict(), "autoencoder": pipe.autoencoder.state_dict(),
                   "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                   "scaler": scaler.state_dict(), "rng": rngs}
        try:
            save_checkpoint(payload, checkpoint_path(run_dir, step))
            prune_checkpoints(run_dir, cfg.run.keep_last)
        except CheckpointError as exc:
            log.error("%s (training goes on; the next interval tries again)", exc)

    # ---- the loop
    history: list[dict] = []
    summed = ("loss", "mse", "perceptual", "phase", "shift")
    sums = torch.zeros(len(summed) + 1, device=device, dtype=torch.float64)   # the terms, then images
    clock, data_time, steps_timed = time.perf_counter(), 0.0, 0
    while step < o.total_steps and (stop_after is None or step < stop_after):
        for micro in range(o.grad_accum):
            tic = time.perf_counter()
            batch = next_batch(micro)
            data_time += time.perf_counter() - tic
            last = micro == o.grad_accum - 1
            with model.no_sync() if ddp.enabled and not last else nullcontext():
                with autocast:
                    terms = training_loss(model, pipe, batch, etas=etas, seed=seed, perceptual=perceptual,
                                          perceptual_weight=o.perceptual_weight, phase_weight=o.phase_weight,
                                          phase_period=phase_period, shift_weight=o.shift_weight)
                scaler.scale(terms["loss"].mean() / o.grad_accum).backward()
            sums += torch.stack([terms[key].detach().sum().to(sums) for key in summed]
                                + [torch.tensor(float(len(terms["loss"]))).to(sums)])
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(unet.parameters(), o.grad_clip if o.grad_clip > 0 else math.inf)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        step += 1
        steps_timed += 1
        if ddp.is_main:
            ema_update(ema, unet, ema_decay_at(step, o.ema_decay, o.ema_warmup))

        row: dict[str, Any] = {}
        if cfg.run.log_interval and step % cfg.run.log_interval == 0:
            totals = distributed.all_sum(sums.clone(), ddp).tolist()
            elapsed = time.perf_counter() - clock
            row = {"step": step, **{key: total / totals[-1] for key, total in zip(summed, totals)},
                   "lr": lr, "grad_norm": float(grad_norm),
                   "images_per_s": steps_timed * o.batch_size / elapsed, "data_frac": data_time / elapsed}
            sums.zero_()
            log.info("step %d  loss %.5f  mse %.5f  perceptual %.4f  phase %.2e  shift %.2e  lr %.3g  %.1f img/s  "
                     "data %.0f%%", step, row["loss"], row["mse"], row["perceptual"], row["phase"], row["shift"], lr,
                     row["images_per_s"], 100 * row["data_frac"])
        if val_set is not None and step % cfg.run.val_interval == 0:
            row["step"] = step
            row["val_psnr"], rows = validate(pipe, ema, val_set, seed=seed, steps=cfg.run.val_steps,
                                             batch=cfg.run.val_batch, autocast=autocast)
            (run_dir / "samples").mkdir(exist_ok=True)
            sample_grid(rows[:8], run_dir / "samples" / f"step_{step:08d}.png")
            log.info("step %d  validation PSNR-Y %.3f dB (EMA)", step, row["val_psnr"])
        if row and metrics is not None:
            metrics.write(row)
            history.append(row)
            if "val_psnr" in row:
                draw_curves(metrics, run_dir / "curves.png")
        if (cfg.run.ckpt_interval and step % cfg.run.ckpt_interval == 0) or step == o.total_steps:
            checkpoint()
        if row:
            clock, data_time, steps_timed = time.perf_counter(), 0.0, 0

    # ---- the end: the EMA model in the from_pretrained format
    if step == o.total_steps and ddp.is_main:
        draw_curves(metrics, run_dir / "curves.png")
        dtype = torch.float16 if cfg.run.export_dtype == "fp16" else None
        ResShiftPipeline(ema, pipe.autoencoder, pipe.config).save_pretrained(run_dir / "export", dtype=dtype)
        log.info("exported the EMA model to %s", run_dir / "export")
    if metrics is not None:
        metrics.close()
    return history


def export_checkpoint(checkpoint: str | Path, output: str | Path, *, dtype: torch.dtype | None = None,
                      use_ema: bool = True) -> ResShiftPipeline:
    """Write a checkpoint's EMA (or raw) UNet and its autoencoder as a from_pretrained folder."""
    state = load_checkpoint(checkpoint)
    pipe = pipeline_from_checkpoint(state, str(checkpoint))
    if use_ema:
        load_weights(pipe.unet, state["ema"], f"{checkpoint} (ema)")
    pipe.save_pretrained(output, dtype=dtype)
    return pipe
