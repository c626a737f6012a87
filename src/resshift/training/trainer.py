"""The ResShift training loop: `train` reads top to bottom, one named step after another.

Notation (code name <-> paper symbol, 001 Sec. 3 and the journal 002):

    hq, lq      x, y      a high-quality crop in [0, 1] and its degraded version
    z0          x_0       encode(2 hq - 1), the clean latent
    z_y         y_0       encode(upsample(2 lq - 1)), the degraded latent
    t, eta      t, eta_t  t ~ U{1..T} (0-based here), eta_t from the model's schedule
    x_t         x_t       q_sample(z0, z_y, eta_t, kappa, noise)                      (Eq. 2)
    pred        f_theta   UNet(x_t / sqrt(kappa^2 eta_t + 1), t, lq): an x0 prediction (Eq. 7)

The loss terms (mse, perceptual, phase, shift) are in `resshift.training.losses`; with `model.teacher` the
run distils a multi-step model into a one-step student instead, with the terms of `resshift.training.distill`
(same loop, checkpoints, resume and export).

    train(config, run_dir)
      setup          the pipeline (fresh, fine-tuned or from a checkpoint), optimizer, EMA, data stream
      resume         optimizer, scheduler, EMA and RNG states from a checkpoint
      loop:  step        grad_accum micro-batches on each process, one optimizer step, the EMA
             log         the mean loss terms since the last log line, over every process
             evaluate    validation PSNR-Y of the EMA model and a sample grid (main process)
             checkpoint  everything needed to resume exactly
      export         the EMA model as a model folder, when the last step is done

A step is `grad_accum` micro-batches on each of the processes; `optim.batch_size` is the global number
of images per optimizer step. Every random draw is keyed by (seed, step or sample): crops and data
order (data.py), timestep and noise per sample, and the LR degradation per (step, rank, micro-batch).
So a resumed run repeats an uninterrupted one exactly, and 1 process with batch 2b computes the same
step as 2 processes with b each (bar the batch-level choices of the Real-ESRGAN degradation).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from resshift.checkpoints import load_weights, read_model_config, read_official, read_safetensors
from resshift.data import (KEY_DEGRADE, KEY_INIT, KEY_RESEED, KEY_VALIDATION, HRFolderDataset, StreamBatchSampler,
                           keyed_generator, keyed_seed, load_validation_set, make_loader, synthesize_batch)
from resshift.distributed import TRAINING_TIMEOUT, World, all_sum, gather_objects, process_group, resolve_device
from resshift.errors import CheckpointError, ConfigError, TrainingError
from resshift.hub import model_folder
from resshift.metrics import psnr
from resshift.nets.discriminator import UNetDiscriminator, discriminator_loss
from resshift.pipeline import ResShiftPipeline
from resshift.presets import ModelConfig, get_preset
from resshift.training.checkpoint import (checkpoint_path, list_checkpoints, load_checkpoint, prune_checkpoints,
                                          rng_state, save_checkpoint, seed_everything, set_rng_state)
from resshift.training.config import GANConfig, ModelSpec, OptimConfig, TrainConfig, check_task, config_differences
from resshift.training.distill import distillation_loss, one_step_config, student_from_teacher, teacher_chain
from resshift.training.logs import MetricsLog, draw_curves, sample_grid, to_uint8
from resshift.training.losses import build_perceptual, check_phase_crop, check_shift, training_loss

log = logging.getLogger(__name__)
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
LOGGED_TERMS = ("loss", "mse", "perceptual", "phase", "shift", "gan", "critic", "distill", "inverse", "consistency")


# --------------------------------------------------------------------------- the model

def pretrained_folder(name: str) -> Path:
    """model.pretrained: a model folder, or a bundled or official model's name."""
    folder = model_folder(name)
    if folder is None:
        raise ConfigError(f"model.pretrained={name}: not a model folder nor the name of a bundled or official "
                          "model (`resshift models` lists them)")
    return folder


