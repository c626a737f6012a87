"""Trainer, data pipeline, checkpoints and the `train` / `degrade` commands, on tiny random-weight models."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from resshift.cli import main
from resshift.data import HRFolderDataset, StreamBatchSampler, degrade_batch, keyed_generator, make_loader
from resshift.errors import CheckpointError, ConfigError, InputError
from resshift.hub import BUNDLED
from resshift.nets.swin_unet import SwinUNetConfig
from resshift.nets.unshuffle import UnshuffleConfig
from resshift.pipeline import ResShiftPipeline
from resshift.presets import ModelConfig
from resshift.schedule import ScheduleConfig
from resshift.training import checkpoint as ckpt
from resshift.training import trainer
from resshift.training.config import ModelSpec, TrainConfig, apply_overrides, load_config, preset_names
from resshift.training.losses import check_phase_crop, training_loss
from resshift.training.trainer import build_pipeline, lr_factor, model_config_of, train

from ddp import train_on_two_processes

pytestmark = pytest.mark.usefixtures("one_thread")

# A 48-channel pixel-unshuffle (f = 4) latent: 32x32 crops -> 8x8 latents and 8x8 LR inputs.
TINY_MODEL = ModelConfig(
    task="sr", scale=4, schedule=ScheduleConfig(num_steps=4), autoencoder=UnshuffleConfig(factor=4),
    unet=SwinUNetConfig(in_channels=48, out_channels=48, model_channels=32, channel_mult=(1, 2),
                        num_res_blocks=(1, 1), attention_resolutions=(8, 4), swin_embed_dim=32,
                        num_head_channels=16, window_size=4, mlp_ratio=2.0, image_size=8, lq_size=8))


def write_images(folder: Path, count: int, size=(48, 40), seed: int = 0, ext: str = "png") -> list[Path]:
    """Smooth random colour images (gradients + blobs), so that SR has something to learn."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        h, w = size
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        base = np.stack([np.sin(6 * x * rng.uniform(0.5, 2) + rng.uniform(0, 6)) for _ in range(3)], -1)
        base += np.stack([np.cos(5 * y * rng.uniform(0.5, 2) + rng.uniform(0, 6)) for _ in range(3)], -1)
        pixels = ((base + 2) / 4 * 255).clip(0, 255).astype(np.uint8)
        path = folder / f"img_{i:02d}.{ext}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths




@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hr")
    write_images(folder, 6)
    return folder


def tiny_config(folder: Path, *overrides: str, val: Path | None = None) -> TrainConfig:
    data = {
        "data": {"train_dirs": [str(folder)], "degradation": "bicubic", "crop_size": 32, "num_workers": 0,
                 "val_dir": str(val) if val else None, "val_count": 2, "val_crop": 32},
        "model": {"config": TINY_MODEL.to_dict()},
        "optim": {"lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 2, "total_steps": 6, "batch_size": 4,
                  "grad_clip": 1.0, "ema_decay": 0.9, "perceptual_weight": 0.0},
        "run": {"seed": 7, "log_interval": 1, "val_interval": 3, "ckpt_interval": 3, "keep_last": 2,
                "deterministic": True},
    }
    return TrainConfig.from_dict(apply_overrides(data, overrides))


def losses(rows: list[dict]) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


# --------------------------------------------------------------------------- data

def test_crops_and_flips_are_reproducible_from_the_seed(hr_folder):
    a = HRFolderDataset([hr_folder], 32, seed=1)
    b = HRFolderDataset([hr_folder], 32, seed=1)
    c = HRFolderDataset([hr_folder], 32, seed=2)
    assert len(a) == 6
    first = a[(3, 17)]["hq"]
    assert first.shape == (3, 32, 32) and first.dtype == torch.float32
    assert torch.equal(first, b[(3, 17)]["hq"])
    assert not all(torch.equal(a[(i, 100 + i)]["hq"], c[(i, 100 + i)]["hq"]) for i in range(6))
    # the data of a step is a function of (seed, step): workers and resume points do not matter
    sampler = dict(num_images=6, batch_size=4, seed=1, total_steps=5)
    whole = [b for b in StreamBatchSampler(**sampler, start_step=0)]
    assert [b for b in StreamBatchSampler(**sampler, start_step=3)] == whole[3:]
    halves = [StreamBatchSampler(**sampler, start_step=0, rank=r, world=2) for r in range(2)]
    assert [x + y for x, y in zip(*halves)] == whole
    serial = [batch["hq"] for batch in make_loader(a, StreamBatchSampler(**sampler, start_step=0),
                                                   num_workers=0, seed=1)]
    parallel = [batch["hq"] for batch in make_loader(a, StreamBatchSampler(**sampler, start_step=0),
                                                     num_workers=2, seed=1)]
    assert all(torch.equal(x, y) for x, y in zip(serial, parallel))


