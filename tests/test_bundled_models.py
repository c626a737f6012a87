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
from resshift.imageio import read_image
from resshift.metrics import psnr
from resshift.models import BUNDLED, DEFAULT_MODELS, load_model
from resshift.training.logs import to_uint8

SET5 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmarks" / "Set5"
MAX_BYTES = 25 * 2**20


def _set5_gain_over_bicubic(name: str) -> float:
    """Mean PSNR-Y gain (dB, 4-pixel border) of the model over bicubic interpolation on Set5, LR by MATLAB bicubic."""
    if not SET5.is_dir():
        pytest.fail(f"{SET5} is missing: the quality checks read ../shared/data beside the checkout")
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