def model_config_of(spec: ModelSpec) -> Optional[ModelConfig]:
    """The architecture a spec names, without loading weights (None when only the weights tell)."""
    if spec.teacher is not None:
        return one_step_config(read_model_config(pretrained_folder(spec.teacher)))
    if spec.config is not None:
        return spec.config
    if spec.pretrained is not None:
        return read_model_config(pretrained_folder(spec.pretrained))
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
    """The pipeline to train, on the CPU in float32: fine-tuned weights, a teacher's one-step copy, or a
    seeded random UNet whose output layer starts at zero."""
    if spec.teacher is not None:
        return student_from_teacher(load_teacher(spec.teacher))
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


def load_teacher(name: str, device: torch.device | str = "cpu") -> ResShiftPipeline:
    """model.teacher, frozen, in float32 (SR and face models: the distillation has no masks)."""
    teacher = ResShiftPipeline.from_pretrained(pretrained_folder(name), device=device)
    if teacher.config.task == "inpaint":
        raise ConfigError(f"model.teacher={name}: an inpainting model; distillation takes SR and face models")
    return teacher


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



# --------------------------------------------------------------------------- one step's pieces

def lr_factor(step: int, optim: OptimConfig) -> float:
    """Multiplier of optim.lr at optimizer step `step` (0-based): linear warm-up, cosine to min_lr."""
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    span = max(1, optim.total_steps - optim.warmup_steps)
    progress = min(1.0, (step - optim.warmup_steps) / span)
    low = optim.min_lr / optim.lr
    return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress))


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



# --------------------------------------------------------------------------- checks and export

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



# --------------------------------------------------------------------------- the run

@dataclass
class Run:
    """What a training run carries from one step to the next."""

    cfg: TrainConfig
    run_dir: Path
    world: World
    pipe: ResShiftPipeline                      # pipe.unet is the network being trained
    model: torch.nn.Module                      # pipe.unet, or its DDP wrapper
    ema: Optional[torch.nn.Module]              # main process only
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loss: Callable[..., dict[str, torch.Tensor]]
    critic: Optional["Critic"] = None           # the adversarial term's discriminator (optim.gan)
    step: int = 0
    batches: Iterator[dict] = field(default_factory=lambda: iter(()))

    @property
    def device(self) -> torch.device:
        return self.pipe.device

    def autocast(self) -> torch.autocast:
        amp = self.cfg.optim.amp
        return torch.autocast(self.device.type, dtype=AMP_DTYPES.get(amp), enabled=amp != "none")


@dataclass
class Critic:
    """The discriminator of the adversarial term, its DDP wrapper (or itself) and its own optimizer."""

    net: UNetDiscriminator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler

    @classmethod
    def build(cls, gan: GANConfig, seed: int, world: World, device: torch.device, amp: str,
              weights: Optional[dict[str, torch.Tensor]] = None, source: str = "") -> "Critic":
        """A seeded fresh discriminator, or one with a checkpoint's `weights` (loaded before the optimizer
        is made: loading assigns new tensors, which an optimizer made earlier would not see)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(keyed_seed(seed, KEY_INIT, 1))
            net = UNetDiscriminator(gan.discriminator)
        if weights is not None:
            load_weights(net, weights, f"{source} (critic)")
        net.to(device)
        model = DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None) \
            if world.enabled else net
        optimizer = torch.optim.AdamW(net.parameters(), lr=gan.lr, betas=gan.betas, weight_decay=0.0)
        return cls(net, model, optimizer, torch.amp.GradScaler(device.type, enabled=amp == "fp16"))


def setup(cfg: TrainConfig, run_dir: Path, world: World, device: torch.device,
          state: Optional[dict[str, Any]], source: str) -> Run:
    """The run at step 0, or at the checkpoint `state`'s networks (its other states: `resume`)."""
    o = cfg.optim
    pipe = pipeline_from_checkpoint(state, source) if state is not None else build_pipeline(cfg.model, cfg.run.seed)
    check_setup(cfg, pipe.config, world.size)
    pipe.to(device)
    unet = pipe.unet.train().requires_grad_(True)
    ema = copy.deepcopy(unet).eval().requires_grad_(False) if world.is_main else None
    model = DistributedDataParallel(unet, device_ids=[device] if device.type == "cuda" else None) \
        if world.enabled else unet
    optimizer = torch.optim.AdamW(unet.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    check_phase_crop(o.phase_weight, cfg.data.crop_size, o.phase_period or pipe.config.autoencoder.downsample_factor)
    check_shift(o.shift_weight, pipe, cfg.data.crop_size)
    critic = None
    if o.gan.weight > 0:
        critic = Critic.build(o.gan, cfg.run.seed, world, device, o.amp, (state or {}).get("critic"), source)
    return Run(cfg, run_dir, world, pipe, model, ema, optimizer,
               torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, optim=o)),
               torch.amp.GradScaler(device.type, enabled=o.amp == "fp16"),
               build_loss(cfg, pipe, device, critic), critic)


