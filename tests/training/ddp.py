"""What the training tests share for DDP: a run of `resshift train` under torchrun with two CPU processes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import yaml

from resshift.training.config import TrainConfig, apply_overrides


def train_on_two_processes(config: TrainConfig, folder: Path) -> dict[int, float]:
    """`config` with its batch split over 2 processes x 2 micro-batches (as 1 process with the whole batch),
    trained under torchrun into folder/ddp; returns the logged loss by step."""
    path = folder / "ddp.yaml"
    path.write_text(yaml.safe_dump(apply_overrides(config.to_dict(), ["optim.grad_accum=2"])))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "resshift", "train", str(path), "--out", str(folder / "ddp"), "--device", "cpu", "--quiet"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(folder / "ddp" / "metrics.csv") as fp:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(fp)}
