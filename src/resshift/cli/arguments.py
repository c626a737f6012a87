"""What the commands share on the argparse side: bounded integers, positive numbers, the runtime flags."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..models import BACKENDS, DTYPES


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


def add_runtime_arguments(group: argparse._ActionsContainer, models: str = "the model") -> None:
    """--device, --dtype and --backend: where and how the networks run (batch commands and serve)."""
    group.add_argument("--device", default="auto",
                       help="auto (CUDA, else MPS, else CPU; default), cpu, cuda, cuda:N or mps")
    group.add_argument("--dtype", choices=("auto", *DTYPES), default="auto",
                       help="auto: fp16 on CUDA, fp32 elsewhere (default)")
    group.add_argument("--backend", choices=BACKENDS, default="torch",
                       help=f"what runs the networks: torch (default), or onnxruntime on the CPU in fp32 ({models} "
                            "exported to ONNX into the cache on first use; needs pip install \"resshift[onnx]\")")