def build_loss(cfg: TrainConfig, pipe: ResShiftPipeline, device: torch.device,
               critic: Optional["Critic"]) -> Callable[..., dict[str, torch.Tensor]]:
    """The run's loss: `training_loss`, or with model.teacher the distillation against the frozen teacher."""
    o = cfg.optim
    common = dict(pipe=pipe, seed=cfg.run.seed, perceptual_weight=o.perceptual_weight, phase_weight=o.phase_weight,
                  perceptual=build_perceptual(o.perceptual_weight, o.perceptual_net, device),
                  phase_period=o.phase_period or pipe.config.autoencoder.downsample_factor,
                  discriminator=critic.net if critic is not None else None)
    if cfg.model.teacher is None:
        return partial(training_loss, etas=pipe.schedule().etas.to(device, torch.float32),
                       shift_weight=o.shift_weight, **common)
    teacher = load_teacher(cfg.model.teacher, device)
    return partial(distillation_loss, teacher=teacher, chain=teacher_chain(teacher.config.schedule,
                                                                          o.distill.teacher_steps),
                   inverse_weight=o.distill.inverse_weight, consistency_weight=o.distill.consistency_weight, **common)


def resume_states(run: Run, state: dict[str, Any], source: str) -> None:
    """Optimizer, scheduler, scaler, EMA and this process's RNG states from a checkpoint."""
    if run.ema is not None:
        load_weights(run.ema, state["ema"], f"{source} (ema)")
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    run.step = int(state["step"])
    restore_rng(state.get("rng", []), run.world, run.cfg.run.seed, run.step)
    if run.critic is not None and "critic" in state:
        run.critic.optimizer.load_state_dict(state["critic_optimizer"])
        run.critic.scaler.load_state_dict(state["critic_scaler"])
    elif run.critic is not None and run.world.is_main:
        log.warning("%s has no discriminator: the adversarial term starts with a fresh one", source)


def restore_rng(states: list, world: World, seed: int, step: int) -> None:
    """This process's global RNG states as saved. Resumed on another number of processes there is no
    saved state per process: each seeds afresh from (seed, step, rank), and a warning says so. The draws
    that make the training data (crops, order, noise, degradations) are keyed and do not depend on them."""
    if len(states) == world.size:
        set_rng_state(states[world.rank])
        return
    if world.is_main:
        log.warning("the checkpoint was written by %d process(es), this run has %d: global random states are "
                    "seeded afresh (the training data stays the same; dropout-like draws differ)",
                    len(states), world.size)
    seed_everything(keyed_seed(seed, KEY_RESEED, step, world.rank))


def open_batches(run: Run) -> Iterator[dict[str, torch.Tensor]]:
    """The keyed stream of training batches from `run.step` on, with the LR input made on the device."""
    d, o, seed, scale = run.cfg.data, run.cfg.optim, run.cfg.run.seed, run.pipe.config.scale
    dataset = HRFolderDataset(d.train_dirs, d.crop_size, seed=seed, scale=scale,
                              lq_dir=d.lq_dir if d.degradation == "paired" else None, hflip=d.hflip, rotate=d.rotate)
    sampler = StreamBatchSampler(len(dataset), o.batch_size, seed=seed, start_step=run.step,
                                 total_steps=o.total_steps, rank=run.world.rank, world=run.world.size,
                                 accum=o.grad_accum)
    loader = make_loader(dataset, sampler, num_workers=d.num_workers, seed=seed, rank=run.world.rank,
                         pin_memory=run.device.type == "cuda")
    degradations = {"realesrgan": d.realesrgan, "first_order": d.first_order, "masks": d.masks, "face": d.face}
    for index, batch in enumerate(loader):       # run.step is read when a batch is asked for: the current step
        hq = batch["hq"].to(run.device, non_blocking=True)
        if "lq" in batch:
            yield {"hq": hq, "lq": batch["lq"].to(run.device, non_blocking=True), "sample": batch["sample"]}
        else:
            g = keyed_generator(seed, KEY_DEGRADE, run.step, run.world.rank, index % o.grad_accum, device=run.device)
            yield {**synthesize_batch(hq, d.degradation, scale, g, **degradations), "sample": batch["sample"]}


