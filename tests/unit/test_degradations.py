"""Degradations: MATLAB bicubic against MATLAB outputs, kernel properties, JPEG, noise, the Real-ESRGAN
pipeline's contract and determinism, and the paper's first-order test degradation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resshift.degradations import (FirstOrderDegradation, RealESRGANDegradation, add_gaussian_noise,
                                   add_poisson_noise, degrade, degrade_first_order, gaussian_kernel,
                                   generalized_gaussian_kernel, imresize, jpeg, plateau_kernel,
                                   random_blur_kernel, random_final_sinc, random_mixed_kernel, realesrgan_x2,
                                   sinc_kernel)
from resshift.errors import ConfigError, InputError
from resshift.metrics import blockiness

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BICUBIC = DATA / "resshift_testdata" / "Bicubicx4"
SET14 = DATA / "benchmarks" / "Set14"


def load(path: Path, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(1, 3, H, W) image in [0, 1]."""
    array = np.array(Image.open(path).convert("RGB"))
    return torch.from_numpy(array).permute(2, 0, 1)[None].to(dtype) / 255.0


def to_levels(x: torch.Tensor) -> torch.Tensor:
    return (x * 255.0).round().clamp(0, 255)


def needs(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"test data not found: {path}")


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    """(4, 3, 64, 64) crops of real images."""
    needs(BICUBIC)
    images = [load(p) for p in sorted((BICUBIC / "gt").glob("*.png"))[:4]]
    return torch.cat([im[..., 96:160, 96:160] for im in images])


# ----------------------------------------------------------------------------- MATLAB bicubic

def test_imresize_matches_matlab_bicubic_x4():
    needs(BICUBIC)
    pairs = sorted((BICUBIC / "gt").glob("*.png"))
    assert len(pairs) == 16
    for gt_path in pairs:
        matlab = to_levels(load(BICUBIC / "lq_matlab" / gt_path.name, torch.float64))
        ours = to_levels(imresize(load(gt_path, torch.float64), scale=0.25))
        diff = (ours - matlab).abs()
        assert ours.shape == (1, 3, 64, 64)
        assert diff.mean() <= 1.0 and diff.max() <= 1.0, gt_path.name


def test_imresize_shapes_and_constant_images():
    x = torch.full((2, 3, 50, 64), 0.3, dtype=torch.float64)
    assert imresize(x, scale=2).shape == (2, 3, 100, 128)
    assert imresize(x, scale=0.3).shape == (2, 3, 15, 20)  # MATLAB: ceil(50 * 0.3), ceil(64 * 0.3)
    assert imresize(x, size=(37, 41)).shape == (2, 3, 37, 41)
    torch.testing.assert_close(imresize(x, scale=0.3), torch.full((2, 3, 15, 20), 0.3, dtype=torch.float64))
    with pytest.raises(ConfigError):
        imresize(x)
    with pytest.raises(ConfigError):
        imresize(x, scale=0.5, size=(10, 10))


# ----------------------------------------------------------------------------- kernels

def second_moment(k: torch.Tensor) -> float:
    ax = torch.arange(k.shape[-1], dtype=k.dtype) - k.shape[-1] // 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return float((k * (xx**2 + yy**2)).sum())


@pytest.mark.parametrize("size", [7, 13, 21])
def test_kernels_sum_to_one_with_requested_shape(size):
    kernels = [gaussian_kernel(size, 1.5), gaussian_kernel(size, 2.0, 0.7, 0.4),
               generalized_gaussian_kernel(size, 1.5, 0.9, 1.0, beta=0.6),
               plateau_kernel(size, 1.5, 0.9, -0.5, beta=1.7), sinc_kernel(size, math.pi / 4)]
    for k in kernels:
        assert k.shape == (size, size)
        assert abs(float(k.sum()) - 1.0) < 1e-5
    assert sinc_kernel(7, 2.0, pad_to=15).shape == (15, 15)
    assert abs(float(sinc_kernel(7, 2.0, pad_to=15).sum()) - 1.0) < 1e-5


