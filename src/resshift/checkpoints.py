"""Reading and writing weights: official `.pth` files and our safetensors format.

Official checkpoints are loaded with ``torch.load(weights_only=True)``: only tensors, plain
containers and numpy scalars are unpickled, so nothing in a file can run code. They are recognised
by their keys and shapes (spandrel-style), after stripping the wrappers that training tools add
(``module.`` from DistributedDataParallel, ``_orig_mod.`` from ``torch.compile``, a ``state_dict``
or ``params_ema`` dict beside step counters and other metadata).
"""

from __future__ import annotations

import json
import pickle
import re
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from .errors import CheckpointError, ConfigError
from .fileio import atomic_write_bytes, atomic_write_json
from .nets.swin_unet import SwinUNet, SwinUNetConfig
from .nets.vqgan import VQGAN, VQGANConfig
from .presets import PRESETS, ModelConfig

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
NESTED_KEYS = ("state_dict", "params_ema", "params", "model")
StateDict = dict[str, torch.Tensor]

# Training scripts store step counters and losses as numpy scalars beside the weights. Unpickling
# one takes numpy's scalar constructor (named numpy._core... by numpy 2 and numpy.core... by numpy 1,
# which wrote older files), np.dtype and the dtype's class; they only turn bytes into a number.
_NUMPY_SCALAR = np.float64(0).__reduce__()[0]
NUMPY_SCALAR_GLOBALS = [(_NUMPY_SCALAR, "numpy._core.multiarray.scalar"),
                        (_NUMPY_SCALAR, "numpy.core.multiarray.scalar"), np.dtype,
                        *{type(np.dtype(code)) for code in "?bhilqpBHILQPefdgFDG"}]
_REFUSED_OBJECT = re.compile(r"GLOBAL ([\w.]+)|got <class '([\w.]+)'>")


def strip_wrappers(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Remove DDP / torch.compile prefixes, however they are stacked."""
    out = {}
    for name, value in state_dict.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in WRAPPER_PREFIXES:
                if name.startswith(prefix):
                    name, stripped = name[len(prefix):], True
        out[name] = value
    return out


def read_official(path: str | Path) -> StateDict:
    """Read an official (or any plain PyTorch) checkpoint into a flat name -> tensor dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals(NUMPY_SCALAR_GLOBALS):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: not a plain weights file; it holds Python objects other than "
            f"tensors, and loading it could run code ({_unsafe_global(exc)})") from exc
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'corrupt file'})") from exc
    while isinstance(data, Mapping) and any(isinstance(data.get(k), Mapping) for k in NESTED_KEYS):
        data = next(data[k] for k in NESTED_KEYS if isinstance(data.get(k), Mapping))
    if not isinstance(data, Mapping) or not data:
        raise CheckpointError(f"{path}: expected a dict of tensors (a state_dict), got {type(data).__name__}")
    not_tensors = [k for k, v in data.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: entries that are not tensors: {', '.join(map(str, not_tensors[:5]))}")
    return strip_wrappers(data)


def _unsafe_global(exc: pickle.UnpicklingError) -> str:
    """What the file asked to build, from torch's long refusal."""
    found = _REFUSED_OBJECT.search(str(exc))
    return f"it asks for {found.group(1) or found.group(2)}" if found else "an unsupported object"


def read_safetensors(path: str | Path) -> StateDict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors file ({exc})") from exc


# A model folder (save_pretrained, `resshift convert`, the cache of official models, bundled models):
CONFIG_NAME = "config.json"            # {"format_version": FORMAT_VERSION, **ModelConfig.to_dict()}
WEIGHTS_NAME = "model.safetensors"     # both networks, keys prefixed "unet." and "autoencoder."
FORMAT_VERSION = 2


def write_model_folder(folder: str | Path, config: ModelConfig, networks: nn.Module,
                       dtype: torch.dtype | None = None) -> None:
    """config.json and model.safetensors (the networks' state_dict, optionally cast) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(networks, folder / WEIGHTS_NAME, dtype)
    atomic_write_json(folder / CONFIG_NAME, {"format_version": FORMAT_VERSION, **config.to_dict()})


def read_model_config(folder: str | Path) -> ModelConfig:
    """A model folder's config.json; CheckpointError when there is none, ConfigError naming the file."""
    config_path = Path(folder) / CONFIG_NAME
    if not config_path.is_file():
        raise CheckpointError(f"{folder}: not a resshift model folder (no {CONFIG_NAME})")
    try:
        data = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_path}: not valid JSON ({exc})") from exc
    version = data.pop("format_version", None) if isinstance(data, dict) else None
    if version != FORMAT_VERSION:
        raise ConfigError(f"{config_path}: format_version {version!r} is not {FORMAT_VERSION} (a folder from another "
                          f"resshift version: convert or export the model again)")
    try:
        return ModelConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{config_path}: {exc}") from exc