# --------------------------------------------------------------------------- the steps

def train_step(run: Run, meter: "Meter") -> None:
    """One optimizer step: grad_accum micro-batches on this process (gradients synchronised on the last),
    clipping, the optimizer and learning-rate steps, and the EMA update."""
    o = run.cfg.optim
    gan_weight = o.gan.weight if run.step >= o.gan.start_step else 0.0
    fakes = []
    if run.critic is not None:
        run.critic.net.requires_grad_(False)          # the generator's step leaves the discriminator alone
    finite = torch.ones((), dtype=torch.bool, device=run.device)
    for micro in range(o.grad_accum):
        tic = time.perf_counter()
        batch = next(run.batches)
        meter.data_seconds += time.perf_counter() - tic
        last = micro == o.grad_accum - 1
        with run.model.no_sync() if run.world.enabled and not last else nullcontext():
            with run.autocast():
                terms = run.loss(run.model, batch=batch, gan_weight=gan_weight)
            run.scaler.scale(terms["loss"].mean() / o.grad_accum).backward()
        meter.add(terms)
        finite &= torch.isfinite(terms["loss"].detach()).all()
        if run.critic is not None:
            fakes.append((batch["hq"], terms["image"]))
    stop_if_diverged(run, finite)
    unet = run.pipe.unet
    run.scaler.unscale_(run.optimizer)
    meter.grad_norm = float(torch.nn.utils.clip_grad_norm_(unet.parameters(), o.grad_clip or math.inf))
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    meter.lr = run.scheduler.get_last_lr()[0]
    run.scheduler.step()
    run.step += 1
    meter.steps += 1
    if run.ema is not None:
        ema_update(run.ema, unet, ema_decay_at(run.step, o.ema_decay, o.ema_warmup))
    if run.critic is not None:
        critic_step(run, fakes, meter)


def stop_if_diverged(run: Run, finite: torch.Tensor) -> None:
    """Raise TrainingError when this step's loss is NaN or infinite on any process (a collective call: the
    count is summed over the ranks, so all stop at the same step), before the optimizer takes the step in:
    the weights stay those of the last good step, and no checkpoint of the broken state is written."""
    diverged = int(all_sum((~finite).to(torch.float32).reshape(1), run.world).item())
    if diverged == 0:
        return
    saved = list_checkpoints(run.run_dir)
    last = f"the last checkpoint is {saved[-1]}" if saved else "no checkpoint was saved yet"
    raise TrainingError(f"the training loss became NaN or infinite at step {run.step + 1} (on {diverged} of "
                        f"{run.world.size} processes); stopped without saving that state; {last} (lower optim.lr "
                        "or set optim.grad_clip and resume, or check the training images)")


def critic_step(run: Run, pairs: list[tuple[torch.Tensor, torch.Tensor]], meter: "Meter") -> None:
    """One discriminator step on this step's HR crops (real) and the generator's decoded predictions
    (fake, detached), accumulated over the micro-batches like the generator's."""
    critic = run.critic
    critic.net.requires_grad_(True)
    for index, (real, fake) in enumerate(pairs):
        last = index == len(pairs) - 1
        with critic.model.no_sync() if run.world.enabled and not last else nullcontext():
            with run.autocast():            # one forward for both halves: what DDP expects per backward
                logits = critic.model(torch.cat([real, fake])).float()
            loss = discriminator_loss(*logits.chunk(2))
            critic.scaler.scale(loss.mean() / len(pairs)).backward()
        meter.add({"critic": loss})
    critic.scaler.step(critic.optimizer)
    critic.scaler.update()
    critic.optimizer.zero_grad(set_to_none=True)


