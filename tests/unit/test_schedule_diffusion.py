"""Schedules and chain functions against the paper's closed forms and the official numbers."""

import math

import pytest
import torch

from resshift import diffusion
from resshift.errors import ConfigError
from resshift.schedule import (Schedule, ScheduleConfig, geometric_sqrt_etas, official_sqrt_etas,
                               paper_sqrt_etas, respaced_indices)


def test_official_v3_schedule_matches_reference_readme():
    # ../shared/reference/official_v3/README.md: T=4, kappa=2, p=0.3, min_noise_level=0.2
    got = official_sqrt_etas(4, kappa=2.0, power=0.3, min_noise_level=0.2)
    expected = torch.tensor([0.1, 0.52009637, 0.76138199, 0.99], dtype=torch.float64)
    torch.testing.assert_close(got, expected, atol=5e-9, rtol=0)


def eq9_10_by_hand(T, eta_1, eta_T, p):
    """Eq. 9-10 written out term by term, independent of the implementation."""
    b0 = math.exp(1 / (2 * (T - 1)) * math.log(eta_T / eta_1))
    return [math.sqrt(eta_1) * b0 ** (((t - 1) / (T - 1)) ** p * (T - 1)) for t in range(1, T + 1)]


@pytest.mark.parametrize("T", [2, 4, 15, 50])
@pytest.mark.parametrize("kappa", [0.5, 1.0, 2.0, 40.0])
@pytest.mark.parametrize("p", [0.3, 0.8, 1.0])
def test_paper_schedule_follows_eq_9_10(T, kappa, p):
    got = paper_sqrt_etas(T, kappa, p)
    eta_1 = min((0.04 / kappa) ** 2, 0.001)
    expected = torch.tensor(eq9_10_by_hand(T, eta_1, 0.999, p), dtype=torch.float64)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)
    assert got[0] ** 2 == pytest.approx(eta_1, rel=1e-12)
    assert got[-1] ** 2 == pytest.approx(0.999, rel=1e-12)
    assert torch.all(got[1:] > got[:-1])


@pytest.mark.parametrize("T,kappa,p,mnl", [(15, 2.0, 0.3, 0.04), (4, 2.0, 0.3, 0.2),
                                           (4, 1.0, 0.5, 0.2), (10, 0.1, 0.3, 0.04)])
def test_official_schedule_end_points(T, kappa, p, mnl):
    got = official_sqrt_etas(T, kappa, p, mnl)
    assert got[0] == pytest.approx(min(mnl / kappa, mnl), rel=1e-12)
    assert got[-1] == pytest.approx(0.99, rel=1e-12)
    assert torch.all(got[1:] > got[:-1])


def test_larger_power_shifts_slower_at_the_start():
    # Fig. 3(h): a larger p keeps sqrt(eta_t) lower for longer.
    low, high = paper_sqrt_etas(15, 2.0, 0.3), paper_sqrt_etas(15, 2.0, 0.8)
    assert torch.all(high[1:-1] < low[1:-1])


def test_schedule_rejects_bad_values():
    with pytest.raises(ConfigError):
        geometric_sqrt_etas(0, 0.1, 0.99, 0.3)
    with pytest.raises(ConfigError):
        geometric_sqrt_etas(4, 0.5, 0.1, 0.3)
    with pytest.raises(ConfigError):
        ScheduleConfig(kind="cosine")
    with pytest.raises(ConfigError):
        respaced_indices(4, 5)


def test_respacing_keeps_official_indices():
    assert respaced_indices(15, 4) == [0, 3, 7, 11]
    assert respaced_indices(4, 4) == [0, 1, 2, 3]
    full = ScheduleConfig(num_steps=15, min_noise_level=0.04)
    spaced = Schedule.from_config(full, steps=4)
    assert spaced.timesteps == (0, 3, 7, 11)
    torch.testing.assert_close(spaced.sqrt_etas, full.sqrt_etas()[[0, 3, 7, 11]])


