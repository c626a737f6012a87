"""Shifting schedules {sqrt(eta_t)} of ResShift (paper 001, Sec. 3.2, Eq. 9-10).

Notation (code name <-> paper symbol):

    sqrt_etas[t-1]  <->  sqrt(eta_t), t = 1..T   (index 0 is the first, least noisy step)
    etas            <->  eta_t, increasing from eta_1 -> 0 to eta_T -> 1
    kappa           <->  kappa, the noise-variance hyper-parameter of Eq. 1
    power           <->  p, the growth rate of Eq. 10

Both schedules are the same geometric curve in sqrt(eta) (Eq. 9-10); they differ only in their
end points:

* paper (Eq. 9-10):  eta_1 = min((min_noise_level / kappa)^2, 0.001) with min_noise_level = 0.04,
  and eta_T = 0.999;
* official code:    sqrt(eta_1) = min(min_noise_level / kappa, min_noise_level) and
  sqrt(eta_T) = sqrt_eta_end (0.99 in every official config). Official checkpoints were trained
  with this one, so their presets use it.

Schedules are float64 tensors; callers cast where they use them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from .configs import Config
from .errors import ConfigError

ScheduleKind = Literal["official", "paper"]


def geometric_sqrt_etas(num_steps: int, sqrt_eta_first: float, sqrt_eta_last: float,
                        power: float) -> torch.Tensor:
    """Eq. 9-10: sqrt(eta_t) = sqrt(eta_1) * b0^beta_t, beta_t = ((t-1)/(T-1))^p * (T-1)."""
    if num_steps < 1:
        raise ConfigError(f"the number of diffusion steps must be at least 1, got {num_steps}")
    if not 0 < sqrt_eta_first <= sqrt_eta_last <= 1:
        raise ConfigError(
            f"need 0 < sqrt(eta_1) <= sqrt(eta_T) <= 1, got {sqrt_eta_first} and {sqrt_eta_last}")
    if power <= 0:
        raise ConfigError(f"the schedule power p must be positive, got {power}")
    if num_steps == 1:
        return torch.tensor([sqrt_eta_last], dtype=torch.float64)
    last = num_steps - 1
    log_b0 = math.log(sqrt_eta_last / sqrt_eta_first) / last          # log b0 on the sqrt scale
    beta = torch.linspace(0, 1, num_steps, dtype=torch.float64) ** power * last
    return sqrt_eta_first * torch.exp(beta * log_b0)


def paper_sqrt_etas(num_steps: int, kappa: float, power: float,
                    min_noise_level: float = 0.04, eta_last: float = 0.999) -> torch.Tensor:
    """The schedule exactly as the paper states it (Sec. 3.2, Eq. 9-10)."""
    eta_first = min((min_noise_level / kappa) ** 2, 0.001)
    return geometric_sqrt_etas(num_steps, math.sqrt(eta_first), math.sqrt(eta_last), power)


def official_sqrt_etas(num_steps: int, kappa: float, power: float,
                       min_noise_level: float, sqrt_eta_end: float = 0.99) -> torch.Tensor:
    """The schedule of the official code, which official checkpoints were trained with."""
    sqrt_eta_first = min(min_noise_level / kappa, min_noise_level)
    return geometric_sqrt_etas(num_steps, sqrt_eta_first, sqrt_eta_end, power)


def respaced_indices(num_steps: int, sample_steps: int) -> list[int]:
    """Indices of the steps kept when sampling with fewer steps, as the official code picks them."""
    if not 1 <= sample_steps <= num_steps:
        raise ConfigError(f"steps must be between 1 and the model's {num_steps}, got {sample_steps}")
    return sorted({int(num_steps / sample_steps * i) for i in range(sample_steps)})


@dataclass(frozen=True)
class ScheduleConfig(Config):
    """Everything that defines a ResShift chain; round-trips through config.json."""

    num_steps: int = 4
    kappa: float = 2.0
    power: float = 0.3
    min_noise_level: float = 0.2
    sqrt_eta_end: float = 0.99
    kind: ScheduleKind = "official"

    def __post_init__(self) -> None:
        if self.kind not in ("official", "paper"):
            raise ConfigError(f"unknown schedule kind {self.kind!r}: use 'official' or 'paper'")
        if self.kappa <= 0:
            raise ConfigError(f"kappa must be positive, got {self.kappa}")

    @classmethod
    def paper(cls, num_steps: int = 15, kappa: float = 2.0, power: float = 0.3) -> "ScheduleConfig":
        """The paper's end points: eta_1 = min((0.04/kappa)^2, 0.001), eta_T = 0.999."""
        return cls(num_steps=num_steps, kappa=kappa, power=power, min_noise_level=0.04,
                   sqrt_eta_end=math.sqrt(0.999), kind="paper")

    def sqrt_etas(self) -> torch.Tensor:
        if self.kind == "paper":
            return paper_sqrt_etas(self.num_steps, self.kappa, self.power, self.min_noise_level,
                                   eta_last=self.sqrt_eta_end ** 2)
        return official_sqrt_etas(self.num_steps, self.kappa, self.power, self.min_noise_level,
                                  self.sqrt_eta_end)


@dataclass(frozen=True)
class Schedule:
    """The chain a sampler walks: sqrt(eta) per kept step and the network timestep of each."""

    sqrt_etas: torch.Tensor        # (S,) float64, increasing
    timesteps: tuple[int, ...]     # (S,) the integer t the network was trained with
    kappa: float

    @classmethod
    def from_config(cls, config: ScheduleConfig, steps: int | None = None) -> "Schedule":
        full = config.sqrt_etas()
        keep = respaced_indices(config.num_steps, steps or config.num_steps)
        return cls(sqrt_etas=full[keep], timesteps=tuple(keep), kappa=config.kappa)

    @property
    def etas(self) -> torch.Tensor:
        return self.sqrt_etas ** 2

    def __len__(self) -> int:
        return len(self.timesteps)
