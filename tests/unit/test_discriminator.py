"""resshift.nets.discriminator: shapes, spectral norms, Real-ESRGAN's parameter count, gradients, determinism,
config round trip, and the GAN losses in closed form."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils import parametrize

from resshift.errors import ConfigError, InputError
from resshift.nets.discriminator import DiscriminatorConfig, UNetDiscriminator, discriminator_loss, generator_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def spectral_norms(net: UNetDiscriminator, original: bool = False) -> list[float]:
    """Largest singular value of each normalised layer's weight as a (out, in * k * k) matrix: the
    effective weight, or the trained one behind it when `original`."""
    norms = []
    for module in net.modules():
        if parametrize.is_parametrized(module, "weight"):
            weight = module.parametrizations.weight.original if original else module.weight
            norms.append(torch.linalg.matrix_norm(weight.detach().flatten(1), ord=2).item())
    return norms


def expected_parameters(num_feat: int, in_channels: int) -> int:
    """Weights of conv_in (+bias), 3 stride-2 4x4 convs, 3 upsampling and 2 extra 3x3 convs, conv_out (+bias)."""
    f = num_feat
    conv_in = in_channels * f * 9 + f
    down = 16 * (f * 2 * f + 2 * f * 4 * f + 4 * f * 8 * f)
    up = 9 * (8 * f * 4 * f + 4 * f * 2 * f + 2 * f * f)
    refine = 2 * 9 * f * f
    conv_out = f * 9 + 1
    return conv_in + down + up + refine + conv_out


@pytest.mark.parametrize("height, width", [(8, 8), (32, 48), (64, 24)])
def test_output_is_one_logit_per_input_pixel(height: int, width: int) -> None:
    net = UNetDiscriminator(DiscriminatorConfig(num_feat=8))
    assert net(torch.rand(2, 3, height, width)).shape == (2, 1, height, width)


def test_sides_must_be_multiples_of_8() -> None:
    with pytest.raises(InputError, match="multiples of 8"):
        UNetDiscriminator(DiscriminatorConfig(num_feat=8))(torch.rand(1, 3, 36, 32))


@pytest.mark.parametrize("skip_connection", [True, False])
def test_parameter_count_matches_real_esrgan(skip_connection: bool) -> None:
    """Real-ESRGAN's UNetDiscriminatorSN(num_in_ch=3, num_feat=64) has 4,376,897 parameters; the skips add none."""
    net = UNetDiscriminator(DiscriminatorConfig(num_feat=64, skip_connection=skip_connection))
    count = sum(p.numel() for p in net.parameters())
    assert count == expected_parameters(64, 3) == 4_376_897
    small = UNetDiscriminator(DiscriminatorConfig(num_feat=16, in_channels=1))
    assert sum(p.numel() for p in small.parameters()) == expected_parameters(16, 1)


def test_spectral_norm_bounds_the_largest_singular_value() -> None:
    """The 8 normalised layers (all but conv_in and conv_out) reach norm 1 from above as the power
    iteration converges (one step per training forward); the raw weights are far from 1."""
    torch.manual_seed(0)
    net = UNetDiscriminator(DiscriminatorConfig(num_feat=32)).train()
    assert len(spectral_norms(net)) == 8
    assert all(abs(n - 1) > 0.2 for n in spectral_norms(net, original=True))
    for _ in range(150):
        net(torch.rand(1, 3, 8, 8))
    net.eval()       # reading `weight` in training mode would run another power iteration
    assert all(1 - 1e-4 < n < 1.01 for n in spectral_norms(net))


def test_gradients_reach_the_input_and_every_parameter() -> None:
    torch.manual_seed(0)
    net = UNetDiscriminator(DiscriminatorConfig(num_feat=8))
    images = torch.rand(2, 3, 16, 16, requires_grad=True)
    net(images).mean().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert torch.isfinite(images.grad).all()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_same_seed_same_network_and_logits() -> None:
    def logits(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        net = UNetDiscriminator(DiscriminatorConfig(num_feat=8))
        images = torch.rand(2, 3, 16, 16)
        net(images)                       # a training-mode step of the power iteration
        return net(images)

    assert torch.equal(logits(0), logits(0))
    assert not torch.equal(logits(0), logits(1))


def test_config_round_trip_and_errors() -> None:
    config = DiscriminatorConfig(num_feat=32, in_channels=3, skip_connection=False)
    assert DiscriminatorConfig.from_dict(config.to_dict()) == config
    assert DiscriminatorConfig.from_dict({"num_feat": 16}) == DiscriminatorConfig(num_feat=16)
    with pytest.raises(ConfigError, match="unknown config key num_feats"):
        DiscriminatorConfig.from_dict({"num_feats": 16})
    with pytest.raises(ConfigError, match="positive integer"):
        DiscriminatorConfig(num_feat=0)
    with pytest.raises(ConfigError, match="true or false"):
        DiscriminatorConfig(skip_connection="yes")


def test_gan_losses_closed_form() -> None:
    """softplus(x) = log(1 + e^x): real logit 2 and fake logit -1 give d = log(1 + e^-2) + log(1 + e^-1),
    g = log(1 + e^1); logits of 0 (undecided) give d = 2 log 2, g = log 2. One value per sample."""
    real, fake = torch.tensor([2.0, 2.0]), torch.tensor([[-1.0], [-1.0]])
    d_loss, g_loss = discriminator_loss(real, fake), generator_loss(fake)
    assert d_loss.shape == g_loss.shape == (2,)
    assert d_loss.tolist() == pytest.approx([math.log1p(math.exp(-2)) + math.log1p(math.exp(-1))] * 2, rel=1e-6)
    assert g_loss.tolist() == pytest.approx([math.log1p(math.exp(1))] * 2, rel=1e-6)
    undecided = torch.zeros(1, 1, 4, 4)
    d_loss, g_loss = discriminator_loss(undecided, undecided), generator_loss(undecided)
    assert (d_loss.item(), g_loss.item()) == pytest.approx((2 * math.log(2), math.log(2)), rel=1e-6)


def test_gan_losses_mean_over_each_samples_logits_and_gradient_signs() -> None:
    """Each sample's term is the mean over its logits. The discriminator's loss pushes real logits up
    and fake ones down; the generator's pushes fake logits up."""
    real = torch.tensor([[0.5, -3.0], [1.0, 1.0]], requires_grad=True)
    fake = torch.tensor([[1.0, -2.0], [0.0, 0.0]], requires_grad=True)
    d_loss, g_loss = discriminator_loss(real, fake), generator_loss(fake)
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    first = (softplus(-0.5) + softplus(3.0)) / 2 + (softplus(1.0) + softplus(-2.0)) / 2
    second = softplus(-1.0) + softplus(0.0)
    assert d_loss.tolist() == pytest.approx([first, second], rel=1e-6)
    assert g_loss.tolist() == pytest.approx([(softplus(-1.0) + softplus(2.0)) / 2, softplus(0.0)], rel=1e-6)
    d_loss.sum().backward(retain_graph=True)
    assert (real.grad < 0).all() and (fake.grad > 0).all()
    fake.grad = None
    g_loss.sum().backward()
    assert (fake.grad < 0).all()