def test_paper_config_classmethod():
    cfg = ScheduleConfig.paper(num_steps=15, kappa=2.0, power=0.3)
    torch.testing.assert_close(cfg.sqrt_etas(), paper_sqrt_etas(15, 2.0, 0.3))


def test_chaining_eq1_gives_the_marginal_eq2():
    """Monte Carlo: x_0 -> x_1 -> ... -> x_t by Eq. 1 has the mean and variance of Eq. 2."""
    g = torch.Generator().manual_seed(0)
    kappa, etas = 2.0, official_sqrt_etas(6, 2.0, 0.3, 0.2).pow(2).tolist()
    n = 400_000
    x0, y = torch.full((n,), 0.3, dtype=torch.float64), torch.full((n,), -0.5, dtype=torch.float64)
    e0 = y - x0
    x, eta_prev = x0.clone(), 0.0
    for t, eta in enumerate(etas):
        noise = torch.randn(n, generator=g, dtype=torch.float64)
        x = diffusion.transition_sample(x, e0, eta, eta_prev, kappa, noise)
        eta_prev = eta
        mean, var = 0.3 + eta * (-0.8), kappa ** 2 * eta
        assert x.mean().item() == pytest.approx(mean, abs=4 * math.sqrt(var / n) + 1e-12)
        assert x.var().item() == pytest.approx(var, rel=0.01)
    # and q_sample draws from that same marginal
    direct = diffusion.q_sample(x0, y, etas[-1], kappa, torch.randn(n, generator=g, dtype=torch.float64))
    assert direct.mean().item() == pytest.approx(x.mean().item(), abs=0.02)
    assert direct.var().item() == pytest.approx(x.var().item(), rel=0.01)


@pytest.mark.parametrize("t", [1, 2, 3])
def test_posterior_is_the_bayes_product(t):
    """Eq. 6 equals q(x_t | x_{t-1}) q(x_{t-1} | x_0) normalised: a product of two Gaussians."""
    g = torch.Generator().manual_seed(t)
    kappa, etas = 2.0, official_sqrt_etas(4, 2.0, 0.3, 0.2).pow(2).tolist()
    eta_t, eta_prev = etas[t], etas[t - 1]
    alpha = eta_t - eta_prev
    x0, y, x_t = (torch.randn(5, generator=g, dtype=torch.float64) for _ in range(3))
    e0 = y - x0
    # prior on x_{t-1}: N(x0 + eta_prev e0, k^2 eta_prev); likelihood of x_t: N(x_{t-1} + alpha e0, k^2 alpha)
    precision = 1 / (kappa ** 2 * eta_prev) + 1 / (kappa ** 2 * alpha)
    bayes_var = 1 / precision
    bayes_mean = bayes_var * ((x0 + eta_prev * e0) / (kappa ** 2 * eta_prev) + (x_t - alpha * e0) / (kappa ** 2 * alpha))
    mean, var = diffusion.posterior_mean_variance(x_t, x0, eta_t, eta_prev, kappa)
    torch.testing.assert_close(mean, bayes_mean, atol=1e-12, rtol=1e-12)
    assert var == pytest.approx(bayes_var, rel=1e-12)


def test_scale_model_input_is_official_normalisation():
    x = torch.full((1, 3, 2, 2), 3.0)
    got = diffusion.scale_model_input(x, 0.25, 2.0)
    torch.testing.assert_close(got, x / math.sqrt(4 * 0.25 + 1))


