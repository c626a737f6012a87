"""One-step distillation of a multi-step ResShift model (SinSR: Wang et al., CVPR 2024), as a training loss.

Notation (as `resshift.training.trainer`; T is the teacher's number of steps):

    x_T         the prior y + kappa sqrt(eta_T) noise (Eq. 2 at t = T), the student's only input
    F(x_T)      the teacher's deterministic chain from x_T (`diffusion.sample(..., sampler="deterministic")`):
                every prior gives one result, so the multi-step map x_T -> x0 can be learnt as a function
    f(x_T)      the student's x0 prediction: one network call at its only step
    g(x0)       the student's inverse prediction x0 -> x_T (the same network at INVERSE_TIMESTEP)

The terms, per sample (the mean over latent elements of each squared difference):

    distill       (f(x_T) - F(x_T))^2                      the student learns the teacher's map
    inverse       (g(F(x_T)) - x_T)^2                      ... and its inverse, on the teacher's pairs
    consistency   (f(sg(g(z0))) - z0)^2                    the ground truth z0 -> its prior g(z0) (held
                                                           fixed: sg) -> back to z0 through the student,
                                                           so the student is not bound to the teacher's
                                                           results alone (SinSR's consistency-preserving loss)

plus the optional image terms of ordinary training (`losses.image_terms`: ST-LPIPS, phase, gan) measured on
the decoded f(x_T) against the HR crop. `loss` = distill + inverse_weight inverse + consistency_weight
consistency + the image terms' weighted sum.

The student starts as the teacher itself: the same networks under a one-step chain whose only step is the
teacher's last (eta_T; `one_step_config`), with the time embedding re-targeted (`retarget_time_embedding`)
so that its timestep 0 (what a one-step model is called with) means what the teacher's t = T meant, and
INVERSE_TIMESTEP what the teacher's t = 1 meant. How the inverse is conditioned (our choice; SinSR calls
its network at timestep 0 for it): INVERSE_TIMESTEP tells the network which direction it is asked, and its
input z0 is scaled as at the teacher's first step (eta_1), where the teacher saw nearly clean latents; so
at the start g is the teacher's own last step (about the identity) and learns from there. A one-step model
is never called at INVERSE_TIMESTEP at inference, so the exported folder is an ordinary one-step model.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Optional

import torch

from resshift import diffusion
from resshift.errors import ConfigError
from resshift.nets.swin_unet import SwinUNet, timestep_embedding
from resshift.pipeline import ResShiftPipeline
from resshift.presets import ModelConfig
from resshift.schedule import Schedule, ScheduleConfig
from resshift.training.losses import decode_for_loss, draw_t_and_noise, image_terms

INVERSE_TIMESTEP = 1     # the student's timestep for g: x0 -> x_T (its one step x_T -> x0 is timestep 0)


def one_step_config(teacher: ModelConfig) -> ModelConfig:
    """The teacher's model under a one-step chain: same networks, kappa and end point, so that the student's
    prior x_T is the teacher's (a one-step schedule is its last sqrt(eta) alone, `geometric_sqrt_etas`)."""
    return dataclasses.replace(teacher, schedule=dataclasses.replace(teacher.schedule, num_steps=1))


@torch.no_grad()
def retarget_time_embedding(unet: SwinUNet, forward_from: int, inverse_from: int) -> None:
    """Change the first layer of the time MLP (W, b) as little as possible so that timestep 0 embeds as
    `forward_from` did and INVERSE_TIMESTEP as `inverse_from` did: with e(t) the sinusoidal features,
    W' e(0) + b' = W e(forward_from) + b and W' e(1) + b' = W e(inverse_from) + b (a rank-one change of W
    along e(0) - e(1), then b' from the first equation; computed in float64)."""
    layer = unet.time_embed[0]
    features = timestep_embedding(torch.tensor([0, INVERSE_TIMESTEP, forward_from, inverse_from]),
                                  unet.config.model_channels).double()
    start, inverse_start, forward_target, inverse_target = features
    weight, bias = layer.weight.double(), layer.bias.double()
    direction = start - inverse_start
    needed = weight @ (forward_target - inverse_target) - weight @ direction    # what W' must add along it
    new_weight = weight + torch.outer(needed, direction) / direction.dot(direction)
    new_bias = weight @ forward_target + bias - new_weight @ start
    layer.weight.copy_(new_weight.to(layer.weight.dtype))
    layer.bias.copy_(new_bias.to(layer.bias.dtype))


def student_from_teacher(teacher: ResShiftPipeline) -> ResShiftPipeline:
    """A one-step copy of `teacher` (float32, on the teacher's device) that starts as the teacher's first
    call at t = T; it shares the frozen autoencoder."""
    unet = copy.deepcopy(teacher.unet).float()
    retarget_time_embedding(unet, forward_from=teacher.config.schedule.num_steps - 1, inverse_from=0)
    return ResShiftPipeline(unet, teacher.autoencoder, one_step_config(teacher.config))


