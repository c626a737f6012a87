"""Validation of degradation parameters, shared by every degradation config (one-line ConfigErrors)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from resshift.degradations.kernels import KERNEL_TYPES
from resshift.errors import ConfigError

__all__ = ["check_kernel", "check_prob", "check_probs", "check_range"]


def check_prob(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"{name} is a probability and must lie in [0, 1], got {p}.")


def check_probs(name: str, probs: Sequence[float], length: int) -> None:
    if len(probs) != length or any(p < 0 for p in probs) or not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
        raise ConfigError(f"{name} must be {length} non-negative probabilities summing to 1, got {tuple(probs)}.")


def check_range(name: str, r: Sequence[float], low: float, high: float, contains: float | None = None) -> None:
    ok = len(r) == 2 and low <= r[0] <= r[1] <= high and (contains is None or r[0] <= contains <= r[1])
    if not ok:
        around = f" and contain {contains}" if contains is not None else ""
        raise ConfigError(f"{name} must be (low, high) with {low} <= low <= high <= {high}{around}, got {tuple(r)}.")


def check_kernel(suffix: str, size: int, kernel_list: Sequence[str], kernel_prob: Sequence[float],
                  sigma: Sequence[float], betag: Sequence[float], betap: Sequence[float]) -> None:
    if size < 5 or size % 2 == 0:
        raise ConfigError(f"blur_kernel_size{suffix} must be odd and >= 5, got {size}.")
    if not set(kernel_list) <= set(KERNEL_TYPES):
        raise ConfigError(f"kernel_list{suffix} may only name {KERNEL_TYPES}, got {tuple(kernel_list)}.")
    check_probs(f"kernel_prob{suffix}", kernel_prob, len(kernel_list))
    check_range(f"blur_sigma{suffix}", sigma, 1e-3, math.inf)
    check_range(f"betag_range{suffix}", betag, 1e-3, math.inf, contains=1.0)
    check_range(f"betap_range{suffix}", betap, 1e-3, math.inf, contains=1.0)
