"""Distributed setup from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

Without those variables everything runs in one process. nccl on CUDA, gloo on CPU.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from resshift.errors import ConfigError


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str | torch.device | None = None) -> Distributed:
    """Join the process group torchrun describes (if any) and pick this process's device.

    `device` None: cuda:LOCAL_RANK when CUDA is available, else cpu.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device} requested but CUDA is not available; use --device cpu")
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # validation runs on rank 0 while the others wait: allow it an hour
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=1),
                                device_id=device if device.type == "cuda" else None)
    return Distributed(rank, world_size, device)


def cleanup(state: Distributed) -> None:
    if state.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: torch.Tensor, state: Distributed) -> torch.Tensor:
    if state.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def gather_objects(obj, state: Distributed) -> list:
    """Every process's `obj`, in rank order (one element without distribution)."""
    if not state.enabled:
        return [obj]
    out = [None] * state.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(state: Distributed) -> None:
    if state.enabled:
        dist.barrier()
