"""Training configuration: frozen dataclasses loaded from YAML, every value overridable as `key.sub=value`.

A config has four sections (see docs/training.md for every key):

    data    where the HR images are, how the LR input is made, crops and augmentation, validation set
    model   what to train: an official preset, an explicit ModelConfig, or weights to fine-tune from
    optim   AdamW, warm-up + cosine learning rate, EMA, batch, accumulation, mixed precision, losses
    run     seed, logging / validation / checkpoint intervals, export

Unknown keys and wrong types raise ConfigError naming the key (``optim.lr: expected a number``):
the one strict loader of `resshift.configs`, which also reads the library configs inside (ModelConfig,
the degradations), so their keys are exactly those of config.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from resshift.degradations import FaceDegradation, FirstOrderDegradation, MaskConfig, RealESRGANDegradation
from resshift.configs import Config, to_plain
from resshift.errors import ConfigError
from resshift.nets.discriminator import DiscriminatorConfig
from resshift.presets import ModelConfig, get_preset

Degradation = Literal["realesrgan", "bicubic", "first-order", "paired", "inpaint", "face"]
AmpDtype = Literal["none", "bf16", "fp16"]


@dataclass(frozen=True)
class DataConfig(Config):
    """HR training folders and how a batch is made from them (data.py)."""

    train_dirs: tuple[str, ...] = ()          # HR folders, searched recursively
    degradation: Degradation = "realesrgan"   # how the LR input is synthesised (on the device)
    lq_dir: str | None = None                 # with degradation 'paired': LR files matched by stem
    realesrgan: RealESRGANDegradation = RealESRGANDegradation()
    first_order: FirstOrderDegradation = FirstOrderDegradation()
    masks: MaskConfig = MaskConfig()          # with degradation 'inpaint': LaMa-style masks (official ranges)
    face: FaceDegradation = FaceDegradation() # with degradation 'face': GFPGAN degradation (official, 512 crops)
    crop_size: int = 256                      # HR crop side; the LR crop is crop_size / scale
    hflip: bool = True
    rotate: bool = True                       # random 90-degree rotations
    num_workers: int = 4                      # DataLoader workers per process
    val_dir: str | None = None                # validation HR folder: its first val_count images
    val_lq_dir: str | None = None             # optional fixed LR files for them (by stem)
    val_count: int = 8
    val_crop: int | None = 256                # centre crop of each validation image; None = whole

    def __post_init__(self) -> None:
        if self.crop_size < 8:
            raise ConfigError(f"data.crop_size must be at least 8, got {self.crop_size}")
        if (self.degradation == "paired") != (self.lq_dir is not None):
            raise ConfigError("data.lq_dir is needed exactly when data.degradation is 'paired'")
        if self.num_workers < 0 or self.val_count < 0:
            raise ConfigError("data.num_workers and data.val_count must not be negative")


@dataclass(frozen=True)
class ModelSpec(Config):
    """What to train. Exactly one source: `preset`, `config`, `pretrained`, `official_unet` or `teacher`.

    preset / config start the UNet from random weights (seeded by run.seed) and load the frozen
    autoencoder from `autoencoder_weights` (official .pth or a model folder's model.safetensors); a
    parameter-free autoencoder (pixel-unshuffle) needs none. `pretrained` (a from_pretrained folder)
    and `official_unet` (+ `autoencoder_weights`, with `preset` naming the task if the file name does
    not tell it) fine-tune existing weights. `pretrained` with `config` fine-tunes the folder's weights
    under another chain or conditioning (schedule, `hole_fill`, ...): the networks must be the same.
    `teacher` (a model folder, bundled or official name) distils a multi-step model into a one-step
    student that starts as its copy (`resshift.training.distill`; the loss's keys: `optim.distill`).
    """

    preset: str | None = None
    config: ModelConfig | None = None
    pretrained: str | None = None
    official_unet: str | None = None
    autoencoder_weights: str | None = None
    random_autoencoder: bool = False   # allow an untrained VQGAN: smoke tests only, results are meaningless
    teacher: str | None = None         # distil this multi-step model into a one-step student

    def __post_init__(self) -> None:
        if self.teacher is not None:
            others = [k for k in ("preset", "config", "pretrained", "official_unet", "autoencoder_weights")
                      if getattr(self, k) is not None]
            if others:
                raise ConfigError(f"model.teacher is the student's only source (it starts as the teacher's copy); "
                                  f"remove model.{others[0]}")
        elif self.pretrained is not None:
            others = [k for k in ("preset", "official_unet", "autoencoder_weights") if getattr(self, k) is not None]
            if others:
                raise ConfigError(f"model.pretrained takes its weights from the folder; remove model.{others[0]}")
        elif self.official_unet is not None:
            if self.config is not None or self.autoencoder_weights is None:
                raise ConfigError("model.official_unet needs model.autoencoder_weights (and no model.config)")
        elif (self.preset is None) == (self.config is None):
            raise ConfigError("give exactly one of model.preset, model.config, model.pretrained, "
                              "model.official_unet or model.teacher")


@dataclass(frozen=True)
class GANConfig(Config):
    """The adversarial term: a U-Net discriminator with spectral normalisation (Real-ESRGAN's) judges each
    pixel of the decoded prediction against the HR crop; the generator adds `weight` times its
    non-saturating loss. `weight` 0 disables it (no discriminator is built)."""

    weight: float = 0.0
    lr: float = 1e-4                   # the discriminator's AdamW learning rate (constant)
    betas: tuple[float, float] = (0.9, 0.99)
    start_step: int = 0                # optimizer steps before the generator takes the term (the
                                       # discriminator learns from the first step)
    discriminator: DiscriminatorConfig = DiscriminatorConfig(num_feat=32)

    def __post_init__(self) -> None:
        if self.weight < 0 or self.lr <= 0 or self.start_step < 0:
            raise ConfigError("optim.gan: weight and start_step must not be negative, lr must be positive")


@dataclass(frozen=True)
class DistillConfig(Config):
    """The one-step distillation's terms (with model.teacher; `resshift.training.distill`): the student's
    result against the teacher's deterministic chain (weight 1), the inverse mapping it also learns, and
    the consistency of the ground truth through that inverse and back."""

    teacher_steps: int | None = None   # teacher calls per target (None: all its steps); fewer are spread
                                       # evenly from t = T to t = 1: a cheaper, coarser target
    inverse_weight: float = 1.0
    consistency_weight: float = 1.0

    def __post_init__(self) -> None:
        if min(self.inverse_weight, self.consistency_weight) < 0:
            raise ConfigError("optim.distill.inverse_weight and consistency_weight must not be negative")
        if self.teacher_steps is not None and self.teacher_steps < 1:
            raise ConfigError(f"optim.distill.teacher_steps must be at least 1, got {self.teacher_steps}")


@dataclass(frozen=True)
class OptimConfig(Config):
    """Optimisation: AdamW, linear warm-up then cosine decay to min_lr, EMA, loss weights."""

    lr: float = 5e-5
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 5000
    total_steps: int = 400_000
    min_lr: float = 2e-5
    grad_clip: float = 0.0             # max gradient norm; 0 disables clipping
    ema_decay: float = 0.999
    ema_warmup: bool = True            # decay min(ema_decay, (1+step)/(10+step)); false: the official constant decay
    batch_size: int = 64               # global: images per optimizer step over all processes
    grad_accum: int = 1                # micro-steps per optimizer step on each process
    amp: AmpDtype = "none"             # autocast dtype; fp16 also enables the GradScaler
    perceptual_weight: float = 1.0     # journal ST-LPIPS term in pixel space; 0 disables
    perceptual_net: Literal["vgg", "alex"] = "vgg"   # its backbone; AlexNet costs a fraction of VGG16 on a CPU
    phase_weight: float = 0.0          # sub-pixel phase variance of the decoded error (metrics.phase); 0 disables
    phase_period: int | None = None    # its period in pixels (None: the latent's f); a multiple of f also
                                       # catches patterns of the UNet's coarser stages (2f: the 1/2 stage)
    shift_weight: float = 0.0          # shift consistency: the batch rolled must give the prediction rolled
                                       # (trainer.shift_inconsistency); pixel-unshuffle latents; 0 disables
    gan: GANConfig = GANConfig()       # the adversarial term (off by default)
    distill: DistillConfig = DistillConfig()   # the distillation's terms, used with model.teacher

    def __post_init__(self) -> None:
        if self.total_steps < 1 or self.warmup_steps < 0 or self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("optim.total_steps, batch_size and grad_accum must be >= 1, warmup_steps >= 0")
        if not 0 < self.min_lr <= self.lr:
            raise ConfigError(f"need 0 < optim.min_lr <= optim.lr, got {self.min_lr} and {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"optim.ema_decay must lie in [0, 1), got {self.ema_decay}")
        if min(self.grad_clip, self.perceptual_weight, self.phase_weight, self.shift_weight, self.weight_decay) < 0:
            raise ConfigError("optim.grad_clip, perceptual_weight, phase_weight, shift_weight and weight_decay "
                              "must not be negative")
        if self.phase_period is not None and self.phase_period < 2:
            raise ConfigError(f"optim.phase_period must be at least 2 pixels, got {self.phase_period}")


@dataclass(frozen=True)
class RunConfig(Config):
    """Seed, intervals (in optimizer steps; 0 disables), checkpoint retention, export."""

    seed: int = 123456
    log_interval: int = 100
    val_interval: int = 10_000
    ckpt_interval: int = 10_000
    keep_last: int = 3                 # checkpoints kept on disk (the newest ones)
    val_steps: int | None = None       # sampling steps at validation; None = the model's
    val_batch: int = 4
    export_dtype: Literal["fp32", "fp16"] = "fp32"
    deterministic: bool = False        # torch.use_deterministic_algorithms (bit-exact resume, slower)

    def __post_init__(self) -> None:
        if min(self.log_interval, self.val_interval, self.ckpt_interval) < 0 or self.keep_last < 1:
            raise ConfigError("run intervals must not be negative and run.keep_last must be >= 1")
        if self.seed < 0 or self.val_batch < 1:
            raise ConfigError("run.seed must not be negative and run.val_batch must be >= 1")


@dataclass(frozen=True)
class TrainConfig(Config):
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSpec = field(default_factory=lambda: ModelSpec(preset="realsr-v3"))
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        spec = self.model
        if spec.teacher is not None and self.optim.shift_weight > 0:
            raise ConfigError("optim.shift_weight is not available when distilling (model.teacher); set it to 0")
        if spec.config is not None or (spec.preset is not None and spec.official_unet is None):
            check_task(self.data, spec.config or get_preset(spec.preset).config)


def check_task(data: DataConfig, model: ModelConfig) -> None:
    """The degradation must make the inputs the model's task takes (masks for 'inpaint', scale 1)."""
    kind, task = data.degradation, model.task
    if kind in ("inpaint", "face") and (task != kind or model.scale != 1):
        raise ConfigError(f"data.degradation '{kind}' needs a model with task '{kind}' and scale 1 "
                          f"(model task '{task}', scale {model.scale}); set model.preset="
                          f"{'inpaint-imagenet' if kind == 'inpaint' else 'faceir'} or fix model.config.task/scale")
    if task == "inpaint" and kind != "inpaint":
        raise ConfigError(f"an inpainting model (task 'inpaint', UNet cond_mask) trains on masks: "
                          f"set data.degradation=inpaint, not '{kind}'")
    if task == "face" and kind not in ("face", "paired"):
        raise ConfigError(f"a face model (task 'face') trains on same-size LQ faces: set data.degradation=face "
                          f"(or paired), not '{kind}'")


# --------------------------------------------------------------------------- loading

PRESET_DIR = "presets"


def preset_names() -> list[str]:
    folder = resources.files("resshift.training").joinpath(PRESET_DIR)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_yaml(source: str | Path) -> dict[str, Any]:
    """A YAML file, or a bundled preset by name (`tiny-cpu`, `realsr-x4-official`, ...)."""
    path = Path(source)
    if path.is_file():
        text = path.read_text()
    elif str(source) in preset_names():
        text = resources.files("resshift.training").joinpath(PRESET_DIR, f"{source}.yaml").read_text()
    else:
        raise ConfigError(f"{source}: no such config file or bundled preset "
                          f"(bundled: {', '.join(preset_names())})")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    return data


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """`optim.lr=1e-4`, `data.train_dirs=[a, b]`, `model.config=null`: values are parsed as YAML."""
    out = _deep_copy(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {key}: cannot parse {text!r} ({exc})") from exc
        node = out
        parts = key.strip().split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {key}: {'.'.join(parts[:depth + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def load_config(source: str | Path | None, overrides: Sequence[str] = (),
                base: Mapping[str, Any] | None = None) -> TrainConfig:
    """YAML file or preset name (or `base`, e.g. a checkpoint's config), then the overrides."""
    data = read_yaml(source) if source is not None else dict(base or {})
    return TrainConfig.from_dict(apply_overrides(data, overrides))


def config_differences(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config dicts (a tuple equals its list)."""
    a, b = to_plain(a), to_plain(b)
    keys = sorted(set(a) | set(b))
    out: list[str] = []
    for key in keys:
        x, y = a.get(key), b.get(key)
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            out += config_differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}")
    return out


# --------------------------------------------------------------------------- strict building

def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}
