"""Which model to run: `--model` resolution, and the dtype it runs in (the device: `resshift.distributed`).

A model spec is one of

* a folder written by `ResShiftPipeline.save_pretrained` or `resshift convert` (config.json + safetensors);
* an official UNet checkpoint (`.pth`), given together with its autoencoder checkpoint and, when the
  file name does not tell it, the official preset (`task`);
* the name of a bundled model: a row of `BUNDLED` (a table of dataclasses, not a chain of ifs);
* the name of an official preset (e.g. `realsr-v3`): downloaded and converted into the cache on first
  use (`resshift.hub`).

`DEFAULT_MODELS` names the bundled model each task uses when no `--model` is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from . import hub
from .errors import ConfigError
from .pipeline import CONFIG_NAME, ResShiftPipeline
from .presets import PRESETS, Task

__all__ = ["BUNDLED", "BundledModel", "DEFAULT_MODELS", "DTYPES", "load_model", "model_folder", "resolve_dtype"]

WEIGHTS_DIR = Path(__file__).parent / "weights"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")
# The official model each task's hint names when no usable model was given.
EXAMPLE_PRESETS: dict[Task, str] = {"sr": "realsr-v3", "inpaint": "inpaint-imagenet", "face": "faceir"}


def how_to_get_a_model(task: Task = "sr") -> str:
    """The hint that ends every 'no usable model' error, with the official files of `task`."""
    preset = PRESETS[EXAMPLE_PRESETS[task]]
    return (f"convert the official checkpoints once, e.g. `resshift convert --unet {preset.unet_file} "
            f"--autoencoder {preset.autoencoder_file} -o models/{preset.name}`, then pass "
            f"`--model models/{preset.name}` "
            "(or pass the official files directly: `--model UNET.pth --autoencoder AUTOENCODER.pth`)")


@dataclass(frozen=True)
class BundledModel:
    """A model shipped inside the package, under `resshift/weights/<name>/` (docs/models.md has its card)."""

    name: str
    task: Task
    description: str

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.name

    @property
    def installed(self) -> bool:
        return (self.path / CONFIG_NAME).is_file()


# A compact model gets a row when it reaches its target (docs/models.md has each model's card).
BUNDLED: dict[str, BundledModel] = {
    model.name: model for model in (
        BundledModel("realsr-x4", "sr", "x4 super-resolution of real photos: noise, blur, JPEG (one step, 4.5 M)"),
        BundledModel("bicubic-x4", "sr", "x4 super-resolution of clean images (bicubic-trained, one step, 4.5 M)"),
        BundledModel("inpaint-natural", "inpaint", "inpainting of photos: fills the mask from its surroundings "
                     "(Telea start, one step, 4.6 M)"),
    )
}
# The bundled model each command uses when no --model is given, by task.
DEFAULT_MODELS: dict[Task, str] = {"sr": "realsr-x4", "inpaint": "inpaint-natural"}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' -> fp16 on CUDA (as Real-ESRGAN and the official sampler), fp32 elsewhere; else by name."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def model_folder(spec: str) -> Optional[Path]:
    """The from_pretrained folder that `spec` names (a folder, a bundled model's name, or an official
    preset's, fetched into the cache the first time); None otherwise.
    ConfigError for a bundled model whose files are missing; the `hub.ensure_model` errors for an official one."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    bundled = BUNDLED.get(spec.strip().lower())
    if bundled is None:
        return hub.ensure_model(spec) if hub.is_official_name(spec) else None
    if not bundled.installed:
        raise ConfigError(f"--model {spec}: the bundled model's files are missing from {bundled.path}; "
                          "reinstall resshift")
    return bundled.path


def load_model(spec: Optional[str], autoencoder: Optional[str] = None, task: Optional[str] = None, *,
               default_for: Task = "sr", device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> ResShiftPipeline:
    """Resolve a model spec (folder, official .pth, bundled name, or None for the bundled default
    of the task `default_for`) into a ready pipeline; `task` names the official preset of a .pth.

    Raises ConfigError for a spec that names nothing usable, and CheckpointError (from the loaders)
    for weights that are missing, corrupt or do not fit.
    """
    if spec is None:
        if default_for not in DEFAULT_MODELS:
            raise ConfigError(f"no --model given, and resshift bundles no {default_for!r} model yet; "
                              f"{how_to_get_a_model(default_for)}")
        spec = DEFAULT_MODELS[default_for]
    folder = model_folder(spec)
    if folder is not None:
        _no_official_options(spec, autoencoder, task)
        return ResShiftPipeline.from_pretrained(folder, device=device, dtype=dtype)
    path = Path(spec).expanduser()
    if path.is_file():
        if autoencoder is None:
            raise ConfigError(f"--model {spec}: an official UNet checkpoint needs its autoencoder too "
                              f"(--autoencoder {PRESETS[EXAMPLE_PRESETS[default_for]].autoencoder_file}); "
                              f"or {how_to_get_a_model(default_for)}")
        return ResShiftPipeline.from_official(path, autoencoder, task, device=device, dtype=dtype)
    known = f"bundled models: {', '.join(BUNDLED)}" if BUNDLED else "no bundled models are installed"
    what = "no such file" if path.suffix.lower() in CHECKPOINT_SUFFIXES else "no such folder or file"
    raise ConfigError(f"--model {spec}: {what}, and not a bundled model name ({known}); "
                      f"{how_to_get_a_model(default_for)}")


def _no_official_options(spec: str, autoencoder: Optional[str], task: Optional[str]) -> None:
    if autoencoder is not None or task is not None:
        raise ConfigError(f"--model {spec}: --autoencoder and --task only apply to an official UNet .pth file; "
                          "a model folder already holds both networks and its configuration")
