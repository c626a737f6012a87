"""The autoencoders a model can diffuse in, as one closed table: config type <-> network."""

from __future__ import annotations

from typing import Any, Mapping, Union

from torch import nn

from resshift.errors import ConfigError

from .unshuffle import PixelUnshuffleAutoencoder, UnshuffleConfig
from .vqgan import VQGAN, VQGANConfig

AutoencoderConfig = Union[VQGANConfig, UnshuffleConfig]
_TABLE: dict[str, tuple[type, type[nn.Module]]] = {
    "vqgan": (VQGANConfig, VQGAN),
    "unshuffle": (UnshuffleConfig, PixelUnshuffleAutoencoder),
}


def _type_name(config: AutoencoderConfig) -> str:
    return next(name for name, (config_type, _) in _TABLE.items() if isinstance(config, config_type))


def build_autoencoder(config: AutoencoderConfig) -> nn.Module:
    return _TABLE[_type_name(config)][1](config)


def autoencoder_to_dict(config: AutoencoderConfig) -> dict[str, Any]:
    return {"type": _type_name(config), **config.to_dict()}


def autoencoder_from_dict(data: Mapping[str, Any]) -> AutoencoderConfig:
    values = dict(data)
    name = values.pop("type", "vqgan")
    if name not in _TABLE:
        raise ConfigError(f"unknown autoencoder type {name!r}; expected one of {sorted(_TABLE)}")
    return _TABLE[name][0].from_dict(values)
