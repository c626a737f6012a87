"""Colour fixes: AdaIN matches channel statistics; the wavelet fix swaps the low band and keeps detail."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from resshift.color import adain_color_fix, wavelet_color_fix
from resshift.errors import InputError

SET14 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "benchmarks" / "Set14"


def photo(name: str = "img_005.png") -> torch.Tensor:
    """A real photo as (1, 3, H, W) in [0, 1]; skips the test where ../shared is missing."""
    if not (SET14 / name).exists():
        pytest.skip(f"test data not found: {SET14 / name}")
    pixels = np.asarray(Image.open(SET14 / name).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous()


def test_adain_matches_reference_channel_mean_and_std():
    reference = photo()
    output = reference.flip(-1) * torch.tensor([0.6, 1.1, 0.8])[:, None, None] + 0.1  # colour cast
    fixed = adain_color_fix(output, reference)
    std, mean = torch.std_mean(fixed, dim=(-2, -1), correction=0)
    ref_std, ref_mean = torch.std_mean(reference, dim=(-2, -1), correction=0)
    torch.testing.assert_close(mean, ref_mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(std, ref_std, atol=1e-5, rtol=0)


def test_adain_of_flat_channel_takes_reference_mean():
    reference = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    fixed = adain_color_fix(torch.full((2, 3, 8, 8), 0.3), reference)
    torch.testing.assert_close(fixed, reference.mean(dim=(-2, -1), keepdim=True).expand_as(fixed))


@pytest.mark.parametrize("size", [(8, 8), (33, 47)])
def test_wavelet_fix_against_itself_is_identity(size):
    image = F.interpolate(photo(), size=size, mode="area") if size != (8, 8) else torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(wavelet_color_fix(image, image), image, atol=1e-6, rtol=0)


def test_wavelet_fix_keeps_detail_and_takes_reference_colour():
    h = w = 96
    checker = 0.1 * (-1.0) ** (torch.arange(h)[:, None] + torch.arange(w)[None, :])  # highest frequency
    output = torch.tensor([0.2, 0.5, 0.7])[:, None, None] + checker  # (3, H, W)
    reference = torch.tensor([0.6, 0.4, 0.3])[:, None, None].expand(3, h, w)
    fixed = wavelet_color_fix(output[None], reference[None].contiguous())[0]
    expected = reference + checker
    # Replicated edges break the checkerboard's cancellation by the blur within 1+2+4+8+16 pixels.
    inner = (slice(None), slice(32, -32), slice(32, -32))
    torch.testing.assert_close(fixed[inner], expected[inner], atol=1e-6, rtol=0)
    torch.testing.assert_close(fixed.mean(dim=(1, 2)), reference.mean(dim=(1, 2)), atol=2e-3, rtol=0)


def test_wavelet_fix_moves_real_photo_colour_back():
    reference = photo()
    output = (reference * torch.tensor([1.2, 0.9, 0.7])[:, None, None]).clamp(0, 1)  # colour drift
    fixed = wavelet_color_fix(output, reference)
    drift = (output.mean(dim=(-2, -1)) - reference.mean(dim=(-2, -1))).abs().max()
    assert (fixed.mean(dim=(-2, -1)) - reference.mean(dim=(-2, -1))).abs().max() < 0.1 * drift


@pytest.mark.parametrize("fix", [adain_color_fix, wavelet_color_fix])
def test_shape_mismatch_is_an_input_error(fix):
    with pytest.raises(InputError, match="resize the reference"):
        fix(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 4, 4))
