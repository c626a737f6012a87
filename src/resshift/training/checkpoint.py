"""Training checkpoints: one plain dict per file, written atomically, the last K kept.

Contents (all plain containers and tensors, so loading uses ``torch.load(weights_only=True)``):

    step          optimizer steps done
    config        TrainConfig.to_dict() of the run
    model_config  ModelConfig.to_dict() of the network (the architecture that was trained)
    unet, ema     state_dicts of the trained UNet and of its exponential moving average
    autoencoder   state_dict of the frozen autoencoder (so that a checkpoint exports on its own)
    optimizer, scheduler, scaler   their state_dicts
    rng           per process: torch CPU, CUDA (if any), numpy and Python random states

The data order, crops, noise and degradations are keyed by (seed, step, sample) (see data.py), so
`step` is their whole state; nothing else is needed to resume exactly.

A save writes ``.step_XXXXXXXX.pt.<random>.tmp`` beside the target, fsyncs it and renames it; a
failure (disk full, ...) removes the temporary file and leaves every earlier checkpoint intact. A run
killed while saving leaves its temporary file, which the resumed run removes when it saves that step.
"""

from __future__ import annotations

import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resshift.errors import CheckpointError
from resshift.fileio import atomic_write, remove_stale_temporaries

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d{8,})\.pt$")


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path:
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"{run_dir}: no checkpoint to resume from (expected {CHECKPOINT_DIR}/step_*.pt)")
    return found[-1]


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write `state` atomically (temporary file, fsync, rename); CheckpointError on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    try:
        atomic_write(path, lambda fp: torch.save(state, fp))
    except (OSError, RuntimeError, pickle.PicklingError) as exc:
        raise CheckpointError(f"{path}: could not save the checkpoint ({exc}); earlier checkpoints are intact") from exc


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> None:
    for path in list_checkpoints(run_dir)[:-keep_last]:
        path.unlink(missing_ok=True)


REQUIRED = ("step", "config", "model_config", "unet", "ema", "autoencoder", "optimizer", "scheduler", "scaler")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint (tensors and plain containers only); CheckpointError if unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable training checkpoint ({first})") from exc
    missing = [k for k in REQUIRED if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a resshift training checkpoint (missing {', '.join(missing)}); "
                              f"to fine-tune from model weights use model.pretrained or model.official_unet")
    return state


# --------------------------------------------------------------------------- random states

def rng_state() -> dict[str, Any]:
    """This process's global generator states, as tensors and plain containers."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {**numpy_state, "state": {"key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                                           "pos": numpy_state["state"]["pos"]}},
        "python": random.getstate(),
    }


def seed_everything(seed: int) -> None:
    """Seed this process's global generators: torch (CPU and CUDA), numpy and Python's random."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {"key": state["numpy"]["state"]["key"].numpy().astype(np.uint32),
                            "pos": state["numpy"]["state"]["pos"]}
    np.random.set_state(numpy_state)
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