def teacher_chain(schedule: ScheduleConfig, steps: Optional[int]) -> Schedule:
    """The teacher's chain for the targets: all its steps, or `steps` of them spread evenly from t = T down
    to t = 1, so that a shorter chain still starts at the student's prior (official respacing would not)."""
    full = Schedule.from_config(schedule)
    count = schedule.num_steps
    if steps is None or steps == count:
        return full
    if not 1 <= steps <= count:
        raise ConfigError(f"optim.distill.teacher_steps must be between 1 and the teacher's {count}, got {steps}")
    keep = sorted({count - 1 - round(i * (count - 1) / max(1, steps - 1)) for i in range(steps)})
    return Schedule(sqrt_etas=full.sqrt_etas[keep], timesteps=tuple(keep), kappa=schedule.kappa)


@torch.no_grad()
def teacher_target(teacher: ResShiftPipeline, chain: Schedule, z_y: torch.Tensor, cond: dict[str, torch.Tensor],
                   noise: torch.Tensor) -> torch.Tensor:
    """F(x_T): the frozen teacher's deterministic chain from the prior y + kappa sqrt(eta_T) noise."""
    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return teacher.x0_from_output(teacher.unet(x_t, t, **cond).float(), z_y)

    return diffusion.sample(denoise, z_y, chain, noise=noise, sampler="deterministic")


def distillation_loss(model: torch.nn.Module, pipe: ResShiftPipeline, batch: dict[str, torch.Tensor], *,
                      teacher: ResShiftPipeline, chain: Schedule, seed: int, inverse_weight: float = 1.0,
                      consistency_weight: float = 1.0, perceptual: Optional[torch.nn.Module] = None,
                      perceptual_weight: float = 0.0, phase_weight: float = 0.0, phase_period: Optional[int] = None,
                      discriminator: Optional[torch.nn.Module] = None,
                      gan_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """Per-sample terms {loss, distill, inverse, consistency, perceptual, phase, gan}, each (N,), for a batch
    {hq, lq, sample} (SR and face tasks; `model` is the student's network or its DDP wrapper). The prior's
    noise is keyed by the sample ids as in ordinary training, so a resumed run repeats itself exactly."""
    hq, kappa = batch["hq"], pipe.config.schedule.kappa
    cond = {"lq": batch["lq"] * 2 - 1}                                    # (N, 3, h, w) in [-1, 1]
    with torch.no_grad():
        z0 = pipe.encode(hq * 2 - 1)                                      # (N, C, H', W')
        z_y = pipe.encode(pipe.upsample(cond["lq"]))
    noise = draw_t_and_noise(batch["sample"], seed, 1, z0)[1]           # (its t is not used)
    eta_last, eta_first = float(pipe.schedule().etas[-1]), float(teacher.schedule().etas[0])
    forward_t = torch.zeros(len(hq), dtype=torch.int64, device=hq.device)
    inverse_t = torch.full_like(forward_t, INVERSE_TIMESTEP)

    def student(x_t: torch.Tensor) -> torch.Tensor:
        return pipe.x0_from_output(model(diffusion.scale_model_input(x_t, eta_last, kappa), forward_t, **cond)
                                   .float(), z_y)

    def inverse(x0: torch.Tensor) -> torch.Tensor:
        return pipe.x0_from_output(model(diffusion.scale_model_input(x0, eta_first, kappa), inverse_t, **cond)
                                   .float(), z_y)

    x_T = diffusion.prior_sample(z_y, eta_last, kappa, noise)
    target = teacher_target(teacher, chain, z_y, cond, noise)
    pred = student(x_T)
    terms = {"distill": mean_square(pred - target), "inverse": mean_square(inverse(target) - x_T)}
    with torch.no_grad():
        prior_of_truth = inverse(z0)
    terms["consistency"] = mean_square(student(prior_of_truth) - z0)
    terms |= {key: torch.zeros_like(terms["distill"]) for key in ("perceptual", "phase", "gan")}
    if perceptual is not None or phase_weight > 0 or discriminator is not None:
        image = (decode_for_loss(pipe, pred) + 1) / 2                     # (N, 3, H, W) in [0, 1]
        period = (phase_period or pipe.config.autoencoder.downsample_factor) if phase_weight > 0 else 0
        terms |= image_terms(image, hq, perceptual, period, discriminator)
    terms["loss"] = (terms["distill"] + inverse_weight * terms["inverse"] + consistency_weight * terms["consistency"]
                     + perceptual_weight * terms["perceptual"] + phase_weight * terms["phase"]
                     + gan_weight * terms["gan"])
    return terms


def mean_square(difference: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N,): the mean of the squares over everything but the batch."""
    return difference.square().flatten(1).mean(dim=1)