def test_isotropic_kernels_are_symmetric_and_rotation_flips_axes():
    for k in (gaussian_kernel(15, 1.7), plateau_kernel(15, 1.7, beta=1.5), sinc_kernel(15, 1.2)):
        torch.testing.assert_close(k, k.T)
        torch.testing.assert_close(k, k.flip(0))
        torch.testing.assert_close(k, torch.rot90(k))
    torch.testing.assert_close(gaussian_kernel(15, 2.5, 0.8, math.pi / 2), gaussian_kernel(15, 2.5, 0.8, 0.0).T)


def test_larger_sigma_gives_wider_kernel():
    moments = [second_moment(gaussian_kernel(21, s)) for s in (0.5, 1.0, 2.0, 3.0)]
    assert moments == sorted(moments) and len(set(moments)) == 4
    batch = gaussian_kernel(21, torch.tensor([0.5, 1.0, 2.0]))
    assert batch.shape == (3, 21, 21)


def test_random_kernels_are_normalised_odd_and_seeded():
    g = torch.Generator().manual_seed(0)
    mixed = random_mixed_kernel(64, 21, g)
    blur = random_blur_kernel(64, 21, g, sinc_prob=0.3)
    final = random_final_sinc(64, 15, 0.8, g)
    for k, size in ((mixed, 21), (blur, 21), (final, 15)):
        assert k.shape == (64, size, size)
        torch.testing.assert_close(k.sum(dim=(1, 2)), torch.ones(64), atol=1e-5, rtol=0)
    support = (blur.abs() > 0).any(dim=1).sum(dim=1)  # width of each kernel's non-zero columns
    assert all(w % 2 == 1 and w <= 19 for w in support.tolist())  # supports 3..19, zero-padded to 21
    again = random_mixed_kernel(64, 21, torch.Generator().manual_seed(0))
    assert torch.equal(mixed, again)


# ----------------------------------------------------------------------------- JPEG and noise

def test_jpeg_error_grows_as_quality_falls():
    needs(SET14)
    x = load(SET14 / "img_001.png")[..., :200, :248]  # not a multiple of 16: exercises the padding
    errors = [float((jpeg(x, q) - x).abs().mean()) for q in (100, 95, 70, 40, 10)]
    assert errors == sorted(errors) and len(set(errors)) == 5
    assert jpeg(x, 50).shape == x.shape


def test_jpeg_quality_100_is_close_to_identity():
    needs(SET14)
    x = load(SET14 / "img_001.png")[..., :192, :192]
    out = jpeg(x, 100.0)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert float(((out - x) * luma).sum(1).abs().mean()) * 255 < 0.5  # only 4:2:0 chroma loss remains
    grey = x.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    assert float((jpeg(grey, 100.0) - grey).abs().max()) * 255 < 2.0


def test_jpeg_quality_is_per_image():
    needs(SET14)
    x = load(SET14 / "img_004.png")[..., :64, :96]
    both = jpeg(torch.cat([x, x]), torch.tensor([90.0, 20.0]))
    torch.testing.assert_close(both[:1], jpeg(x, 90.0))
    torch.testing.assert_close(both[1:], jpeg(x, 20.0))


def test_noise_strength_is_monotone(crops):
    x = 0.25 + 0.5 * crops  # keep away from the clamp
    n = x.shape[0]
    colour = torch.zeros(n, dtype=torch.bool)
    stds = [float((add_gaussian_noise(x, torch.full((n,), s), colour, torch.Generator().manual_seed(1)) - x).std())
            for s in (2.0, 8.0, 20.0)]
    assert stds == sorted(stds) and stds[0] > 0
    stds = [float((add_poisson_noise(x, torch.full((n,), s), colour, torch.Generator().manual_seed(1)) - x).std())
            for s in (0.1, 0.5, 2.0)]
    assert stds == sorted(stds) and stds[0] > 0
    grey = add_gaussian_noise(x, torch.full((n,), 10.0), torch.ones(n, dtype=torch.bool), torch.Generator())
    diff = grey - x
    torch.testing.assert_close(diff[:, 0], diff[:, 1])


# ----------------------------------------------------------------------------- Real-ESRGAN pipeline

