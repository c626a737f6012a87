"""Blur kernels of Real-ESRGAN (Wang et al. 2021, Sec. 3.1), with BasicSR's parameterisation.

Notation (code ↔ paper): ``sigma_x, sigma_y`` ↔ σ₁, σ₂ (widths along the principal axes), ``theta`` ↔ θ
(rotation), ``beta`` ↔ β (shape), ``q`` ↔ Cᵀ Σ⁻¹ C with Σ = R(θ) diag(σ₁², σ₂²) R(θ)ᵀ and C the
offset (x = column, y = row) from the kernel centre, ``cutoff`` ↔ ω_c of the 2D sinc filter.

Shapes: every builder broadcasts its parameters, so scalars give one (K, K) kernel and (N,)
tensors give a batch (N, K, K). Kernels are odd-sized and sum to 1. Randomness comes only from the
``torch.Generator`` passed in; tensors are created on that generator's device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from resshift.errors import ConfigError

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
KERNEL_PROB = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)  # ResShift's probabilities for KERNEL_TYPES
ROTATION_RANGE = (-math.pi, math.pi)

Number = float | Tensor


def _check_size(size: int) -> None:
    if size < 1 or size % 2 == 0:
        raise ConfigError(f"Kernel size must be a positive odd number, got {size}.")


def _offsets(size: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """(K, K) column and row offsets from the centre, in the dtype/device of ``like``."""
    ax = torch.arange(size, dtype=like.dtype, device=like.device) - size // 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return xx, yy


def _params(*values: Number) -> list[Tensor]:
    """Broadcast scalars/tensors to float tensors with two trailing singleton dims (..., 1, 1)."""
    ref = next((v for v in values if isinstance(v, Tensor)), None)
    device = ref.device if ref is not None else None
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    tensors = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=dtype, device=device) for v in values))
    return [t[..., None, None] for t in tensors]


def _quadratic_form(size: int, sigma_x: Number, sigma_y: Number | None, theta: Number) -> Tensor:
    """(..., K, K) Mahalanobis form q = Cᵀ Σ⁻¹ C; ``sigma_y=None`` means isotropic (θ ignored)."""
    _check_size(size)
    if sigma_y is None:
        sigma_y, theta = sigma_x, 0.0
    sx, sy, th = _params(sigma_x, sigma_y, theta)
    xx, yy = _offsets(size, sx)
    cos, sin = torch.cos(th), torch.sin(th)
    u = xx * cos + yy * sin  # coordinate along the σ₁ axis
    v = -xx * sin + yy * cos  # coordinate along the σ₂ axis
    return (u / sx) ** 2 + (v / sy) ** 2


def _normalise(kernel: Tensor) -> Tensor:
    return kernel / kernel.sum(dim=(-2, -1), keepdim=True)


def gaussian_kernel(size: int, sigma_x: Number, sigma_y: Number | None = None, theta: Number = 0.0) -> Tensor:
    """Bivariate Gaussian exp(-q/2); isotropic when ``sigma_y`` is None (BasicSR ``bivariate_Gaussian``)."""
    return _normalise(torch.exp(-0.5 * _quadratic_form(size, sigma_x, sigma_y, theta)))


def generalized_gaussian_kernel(size: int, sigma_x: Number, sigma_y: Number | None = None,
                                theta: Number = 0.0, beta: Number = 1.0) -> Tensor:
    """Generalised Gaussian exp(-q^β / 2); β = 1 is the Gaussian (Real-ESRGAN Eq. 2)."""
    q = _quadratic_form(size, sigma_x, sigma_y, theta)
    (b,) = _params(beta)
    return _normalise(torch.exp(-0.5 * q ** b.to(q)))


def plateau_kernel(size: int, sigma_x: Number, sigma_y: Number | None = None,
                   theta: Number = 0.0, beta: Number = 1.0) -> Tensor:
    """Plateau-shaped kernel 1 / (1 + q^β) (Real-ESRGAN Eq. 3, BasicSR ``bivariate_plateau``)."""
    q = _quadratic_form(size, sigma_x, sigma_y, theta)
    (b,) = _params(beta)
    return _normalise(1.0 / (1.0 + q ** b.to(q)))


def sinc_kernel(size: int, cutoff: Number, pad_to: int | None = None) -> Tensor:
    """Circular low-pass (2D sinc) ω J₁(ω r) / (2π r), centre ω² / 4π (Real-ESRGAN Eq. 4), zero-padded."""
    _check_size(size)
    (w,) = _params(cutoff)
    xx, yy = _offsets(size, w)
    r = torch.sqrt(xx**2 + yy**2)
    safe_r = torch.where(r > 0, r, torch.ones_like(r))
    kernel = torch.where(r > 0, w * torch.special.bessel_j1(w * safe_r) / (2 * math.pi * safe_r),
                         w**2 / (4 * math.pi))
    kernel = _normalise(kernel)
    if pad_to is not None and pad_to > size:
        _check_size(pad_to)
        p = (pad_to - size) // 2
        kernel = torch.nn.functional.pad(kernel, (p, p, p, p))
    return kernel


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    """(n,) float32 samples of U(low, high) on the generator's device."""
    return low + (high - low) * torch.rand(n, generator=generator, device=generator.device)