def test_unreadable_empty_and_small_images(tmp_path, caplog):
    folder = tmp_path / "mixed"
    write_images(folder, 2)
    (folder / "broken.png").write_bytes(b"this is not a picture")
    write_images(folder / "sub", 1, size=(24, 40), seed=3)     # short side 24 > 32/2: padded
    write_images(folder / "tiny", 1, size=(12, 40), seed=4)    # short side 12 <= 16: skipped
    with caplog.at_level(logging.INFO, logger="resshift.data"):
        data = HRFolderDataset([folder], 32, seed=0)
    assert len(data) == 3
    assert "broken.png: unreadable image, skipped" in caplog.text
    assert "too small" in caplog.text and "reflect-padded" in caplog.text
    padded = next(i for i, (path, _) in enumerate(data.items) if "sub" in path.parts)
    assert data[padded]["hq"].shape == (3, 32, 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no usable training image"):
        HRFolderDataset([tmp_path / "empty"], 32)
    with pytest.raises(InputError, match="no such folder"):
        HRFolderDataset([tmp_path / "missing"], 32)


def test_paired_crops_stay_aligned(tmp_path):
    hr = write_images(tmp_path / "hr", 2, size=(64, 48))
    (tmp_path / "lr").mkdir()
    for path in hr:       # LR = 2x2 block means, so crops, flips and rotations commute with it
        pixels = np.asarray(Image.open(path)).astype(np.float64)
        lr = pixels.reshape(32, 2, 24, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
        Image.fromarray(lr).save(tmp_path / "lr" / f"{path.stem}.png")
    data = HRFolderDataset([tmp_path / "hr"], 16, seed=0, scale=2, lq_dir=tmp_path / "lr")
    for key in range(8):
        item = data[(key % 2, key)]
        expected = torch.nn.functional.avg_pool2d(item["hq"][None], 2)[0]
        assert item["lq"].shape == (3, 8, 8)
        assert (item["lq"] - expected).abs().max() < 1 / 255 + 1e-6


# --------------------------------------------------------------------------- configuration

def test_config_rejects_unknown_keys_and_wrong_types(hr_folder):
    assert {"tiny-cpu", "realsr-x4-official", "bicubic-x4-official"} <= set(preset_names())
    official = load_config("realsr-x4-official")
    assert (official.optim.lr, official.optim.min_lr, official.optim.warmup_steps) == (5e-5, 2e-5, 5000)
    assert official.model.preset == "realsr-v3" and official.optim.perceptual_weight == 1.0
    config = tiny_config(hr_folder, "optim.lr=5e-4", "data.train_dirs=elsewhere", "optim.betas=[0.8, 0.9]")
    assert config.optim.lr == 5e-4 and config.data.train_dirs == ("elsewhere",)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"optim\.lrr"):
        tiny_config(hr_folder, "optim.lrr=1")
    with pytest.raises(ConfigError, match=r"unknown config key bogus"):
        tiny_config(hr_folder, "bogus.key=1")
    with pytest.raises(ConfigError, match=r"optim\.batch_size: expected an integer"):
        tiny_config(hr_folder, "optim.batch_size=four")
    with pytest.raises(ConfigError, match=r"data\.degradation: expected one of"):
        tiny_config(hr_folder, "data.degradation=blur")
    with pytest.raises(ConfigError, match=r"unknown config key model\.config\.unet\.model_channel; keys of model\.config\.unet"):
        tiny_config(hr_folder, "model.config.unet.model_channel=3")
    with pytest.raises(ConfigError, match="exactly one"):
        tiny_config(hr_folder, "model.preset=realsr-v3")
    assert main(["train", "tiny-cpu", "optim.nope=1", "--out", "/nonexistent/x"]) == 2


def test_learning_rate_schedule():
    optim = tiny_config(Path(".")).optim          # lr 1e-3 -> 1e-4, warm-up 2, 6 steps
    factors = [lr_factor(s, optim) for s in range(6)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == pytest.approx(1.0) and factors[-1] > 0.1
    assert lr_factor(6, optim) == pytest.approx(0.1) and lr_factor(100, optim) == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[1:], factors[2:]))


# --------------------------------------------------------------------------- the loss and the loop

def test_residual_prediction_loss_of_a_silent_network_is_the_lq_latent_error(hr_folder):
    """predict_residual: x0 = output + z_y, so a network that outputs zeros scores mean((z_y - z0)^2)."""
    pipe = build_pipeline(ModelSpec(config=dataclasses.replace(TINY_MODEL, predict_residual=True)), seed=0)
    assert not pipe.unet.out[-1].weight.any()                # training starts at zero output, as the official UNet
    hq = torch.stack([HRFolderDataset([hr_folder], 32, seed=0)[i]["hq"] for i in range(2)])
    lq = degrade_batch(hq, "bicubic", 4, keyed_generator(0))
    batch = {"hq": hq, "lq": lq, "sample": torch.arange(2)}
    mse = training_loss(pipe.unet, pipe, batch, etas=pipe.schedule().etas.float(), seed=0, perceptual=None)["mse"]
    upsampled = torch.nn.functional.interpolate(lq * 2 - 1, scale_factor=4, mode="bicubic")
    expected = (pipe.encode(upsampled) - pipe.encode(hq * 2 - 1)).square().mean(dim=(1, 2, 3))
    torch.testing.assert_close(mse, expected)


def test_a_few_steps_overfit_a_fixed_batch(hr_folder):
    torch.manual_seed(0)
    pipe = ResShiftPipeline.from_config(TINY_MODEL)
    unet = pipe.unet.train().requires_grad_(True)
    hq = torch.stack([HRFolderDataset([hr_folder], 32, seed=0)[i]["hq"] for i in range(4)])
    batch = {"hq": hq, "lq": degrade_batch(hq, "bicubic", 4, keyed_generator(0)), "sample": torch.arange(4)}
    etas = pipe.schedule().etas.float()
    optimizer = torch.optim.Adam(unet.parameters(), lr=2e-3)
    history = []
    for _ in range(25):
        terms = training_loss(unet, pipe, batch, etas=etas, seed=0, perceptual=None)
        optimizer.zero_grad()
        terms["loss"].mean().backward()
        optimizer.step()
        history.append(terms["loss"].mean().item())
    assert torch.equal(terms["loss"], terms["mse"]) and not terms["perceptual"].any() and not terms["phase"].any()
    assert np.mean(history[-3:]) < 0.5 * np.mean(history[:3])