def test_config_defaults_are_the_official_values_and_round_trip():
    cfg = RealESRGANDegradation()
    assert (cfg.sf, cfg.resize_range, cfg.noise_range, cfg.poisson_scale_range) == (4, (0.15, 1.5), (1, 30), (0.05, 3))
    assert (cfg.second_order_prob, cfg.blur_kernel_size2, cfg.final_sinc_prob, cfg.jpeg_range2) == (0.5, 15, 0.8,
                                                                                                   (30, 95))
    assert realesrgan_x2() == RealESRGANDegradation(sf=2)
    assert RealESRGANDegradation.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError):
        RealESRGANDegradation.from_dict({"sf": 4, "blur_sigmaa": [0.2, 3.0]})
    with pytest.raises(ConfigError):
        RealESRGANDegradation(resize_prob=(0.5, 0.5, 0.5))
    with pytest.raises(ConfigError):
        RealESRGANDegradation(blur_kernel_size=20)


@pytest.mark.parametrize("config", [RealESRGANDegradation(), realesrgan_x2()], ids=["x4", "x2"])
def test_degrade_contract_and_determinism(crops, config):
    for seed in range(6):  # several seeds run both stage-2 branches and both final orders
        lr = degrade(crops, config, torch.Generator().manual_seed(seed))
        assert lr.shape == (4, 3, 64 // config.sf, 64 // config.sf) and lr.dtype == crops.dtype
        assert lr.min() >= 0 and lr.max() <= 1
        assert torch.equal(lr * 255, (lr * 255).round())
    a = degrade(crops, config, torch.Generator().manual_seed(7))
    b = degrade(crops, config, torch.Generator().manual_seed(7))
    c = degrade(crops, config, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_jpeg_last_puts_the_blocks_on_the_lr_grid():
    """With the JPEG after the final resize (jpeg_last_prob 1) a strongly compressed LR steps across its own
    8x8 grid far more than inside the blocks; with the JPEG before the resize (0) the blocks are shrunk off
    that grid. Only the order differs: no blur, noise or second stage."""
    needs(SET14)
    hr = load(SET14 / "img_001.png")[..., :256, :256]
    plain = dict(kernel_prob=(1, 0, 0, 0, 0, 0), sinc_prob=0.0, blur_sigma=(0.2, 0.2), resize_prob=(0, 0, 1),
                 gaussian_noise_prob=0.0, poisson_scale_range=(0.0, 0.0), jpeg_range=(100, 100),
                 second_order_prob=0.0, final_sinc_prob=0.0, jpeg_range2=(10, 10))
    blocking = {}
    for prob in (0.0, 1.0):
        lr = degrade(hr, RealESRGANDegradation(jpeg_last_prob=prob, **plain), torch.Generator().manual_seed(0))
        blocking[prob] = blockiness(lr[0].permute(1, 2, 0).numpy())
    assert blocking[1.0] > 1.5 and blocking[0.0] < 1.2
    with pytest.raises(ConfigError):
        RealESRGANDegradation(jpeg_last_prob=1.5)


def test_degrade_varies_per_image(crops):
    same = crops[:1].expand(4, -1, -1, -1)
    lr = degrade(same, RealESRGANDegradation(), torch.Generator().manual_seed(3))
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.equal(lr[i], lr[j])


def test_degrade_rejects_bad_input(crops):
    with pytest.raises(InputError):
        degrade(crops[..., :62, :62], RealESRGANDegradation(), torch.Generator())  # 62 is not a multiple of 4
    with pytest.raises(InputError):
        degrade(crops[:, :1], RealESRGANDegradation(), torch.Generator())


# ----------------------------------------------------------------------------- paper B.1

def test_first_order_degradation(crops):
    cfg = FirstOrderDegradation()
    assert (cfg.kernel_size, cfg.kernel_prob, cfg.blur_sigma, cfg.noise_range, cfg.jpeg_range) == (
        13, (0.6, 0.4), (0.2, 0.8), (1, 15), (70, 95))
    a = degrade_first_order(crops, cfg, torch.Generator().manual_seed(0))
    b = degrade_first_order(crops, cfg, torch.Generator().manual_seed(0))
    c = degrade_first_order(crops, cfg, torch.Generator().manual_seed(1))
    assert a.shape == (4, 3, 16, 16)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a * 255, (a * 255).round()) and a.min() >= 0 and a.max() <= 1
    assert FirstOrderDegradation.from_dict(cfg.to_dict()) == cfg
    assert degrade_first_order(crops, FirstOrderDegradation(sf=2), torch.Generator()).shape == (4, 3, 32, 32)