def _split_beta(n: int, beta_range: Sequence[float], generator: torch.Generator) -> Tensor:
    """(n,) shape parameters: half the time U(low, 1), otherwise U(1, high), as BasicSR draws β."""
    below = _uniform(n, beta_range[0], 1.0, generator)
    above = _uniform(n, 1.0, beta_range[1], generator)
    return torch.where(torch.rand(n, generator=generator, device=generator.device) < 0.5, below, above)


def random_mixed_kernel(n: int, size: int, generator: torch.Generator, *,
                        kernel_list: Sequence[str] = KERNEL_TYPES,
                        kernel_prob: Sequence[float] = KERNEL_PROB,
                        sigma_range: Sequence[float] = (0.2, 3.0),
                        betag_range: Sequence[float] = (0.5, 4.0),
                        betap_range: Sequence[float] = (1.0, 2.0),
                        rotation_range: Sequence[float] = ROTATION_RANGE) -> Tensor:
    """(n, K, K) kernels, each of a type drawn from ``kernel_list`` with ``kernel_prob`` (BasicSR
    ``random_mixed_kernels``): σ₁, σ₂ ~ U(sigma_range), θ ~ U(rotation_range); 'iso' types use σ₂ = σ₁, θ = 0;
    generalised types draw β from ``betag_range``, plateau types from ``betap_range``."""
    unknown = set(kernel_list) - set(KERNEL_TYPES)
    if unknown or len(kernel_list) != len(kernel_prob):
        raise ConfigError(f"kernel_list must name kernels from {KERNEL_TYPES} with one probability each; "
                          f"got {tuple(kernel_list)} and {tuple(kernel_prob)}.")
    probs = torch.tensor(kernel_prob, dtype=torch.float32, device=generator.device)
    picked = torch.multinomial(probs, n, replacement=True, generator=generator)  # (n,) index into kernel_list
    type_ids = torch.tensor([KERNEL_TYPES.index(k) for k in kernel_list], device=generator.device)[picked]
    sigma_x = _uniform(n, *sigma_range, generator)
    sigma_y = _uniform(n, *sigma_range, generator)
    theta = _uniform(n, *rotation_range, generator)
    beta_g = _split_beta(n, betag_range, generator)
    beta_p = _split_beta(n, betap_range, generator)
    iso = type_ids % 2 == 0  # KERNEL_TYPES alternates iso / aniso
    sigma_y = torch.where(iso, sigma_x, sigma_y)
    theta = torch.where(iso, torch.zeros_like(theta), theta)
    family = type_ids // 2  # 0 Gaussian, 1 generalised Gaussian, 2 plateau
    beta = torch.where(family == 1, beta_g, torch.where(family == 2, beta_p, torch.ones_like(beta_g)))
    gauss = generalized_gaussian_kernel(size, sigma_x, sigma_y, theta, beta)  # (n, K, K); β = 1 is Gaussian
    plateau = plateau_kernel(size, sigma_x, sigma_y, theta, beta)
    return torch.where((family == 2)[:, None, None], plateau, gauss)


