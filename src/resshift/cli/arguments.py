"""argparse value types shared by the commands: bounded integers and positive numbers."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_in_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from `low` to `high` (inclusive; no upper bound when None)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < low or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"{low} to {high}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value
    parse.__name__ = "integer"   # argparse names the type in "invalid integer value: 'x'"
    return parse


positive_int = int_in_range(1)
non_negative_int = int_in_range(0)


def positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value
