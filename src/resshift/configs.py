"""One strict loader for every configuration: model folders' config.json and training YAML alike.

A configuration is a frozen dataclass that inherits `Config`: `from_dict` builds it from plain data
(JSON, YAML, a checkpoint) and `to_dict` turns it back. The loader follows the type annotations:

* an unknown key, a wrong type or a value a class refuses raises ConfigError naming the dotted key
  (``optim.lr: expected a number, got 'fast'``, ``model.config.unet.window_size: ...``);
* lists become tuples where a tuple is declared; YAML 1.1 strings such as '5e-5' are read as floats;
* a field holding one of several config classes (the autoencoders) picks the class by the mapping's
  ``type`` key, each class naming itself in ``TYPE_NAME``; without the key, the first that fits.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

from .errors import ConfigError

__all__ = ["Config", "from_mapping", "to_plain"]

C = TypeVar("C")
TYPE_KEY = "type"


class Config:
    """Mixin for configuration dataclasses: strict `from_dict`, plain `to_dict`."""

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        return from_mapping(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)


def to_plain(value: Any) -> Any:
    """Dataclasses -> dicts (with their ``type`` when they name one), tuples -> lists, recursively."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        name = getattr(value, "TYPE_NAME", None)
        return {TYPE_KEY: name, **fields} if name else fields
    if isinstance(value, Mapping):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [to_plain(item) for item in value]
    return value


def from_mapping(cls: type[C], data: Any, prefix: str = "") -> C:
    """Build dataclass `cls` from `data`, checking every key and value against the annotations."""
    where = prefix.rstrip(".") or f"the {cls.__name__}"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    data = {key: value for key, value in data.items() if not (key == TYPE_KEY and hasattr(cls, "TYPE_NAME"))}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]}; keys of {where}: {', '.join(names)}")
    values = {name: _coerce(hints[name], value, prefix + name) for name, value in data.items()}
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") if prefix else exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return _coerce_union(args, value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else from_mapping(tp, value, key + ".")
    if origin is tuple:
        return _coerce_tuple(args, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        return _coerce_float(value, key)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {tp}")  # pragma: no cover - a programming error


def _coerce_union(options: tuple, value: Any, key: str) -> Any:
    if value is None and type(None) in options:
        return None
    options = tuple(option for option in options if option is not type(None))
    if isinstance(value, Mapping) and TYPE_KEY in value:
        named = {getattr(option, "TYPE_NAME", None): option for option in options}
        if value[TYPE_KEY] not in named:
            choices = ", ".join(repr(name) for name in named if name)
            raise ConfigError(f"{key}.{TYPE_KEY}: expected one of {choices}, got {value[TYPE_KEY]!r}")
        return _coerce(named[value[TYPE_KEY]], value, key)
    errors = []
    for option in options:
        try:
            return _coerce(option, value, key)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of its types ({errors[0]})")


def _coerce_tuple(args: tuple, value: Any, key: str) -> tuple:
    if isinstance(value, str) and args[-1] is Ellipsis:
        value = [value]                                  # `data.train_dirs=folder`
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}: expected a list, got {value!r}")
    if args[-1] is Ellipsis:
        return tuple(_coerce(args[0], item, f"{key}[{i}]") for i, item in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
    return tuple(_coerce(arg, item, f"{key}[{i}]") for i, (arg, item) in enumerate(zip(args, value)))


def _coerce_float(value: Any, key: str) -> float:
    if isinstance(value, str):
        try:
            return float(value)                      # YAML 1.1 reads 5e-5 as a string
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    return float(value)
