"""The residual-shifting Markov chain (paper 001, Eq. 1-2, 6-7) and its sampler, as pure functions.

Notation (code name <-> paper symbol):

    x0        x_0    the clean (high-quality) latent
    y         y_0    the degraded input's latent (z_y in the pipeline)
    x_t       x_t    the state at step t
    e0        e_0 = y_0 - x_0, the residual the chain shifts
    eta_t     eta_t  (eta_prev is eta_{t-1}; eta_0 = 0)
    kappa     kappa
    noise     xi, a standard normal draw

Everything here works on tensors of any shape and dtype; the schedule comes in as arguments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Callable, Literal, Optional, Union, get_args

import torch

from .errors import InputError
from .schedule import Schedule

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# One generator for the batch (the official order), one per sample, or None (torch's global generator).
Generators = Union[torch.Generator, Sequence[torch.Generator], None]
Sampler = Literal["ancestral", "deterministic"]
SAMPLERS = get_args(Sampler)
"""denoise(x_t_scaled, t) -> x0 prediction; t is an int64 tensor (N,) of network timesteps."""


def transition_sample(x_prev: torch.Tensor, e0: torch.Tensor, eta_t: float, eta_prev: float,
                      kappa: float, noise: torch.Tensor) -> torch.Tensor:
    """Eq. 1 (with Eq. 11): x_t = x_{t-1} + alpha_t e0 + kappa sqrt(alpha_t) xi."""
    alpha = eta_t - eta_prev
    return x_prev + alpha * e0 + kappa * math.sqrt(alpha) * noise


def q_sample(x0: torch.Tensor, y: torch.Tensor, eta_t: torch.Tensor | float, kappa: float,
             noise: torch.Tensor) -> torch.Tensor:
    """Eq. 2: x_t = x0 + eta_t (y - x0) + kappa sqrt(eta_t) xi. eta_t may be (N,1,1,1) per sample."""
    eta_t = torch.as_tensor(eta_t, dtype=x0.dtype, device=x0.device)
    return x0 + eta_t * (y - x0) + kappa * eta_t.sqrt() * noise


def posterior_mean_variance(x_t: torch.Tensor, x0: torch.Tensor, eta_t: float, eta_prev: float,
                            kappa: float) -> tuple[torch.Tensor, float]:
    """Eq. 6: q(x_{t-1} | x_t, x0, y) = N(eta_{t-1}/eta_t x_t + alpha_t/eta_t x0,
    kappa^2 eta_{t-1}/eta_t alpha_t)."""
    alpha = eta_t - eta_prev
    mean = (eta_prev / eta_t) * x_t + (alpha / eta_t) * x0
    return mean, kappa ** 2 * eta_prev / eta_t * alpha


def deterministic_step(x_t: torch.Tensor, x0: torch.Tensor, y: torch.Tensor, eta_t: float, eta_prev: float,
                       kappa: float) -> torch.Tensor:
    """The noise-free (DDIM-like, eta = 0) reverse step: keep the noise direction that x_t holds.

    With q(x_t | x0, y) = N(x0 + eta_t (y - x0), kappa^2 eta_t) (Eq. 2), the noise in x_t is
    eps = (x_t - x0 - eta_t (y - x0)) / (kappa sqrt(eta_t)); the step puts the same eps at eta_{t-1}:
    x_{t-1} = x0 + eta_{t-1} (y - x0) + kappa sqrt(eta_{t-1}) eps. Every x_t then has the marginal of
    Eq. 2, as the ancestral step's, but a given prior leads to one result (SinSR distils this map)."""
    residual = y - x0
    eps = (x_t - x0 - eta_t * residual) / (kappa * math.sqrt(eta_t))
    return x0 + eta_prev * residual + kappa * math.sqrt(eta_prev) * eps


def prior_sample(y: torch.Tensor, eta_last: float, kappa: float,
                 noise: torch.Tensor) -> torch.Tensor:
    """x_T ~ N(y, kappa^2 eta_T): Eq. 2 at t = T with the residual fully shifted (x0 + e0 = y)."""
    return y + kappa * math.sqrt(eta_last) * noise


def scale_model_input(x_t: torch.Tensor, eta_t: torch.Tensor | float, kappa: float) -> torch.Tensor:
    """The official input normalisation: x_t / sqrt(kappa^2 eta_t + 1) keeps the network's input
    near unit variance (latents have variance ~1, plus the chain's noise)."""
    eta_t = torch.as_tensor(eta_t, dtype=x_t.dtype, device=x_t.device)
    return x_t / torch.sqrt(kappa ** 2 * eta_t + 1)


def standard_normal(like: torch.Tensor, generator: Generators) -> torch.Tensor:
    """A float32 draw of `like`'s shape on the generator's device, then moved to `like`.

    Drawing in float32 on the generator's device makes a seed give the same numbers whatever the
    model's dtype or device (a CPU generator reproduces the official CPU draws exactly). A list of
    generators, one per sample, draws each sample's numbers from its own: a batch then gives each
    image exactly what it gets alone with that generator.
    """
    if isinstance(generator, Sequence):
        if len(generator) != like.shape[0]:
            raise InputError(f"generator: {len(generator)} generators for a batch of {like.shape[0]}")
        return torch.cat([standard_normal(like[i : i + 1], g) for i, g in enumerate(generator)])
    device = generator.device if generator is not None else like.device
    draw = torch.randn(like.shape, generator=generator, device=device, dtype=torch.float32)
    return draw.to(device=like.device, dtype=like.dtype)


def sample(denoise: Denoiser, y: torch.Tensor, schedule: Schedule, *,
           generator: Generators = None, noise: Optional[torch.Tensor] = None,
           callback: Optional[Callable[[dict], None]] = None, sampler: Sampler = "ancestral") -> torch.Tensor:
    """Sampling of the reverse chain: prior (Eq. 2 at T), then per step the network's x0 (Eq. 7) and
    either Eq. 6 ("ancestral", the paper's and the official sampler) or `deterministic_step`
    ("deterministic": no noise after the prior).

    Random numbers are drawn as the official sampler draws them: the prior noise first (unless
    `noise` is given), then, ancestral only, one draw of y's shape after each network call (the last
    one unused). Returns the final x0 prediction (the sample at t = 0).
    """
    if sampler not in SAMPLERS:
        raise InputError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    etas = schedule.etas.tolist()
    if noise is None:
        noise = standard_normal(y, generator)
    x_t = prior_sample(y, etas[-1], schedule.kappa, noise.to(y))
    for index in reversed(range(len(schedule))):
        t = torch.full((y.shape[0],), schedule.timesteps[index], dtype=torch.int64, device=y.device)
        x0 = denoise(scale_model_input(x_t, etas[index], schedule.kappa), t)
        eta_prev = etas[index - 1] if index > 0 else 0.0
        if sampler == "deterministic":
            x_t = deterministic_step(x_t, x0, y, etas[index], eta_prev, schedule.kappa)
        else:
            step_noise = standard_normal(x_t, generator)
            mean, variance = posterior_mean_variance(x_t, x0, etas[index], eta_prev, schedule.kappa)
            x_t = mean + math.sqrt(variance) * step_noise if index > 0 else mean
        if callback is not None:
            callback({"index": index, "t": schedule.timesteps[index], "x0": x0, "x_prev": x_t})
    return x_t