def test_perceptual_term(hr_folder, tmp_path, monkeypatch):
    config = tiny_config(hr_folder, "optim.perceptual_weight=1.0", "optim.total_steps=1", "run.ckpt_interval=0")
    rows = train(config, tmp_path / "run")
    assert rows[0]["perceptual"] > 0 and rows[0]["loss"] == pytest.approx(rows[0]["mse"] + rows[0]["perceptual"],
                                                                           rel=1e-5)
    from resshift.metrics import stlpips

    asked = []

    def missing(cls, net="vgg"):
        asked.append(net)
        raise CheckpointError("ST-LPIPS weights need the stlpips-pytorch package")

    monkeypatch.setattr(stlpips.STLPIPS, "from_package", classmethod(missing))
    with pytest.raises(ConfigError, match="pip install stlpips-pytorch.*perceptual_weight=0"):
        train(config, tmp_path / "run2")
    alex = tiny_config(hr_folder, "optim.perceptual_weight=1.0", "optim.perceptual_net=alex", "optim.total_steps=1")
    with pytest.raises(ConfigError):
        train(alex, tmp_path / "run3")
    assert asked == ["vgg", "alex"]


def test_phase_term(hr_folder, tmp_path):
    """optim.phase_weight adds the decoded error's sub-pixel phase variance; crops must hold its windows."""
    config = tiny_config(hr_folder, "optim.phase_weight=100", "optim.total_steps=1", "run.ckpt_interval=0",
                         "data.crop_size=32")
    rows = train(config, tmp_path / "run")
    assert rows[0]["phase"] > 0 and rows[0]["loss"] == pytest.approx(rows[0]["mse"] + 100 * rows[0]["phase"], rel=1e-5)
    with pytest.raises(ConfigError, match="crop_size >= 64"):
        check_phase_crop(1.0, crop_size=32, period=8)
    check_phase_crop(0.0, crop_size=32, period=8)


def test_phase_period_reaches_the_loss_and_the_crop_check(hr_folder, tmp_path):
    """optim.phase_period=8 (twice the latent's f) measures the phases over 8x8 pixels: 64-pixel windows."""
    overrides = ["optim.phase_weight=100", "optim.total_steps=1", "run.ckpt_interval=0", "run.val_interval=0"]
    with pytest.raises(ConfigError, match="crop_size >= 64"):
        train(tiny_config(hr_folder, *overrides, "optim.phase_period=8", "data.crop_size=32"), tmp_path / "small")
    (own,), (wide,) = (train(tiny_config(hr_folder, *overrides, *period, "data.crop_size=64"), tmp_path / name)
                       for name, period in (("own", []), ("wide", ["optim.phase_period=8"])))
    assert own["mse"] == wide["mse"] and own["phase"] != wide["phase"] > 0
    assert wide["loss"] == pytest.approx(wide["mse"] + 100 * wide["phase"], rel=1e-5)
    with pytest.raises(ConfigError, match="phase_period must be at least 2"):
        tiny_config(hr_folder, "optim.phase_period=1")


def test_vqgan_latent_space_needs_weights_or_an_explicit_opt_in(hr_folder, tmp_path, caplog):
    vq = {"type": "vqgan", "ch": 32, "ch_mult": [1, 2, 4], "num_res_blocks": 1, "n_embed": 64}
    overrides = [f"model.config.autoencoder={vq}", "model.config.unet.in_channels=3",
                 "model.config.unet.out_channels=3", "optim.total_steps=1", "run.ckpt_interval=0",
                 "run.val_interval=0", "optim.perceptual_weight=1.0"]
    with pytest.raises(ConfigError, match="autoencoder_weights"):
        train(tiny_config(hr_folder, *overrides), tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="resshift.training"):
        rows = train(tiny_config(hr_folder, *overrides, "model.random_autoencoder=true"), tmp_path / "run")
    assert "RANDOM weights" in caplog.text and rows[0]["perceptual"] > 0


def test_autoencoder_weights_from_a_model_folder(hr_folder, tmp_path):
    """A model folder's model.safetensors provides the frozen autoencoder (its "autoencoder." entries)."""
    vq = {"type": "vqgan", "ch": 32, "ch_mult": [1, 2, 4], "num_res_blocks": 1, "n_embed": 64}
    overrides = [f"model.config.autoencoder={vq}", "model.config.unet.in_channels=3",
                 "model.config.unet.out_channels=3"]
    config = tiny_config(hr_folder, *overrides)
    torch.manual_seed(3)
    donor = ResShiftPipeline.from_config(config.model.config)
    donor.save_pretrained(tmp_path / "donor")
    spec = tiny_config(hr_folder, *overrides, f"model.autoencoder_weights={tmp_path / 'donor' / 'model.safetensors'}")
    pipe = build_pipeline(spec.model, seed=0)
    for name, value in donor.autoencoder.state_dict().items():
        assert torch.equal(pipe.autoencoder.state_dict()[name], value), name


def test_pretrained_takes_a_bundled_model_name():
    """model.pretrained=bicubic-x4 fine-tunes the bundled weights (how realsr-x4 is trained)."""
    pipe = build_pipeline(ModelSpec(pretrained="bicubic-x4"), seed=0)
    bundled = ResShiftPipeline.from_pretrained(BUNDLED["bicubic-x4"].path)
    assert model_config_of(ModelSpec(pretrained="bicubic-x4")) == bundled.config == pipe.config
    assert pipe.dtype == torch.float32     # fp16 storage, fp32 training
    for name, value in bundled.unet.state_dict().items():
        assert torch.equal(pipe.unet.state_dict()[name], value), name
    with pytest.raises(ConfigError, match="model.pretrained=no-such-model: not a model folder"):
        build_pipeline(ModelSpec(pretrained="no-such-model"), seed=0)