def test_sampler_with_an_oracle_returns_x0_and_draws_like_official():
    """With a denoiser that knows x0 the chain ends exactly at x0; draws follow the official order."""
    schedule = Schedule.from_config(ScheduleConfig())
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 4, 4, generator=g)
    y = torch.randn(2, 3, 4, 4, generator=g)
    seen = []

    def oracle(x_scaled, t):
        seen.append((t.tolist(), x_scaled.clone()))
        return x0

    out = diffusion.sample(oracle, y, schedule, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(out, x0)
    assert [t for t, _ in seen] == [[3, 3], [2, 2], [1, 1], [0, 0]]

    # Rebuild the chain by hand from the same seed: prior first, then one draw after each call.
    ref = torch.Generator().manual_seed(7)
    etas = schedule.etas.tolist()
    x_t = y + 2.0 * math.sqrt(etas[3]) * torch.randn(y.shape, generator=ref)
    for i in (3, 2, 1, 0):
        torch.testing.assert_close(seen[3 - i][1], x_t / math.sqrt(4 * etas[i] + 1))
        step = torch.randn(y.shape, generator=ref)
        if i:
            alpha = etas[i] - etas[i - 1]
            x_t = etas[i - 1] / etas[i] * x_t + alpha / etas[i] * x0 + math.sqrt(4 * etas[i - 1] / etas[i] * alpha) * step


def test_sampler_is_deterministic_for_a_seed_and_uses_given_noise():
    schedule = Schedule.from_config(ScheduleConfig())
    y = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))

    def denoise(x, t):
        return 0.5 * x

    a = diffusion.sample(denoise, y, schedule, generator=torch.Generator().manual_seed(3))
    b = diffusion.sample(denoise, y, schedule, generator=torch.Generator().manual_seed(3))
    c = diffusion.sample(denoise, y, schedule, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    noise = torch.zeros_like(y)
    d = diffusion.sample(denoise, y, schedule, generator=torch.Generator().manual_seed(3), noise=noise)
    assert not torch.equal(a, d)


def test_deterministic_sampler_keeps_the_prior_noise_on_the_marginal_of_eq_2():
    """With an oracle x0, each noise-free step lands exactly on x_{t-1} = x0 + eta_{t-1} (y - x0) +
    kappa sqrt(eta_{t-1}) e (Eq. 2), with the one noise e that the prior x_T = y + kappa sqrt(eta_T) eps
    holds at eta_T: e = eps + (1 - eta_T) (y - x0) / (kappa sqrt(eta_T)); it ends at x0."""
    schedule = Schedule.from_config(ScheduleConfig(num_steps=5, kappa=2.0))
    g = torch.Generator().manual_seed(0)
    x0, y, eps = (torch.randn(2, 3, 4, 4, generator=g) for _ in range(3))
    seen = []
    out = diffusion.sample(lambda x, t: x0, y, schedule, noise=eps, sampler="deterministic",
                           callback=lambda info: seen.append((info["index"], info["x_prev"])))
    etas = schedule.etas.tolist()
    e = eps + (1 - etas[-1]) * (y - x0) / (2.0 * math.sqrt(etas[-1]))
    assert len(seen) == 5
    for index, x_prev in seen:
        eta_prev = etas[index - 1] if index else 0.0
        torch.testing.assert_close(x_prev, x0 + eta_prev * (y - x0) + 2.0 * math.sqrt(eta_prev) * e,
                                   rtol=0, atol=1e-5)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)


def test_deterministic_sampler_draws_only_the_prior():
    schedule = Schedule.from_config(ScheduleConfig())
    y = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))

    def denoise(x, t):
        return 0.5 * x

    generator = torch.Generator().manual_seed(3)
    a = diffusion.sample(denoise, y, schedule, generator=generator, sampler="deterministic")
    prior = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
    after_prior = torch.Generator().manual_seed(3)
    torch.randn(y.shape, generator=after_prior)
    assert torch.equal(generator.get_state(), after_prior.get_state())         # one draw: the prior
    torch.testing.assert_close(a, diffusion.sample(denoise, y, schedule, noise=prior, sampler="deterministic"))
    ancestral = diffusion.sample(denoise, y, schedule, noise=prior)
    assert not torch.allclose(a, ancestral)
    with pytest.raises(Exception, match="unknown sampler 'ddpm'"):
        diffusion.sample(denoise, y, schedule, sampler="ddpm")
