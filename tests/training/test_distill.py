"""One-step distillation (model.teacher, resshift.training.distill) on tiny random-weight teachers."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from resshift import diffusion
from resshift.cli import main
from resshift.data import HRFolderDataset, degrade_batch, keyed_generator
from resshift.errors import ConfigError
from resshift.nets.swin_unet import SwinUNetConfig
from resshift.nets.unshuffle import UnshuffleConfig
from resshift.pipeline import ResShiftPipeline
from resshift.presets import ModelConfig
from resshift.schedule import Schedule, ScheduleConfig
from resshift.training import checkpoint as ckpt
from resshift.training.config import TrainConfig, apply_overrides, load_config
from resshift.training.distill import (INVERSE_TIMESTEP, distillation_loss, mean_square, one_step_config,
                                       student_from_teacher, teacher_chain, teacher_target)
from resshift.training.losses import draw_t_and_noise
from resshift.training.trainer import model_config_of, train

from ddp import train_on_two_processes

pytestmark = pytest.mark.usefixtures("one_thread")

# The tiny pixel-unshuffle model of test_training.py, with four steps: 32x32 crops, 8x8 latents and LR inputs.
TEACHER = ModelConfig(
    task="sr", scale=4, schedule=ScheduleConfig(num_steps=4, min_noise_level=0.04), predict_residual=True,
    autoencoder=UnshuffleConfig(factor=4),
    unet=SwinUNetConfig(in_channels=48, out_channels=48, model_channels=32, channel_mult=(1, 2),
                        num_res_blocks=(1, 1), attention_resolutions=(8, 4), swin_embed_dim=32,
                        num_head_channels=16, window_size=4, mlp_ratio=2.0, image_size=8, lq_size=8))


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory) -> Path:
    """Six smooth colour images (gradients), so that SR has something to learn."""
    folder = tmp_path_factory.mktemp("hr")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:40, 0:48] / 48
    for i in range(6):
        base = sum(np.stack([np.sin(k * x * rng.uniform(0.5, 2) + rng.uniform(0, 6)) for _ in range(3)], -1)
                   for k in (5, 6)) + np.stack([np.cos(5 * y + rng.uniform(0, 6)) for _ in range(3)], -1)
        Image.fromarray(((base + 3) / 6 * 255).clip(0, 255).astype(np.uint8)).save(folder / f"img_{i}.png")
    return folder


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    """A four-step teacher with random weights, the zero-initialised layers too (so that the timestep matters)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("teacher") / "tiny-4-step"
    pipe = ResShiftPipeline.from_config(TEACHER)
    with torch.no_grad():
        for parameter in pipe.unet.parameters():
            if not parameter.any():
                parameter.normal_(0, 0.05)
    pipe.save_pretrained(folder)
    return folder


def distill_config(folder: Path, teacher: Path, *overrides: str) -> TrainConfig:
    data = {
        "data": {"train_dirs": [str(folder)], "degradation": "bicubic", "crop_size": 32, "num_workers": 0,
                 "val_count": 0},
        "model": {"teacher": str(teacher)},
        "optim": {"lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 1, "total_steps": 6, "batch_size": 4,
                  "grad_clip": 1.0, "ema_decay": 0.9, "perceptual_weight": 0.0},
        "run": {"seed": 7, "log_interval": 1, "val_interval": 0, "ckpt_interval": 3, "keep_last": 2,
                "deterministic": True},
    }
    return TrainConfig.from_dict(apply_overrides(data, overrides))


def batch_of(folder: Path, count: int = 2) -> dict[str, torch.Tensor]:
    hq = torch.stack([HRFolderDataset([folder], 32, seed=0)[i]["hq"] for i in range(count)])
    return {"hq": hq, "lq": degrade_batch(hq, "bicubic", 4, keyed_generator(0)), "sample": torch.arange(count) + 5}


def losses(rows: list[dict], key: str = "loss") -> dict[int, float]:
    return {r["step"]: r[key] for r in rows if key in r}


# --------------------------------------------------------------------------- the student and the target

def test_the_student_starts_as_the_teachers_call_at_t_T_and_inverts_at_its_first_step(teacher_dir):
    teacher = ResShiftPipeline.from_pretrained(teacher_dir)
    student = student_from_teacher(teacher)
    assert student.config == one_step_config(teacher.config) and student.config.schedule.num_steps == 1
    assert student.schedule().timesteps == (0,)
    torch.testing.assert_close(student.schedule().etas[-1], teacher.schedule().etas[-1], rtol=1e-12, atol=0)
    x, lq = torch.randn(2, 48, 8, 8), torch.rand(2, 3, 8, 8) * 2 - 1

    def call(pipe, t):
        return pipe.unet(x, torch.full((2,), t), lq=lq)

    torch.testing.assert_close(call(student, 0), call(teacher, 3), rtol=0, atol=1e-5)                  # t = T
    torch.testing.assert_close(call(student, INVERSE_TIMESTEP), call(teacher, 0), rtol=0, atol=1e-5)   # t = 1
    assert (call(student, 0) - call(teacher, 0)).abs().max() > 1e-3          # the embedding did change
    for name, value in teacher.unet.state_dict().items():                     # only the time MLP's first layer
        assert torch.equal(student.unet.state_dict()[name], value) == (not name.startswith("time_embed.0.")), name


