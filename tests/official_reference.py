"""The official test vectors in ../shared/reference and the recipe that rebuilds their weights.

The recipe (../shared/reference/official_v3/README.md) fills every state_dict entry of a module
with deterministic pseudo-random values seeded by the entry's name, so our networks get exactly
the tensors the official networks had when the vectors were produced.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "reference"
UNET_SEED = 20240313
VQGAN_SEED = 20240314
COMPUTED_BUFFERS = ("relative_position_index", "attn_mask")


def is_computed_buffer(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in COMPUTED_BUFFERS


def recipe_tensor(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The recipe's value for one state_dict entry."""
    g = torch.Generator().manual_seed(seed + zlib.crc32(name.encode()))
    r = torch.randn(shape, generator=g, dtype=torch.float32)
    if len(shape) >= 2:
        if "relative_position_bias_table" in name:
            return 0.02 * r
        return r / math.sqrt(math.prod(shape[1:]))
    if name.endswith(".weight"):
        return 1 + 0.1 * r
    if name.endswith(".bias"):
        return 0.02 * r
    raise ValueError(f"the recipe does not cover {name} {shape}")


def recipe_state_dict(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Recipe values for every entry of `module`'s state_dict; computed buffers keep their values."""
    return {
        name: value if is_computed_buffer(name) else recipe_tensor(name, tuple(value.shape), seed)
        for name, value in module.state_dict().items()
    }


def apply_recipe(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    module.load_state_dict(recipe_state_dict(module, seed), strict=True)
    return module.eval()


def read_key_list(filename: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype) from one of the official key lists."""
    entries = {}
    for line in (REFERENCE / "official_v3" / filename).read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, shape, dtype = line.split("\t")
        entries[name] = (tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), dtype)
    return entries


def load_vectors(relative: str) -> dict[str, np.ndarray]:
    path = REFERENCE / relative
    if not path.exists():
        pytest.skip(f"{path} is missing (../shared is not beside the checkout)")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}