def random_odd_sizes(n: int, max_size: int, generator: torch.Generator) -> Tensor:
    """(n,) odd sizes uniform over 3, 5, ..., max_size - 2, as ResShift's ``RealESRGANDataset`` draws them."""
    if max_size < 5 or max_size % 2 == 0:
        raise ConfigError(f"A blur kernel size must be odd and >= 5, got {max_size}.")
    steps = torch.randint(0, (max_size - 3) // 2, (n,), generator=generator, device=generator.device)
    return 3 + 2 * steps


def crop_support(kernels: Tensor, sizes: Tensor) -> Tensor:
    """Zero (N, K, K) kernels outside their central ``sizes[i]`` square and renormalise.

    Equal to building each kernel at its own size and zero-padding it to K, which is how BasicSR pads.
    """
    k = kernels.shape[-1]
    ax = (torch.arange(k, device=kernels.device) - k // 2).abs()
    half = (sizes // 2)[:, None, None]
    inside = (ax[None, :, None] <= half) & (ax[None, None, :] <= half)  # (N, K, K)
    return _normalise(kernels * inside)


def random_blur_kernel(n: int, max_size: int, generator: torch.Generator, *, sinc_prob: float,
                       kernel_list: Sequence[str] = KERNEL_TYPES,
                       kernel_prob: Sequence[float] = KERNEL_PROB,
                       sigma_range: Sequence[float] = (0.2, 3.0),
                       betag_range: Sequence[float] = (0.5, 4.0),
                       betap_range: Sequence[float] = (1.0, 2.0)) -> Tensor:
    """(n, max_size, max_size) Real-ESRGAN blur kernels: a random odd support, then with ``sinc_prob`` a
    sinc filter (ω_c ~ U(π/3, π) below size 13, U(π/5, π) from 13), otherwise :func:`random_mixed_kernel`."""
    sizes = random_odd_sizes(n, max_size, generator)
    low = torch.where(sizes < 13, math.pi / 3, math.pi / 5)
    cutoff = low + (math.pi - low) * torch.rand(n, generator=generator, device=generator.device)
    use_sinc = torch.rand(n, generator=generator, device=generator.device) < sinc_prob
    mixed = random_mixed_kernel(n, max_size, generator, kernel_list=kernel_list, kernel_prob=kernel_prob,
                                sigma_range=sigma_range, betag_range=betag_range, betap_range=betap_range)
    kernels = torch.where(use_sinc[:, None, None], sinc_kernel(max_size, cutoff), mixed)
    return crop_support(kernels, sizes)


def random_final_sinc(n: int, max_size: int, prob: float, generator: torch.Generator) -> Tensor:
    """(n, max_size, max_size): with ``prob`` a sinc filter of random odd support and ω_c ~ U(π/3, π),
    otherwise the identity (a centred pulse); Real-ESRGAN's last filter before/after the final JPEG."""
    sizes = random_odd_sizes(n, max_size, generator)
    cutoff = _uniform(n, math.pi / 3, math.pi, generator)
    use_sinc = torch.rand(n, generator=generator, device=generator.device) < prob
    pulse = torch.zeros(max_size, max_size, device=generator.device)
    pulse[max_size // 2, max_size // 2] = 1.0
    sinc = crop_support(sinc_kernel(max_size, cutoff), sizes)
    return torch.where(use_sinc[:, None, None], sinc, pulse)