class Scaled(torch.nn.Module):
    """An oracle 'network' whose x0 prediction is `factor` times its unscaled input at any timestep: it undoes
    the input normalisation of a one-step chain (eta_1 = eta_T)."""

    def __init__(self, factor: float, input_scale: float) -> None:
        super().__init__()
        self.factor, self.input_scale = torch.nn.Parameter(torch.tensor(factor)), input_scale

    @property
    def device(self) -> torch.device:          # what the pipeline asks of its denoiser
        return self.factor.device

    @property
    def dtype(self) -> torch.dtype:
        return self.factor.dtype

    def forward(self, x: torch.Tensor, t: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
        return x * self.factor * self.input_scale


@pytest.mark.parametrize("factor", [1.0, 0.5])
def test_distillation_terms_in_closed_form_for_a_one_step_teacher(hr_folder, factor):
    """With a one-step teacher the teacher's map is one call, F(x) = c x for this oracle; the student is that map,
    so the distillation term is exactly 0; its inverse g = f gives inverse = (c^2 - 1)^2 mean(x_T^2) and
    consistency = (c^2 - 1)^2 mean(z0^2) (identity, c = 1: every term is 0)."""
    config = dataclasses.replace(TEACHER, predict_residual=False, schedule=ScheduleConfig(num_steps=1, kappa=2.0))
    eta = float(Schedule.from_config(config.schedule).etas[-1])
    oracle = Scaled(factor, math.sqrt(2.0 ** 2 * eta + 1))
    teacher = ResShiftPipeline(oracle, ResShiftPipeline.from_config(config).autoencoder, config)
    student = ResShiftPipeline(oracle, teacher.autoencoder, one_step_config(config))
    batch = batch_of(hr_folder)
    terms = distillation_loss(oracle, student, batch, teacher=teacher, chain=teacher_chain(config.schedule, None),
                              seed=3, inverse_weight=0.5, consistency_weight=2.0)
    z0 = student.encode(batch["hq"] * 2 - 1)
    z_y = student.encode(student.upsample(batch["lq"] * 2 - 1))
    x_T = diffusion.prior_sample(z_y, eta, 2.0, draw_t_and_noise(batch["sample"], 3, 1, z0)[1])
    assert torch.equal(terms["distill"], torch.zeros(2))
    shrink = (factor ** 2 - 1) ** 2
    torch.testing.assert_close(terms["inverse"], shrink * mean_square(x_T), rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(terms["consistency"], shrink * mean_square(z0), rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(terms["loss"], 0.5 * terms["inverse"] + 2.0 * terms["consistency"])
    assert not terms["perceptual"].any() and not terms["gan"].any()


def test_the_target_is_the_teachers_deterministic_chain_from_the_students_prior(teacher_dir, hr_folder):
    """F(x_T) is what `restore(..., sampler="deterministic")` returns for the prior noise the loss draws (keyed by
    the sample ids), and the distillation term compares it with the student's one step from that same prior."""
    teacher = ResShiftPipeline.from_pretrained(teacher_dir)
    student = student_from_teacher(teacher)
    batch = batch_of(hr_folder)
    cond = {"lq": batch["lq"] * 2 - 1}
    z_y = teacher.encode(teacher.upsample(cond["lq"]))
    noise = draw_t_and_noise(batch["sample"], 3, 1, z_y)[1]
    target = teacher_target(teacher, teacher_chain(teacher.config.schedule, None), z_y, cond, noise)
    restored = teacher.restore(batch["lq"], noise=noise, sampler="deterministic")
    decoded = (torch.nn.functional.pixel_shuffle(target, 4).clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(decoded, restored, rtol=0, atol=1e-6)
    one_step = student.restore(batch["lq"], noise=noise)
    assert not torch.allclose(one_step, restored, atol=1e-3)                  # four steps are not one

    terms = distillation_loss(student.unet, student, batch, teacher=teacher,
                              chain=teacher_chain(teacher.config.schedule, None), seed=3)
    student_x0 = diffusion.sample(lambda x, t: student.x0_from_output(student.unet(x, t, **cond), z_y), z_y,
                                  student.schedule(), noise=noise)
    torch.testing.assert_close(terms["distill"], mean_square(student_x0 - target), rtol=1e-5, atol=1e-8)


def test_a_shorter_teacher_chain_still_starts_at_t_T():
    config = ScheduleConfig(num_steps=15, min_noise_level=0.04)
    assert teacher_chain(config, None).timesteps == tuple(range(15))
    assert teacher_chain(config, 4).timesteps == (0, 5, 9, 14)          # not the official respacing (0, 3, 7, 11)
    assert teacher_chain(config, 1).timesteps == (14,)
    torch.testing.assert_close(teacher_chain(config, 4).sqrt_etas[-1], config.sqrt_etas()[-1])
    with pytest.raises(ConfigError, match="teacher_steps must be between 1 and the teacher's 15"):
        teacher_chain(config, 16)


# --------------------------------------------------------------------------- the trainer

def test_a_short_run_lowers_the_distillation_loss(hr_folder, teacher_dir, tmp_path):
    rows = train(distill_config(hr_folder, teacher_dir, "optim.total_steps=12", "run.ckpt_interval=0",
                                "optim.lr=2e-3"), tmp_path / "run")
    distill = losses(rows, "distill")
    assert len(distill) == 12 and all(rows[0][k] > 0 for k in ("distill", "inverse", "consistency"))
    assert np.mean([distill[s] for s in (10, 11, 12)]) < 0.8 * np.mean([distill[s] for s in (1, 2, 3)])
    assert all(r["mse"] == 0 and r["loss"] == pytest.approx(r["distill"] + r["inverse"] + r["consistency"], rel=1e-5)
               for r in rows)
    with open(tmp_path / "run" / "metrics.csv") as fp:
        assert {"distill", "inverse", "consistency"} <= set(next(csv.DictReader(fp)))


def test_resume_is_exact_and_the_export_runs_in_one_step(hr_folder, teacher_dir, tmp_path):
    config = distill_config(hr_folder, teacher_dir)
    whole = train(config, tmp_path / "whole")
    train(config, tmp_path / "killed", stop_after=5)                  # dies 2 steps after the step-3 checkpoint
    resumed = train(config, tmp_path / "killed", resume=ckpt.checkpoint_path(tmp_path / "killed", 3))
    for key in ("loss", "distill", "inverse", "consistency"):
        assert losses(resumed, key) == {s: losses(whole, key)[s] for s in range(4, 7)}   # bit-exact
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "whole", 6))
    assert state["model_config"] == model_config_of(config.model).to_dict()
    assert state["model_config"]["schedule"]["num_steps"] == 1

    export = tmp_path / "whole" / "export"
    pipe = ResShiftPipeline.from_pretrained(export)
    assert pipe.config == one_step_config(TEACHER)
    calls = []
    out = pipe(torch.rand(1, 3, 8, 8), generator=torch.Generator().manual_seed(0), callback=calls.append)
    assert out.shape == (1, 3, 32, 32) and len(calls) == 1
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(tmp_path / "grey.png")
    assert main(["upscale", "-i", str(tmp_path / "grey.png"), "-o", str(tmp_path / "out"), "--model", str(export)]) == 0
    assert Image.open(tmp_path / "out" / "grey_out.png").size == (32, 32)


def test_train_distill_command_and_its_errors(hr_folder, teacher_dir, tmp_path):
    overrides = [f"data.train_dirs=[{hr_folder}]", "data.crop_size=32", "data.degradation=bicubic",
                 "optim.total_steps=1", "optim.batch_size=2", "optim.warmup_steps=1", "run.ckpt_interval=0",
                 "run.log_interval=1", "optim.distill.teacher_steps=2"]
    assert main(["train", "distill", str(teacher_dir), *overrides, "--out", str(tmp_path / "run"), "--quiet"]) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["teacher"] == str(teacher_dir) and saved["optim"]["distill"]["teacher_steps"] == 2
    assert (tmp_path / "run" / "export" / "config.json").is_file()
    assert main(["train", "distill", *overrides, "--out", str(tmp_path / "none")]) == 2          # no teacher
    assert main(["train", "distill", str(tmp_path / "missing"), *overrides, "--out", str(tmp_path / "x")]) == 2
    with pytest.raises(ConfigError, match="model.teacher is the student's only source.*model.preset"):
        load_config("distill-one-step", ["model.teacher=a", "model.preset=realsr-v3"])
    with pytest.raises(ConfigError, match="shift_weight is not available when distilling"):
        load_config("distill-one-step", ["model.teacher=a", "optim.shift_weight=1"])


def test_an_inpainting_teacher_is_refused(hr_folder, tmp_path):
    config = dataclasses.replace(TEACHER, task="inpaint", scale=1,
                                 unet=dataclasses.replace(TEACHER.unet, cond_mask=True, lq_size=32, image_size=8))
    ResShiftPipeline.from_config(config).save_pretrained(tmp_path / "inpaint")
    with pytest.raises(ConfigError, match="an inpainting model; distillation takes SR and face models"):
        train(distill_config(hr_folder, tmp_path / "inpaint", "data.degradation=inpaint"), tmp_path / "run")


def test_ddp_two_processes_match_one(hr_folder, teacher_dir, tmp_path):
    config = distill_config(hr_folder, teacher_dir, "optim.total_steps=2", "run.ckpt_interval=0")
    single = losses(train(config, tmp_path / "single"))
    ddp = train_on_two_processes(config, tmp_path)     # 2 processes x 2 micro-batches of 1 image
    assert ddp.keys() == single.keys() == {1, 2}
    for step in (1, 2):
        assert ddp[step] == pytest.approx(single[step], rel=1e-5)