def test_mixed_precision_and_accumulation(hr_folder, tmp_path):
    config = tiny_config(hr_folder, "optim.amp=bf16", "optim.grad_accum=2", "optim.total_steps=2",
                         "run.ckpt_interval=0", "run.val_interval=0", "run.deterministic=false")
    rows = train(config, tmp_path / "run")
    assert len(rows) == 2 and all(np.isfinite(r["loss"]) for r in rows)


def test_resume_is_exact_and_export_loads(hr_folder, tmp_path):
    val = tmp_path / "val"
    write_images(val, 2, size=(40, 40), seed=9)
    config = tiny_config(hr_folder, val=val)
    whole = train(config, tmp_path / "whole")
    assert len(losses(whole)) == 6 and losses(whole)[6] < losses(whole)[1]
    assert [r["step"] for r in whole if "val_psnr" in r] == [3, 6]

    killed = train(config, tmp_path / "killed", stop_after=5)        # dies 2 steps after the step-3 checkpoint
    assert losses(killed) == {s: losses(whole)[s] for s in range(1, 6)}
    latest = ckpt.latest_checkpoint(tmp_path / "killed")
    assert latest.name == "step_00000003.pt"
    resumed = train(config, tmp_path / "killed", resume=latest)      # a fresh start from the file
    assert losses(resumed) == {s: losses(whole)[s] for s in range(4, 7)}   # bit-exact
    with open(tmp_path / "killed" / "metrics.csv") as fp:
        assert [int(r["step"]) for r in csv.DictReader(fp)] == [1, 2, 3, 4, 5, 6]
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "killed")] == ["step_00000003.pt", "step_00000006.pt"]
    for name in ("curves.png", "samples/step_00000006.png", "config.yaml"):
        assert (tmp_path / "whole" / name).is_file()

    pipe = ResShiftPipeline.from_pretrained(tmp_path / "whole" / "export")
    state = ckpt.load_checkpoint(tmp_path / "whole" / "checkpoints" / "step_00000006.pt")
    assert all(torch.equal(v, state["ema"][k]) for k, v in pipe.unet.state_dict().items())
    out = pipe(torch.rand(1, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 32, 32)
    folder = tmp_path / "fp16"
    assert main(["train", "export", "--checkpoint", str(tmp_path / "whole" / "checkpoints" / "step_00000006.pt"),
                 "-o", str(folder), "--dtype", "fp16"]) == 0
    assert ResShiftPipeline.from_pretrained(folder).unet.state_dict().keys() == pipe.unet.state_dict().keys()


def test_bad_checkpoints_and_failed_saves(hr_folder, tmp_path, monkeypatch, full_disk, caplog):
    config = tiny_config(hr_folder, "optim.total_steps=2", "run.ckpt_interval=1", "run.val_interval=0")
    full_disk(after=4096, name="step_00000002.pt")     # the disk fills up during the second save
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / ".step_00000001.pt.0123abcd.tmp").write_bytes(b"a killed run's save")
    with caplog.at_level(logging.ERROR, logger="resshift.training.trainer"):
        rows = train(config, tmp_path / "run")                         # training goes on
    assert len(losses(rows)) == 2
    good = ckpt.latest_checkpoint(tmp_path / "run")
    assert good.name == "step_00000001.pt" and ckpt.load_checkpoint(good)["step"] == 1
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_00000001.pt"]
    (message,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in message and "step_00000002.pt: could not save the checkpoint" in message
    assert "No space left on device" in message and "earlier checkpoints are intact" in message

    full_disk(after=100, name="step_00000001.pt")
    with pytest.raises(CheckpointError, match="intact"):
        ckpt.save_checkpoint({"step": 99}, good)                      # overwriting the good file fails
    assert ckpt.load_checkpoint(good)["step"] == 1
    full_disk(None)

    other = tiny_config(hr_folder, "model.config.unet.model_channels=64")
    with pytest.raises(CheckpointError, match="another architecture.*model_channels"):
        train(other, tmp_path / "run", resume=good)
    state = ckpt.load_checkpoint(good)
    state["unet"] = {k: v for k, v in state["unet"].items() if not k.startswith("out.")}
    torch.save(state, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="does not fit SwinUNet: missing: out"):
        train(config, tmp_path / "run", resume=tmp_path / "foreign.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a readable training checkpoint"):
        ckpt.load_checkpoint(tmp_path / "junk.pt")


def test_a_nan_loss_stops_training_with_one_line_and_keeps_the_last_good_checkpoint(hr_folder, tmp_path,
                                                                                     monkeypatch, capsys):
    config = tiny_config(hr_folder, "optim.total_steps=6", "run.ckpt_interval=2", "run.val_interval=0",
                         "run.keep_last=5")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    calls, real_loss = [], trainer.training_loss

    def loss_nan_at_step_5(*args, **kwargs):
        terms = real_loss(*args, **kwargs)
        calls.append(1)
        return {**terms, "loss": terms["loss"] * math.nan} if len(calls) == 5 else terms

    monkeypatch.setattr(trainer, "training_loss", loss_nan_at_step_5)
    run = tmp_path / "run"
    assert main(["train", str(path), "--out", str(run), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("resshift train: error: the training loss became NaN or infinite at step 5 (on 1 of 1")
    assert f"the last checkpoint is {run / 'checkpoints' / 'step_00000004.pt'}" in err
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_00000002.pt", "step_00000004.pt"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000002.pt", "step_00000004.pt"]
    state = ckpt.load_checkpoint(run / "checkpoints" / "step_00000004.pt")
    assert all(torch.isfinite(v).all() for v in state["unet"].values())
    with open(run / "metrics.csv") as fp:
        assert [int(r["step"]) for r in csv.DictReader(fp)] == [1, 2, 3, 4]
    assert not (run / "export").exists()


NAN_ON_RANK_1 = """
import math, os, sys
from resshift.cli import main
from resshift.training import trainer

calls, real_loss = [], trainer.training_loss


def loss(*args, **kwargs):
    terms = real_loss(*args, **kwargs)
    calls.append(1)
    return {**terms, "loss": terms["loss"] * math.nan} if os.environ["RANK"] == "1" and len(calls) == 3 else terms


trainer.training_loss = loss
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_under_ddp_a_nan_on_one_rank_stops_every_rank_at_that_step(hr_folder, tmp_path):
    config = tiny_config(hr_folder, "optim.total_steps=6", "run.ckpt_interval=2", "run.val_interval=0")
    path, script = tmp_path / "config.yaml", tmp_path / "nan_on_rank_1.py"
    path.write_text(yaml.safe_dump(config.to_dict()))
    script.write_text(NAN_ON_RANK_1)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
         "train", str(path), "--out", str(tmp_path / "run"), "--device", "cpu", "--quiet"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode != 0
    # Each rank says it once, the same; the two ranks share stderr, so their lines may run together.
    assert result.stderr.count("resshift train: error:") == 2, result.stderr[-3000:]
    assert result.stderr.count("became NaN or infinite at step 3 (on 1 of 2 processes)") == 2
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == ["step_00000002.pt"]


def test_ddp_two_processes_match_one(hr_folder, tmp_path):
    config = tiny_config(hr_folder, "optim.total_steps=2", "run.ckpt_interval=0", "run.val_interval=0")
    single = losses(train(config, tmp_path / "single"))
    ddp = train_on_two_processes(config, tmp_path)     # 2 processes x 2 micro-batches of 1 image
    assert ddp.keys() == single.keys() == {1, 2}
    for step in (1, 2):
        assert ddp[step] == pytest.approx(single[step], rel=1e-5)
    assert (tmp_path / "ddp" / "export" / "config.json").is_file()


# --------------------------------------------------------------------------- resshift degrade

def test_degrade_command_writes_pairs_and_a_contact_sheet(tmp_path):
    write_images(tmp_path / "hr", 3, size=(100, 90))
    for preset in ("realesrgan", "bicubic", "first-order"):
        assert main(["degrade", "-i", str(tmp_path / "hr"), "-o", str(tmp_path / preset), "--preset", preset,
                     "--scale", "4", "--seed", "5", "--crop", "64"]) == 0
        lq = sorted((tmp_path / preset / "lq").iterdir())
        assert [p.name for p in lq] == ["img_00.png", "img_01.png", "img_02.png"]
        assert Image.open(lq[0]).size == (16, 16) and Image.open(tmp_path / preset / "gt" / lq[0].name).size == (64, 64)
        assert Image.open(tmp_path / preset / "contact_sheet.png").size[0] > 0
    assert main(["degrade", "-i", str(tmp_path / "hr"), "-o", str(tmp_path / "again"), "--preset", "realesrgan",
                 "--seed", "5", "--crop", "64"]) == 0
    assert main(["degrade", "-i", str(tmp_path / "hr"), "-o", str(tmp_path / "other"), "--preset", "realesrgan",
                 "--seed", "6", "--crop", "64"]) == 0

    def pixels(run):
        return [np.asarray(Image.open(p)) for p in sorted((tmp_path / run / "lq").iterdir())]

    assert all(np.array_equal(a, b) for a, b in zip(pixels("realesrgan"), pixels("again")))
    assert not all(np.array_equal(a, b) for a, b in zip(pixels("realesrgan"), pixels("other")))
    assert main(["degrade", "-i", str(tmp_path / "hr"), "-o", str(tmp_path / "again"), "--seed", "5"]) == 2


@pytest.mark.slow
def test_sigkill_then_resume_logs_the_same_losses(hr_folder, tmp_path):
    config = tiny_config(hr_folder, "optim.total_steps=6", "run.ckpt_interval=2", "run.val_interval=0")
    train(config, tmp_path / "whole")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    run = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "resshift", "train", str(path), "--out", str(run), "--quiet"],
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    while not (run / "checkpoints" / "step_00000002.pt").exists() and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL                       # killed mid-run, after checkpoint 2
    assert main(["train", "--resume", "--out", str(run), "--quiet"]) == 0

    def column(folder):
        with open(folder / "metrics.csv") as fp:
            return [(r["step"], r["loss"], r["grad_norm"]) for r in csv.DictReader(fp)]

    assert column(run) == column(tmp_path / "whole") and len(column(run)) == 6


# --------------------------------------------------------------------------- inpainting and faces

TINY_INPAINT = {**TINY_MODEL.to_dict(), "task": "inpaint", "scale": 1,
                "unet": {**TINY_MODEL.to_dict()["unet"], "cond_mask": True, "lq_size": 32}}
SMALL_MASKS = ["data.degradation=inpaint", f"model.config={json.dumps(TINY_INPAINT)}",
               "data.masks={irregular_max_len: 12, irregular_max_width: 6, box_margin: 2, box_min_size: 4, "
               "box_max_size: 14}"]


def test_shift_term_is_zero_for_an_equivariant_network_and_measures_a_plaid():
    """optim.shift_weight: a network that acts pixel by pixel scores 0; one that adds a fixed pattern per
    latent cell (a 4-pixel plaid P) scores mean((P - P rolled back by the batch's offset)^2) over the holes
    away from the borders, computed here from the offset and the plaid alone."""
    from resshift.data import synthesize_batch
    from resshift.training.losses import SHIFT_MARGIN, draw_shift
    pipe = ResShiftPipeline.from_config(ModelConfig.from_dict({**TINY_INPAINT, "predict_residual": True}))
    masks = load_config("compact-inpaint-telea", []).data.masks
    batch = synthesize_batch(torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(4)), "inpaint", 1,
                             keyed_generator(5), masks=masks) | {"sample": torch.tensor([3, 8])}
    etas = pipe.schedule().etas.float()
    cell = torch.randn(1, 48, 1, 1, generator=torch.Generator().manual_seed(6)) * 0.1   # one value per phase

    def shift_term(network):
        return training_loss(network, pipe, batch, etas=etas, seed=0, perceptual=None, shift_weight=2.0)

    pointwise = shift_term(lambda x, t, **cond: 0.5 * x)
    assert torch.equal(pointwise["shift"], torch.zeros(2)) and torch.equal(pointwise["loss"], pointwise["mse"])
    plaid = shift_term(lambda x, t, **cond: cell.expand_as(x))
    dy, dx = draw_shift(batch["sample"], 0)
    pattern = torch.nn.functional.pixel_shuffle(cell.expand(1, 48, 24, 24), 4)          # (1, 3, 96, 96)
    inner = (..., slice(SHIFT_MARGIN, -SHIFT_MARGIN), slice(SHIFT_MARGIN, -SHIFT_MARGIN))
    squared = (torch.roll(pattern, (-dy, -dx), dims=(-2, -1)) - pattern)[inner].square().sum(1, keepdim=True)
    hole = batch["mask"][inner]
    expected = (squared * hole).sum(dim=(1, 2, 3)) / (3 * hole.sum(dim=(1, 2, 3)))
    assert (dy % 4, dx % 4) != (0, 0) and hole.sum(dim=(1, 2, 3)).min() > 100 and expected.min() > 1e-3
    torch.testing.assert_close(plaid["shift"], expected)
    torch.testing.assert_close(plaid["loss"], plaid["mse"] + 2.0 * expected)


def test_shift_term_needs_the_unshuffle_latent(hr_folder, tmp_path):
    vq = {"type": "vqgan", "ch": 32, "ch_mult": [1, 2, 4], "num_res_blocks": 1, "n_embed": 64}
    config = tiny_config(hr_folder, f"model.config.autoencoder={vq}", "model.config.unet.in_channels=3",
                         "model.config.unet.out_channels=3", "model.random_autoencoder=true", "optim.shift_weight=1.0")
    with pytest.raises(ConfigError, match="shift_weight needs the pixel-unshuffle latent"):
        train(config, tmp_path / "run")


def test_inpainting_trains_and_resumes_with_the_same_masks(hr_folder, tmp_path):
    val = tmp_path / "val"
    write_images(val, 2, size=(40, 40), seed=9)
    config = tiny_config(hr_folder, *SMALL_MASKS, "optim.total_steps=4", "run.val_interval=2",
                         "run.ckpt_interval=2", val=val)
    whole = train(config, tmp_path / "whole")
    assert len(losses(whole)) == 4 and all(np.isfinite(v) for v in losses(whole).values())
    assert [r["step"] for r in whole if "val_psnr" in r] == [2, 4]
    resumed = train(config, tmp_path / "whole", resume=ckpt.checkpoint_path(tmp_path / "whole", 2))
    assert losses(resumed) == {s: losses(whole)[s] for s in (3, 4)}    # same masks, same losses

    from resshift.data import synthesize_batch
    hq = torch.rand(2, 3, 32, 32)
    a, b = (synthesize_batch(hq, "inpaint", 1, keyed_generator(3), masks=config.data.masks) for _ in range(2))
    assert torch.equal(a["mask"], b["mask"]) and a["mask"].shape == (2, 1, 32, 32) and a["mask"].any()
    assert torch.equal(a["lq"], hq * (1 - a["mask"]))


@pytest.mark.parametrize("how", ["smooth", "telea"])
def test_training_and_inference_show_the_network_the_same_filled_holes(how):
    """hole_fill 'smooth' / 'telea': the trainer and the pipeline give the UNet the same filled holes as its LQ
    input, and with predict_residual an untrained network returns exactly that fill (the chain's start, z_y)."""
    from resshift.data import synthesize_batch
    from resshift.holes import fill_holes
    pipe = build_pipeline(ModelSpec(config=ModelConfig.from_dict({**TINY_INPAINT, "hole_fill": how,
                                                                   "predict_residual": True})), seed=0)
    masks = load_config("tiny-inpaint-cpu", []).data.masks
    batch = synthesize_batch(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4)), "inpaint", 1,
                             keyed_generator(5), masks=masks)
    seen = []
    pipe.unet.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["lq"]), with_kwargs=True)
    training_loss(pipe.unet, pipe, {**batch, "sample": torch.arange(2)}, etas=pipe.schedule().etas.float(), seed=0,
                  perceptual=None)
    restored = pipe.restore(batch["lq"], batch["mask"], generator=torch.Generator().manual_seed(0))
    expected = fill_holes(batch["lq"] * 2 - 1, batch["mask"], how)
    assert batch["mask"].mean() > 0.05 and not torch.equal(expected, batch["lq"] * 2 - 1)
    for lq in seen:
        torch.testing.assert_close(lq, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(restored * 2 - 1, expected, rtol=0, atol=1e-5)


def test_pretrained_weights_under_another_chain_and_hole_fill(tmp_path):
    """model.pretrained + model.config: the folder's weights, the given config; the networks must match."""
    torch.manual_seed(2)
    donor = ResShiftPipeline.from_config(ModelConfig.from_dict(TINY_INPAINT))
    donor.save_pretrained(tmp_path / "donor")
    config = dataclasses.replace(donor.config, hole_fill="smooth", schedule=ScheduleConfig(num_steps=1, kappa=0.1))
    spec = ModelSpec(pretrained=str(tmp_path / "donor"), config=config)
    pipe = build_pipeline(spec, seed=0)
    assert pipe.config == model_config_of(spec) == config != donor.config
    for name, value in donor.unet.state_dict().items():
        assert torch.equal(pipe.unet.state_dict()[name], value), name
    wider = dataclasses.replace(config, unet=dataclasses.replace(config.unet, model_channels=64))
    with pytest.raises(ConfigError, match="model.config.unet differs from model.pretrained's"):
        build_pipeline(ModelSpec(pretrained=str(tmp_path / "donor"), config=wider), seed=0)


def test_task_and_degradation_must_match(hr_folder):
    with pytest.raises(ConfigError, match="data.degradation 'inpaint' needs a model with task 'inpaint'"):
        tiny_config(hr_folder, "data.degradation=inpaint")
    with pytest.raises(ConfigError, match="data.degradation 'face' needs a model with task 'face'"):
        tiny_config(hr_folder, "data.degradation=face")
    with pytest.raises(ConfigError, match="set data.degradation=inpaint"):
        tiny_config(hr_folder, *SMALL_MASKS[1:])
    with pytest.raises(ConfigError, match="set data.degradation=face"):
        load_config("faceir-official", ["data.degradation=bicubic"])
    with pytest.raises(ConfigError, match="data.degradation 'inpaint'.*scale 4"):
        load_config("inpaint-imagenet-official", ["model.preset=null", f"model.config={json.dumps(TINY_MODEL.to_dict())}"])


@pytest.mark.parametrize("name, task, weight, batch", [("inpaint-imagenet-official", "inpaint", 10.0, 96),
                                                       ("inpaint-face-official", "inpaint", 10.0, 96),
                                                       ("faceir-official", "face", 10.0, 56),
                                                       ("tiny-inpaint-cpu", "inpaint", 0.0, 16)])
def test_inpaint_and_face_presets_resolve(name, task, weight, batch):
    from resshift.training.trainer import model_config_of
    config = load_config(name)
    model = model_config_of(config.model)
    assert model.task == task and model.scale == 1 and config.data.degradation in (task, "inpaint")
    assert config.optim.perceptual_weight == weight and config.optim.batch_size == batch
    assert config.data.crop_size % (model.autoencoder.downsample_factor * model.unet.size_multiple) == 0
    assert TrainConfig.from_dict(config.to_dict()) == config
    if name == "faceir-official":
        assert config.data.crop_size == 512 and model.autoencoder.embed_dim == 8
    elif name != "tiny-inpaint-cpu":
        assert config.data.masks == type(config.data.masks)()          # the official ranges
        assert model.unet.model_channels == 160 and model.unet.cond_mask


def test_smooth_inpainting_preset_fine_tunes_stage_one_networks_under_a_new_chain():
    """compact-inpaint-smooth takes stage 1's weights (compact-inpaint): same networks, one step, kappa 0.1,
    smooth holes, the journal's perceptual weight and the phase penalty."""
    from resshift.training.trainer import model_config_of
    stage_one = model_config_of(load_config("compact-inpaint").model)
    config = load_config("compact-inpaint-smooth")
    model = model_config_of(config.model)
    assert (model.unet, model.autoencoder) == (stage_one.unet, stage_one.autoencoder)
    assert stage_one.hole_fill == "constant" and model.hole_fill == "smooth"
    assert (model.schedule.num_steps, model.schedule.kappa) == (1, 0.1)
    assert (config.optim.perceptual_weight, config.optim.phase_weight, config.optim.phase_period) == (10.0, 4000.0, 8)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_telea_inpainting_preset_trains_compact_inpaints_network_from_scratch_with_the_shift_term():
    """compact-inpaint-telea (inpaint-natural's recipe): compact-inpaint's networks from random weights, one
    step with kappa 0.1, Telea-filled holes, the journal's perceptual weight and the shift term."""
    from resshift.training.losses import check_shift
    from resshift.training.trainer import model_config_of
    config = load_config("compact-inpaint-telea")
    model = model_config_of(config.model)
    stage_one = model_config_of(load_config("compact-inpaint").model)
    assert config.model.pretrained is None and (model.unet, model.autoencoder) == (stage_one.unet, stage_one.autoencoder)
    assert model.hole_fill == "telea" and model.predict_residual
    assert (model.schedule.num_steps, model.schedule.kappa) == (1, 0.1)
    assert (config.optim.perceptual_weight, config.optim.shift_weight, config.optim.phase_weight) == (10.0, 2000.0, 0.0)
    check_shift(config.optim.shift_weight, ResShiftPipeline.from_config(model), config.data.crop_size)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_ema_warmup_decay_in_closed_form() -> None:
    from resshift.training.trainer import ema_decay_at
    assert ema_decay_at(1, 0.999, True) == pytest.approx(2 / 11)
    assert ema_decay_at(100, 0.999, True) == pytest.approx(101 / 110)
    assert ema_decay_at(10_000, 0.999, True) == 0.999          # (10001 / 10010) > 0.999
    assert ema_decay_at(1, 0.999, False) == 0.999
    # What the warm-up is for: the share of the initial weights left after 1500 steps.
    left = math.prod(ema_decay_at(s, 0.999, True) for s in range(1, 1501))
    assert left < 1e-20 < 0.999 ** 1500


def test_curves_show_the_perceptual_term_when_nothing_is_validated(tmp_path):
    from resshift.training.logs import MetricsLog, draw_curves

    def red_pixels_on_the_right(rows: list[dict]) -> int:
        metrics = MetricsLog(tmp_path, tensorboard=False)
        for row in rows:
            metrics.write(row)
        draw_curves(metrics, tmp_path / "curves.png")
        pixels = np.asarray(Image.open(tmp_path / "curves.png").convert("RGB"))[:, 450:].astype(int)
        return int((np.abs(pixels - [0xD6, 0x27, 0x28]).sum(axis=2) < 30).sum())

    mse_only = [{"step": s, "loss": 1 / s, "mse": 1 / s, "perceptual": 0.0} for s in (50, 100, 150)]
    with_term = [{"step": s, "loss": 1 / s, "mse": 0.1, "perceptual": 0.5 - s / 1000} for s in (50, 100, 150)]
    assert red_pixels_on_the_right(mse_only) == 0          # nothing to show: an empty panel
    assert red_pixels_on_the_right(with_term) > 20         # the ST-LPIPS curve


def test_curves_of_an_adversarial_run_add_the_generator_and_discriminator_losses(tmp_path):
    from resshift.training.logs import MetricsLog, draw_curves

    def third_panel(rows: list[dict]) -> np.ndarray | None:
        metrics = MetricsLog(tmp_path, tensorboard=False)
        for row in rows:
            metrics.write(row)
        draw_curves(metrics, tmp_path / "curves.png")
        pixels = np.asarray(Image.open(tmp_path / "curves.png").convert("RGB")).astype(int)
        return pixels[40:, 900:] if pixels.shape[1] > 900 else None

    def count(pixels: np.ndarray, colour: str) -> int:
        rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
        return int((np.abs(pixels - rgb).sum(axis=2) < 30).sum())

    plain = [{"step": s, "loss": 1 / s, "mse": 0.1, "perceptual": 0.3, "gan": 0.0, "critic": 0.0} for s in (25, 50)]
    adversarial = [{"step": s, "loss": 1 / s, "mse": 0.1, "perceptual": 0.3, "gan": 0.7 + s / 100,
                    "critic": 1.4 - s / 100} for s in (25, 50, 75)]
    assert third_panel(plain) is None                      # no discriminator: two panels, as before
    panel = third_panel(adversarial)
    assert count(panel, "#2ca02c") > 20 and count(panel, "#ff7f0e") > 20   # both curves, below the legend


def test_resume_on_another_number_of_processes_reseeds_from_the_keys(caplog):
    from resshift.data import KEY_RESEED, keyed_seed
    from resshift.distributed import World
    from resshift.training.trainer import restore_rng

    saved = [ckpt.rng_state(), ckpt.rng_state()]                 # written by 2 processes
    with caplog.at_level(logging.WARNING, logger="resshift.training.trainer"):
        restore_rng(saved, World(rank=0, size=1), seed=7, step=300)
    assert "written by 2 process(es), this run has 1" in caplog.text
    drawn = torch.rand(4)
    torch.manual_seed(keyed_seed(7, KEY_RESEED, 300, 0))         # the documented re-seeding
    assert torch.equal(drawn, torch.rand(4))
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    state = ckpt.rng_state()
    torch.rand(4)
    restore_rng([state], World(), seed=7, step=300)              # same world size: the saved state itself
    assert torch.equal(torch.rand(4), expected)


def test_adversarial_term_trains_both_networks_and_resumes_exactly(hr_folder, tmp_path):
    config = tiny_config(hr_folder, "optim.gan.weight=0.1", "optim.gan.start_step=2",
                         "optim.gan.discriminator.num_feat=4", "run.val_interval=0")
    whole = train(config, tmp_path / "whole")
    gan = {r["step"]: r["gan"] for r in whole}
    critic = {r["step"]: r["critic"] for r in whole}
    # The discriminator learns from step 1; the generator's term is measured throughout, added from step 3.
    assert all(value > 0 for value in critic.values()) and all(value > 0 for value in gan.values())
    for row in whole:
        weight = 0.1 if row["step"] > 2 else 0.0
        assert row["loss"] == pytest.approx(row["mse"] + weight * row["gan"], rel=1e-5)
    state = ckpt.load_checkpoint(tmp_path / "whole" / "checkpoints" / "step_00000006.pt")
    assert {"critic", "critic_optimizer", "critic_scaler"} <= set(state)
    first = ckpt.load_checkpoint(tmp_path / "whole" / "checkpoints" / "step_00000003.pt")
    assert any(not torch.equal(v, state["critic"][k]) for k, v in first["critic"].items())   # it learned

    train(config, tmp_path / "killed", stop_after=4)
    resumed = train(config, tmp_path / "killed", resume=tmp_path / "killed" / "checkpoints" / "step_00000003.pt")
    assert losses(resumed) == {s: losses(whole)[s] for s in range(4, 7)}   # bit-exact, discriminator included
    assert {r["step"]: r["critic"] for r in resumed} == {s: critic[s] for s in range(4, 7)}