@dataclass
class Meter:
    """The loss terms summed since the last log line (then the image count), and the step timings."""

    sums: torch.Tensor
    data_seconds: float = 0.0
    steps: int = 0
    lr: float = 0.0
    grad_norm: float = 0.0
    clock: float = field(default_factory=time.perf_counter)

    @classmethod
    def on(cls, device: torch.device) -> "Meter":
        return cls(torch.zeros(len(LOGGED_TERMS) + 1, device=device, dtype=torch.float64))

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        """Sum the logged terms present in `terms`; a generator step's terms also count its images."""
        for index, key in enumerate(LOGGED_TERMS):
            if key in terms:
                self.sums[index] += terms[key].detach().sum().to(self.sums)
        if "loss" in terms:
            self.sums[-1] += len(terms["loss"])

    def row(self, run: Run) -> dict[str, Any]:
        """The log row over every process (a collective call: every rank makes it); then starts afresh."""
        totals = all_sum(self.sums.clone(), run.world).tolist()
        elapsed = time.perf_counter() - self.clock
        row = {"step": run.step, **{key: total / totals[-1] for key, total in zip(LOGGED_TERMS, totals)},
               "lr": self.lr, "grad_norm": self.grad_norm,
               "images_per_s": self.steps * run.cfg.optim.batch_size / elapsed, "data_frac": self.data_seconds / elapsed}
        terms = "  ".join(f"{key} {row[key]:.4g}" for key in LOGGED_TERMS if row[key] or key == "loss")
        log.info("step %d  %s  lr %.3g  %.1f img/s  data %.0f%%", run.step, terms, self.lr, row["images_per_s"],
                 100 * row["data_frac"])
        self.sums.zero_()
        self.data_seconds, self.steps, self.clock = 0.0, 0, time.perf_counter()
        return row


def evaluate(run: Run, val_set: list[dict]) -> dict[str, Any]:
    """Validation PSNR-Y of the EMA model, and its sample grid in RUN_DIR/samples (main process)."""
    score, rows = validate(run.pipe, run.ema, val_set, seed=run.cfg.run.seed, steps=run.cfg.run.val_steps,
                           batch=run.cfg.run.val_batch, autocast=run.autocast())
    (run.run_dir / "samples").mkdir(exist_ok=True)
    sample_grid(rows[:8], run.run_dir / "samples" / f"step_{run.step:08d}.png")
    log.info("step %d  validation PSNR-Y %.3f dB (EMA)", run.step, score)
    return {"step": run.step, "val_psnr": score}


