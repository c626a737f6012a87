"""Several processes under torchrun: which one this is, its device, and the collective calls resshift makes.

One helper for inference and training alike. Without torchrun's variables (RANK, WORLD_SIZE,
LOCAL_RANK) there is one process and every collective call is a no-op.

| where      | what the ranks share                                  | process-group timeout                  |
|------------|-------------------------------------------------------|----------------------------------------|
| batches    | every world-th image each; summaries gathered at the end | `INFERENCE_TIMEOUT`: ranks meet only after their whole share |
| training   | DDP gradients, logged sums, RNG states at checkpoints | `TRAINING_TIMEOUT`: the others wait while rank 0 validates |
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from .errors import ConfigError

__all__ = ["INFERENCE_TIMEOUT", "TRAINING_TIMEOUT", "World", "all_sum", "barrier", "gather_objects",
           "process_group", "resolve_device"]

INFERENCE_TIMEOUT = datetime.timedelta(hours=24)
TRAINING_TIMEOUT = datetime.timedelta(hours=1)
Item = TypeVar("Item")


@dataclass(frozen=True)
class World:
    """This process's place among torchrun's workers: one process (rank 0 of 1) without torchrun."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "World":
        """From RANK, WORLD_SIZE and LOCAL_RANK; LOCAL_RANK defaults to RANK (one machine)."""
        try:
            rank, size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
            local_rank = int(os.environ.get("LOCAL_RANK", rank))
        except ValueError as exc:
            raise ConfigError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({exc})") from exc
        if not 0 <= rank < size:
            raise ConfigError(f"RANK {rank} must lie in [0, WORLD_SIZE {size})")
        return cls(rank, size, local_rank)

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, items: Sequence[Item]) -> list[Item]:
        """Every size-th item from this rank's index: each item goes to exactly one rank."""
        return list(items[self.rank :: self.size])


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' -> a device that exists on this machine.

    'auto' takes CUDA, then MPS, then the CPU; a bare 'cuda' means cuda:LOCAL_RANK (under torchrun,
    each process its own GPU).
    """
    name = name.strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA GPU is available here (use --device cpu or auto)")
        index = local_rank if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device cuda:{index}: only {torch.cuda.device_count()} GPU(s) here")
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: Apple's Metal backend is not available here (use --device cpu)")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


@contextlib.contextmanager
def process_group(world: World, device: torch.device, timeout: datetime.timedelta) -> Iterator[None]:
    """Join the ranks' process group (nccl on CUDA, gloo otherwise) for the block, when there are several."""
    if not world.enabled or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout,
                                device_id=device if device.type == "cuda" else None)
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"cannot join the other ranks (WORLD_SIZE={world.size}; start the command "
                          f"with torchrun): {exc}") from exc
    try:
        yield
    finally:
        dist.destroy_process_group()


def _joined(world: World) -> bool:
    return world.enabled and dist.is_initialized()


def barrier(world: World) -> None:
    if _joined(world):
        dist.barrier()


def all_sum(values: torch.Tensor, world: World) -> torch.Tensor:
    """`values` summed over the ranks, in place."""
    if _joined(world):
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def gather_objects(obj: Any, world: World) -> list:
    """Every rank's `obj`, in rank order (a list of one without torchrun)."""
    if not _joined(world):
        return [obj]
    out: list = [None] * world.size
    dist.all_gather_object(out, obj)
    return out
