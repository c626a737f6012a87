"""Training-data generators of the other ResShift tasks: LaMa-style inpainting masks (also those held to a
hole-fraction range for evaluation), the scores inside the holes, and GFPGAN-style face degradation —
contracts, statistics, determinism, config round trips."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from resshift.degradations import (MASK_KINDS, FaceDegradation, MaskConfig, degrade_face, degrade_face_pair,
                                   random_masks, random_masks_with_kinds)
from resshift.degradations.masks import random_masks_in_range
from resshift.errors import ConfigError, InputError
from resshift.evaluation import SHIFTS, hole_psnr, hole_shift_rms, hole_stlpips, paste_into_holes
from resshift.metrics import STLPIPS
from resshift.training.config import load_config


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- masks

@pytest.fixture(scope="module")
def mask_sample() -> tuple[torch.Tensor, torch.Tensor]:
    return random_masks_with_kinds(2000, 256, 256, MaskConfig(), gen(0))


def test_masks_binary_shape_device(mask_sample):
    masks, kinds = mask_sample
    assert masks.shape == (2000, 1, 256, 256) and masks.dtype == torch.float32
    assert ((masks == 0) | (masks == 1)).all()
    assert kinds.shape == (2000,) and set(kinds.tolist()) == {0, 1, 2}


def test_mask_statistics(mask_sample):
    masks, kinds = mask_sample
    ratio = masks.mean(dim=(1, 2, 3))  # (n,) hole fraction
    assert (ratio > 0).all(), "every mask has a hole"
    assert 0.15 < ratio.mean().item() < 0.5
    for i, kind in enumerate(MASK_KINDS):
        share = (kinds == i).float().mean().item()
        assert abs(share - 1 / 3) < 0.05, f"{kind}: share {share}"  # probabilities 1, 1, 1 -> 1/3 each
    box, band = masks[kinds == 1, 0], masks[kinds == 2, 0]
    assert box[:, :10].sum() == 0 and box[:, -10:].sum() == 0 and box[:, :, :10].sum() == 0, "box margin"
    # an outpainting band is a full row or column touching the border
    touching = (band[:, 0].all(-1) | band[:, -1].all(-1) | band[:, :, 0].all(-1) | band[:, :, -1].all(-1))
    assert touching.all()
    band_ratio = ratio[kinds == 2]
    assert band_ratio.min() >= 10 / 256 and band_ratio.max() <= 0.75  # each band < 25 % of its side


def test_mask_kind_selection():
    only_boxes = MaskConfig(irregular_proba=0, outpainting_proba=0)
    _, kinds = random_masks_with_kinds(20, 128, 128, only_boxes, gen(1))
    assert (kinds == MASK_KINDS.index("box")).all()
    left_only = MaskConfig(irregular_proba=0, box_proba=0, outpainting_side_probs=(1.0, 0.0, 0.0, 0.0))
    masks = random_masks(10, 100, 100, left_only, gen(2))
    assert (masks[:, 0, :, 0] == 1).all() and (masks[:, 0, :, -1] == 0).all()
    widths = masks[:, 0, 0].sum(-1)
    assert ((widths >= 4) & (widths < 25)).all()


def test_masks_reproducible_and_seed_dependent():
    a = random_masks(16, 96, 128, MaskConfig(), gen(7))
    b = random_masks(16, 96, 128, MaskConfig(), gen(7))
    c = random_masks(16, 96, 128, MaskConfig(), gen(8))
    assert a.shape == (16, 1, 96, 128)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_mask_config_roundtrip_and_errors():
    cfg = MaskConfig(box_proba=0.5)
    assert MaskConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError):
        MaskConfig.from_dict({"box_prob": 1.0})
    with pytest.raises(ConfigError):
        MaskConfig(irregular_proba=0, box_proba=0, outpainting_proba=0)
    with pytest.raises(ConfigError):
        random_masks(1, 40, 40, MaskConfig(irregular_proba=0, outpainting_proba=0), gen(0))  # boxes cannot fit


def test_compact_inpaint_masks_keep_the_official_hole_fractions(mask_sample):
    """The preset halves every mask length for its 128-pixel crops: the holes cover what they cover at 256."""
    masks = random_masks(1000, 128, 128, load_config("compact-inpaint").data.masks, gen(0))
    ours, official = masks.mean(dim=(1, 2, 3)), mask_sample[0].mean(dim=(1, 2, 3))
    assert ours.mean().item() == pytest.approx(official.mean().item(), abs=0.03)
    assert ours.median().item() == pytest.approx(official.median().item(), abs=0.03)


def test_masks_in_range_hold_their_hole_fraction_and_replay():
    masks = random_masks_in_range(24, 256, 256, MaskConfig(), gen(4))
    ratio = masks.mean(dim=(1, 2, 3))
    assert masks.shape == (24, 1, 256, 256) and ((masks == 0) | (masks == 1)).all()
    assert ((ratio >= 0.10) & (ratio <= 0.40)).all()
    assert torch.equal(masks, random_masks_in_range(24, 256, 256, MaskConfig(), gen(4)))
    narrow = random_masks_in_range(4, 128, 128, MaskConfig(), gen(4), hole_range=(0.2, 0.25)).mean(dim=(1, 2, 3))
    assert ((narrow >= 0.2) & (narrow <= 0.25)).all()


def test_masks_in_range_errors():
    with pytest.raises(InputError, match="smaller than the 51x51"):
        random_masks_in_range(1, 40, 300, MaskConfig(), gen(0))
    assert random_masks_in_range(1, 40, 40, MaskConfig(box_proba=0), gen(0), (0, 1)).shape == (1, 1, 40, 40)
    with pytest.raises(ConfigError, match="hole range"):
        random_masks_in_range(1, 64, 64, MaskConfig(), gen(0), hole_range=(0.5, 0.2))
    only_left = MaskConfig(irregular_proba=0, box_proba=0, outpainting_side_probs=(1.0, 0.0, 0.0, 0.0))
    with pytest.raises(ConfigError, match="in 5 draws"):  # a band is at most 25 % of the side
        random_masks_in_range(1, 64, 64, only_left, gen(0), hole_range=(0.5, 0.6), max_draws=5)


# ----------------------------------------------------------------------------- scores inside the holes

def hole_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gt, mask, pred): a 64x64 image, a 16x16 hole, and a prediction wrong everywhere by 0.1."""
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.2, 0.8, (64, 64, 3)).astype(np.float32)
    mask = np.zeros((64, 64), np.float32)
    mask[8:24, 30:46] = 1
    return gt, mask, gt + np.float32(0.1)


