"""resshift.metrics: PSNR/SSIM against hand-computed values and BasicSR 1.4.2, NIQE against BasicSR 1.4.2,
ST-LPIPS against the original stlpips-pytorch 0.0.2."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from resshift.errors import CheckpointError, InputError
from resshift.metrics import STLPIPS, niqe, phase_variance, psnr, rgb_to_y, ssim
from resshift.metrics import stlpips as stlpips_module
from resshift.metrics.psnr_ssim import SSIM_C1, gaussian_window

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "resshift_testdata"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"test images not found at {DATA}")
needs_stlpips = pytest.mark.skipif(
    importlib.util.find_spec("stlpips_pytorch") is None,
    reason="stlpips-pytorch is not installed (pip install --no-deps stlpips-pytorch): no ST-LPIPS weights",
)
Y_GAIN = (65.481 + 128.553 + 24.966) / 255  # dY per RGB level when R = G = B


def random_image(seed: int, h: int = 40, w: int = 48, lo: int = 10, hi: int = 240) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, size=(h, w, 3), dtype=np.uint8)


def val_sr_pair(name: str) -> tuple[Image.Image, Image.Image]:
    """A Val_SR ground truth and its x4 lq upscaled with PIL bicubic (how the golden values were made)."""
    gt = Image.open(DATA / "Val_SR" / "gt" / name).convert("RGB")
    return gt, Image.open(DATA / "Val_SR" / "lq" / name).convert("RGB").resize(gt.size, Image.BICUBIC)


# ---- PSNR / SSIM -------------------------------------------------------------------------------


@pytest.mark.parametrize("y_channel, step", [(False, 5.0), (True, 5.0 * Y_GAIN)])
def test_psnr_of_constant_offset(y_channel: bool, step: float) -> None:
    img = random_image(0)
    assert psnr(img, img + 5, y_channel=y_channel) == pytest.approx(20 * math.log10(255 / step), abs=1e-9)


def test_identical_images() -> None:
    img = random_image(1)
    assert psnr(img, img) == math.inf and psnr(img, img, y_channel=False) == math.inf
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    assert ssim(img, img, y_channel=False) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("y_channel", [True, False])
def test_ssim_of_flat_images_is_the_luminance_term(y_channel: bool) -> None:
    a, b = np.full((16, 16, 3), 100, np.uint8), np.full((16, 16, 3), 105, np.uint8)
    x, y = (16 + 100 * Y_GAIN, 16 + 105 * Y_GAIN) if y_channel else (100.0, 105.0)
    expected = (2 * x * y + SSIM_C1) / (x**2 + y**2 + SSIM_C1)
    assert ssim(a, b, y_channel=y_channel) == pytest.approx(expected, abs=1e-12)


def test_ssim_of_shifted_texture_is_the_mean_luminance_term() -> None:
    """A constant offset leaves variances and covariance equal, so only l(x, y) remains; windows summed naively."""
    img = random_image(2, 20, 18, lo=10, hi=200)
    x = img[..., 0].astype(np.float64)
    window = np.outer(gaussian_window(), gaussian_window())
    terms = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            mu = float((window * x[i : i + 11, j : j + 11]).sum())
            terms.append((2 * mu * (mu + 40) + SSIM_C1) / (mu**2 + (mu + 40) ** 2 + SSIM_C1))
    grey = np.repeat(img[..., :1], 3, axis=2)
    assert ssim(grey, grey + 40, y_channel=False) == pytest.approx(np.mean(terms), abs=1e-12)


def test_rgb_to_y_matches_bt601() -> None:
    colours = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]]], np.uint8)
    np.testing.assert_allclose(rgb_to_y(colours)[0], [81.481, 144.553, 40.966, 235.0, 16.0], atol=1e-12)
    np.testing.assert_allclose(rgb_to_y(colours / 255.0), rgb_to_y(colours), atol=1e-12)


def test_metrics_are_symmetric_and_accept_floats() -> None:
    a, b = random_image(3), random_image(4)
    for metric in (psnr, ssim):
        for y_channel in (True, False):
            assert metric(a, b, 2, y_channel) == pytest.approx(metric(b, a, 2, y_channel), abs=1e-12)
            assert metric(a, b, 2, y_channel) == pytest.approx(metric(a / 255.0, b / 255.0, 2, y_channel), abs=1e-9)


def test_crop_border_removes_exactly_that_many_pixels() -> None:
    a, c = random_image(5), 3
    b = a.copy()
    b[c - 1, 20] += 9  # one pixel changed on the last cropped row
    assert psnr(a, b, crop_border=c) == math.inf and psnr(a, b, crop_border=c - 1) < math.inf
    assert ssim(a, b, crop_border=c) == pytest.approx(1.0, abs=1e-12) and ssim(a, b, crop_border=c - 1) < 1
    d = random_image(6)
    assert psnr(a, d, crop_border=c) == psnr(a[c:-c, c:-c], d[c:-c, c:-c])
    assert ssim(a, d, crop_border=c) == ssim(a[c:-c, c:-c], d[c:-c, c:-c])


def test_bad_inputs_raise_input_error() -> None:
    a = random_image(7)
    with pytest.raises(InputError):
        psnr(a, a[:-1])
    with pytest.raises(InputError):
        psnr(a * 1.0, a * 1.0)  # float outside [0, 1]
    with pytest.raises(InputError):
        ssim(a, a, crop_border=15)  # 10 rows left, below the 11x11 window
    with pytest.raises(InputError):
        psnr(a[..., 0], a[..., 0])


# BasicSR 1.4.2 calculate_psnr / calculate_ssim (opencv-python-headless 5.0.0) on the BGR-flipped images,
# crop_border=4.
# BasicSR builds Y in float32, hence the ~4e-7 difference on the Y channel.
BASICSR_PSNR_SSIM = [
    ("ILSVRC2012_val_00000067.png", True, 21.36157761, 0.34899162),
    ("ILSVRC2012_val_00000067.png", False, 19.54973467, 0.31186559),
    ("ILSVRC2012_val_00000073.png", True, 31.19222006, 0.88857127),
    ("ILSVRC2012_val_00000073.png", False, 29.18737933, 0.84445946),
]


@needs_data
@pytest.mark.parametrize("name, y_channel, ref_psnr, ref_ssim", BASICSR_PSNR_SSIM)
def test_psnr_ssim_match_basicsr(name: str, y_channel: bool, ref_psnr: float, ref_ssim: float) -> None:
    gt, up = (np.asarray(im) for im in val_sr_pair(name))
    assert psnr(gt, up, 4, y_channel) == pytest.approx(ref_psnr, abs=1e-5)
    assert ssim(gt, up, 4, y_channel) == pytest.approx(ref_ssim, abs=1e-6)


# ---- NIQE --------------------------------------------------------------------------------------

# BasicSR 1.4.2 calculate_niqe(img[..., ::-1], crop_border) (its niqe.py run from the sdist with scipy 1.17.1,
# opencv-python-headless 5.0.0, numpy 2.4.6, torch 2.13.0 CPU). We agreed to ~1e-13 on these and on 50 of the
# 57 RealSet65 images of >= 2 blocks; the other 7 differ by <= 3.9e-4 because BasicSR rounds a float32 Y, which
# puts a few pixels on the other side of .5.
BASICSR_NIQE = [
    ("ADE_val_00000114.jpg", 0, 4.454538),
    ("Canon_004_LR4.png", 0, 8.101912),
    ("comic3.png", 0, 9.120116),
    ("dog2.png", 0, 3.171572),
    ("dog2.png", 4, 3.117161),
]


def realset(name: str) -> np.ndarray:
    return np.asarray(Image.open(DATA / "RealSet65" / name).convert("RGB"))


@needs_data
@pytest.mark.parametrize("name, crop_border, expected", BASICSR_NIQE)
def test_niqe_matches_basicsr(name: str, crop_border: int, expected: float) -> None:
    assert niqe(realset(name), crop_border) == pytest.approx(expected, abs=1e-3)


@needs_data
def test_niqe_rises_with_blur_and_noise() -> None:
    img = realset("dog2.png")
    blurred = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(2)))
    noise = np.random.default_rng(0).normal(0, 20, img.shape)
    noisy = np.clip(img + noise, 0, 255).round().astype(np.uint8)
    source = niqe(img)
    assert niqe(blurred) > source + 1 and niqe(noisy) > source + 1
    assert niqe(img / 255.0) == pytest.approx(source, abs=1e-9)


def test_niqe_rejects_small_and_flat_images() -> None:
    with pytest.raises(InputError):
        niqe(random_image(8, 100, 150))  # one 96x96 block
    with pytest.raises(InputError):
        niqe(np.full((96, 192, 3), 128, np.uint8))  # no texture: AGGD fits are undefined


# ---- ST-LPIPS ----------------------------------------------------------------------------------


def test_stlpips_without_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stlpips_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match="pip install"):
        STLPIPS.from_package("vgg")
    with pytest.raises(InputError):
        STLPIPS.from_package("squeeze")


def test_stlpips_load_is_strict(tmp_path: Path) -> None:
    state = STLPIPS("alex").state_dict()
    state.pop("lin4.model.1.weight")
    torch.save(state, tmp_path / "alex.pth")
    with pytest.raises(CheckpointError, match=r"lin4\.model\.1\.weight"):
        STLPIPS.from_file(tmp_path / "alex.pth", net="alex")
    with pytest.raises(CheckpointError):
        STLPIPS.from_file(tmp_path / "alex.pth", net="vgg")


@pytest.fixture(scope="module")
def vgg() -> STLPIPS:
    return STLPIPS.from_package("vgg")


def crops(images: list[Image.Image], box: tuple[int, int, int, int]) -> torch.Tensor:
    """(N, 3, h, w) float32 in [0, 1]."""
    arrays = [np.asarray(im.crop(box), dtype=np.float32) / 255 for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


# The original stlpips_pytorch 0.0.2, LPIPS(net=..., variant="shift_tolerant")(gt, up, normalize=True), run in
# float32 with torchvision, torchsummary and IPython stubbed (the shift_tolerant path never calls them), on the
# 96x96 crops (80, 80, 176, 176) of these Val_SR images: ours agreed bit for bit (also on full 256x256 images).
STLPIPS_NAMES = ["ILSVRC2012_val_00000067.png", "ILSVRC2012_val_00000073.png", "ILSVRC2012_val_00000079.png"]
STLPIPS_GOLDEN = {
    "vgg": [0.6898937225341797, 0.2721232771873474, 0.5722784996032715],
    "alex": [0.43529748916625977, 0.11830630898475647, 0.45282283425331116],
}
BOX = (80, 80, 176, 176)


@needs_stlpips
@needs_data
@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_stlpips_matches_original(net: str, vgg: STLPIPS) -> None:
    model = vgg if net == "vgg" else STLPIPS.from_package(net)
    pairs = [val_sr_pair(name) for name in STLPIPS_NAMES]
    gt, up = crops([p[0] for p in pairs], BOX), crops([p[1] for p in pairs], BOX)
    with torch.no_grad():
        dist = model(gt, up)
    np.testing.assert_allclose(dist.numpy(), STLPIPS_GOLDEN[net], atol=1e-5)


@needs_stlpips
@needs_data
def test_stlpips_properties(vgg: STLPIPS) -> None:
    gt, _ = val_sr_pair(STLPIPS_NAMES[1])
    blurred = gt.filter(ImageFilter.GaussianBlur(1))
    a, shifted, blur = crops([gt, gt.crop((1, 0, 256, 256)), blurred], BOX)  # `shifted`: one pixel to the left
    g = torch.Generator().manual_seed(0)
    noisy = [(a + s * torch.randn(a.shape, generator=g)).clamp(0, 1) for s in (0.02, 0.05, 0.1)]
    first = torch.stack([a, a, shifted, a, a, a, a])
    second = torch.stack([a, shifted, a, blur, *noisy])
    with torch.no_grad():
        same, shift, shift_back, blur_d, *noise_d = vgg(first, second).tolist()
    assert same == 0.0
    assert shift == pytest.approx(shift_back, abs=1e-6)
    assert shift < blur_d / 4 and shift < noise_d[0] / 4
    assert noise_d[0] < noise_d[1] < noise_d[2]


@needs_stlpips
def test_stlpips_is_a_frozen_differentiable_loss() -> None:
    model = STLPIPS.from_package("alex").train()  # train mode must not make it random
    assert not any(p.requires_grad for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 32, 32, generator=g).requires_grad_(True)
    b = torch.rand(2, 3, 32, 32, generator=g)
    dist = model(a, b)
    assert dist.shape == (2,) and torch.equal(dist, model(a, b))
    dist.sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    with torch.no_grad():  # the loss path (target features without a graph) = the metric path (one joint pass)
        torch.testing.assert_close(model(a, b), dist.detach(), atol=1e-6, rtol=1e-5)
    model64 = model.to(torch.float64)
    dist64 = model64(a.detach().double(), b.double())
    assert dist64.dtype == torch.float64
    torch.testing.assert_close(dist64, dist.detach().double(), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- sub-pixel phase variance

def test_phase_variance_of_a_periodic_pattern_is_its_variance() -> None:
    """A 4x4 tile repeated over the image puts each pixel of the tile in its own phase: the score is the
    tile's variance (per channel, averaged). A ramp of slope g shifts phase column j by g j, so it adds
    exactly that; a constant offset adds nothing."""
    tile = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.05
    pattern = tile.repeat(1, 1, 16, 24)                                             # 64x96 pixels
    slope = 0.4 / 95
    ramp = (torch.arange(96.0) * slope).view(1, 1, 1, 96).expand(1, 3, 64, 96)

    def variance(values: torch.Tensor) -> torch.Tensor:
        return values.flatten(2).var(dim=2, unbiased=False).mean().view(1)

    torch.testing.assert_close(phase_variance(pattern), variance(tile))
    torch.testing.assert_close(phase_variance(pattern + 0.1), variance(tile))
    column_offsets = (torch.arange(4.0) * slope).view(1, 1, 1, 4)
    torch.testing.assert_close(phase_variance(ramp), variance(column_offsets.expand(1, 3, 4, 4)))
    torch.testing.assert_close(phase_variance(pattern + ramp), variance(tile + column_offsets))


def test_phase_variance_of_white_noise_is_its_variance_over_the_window_area() -> None:
    """Each phase mean averages window^2 samples: E = (1 - 1/p^2) sigma^2 / window^2 for white noise."""
    sigma, window = 0.1, 8
    noise = torch.randn(4, 3, 256, 256, generator=torch.Generator().manual_seed(1)) * sigma
    expected = (1 - 1 / 16) * sigma ** 2 / window ** 2
    assert phase_variance(noise, 4, window).mean().item() == pytest.approx(expected, rel=0.05)


def test_phase_variance_crops_and_rejects_small_images() -> None:
    error = torch.randn(2, 3, 70, 90)
    torch.testing.assert_close(phase_variance(error), phase_variance(error[..., :64, :64]))
    with pytest.raises(ValueError, match="at least 32x32"):
        phase_variance(torch.zeros(1, 3, 31, 64))
