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

from pathlib import Path
from typing import Optional

import torch

from .errors import ConfigError
from .export import onnxruntime_pipeline, require_onnxruntime
from .hub import BUNDLED, model_folder
from .pipeline import ResShiftPipeline
from .presets import PRESETS, Task

__all__ = ["BACKENDS", "DEFAULT_MODELS", "DTYPES", "backend_device", "load_model", "resolve_dtype"]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# What runs the three network calls: PyTorch, or ONNX Runtime on the CPU (`resshift.export`).
BACKENDS = ("torch", "onnxruntime")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")
# The official model each task's hint names when no usable model was given.
EXAMPLE_PRESETS: dict[Task, str] = {"sr": "realsr-v3", "inpaint": "inpaint-imagenet", "face": "faceir"}


def how_to_get_a_model(task: Task = "sr") -> str:
    """The hint that ends every 'no usable model' error, with the official files of `task`."""
    preset = PRESETS[EXAMPLE_PRESETS[task]]
    return (f"pass an official model by name, e.g. `--model {preset.name}` (downloaded once into the cache; "
            f"`resshift models` lists them), or convert official files you have: `resshift convert --unet "
            f"{preset.unet_file} --autoencoder {preset.autoencoder_file} -o models/{preset.name}`, then "
            f"`--model models/{preset.name}` (or pass them directly: `--model UNET.pth --autoencoder AUTOENCODER.pth`)")


# The bundled model each command uses when no --model is given, by task.
DEFAULT_MODELS: dict[Task, str] = {"sr": "realsr-x4", "inpaint": "inpaint-natural"}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' -> fp16 on CUDA (as Real-ESRGAN and the official sampler), fp32 elsewhere; else by name."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def backend_device(backend: str, device: str) -> str:
    """The --device name to resolve for `backend`: 'auto' means the CPU for onnxruntime (its CPU provider)."""
    return "cpu" if backend == "onnxruntime" and device == "auto" else device


def load_model(spec: Optional[str], autoencoder: Optional[str] = None, task: Optional[str] = None, *,
               default_for: Task = "sr", device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32, backend: str = "torch") -> ResShiftPipeline:
    """Resolve a model spec (folder, official .pth, bundled name, or None for the bundled default
    of the task `default_for`) into a ready pipeline; `task` names the official preset of a .pth.

    An official model's name is downloaded into the cache the first time (`resshift.hub`). With
    `backend` "onnxruntime" the networks run in ONNX Runtime (CPU, float32), exported into the cache
    on first use (`resshift.export`). Raises ConfigError for a spec that names nothing usable or a
    backend that cannot run here, CheckpointError (from the loaders) for weights that are missing,
    corrupt or do not fit, and DownloadError for a download that failed.
    """
    _check_backend(backend, torch.device(device), dtype)
    pipe = _load_torch_model(spec, autoencoder, task, default_for=default_for, device=device, dtype=dtype)
    return pipe if backend == "torch" else onnxruntime_pipeline(pipe)


def _check_backend(backend: str, device: torch.device, dtype: torch.dtype) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "onnxruntime":
        require_onnxruntime()
        if device.type != "cpu" or dtype != torch.float32:
            raise ConfigError(f"--backend onnxruntime runs on the CPU in fp32, not {device.type} "
                              f"{str(dtype).removeprefix('torch.')}; leave --device and --dtype at auto "
                              "(or cpu and fp32), or use --backend torch")


def _load_torch_model(spec: Optional[str], autoencoder: Optional[str], task: Optional[str], *,
                      default_for: Task, device: torch.device | str, dtype: torch.dtype) -> ResShiftPipeline:
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
    official = ", ".join(name for name, preset in PRESETS.items() if preset.unet_file)
    what = "no such file" if path.suffix.lower() in CHECKPOINT_SUFFIXES else "no such folder or file"
    raise ConfigError(f"--model {spec}: {what}, and not the name of a bundled model ({', '.join(BUNDLED)}) or an "
                      f"official one ({official}); {how_to_get_a_model(default_for)}")


def _no_official_options(spec: str, autoencoder: Optional[str], task: Optional[str]) -> None:
    if autoencoder is not None or task is not None:
        raise ConfigError(f"--model {spec}: --autoencoder and --task only apply to an official UNet .pth file; "
                          "a model folder already holds both networks and its configuration")