def test_paste_into_holes_keeps_known_pixels():
    gt, mask, pred = hole_case()
    pasted = paste_into_holes(pred, gt, mask)
    assert np.array_equal(pasted[mask == 1], pred[mask == 1]) and np.array_equal(pasted[mask == 0], gt[mask == 0])
    with pytest.raises(InputError, match="do not match"):
        paste_into_holes(pred, gt, mask[:32])


def test_hole_psnr_sees_only_the_holes():
    gt, mask, pred = hole_case()
    assert hole_psnr(pred, gt, mask, y_channel=False) == pytest.approx(20.0, abs=1e-3)  # error 0.1 -> 20 dB
    assert hole_psnr(gt, gt, mask) == math.inf
    outside_only = np.where(mask[..., None] == 1, gt, 1 - gt)
    assert hole_psnr(outside_only, gt, mask) == math.inf
    with pytest.raises(InputError, match="no hole"):
        hole_psnr(pred, gt, np.zeros_like(mask))


def test_hole_shift_rms_is_zero_for_a_fill_that_follows_the_image_and_measures_a_plaid():
    """A fill computed from the pixels alone moves with them (0); one that adds a pattern tied to the array's
    origin scores the RMS of (pattern moved by each shift - pattern) over the holes, in 8-bit levels."""
    gt, mask, _ = hole_case()
    masked = gt * (1 - mask[..., None])
    assert hole_shift_rms(lambda image, holes: image * 0.5, masked, mask, masked * 0.5) == 0.0
    rng = np.random.default_rng(2)
    cell = rng.uniform(-8, 8, (4, 4, 3)).astype(np.float32) / 255

    def plaid(image, holes):
        return image + np.tile(cell, (image.shape[0] // 4 + 1, image.shape[1] // 4 + 1, 1))[: image.shape[0], : image.shape[1]]

    pattern = np.tile(cell, (32, 32, 1))
    holes = mask > 0.5
    expected = np.mean([np.sqrt(np.mean((pattern[dy:dy + 64, dx:dx + 64][holes] - pattern[:64, :64][holes]) ** 2))
                        for dy, dx in SHIFTS]) * 255
    filled = plaid(masked, mask)
    assert expected > 3 and hole_shift_rms(plaid, masked, mask, filled) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(InputError, match="no hole"):
        hole_shift_rms(plaid, masked, np.zeros_like(mask), filled)


@pytest.mark.skipif(importlib.util.find_spec("stlpips_pytorch") is None,
                    reason="stlpips-pytorch is not installed: no ST-LPIPS weights")
def test_hole_stlpips_sees_only_the_holes():
    lpips = STLPIPS.from_package("vgg")
    gt, mask, pred = hole_case()
    assert hole_stlpips(lpips, gt, gt, mask) == 0.0
    assert hole_stlpips(lpips, np.where(mask[..., None] == 1, gt, 1 - gt), gt, mask) == 0.0
    wrong = hole_stlpips(lpips, pred, gt, mask)
    larger = np.zeros_like(mask)
    larger[4:36, 20:52] = 1
    assert 0 < wrong < hole_stlpips(lpips, pred, gt, larger)  # a mean over the image: grows with the hole area


# ----------------------------------------------------------------------------- face

def smooth_faces(n: int, size: int = 512) -> torch.Tensor:
    """(n, 3, size, size) smooth synthetic images with some mid frequencies, in [0, 1]."""
    ax = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    channels = [0.5 + 0.3 * torch.sin(2 * math.pi * (3 + c) * xx) * torch.cos(2 * math.pi * (2 + c) * yy)
                + 0.15 * (xx - yy) for c in range(3)]
    image = torch.stack(channels).clamp(0, 1)
    return image[None].repeat(n, 1, 1, 1)


def test_face_contract_and_determinism():
    hq = smooth_faces(3)
    lq = degrade_face(hq, FaceDegradation(), gen(0))
    assert lq.shape == hq.shape and lq.dtype == hq.dtype
    assert lq.min() >= 0 and lq.max() <= 1
    assert torch.equal(lq * 255, (lq * 255).round()), "on the 1/255 grid"
    assert torch.equal(lq, degrade_face(hq, FaceDegradation(), gen(0)))
    assert not torch.equal(lq, degrade_face(hq, FaceDegradation(), gen(1)))


def test_face_strength_orders_error():
    hq = smooth_faces(2, 256)
    mild = FaceDegradation(blur_sigma=(0.1, 0.1), downsample_range=(1.0, 1.0), noise_range=(0.0, 0.0),
                           jpeg_range=(100.0, 100.0), gray_prob=0.0)
    strong = FaceDegradation(blur_sigma=(6.0, 6.0), downsample_range=(8.0, 8.0), noise_range=(15.0, 15.0),
                             jpeg_range=(30.0, 30.0), gray_prob=0.0)
    err_mild = (degrade_face(hq, mild, gen(0)) - hq).abs().mean().item()
    err_strong = (degrade_face(hq, strong, gen(0)) - hq).abs().mean().item()
    assert err_mild < 0.02 and err_strong > 3 * err_mild
    noisy = FaceDegradation(blur_sigma=(0.1, 0.1), downsample_range=(1.0, 1.0), noise_range=(20.0, 20.0),
                            jpeg_range=(100.0, 100.0), gray_prob=0.0)
    assert (degrade_face(hq, noisy, gen(0)) - hq).abs().mean().item() > 2 * err_mild


def test_face_grey_pair():
    hq = smooth_faces(2, 64)
    cfg = FaceDegradation(blur_kernel_size=21, downsample_range=(1.0, 4.0), gray_prob=1.0)
    gt, lq = degrade_face_pair(hq, cfg, gen(3))
    for x in (gt, lq):
        assert torch.allclose(x[:, 0], x[:, 1]) and torch.allclose(x[:, 1], x[:, 2])


def test_face_config_and_input_errors():
    cfg = FaceDegradation(gray_prob=0.1)
    assert FaceDegradation.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError):
        FaceDegradation.from_dict({"grey_prob": 0.1})
    with pytest.raises(ConfigError):
        FaceDegradation(jpeg_range=(30.0, 120.0))
    with pytest.raises(ConfigError):
        FaceDegradation(kernel_list=("iso", "sinc"))
    with pytest.raises(InputError):
        degrade_face(torch.rand(1, 3, 16, 16), FaceDegradation(), gen(0))  # smaller than the 41x41 blur
    with pytest.raises(InputError):
        degrade_face(torch.rand(3, 64, 64), FaceDegradation(blur_kernel_size=21), gen(0))
