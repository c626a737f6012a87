"""Shared test helpers: a tiny random-weight ResShift model, as a config and as a saved folder; a disk
that fills up."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Optional

import pytest
import torch

from resshift import fileio

from resshift.nets.swin_unet import SwinUNetConfig
from resshift.nets.vqgan import VQGANConfig
from resshift.pipeline import ResShiftPipeline
from resshift.presets import ModelConfig
from resshift.schedule import ScheduleConfig

TINY_VQGAN = VQGANConfig(ch=32, ch_mult=(1, 2, 4), num_res_blocks=1, n_embed=64)


def tiny_config(task="sr", scale=4, num_steps=4) -> ModelConfig:
    lq_size = 64 * 4 // scale
    unet = SwinUNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1),
                          attention_resolutions=(64, 32), swin_embed_dim=32, num_head_channels=16,
                          lq_size=lq_size, cond_mask=task == "inpaint")
    return ModelConfig(task=task, scale=scale, schedule=ScheduleConfig(num_steps=num_steps),
                       unet=unet, autoencoder=TINY_VQGAN)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny x4 SR model (random weights, seed 0) written by save_pretrained."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "tiny-x4"
    ResShiftPipeline.from_config(tiny_config()).save_pretrained(folder)
    return folder


@pytest.fixture
def one_thread():
    """Tiny networks gain nothing from threads, and on a busy machine OpenMP's waiting threads make
    them 10x slower: run them on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def full_disk(monkeypatch):
    """`full_disk(after, name="")`: from then on, every atomic output (resshift.fileio) whose file name contains
    `name` takes `after` bytes and then fails with ENOSPC, as on a full disk: the bytes that fit are written,
    then the low-level write raises. `full_disk(None)` frees the disk again."""
    real_write = fileio._Output.write

    def fill(after: Optional[int], name: str = "") -> None:
        def write(output: fileio._Output, data) -> int:
            if after is None or name not in Path(output.name).name:
                return real_write(output, data)
            room = after - getattr(output, "bytes_written", 0)
            if room >= len(data):
                output.bytes_written = getattr(output, "bytes_written", 0) + len(data)
                return real_write(output, data)
            if room > 0:
                output.bytes_written = after
                real_write(output, memoryview(data)[:room])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(fileio._Output, "write", write)

    return fill