def checkpoint(run: Run) -> None:
    """Everything needed to resume exactly (a collective call: every rank gives its RNG states); a failed
    save is logged and training goes on."""
    rngs = gather_objects(rng_state(), run.world)
    if not run.world.is_main:
        return
    payload = {"step": run.step, "config": run.cfg.to_dict(), "model_config": run.pipe.config.to_dict(),
               "unet": run.pipe.unet.state_dict(), "ema": run.ema.state_dict(),
               "autoencoder": run.pipe.autoencoder.state_dict(), "optimizer": run.optimizer.state_dict(),
               "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(), "rng": rngs}
    if run.critic is not None:
        payload |= {"critic": run.critic.net.state_dict(), "critic_optimizer": run.critic.optimizer.state_dict(),
                    "critic_scaler": run.critic.scaler.state_dict()}
    try:
        save_checkpoint(payload, checkpoint_path(run.run_dir, run.step))
        prune_checkpoints(run.run_dir, run.cfg.run.keep_last)
    except CheckpointError as exc:
        log.error("%s (training goes on; the next interval tries again)", exc)


def export(run: Run) -> None:
    """The EMA model in the from_pretrained format, in RUN_DIR/export."""
    dtype = torch.float16 if run.cfg.run.export_dtype == "fp16" else None
    ResShiftPipeline(run.ema, run.pipe.autoencoder, run.pipe.config).save_pretrained(run.run_dir / "export",
                                                                                     dtype=dtype)
    log.info("exported the EMA model to %s", run.run_dir / "export")


# --------------------------------------------------------------------------- the loop

def train(config: TrainConfig, run_dir: str | Path, *, resume: str | Path | None = None,
          device: str | torch.device | None = None, stop_after: Optional[int] = None) -> list[dict]:
    """Train (or resume) into run_dir; returns the logged rows. `stop_after` ends early, as if killed."""
    cfg, run_dir, world = config, Path(run_dir), World.from_env()
    device = resolve_device(str(device or "auto"), world.local_rank)
    if not cfg.data.train_dirs:
        raise ConfigError("data.train_dirs is empty: give at least one folder of HR images")
    total, r = cfg.optim.total_steps, cfg.run
    end = total if stop_after is None else min(total, stop_after)
    with process_group(world, device, TRAINING_TIMEOUT), deterministic(r.deterministic):
        state = load_resumable(cfg, resume, world) if resume is not None else None
        run = setup(cfg, run_dir, world, device, state, str(resume))
        if state is not None:
            resume_states(run, state, str(resume))
            del state
        run.batches = open_batches(run)
        metrics, val_set = open_outputs(run, resumed=resume is not None) if world.is_main else (None, None)
        history, meter = [], Meter.on(device)
        while run.step < end:
            train_step(run, meter)
            row = meter.row(run) if due(run.step, r.log_interval) else {}
            if val_set is not None and due(run.step, r.val_interval):
                row |= evaluate(run, val_set)
            if row and metrics is not None:
                metrics.write(row)
                history.append(row)
                if "val_psnr" in row:
                    draw_curves(metrics, run_dir / "curves.png")
            if due(run.step, r.ckpt_interval) or run.step == total:
                checkpoint(run)
        if metrics is not None:
            if run.step == total:
                draw_curves(metrics, run_dir / "curves.png")
                export(run)
            metrics.close()
    return history


def due(step: int, interval: int) -> bool:
    return interval > 0 and step % interval == 0


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """torch.use_deterministic_algorithms for the block (run.deterministic), restored afterwards."""
    before = torch.are_deterministic_algorithms_enabled()
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def load_resumable(cfg: TrainConfig, path: str | Path, world: World) -> dict[str, Any]:
    """A checkpoint to resume from, refused when it trained another architecture than `cfg` names."""
    state = load_checkpoint(path)
    wanted = model_config_of(cfg.model)
    if wanted is not None and wanted != ModelConfig.from_dict(state["model_config"]):
        keys = config_differences(wanted.to_dict(), state["model_config"])
        raise CheckpointError(f"{path}: trained with another architecture (differs in {', '.join(keys)}); "
                              f"resume with the run's own config (`resshift train --resume {path}`)")
    changed = config_differences(cfg.to_dict(), state["config"])
    if changed and world.is_main:
        log.warning("resuming with settings that differ from the checkpoint's: %s", ", ".join(changed))
    return state


def open_outputs(run: Run, resumed: bool) -> tuple[MetricsLog, Optional[list[dict]]]:
    """The main process's outputs: config.yaml, metrics.csv (cut back to the resumed step), validation set."""
    cfg, d, pipe = run.cfg, run.cfg.data, run.pipe
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    metrics = MetricsLog(run.run_dir, resume_step=run.step if resumed else None)
    val_set = None
    if d.val_dir is not None and d.val_count > 0 and cfg.run.val_interval > 0:
        val_set = load_validation_set(
            d.val_dir, d.val_count, crop=d.val_crop, scale=pipe.config.scale,
            multiple=pipe.input_multiple * pipe.config.scale, kind=d.degradation, seed=cfg.run.seed,
            lq_folder=d.val_lq_dir, realesrgan=d.realesrgan, first_order=d.first_order, masks=d.masks, face=d.face)
    log.info("training %s from step %d to %d on %d process(es), %s; %.1fM parameters", pipe.config.task, run.step,
             cfg.optim.total_steps, run.world.size, run.device,
             sum(p.numel() for p in pipe.unet.parameters()) / 1e6)
    return metrics, val_set


def export_checkpoint(checkpoint: str | Path, output: str | Path, *, dtype: torch.dtype | None = None,
                      use_ema: bool = True) -> ResShiftPipeline:
    """Write a checkpoint's EMA (or raw) UNet and its autoencoder as a from_pretrained folder."""
    state = load_checkpoint(checkpoint)
    pipe = pipeline_from_checkpoint(state, str(checkpoint))
    if use_ema:
        load_weights(pipe.unet, state["ema"], f"{checkpoint} (ema)")
    pipe.save_pretrained(output, dtype=dtype)
    return pipe
