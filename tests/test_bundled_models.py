"""The models shipped inside the package: their files, and their quality against independent baselines.

Every bundled model must have a quality check here (a model without one fails the suite), measured on
images it was never trained on, against a baseline computed in the test itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from resshift.degradations.bicubic import imresize
from resshift.evaluation import hole_stlpips, masked_eval_set, model_inpaint, telea_inpaint
from resshift.imageio import read_image
from resshift.metrics import STLPIPS, psnr
from resshift.models import BUNDLED, DEFAULT_MODELS, load_model
from resshift.training.logs import to_uint8
from resshift.upscale import UpscaleOptions

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SET5 = DATA / "benchmarks" / "Set5"
VAL_SR = DATA / "resshift_testdata" / "Val_SR"
MAX_BYTES = 25 * 2**20
COUNT = 8    # images of Val_SR per check: the first ones, sorted by name


def _need(folder: Path) -> None:
    if not folder.is_dir():
        pytest.fail(f"{folder} is missing: the quality checks read ../shared/data beside the checkout")


def _batch(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(2, 0, 1)[None]


def _set5_gain_over_bicubic(name: str) -> float:
    """Mean PSNR-Y gain (dB, 4-pixel border) of the model over bicubic interpolation on Set5, LR by MATLAB bicubic."""
    _need(SET5)
    pipe = load_model(name)
    gains = []
    for path in sorted(SET5.glob("*.png")):
        hr = torch.from_numpy(read_image(path).pixels).permute(2, 0, 1)
        hr = hr[:, : hr.shape[1] // 4 * 4, : hr.shape[2] // 4 * 4]
        lr = imresize(hr[None], 0.25).clamp(0, 1)
        with torch.no_grad():
            ours = pipe.restore(lr, generator=torch.Generator().manual_seed(0))[0, :, : hr.shape[1], : hr.shape[2]]
        bicubic = imresize(lr, 4.0)[0]
        gains.append(psnr(to_uint8(ours), to_uint8(hr), crop_border=4) - psnr(to_uint8(bicubic), to_uint8(hr), crop_border=4))
    return float(np.mean(gains))


def _valsr_stlpips_gain_over_bicubic(name: str) -> float:
    """Bicubic's mean ST-LPIPS over the model's on the first Val_SR pairs (their given Real-ESRGAN-degraded LR):
    above 1 when the model is perceptually closer to the ground truth; 1 / 0.7 is issue 6's bar."""
    _need(VAL_SR)
    pipe, lpips = load_model(name), STLPIPS.from_package("vgg")
    ours, bicubic = [], []
    for path in sorted((VAL_SR / "gt").glob("*.png"))[:COUNT]:
        hr, lr = (_batch(read_image(folder / path.name).pixels) for folder in (VAL_SR / "gt", VAL_SR / "lq"))
        with torch.no_grad():
            restored = pipe.restore(lr, generator=torch.Generator().manual_seed(0))[..., : hr.shape[2], : hr.shape[3]]
            ours.append(float(lpips(restored, hr)[0]))
            bicubic.append(float(lpips(imresize(lr, 4.0).clamp(0, 1), hr)[0]))
    return float(np.mean(bicubic) / np.mean(ours))


def _telea_over_ours_in_holes(name: str) -> float:
    """Telea's mean ST-LPIPS inside the holes over the model's, on the first images of bench_inpaint's fixed
    set (Val_SR ground truths, seeded masks covering 10-40 %): above 1 when the model fills better."""
    _need(VAL_SR)
    pipe, lpips, options = load_model(name), STLPIPS.from_package("vgg"), UpscaleOptions(seed=0)
    telea, ours = [], []
    for item in masked_eval_set(VAL_SR / "gt", COUNT, seed=0):
        for scores, fill in ((telea, telea_inpaint(item["masked"], item["mask"])),
                             (ours, model_inpaint(pipe, options, item["masked"], item["mask"]))):
            scores.append(hole_stlpips(lpips, fill, item["gt"], item["mask"]))
    return float(np.mean(telea) / np.mean(ours))


# name -> (check, the least value it must reach). Thresholds sit a little under the measured value
# (docs/models.md) so that a broken export, loader or sampler fails, not float noise.
QUALITY = {
    "bicubic-x4": (_set5_gain_over_bicubic, 2.1),   # measured 2.29 dB
}


def test_every_default_is_bundled_and_every_bundled_model_has_a_quality_check() -> None:
    assert set(DEFAULT_MODELS.values()) <= set(BUNDLED)
    assert set(BUNDLED) == set(QUALITY)


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_model_files(name: str) -> None:
    model = BUNDLED[name]
    assert model.installed, f"{model.path} has no config.json"
    files = sorted(p.name for p in model.path.iterdir())
    assert files == ["config.json", "model.safetensors"]
    assert sum(p.stat().st_size for p in model.path.iterdir()) <= MAX_BYTES
    assert load_model(name).config.task == model.task


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_model_quality(name: str) -> None:
    check, least = QUALITY[name]
    assert check(name) >= least