def write_safetensors(module: nn.Module, path: str | Path, dtype: torch.dtype | None = None) -> None:
    """Save a module's state_dict atomically (floating tensors cast to `dtype` when given)."""
    tensors = {}
    for name, value in module.state_dict().items():
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[name] = value.detach().contiguous().cpu()
    atomic_write_bytes(path, save(tensors))


def _describe(names: list[str]) -> str:
    shown = ", ".join(names[:5])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > 5 else shown


def load_weights(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load every entry or none; on a mismatch say which keys are missing, unexpected, mis-shaped.

    Tensors are assigned (cast to the module's dtypes), so a module built on the meta device gets
    real storage without a second copy of the weights.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshaped = sorted(f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                       if k in state_dict and state_dict[k].shape != v.shape)
    if missing or unexpected or misshaped:
        parts = [f"{label}: {_describe(names)}" for label, names in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped (file vs model)", misshaped))
                 if names]
        raise CheckpointError(f"{source}: does not fit {type(module).__name__}: " + "; ".join(parts))
    cast = {k: v.to(expected[k].dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    module.load_state_dict(cast, strict=True, assign=True)


@lru_cache(maxsize=None)
def _unet_signature(config: SwinUNetConfig) -> frozenset[tuple[str, tuple[int, ...]]]:
    with torch.device("meta"):
        module = SwinUNet(config)
    return frozenset((k, tuple(v.shape)) for k, v in module.state_dict().items())


@lru_cache(maxsize=None)
def _vqgan_signature(config: VQGANConfig) -> frozenset[tuple[str, tuple[int, ...]]]:
    with torch.device("meta"):
        module = VQGAN(config)
    return frozenset((k, tuple(v.shape)) for k, v in module.state_dict().items())


def _signature(state_dict: Mapping[str, torch.Tensor]) -> frozenset[tuple[str, tuple[int, ...]]]:
    return frozenset((k, tuple(v.shape)) for k, v in state_dict.items())


def detect_presets(state_dict: Mapping[str, torch.Tensor], filename: str | None = None) -> list[str]:
    """Official presets whose UNet has exactly these keys and shapes.

    Several presets share an architecture (the x4 SR models; the two inpainting models); a file
    name as released officially (e.g. ``resshift_realsrx4_s4_v3.pth``) then narrows the choice.
    """
    signature = _signature(state_dict)
    matches = [name for name, preset in PRESETS.items()
               if _unet_signature(preset.config.unet) == signature]
    if filename is not None:
        named = [name for name in matches
                 if Path(filename).name in (PRESETS[name].unet_file, *PRESETS[name].unet_aliases)]
        return named or matches
    return matches


def detect_autoencoder(state_dict: Mapping[str, torch.Tensor]) -> VQGANConfig | None:
    """The official autoencoder configuration these keys and shapes belong to, if any."""
    signature = _signature(state_dict)
    for preset in PRESETS.values():
        if _vqgan_signature(preset.config.autoencoder) == signature:
            return preset.config.autoencoder
    return None
