"""Tiled equals untiled: exactly for per-pixel functions, and away from the seams for convolutions."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from resshift.errors import InputError
from resshift.tiling import blend_window, tile_starts, tiled_map

SIZES = [(5, 7), (16, 16), (17, 33), (40, 23), (64, 50)]
TILES = [(8, 0), (8, 3), (16, 4), (32, 8)]


@pytest.mark.parametrize("length", [1, 7, 8, 9, 15, 16, 17, 31, 100])
@pytest.mark.parametrize("tile, overlap", [(8, 0), (8, 2), (8, 7), (16, 4)])
def test_tile_starts_cover_with_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0
    if length <= tile:
        assert starts == [0]
        return
    assert starts[-1] + tile == length
    for a, b in itertools.pairwise(starts):
        assert a < b and a + tile - b >= overlap  # strictly increasing, overlapping enough: no gap


@pytest.mark.parametrize("tile, overlap", [(0, 0), (8, 8), (8, -1)])
def test_tile_starts_rejects_bad_arguments(tile, overlap):
    with pytest.raises(InputError):
        tile_starts(20, tile, overlap)


@pytest.mark.parametrize("h, w, overlap", [(32, 32, 8), (16, 40, 4), (12, 12, 6), (9, 9, 1)])
def test_blend_window_positive_symmetric_smooth(h, w, overlap):
    window = blend_window(h, w, overlap, overlap, dtype=torch.float64)
    assert window.shape == (h, w)
    assert (window > 0).all() and window.max() <= 1
    assert torch.allclose(window, window.flip(0)) and torch.allclose(window, window.flip(1))
    bound = math.pi / (2 * overlap) + 1e-9  # the steepest step of sin^2 over `overlap` samples
    assert window.diff(dim=0).abs().max() <= bound and window.diff(dim=1).abs().max() <= bound
    if 2 * overlap < min(h, w):
        assert (window[overlap:-overlap, overlap:-overlap] == 1).all()


def test_blend_window_ramps_only_towards_neighbours():
    window = blend_window(16, 16, 4, 4, top=False, left=False)
    assert (window[:12, :12] == 1).all()  # no ramp at the image border
    assert (window[12:, :] < 1).all() and (window[:, 12:] < 1).all()


def test_blend_windows_of_neighbours_sum_to_one_over_exact_overlap():
    a = blend_window(1, 16, 0, 4, dtype=torch.float64, left=False)[0]
    b = blend_window(1, 16, 0, 4, dtype=torch.float64, right=False)[0]
    assert torch.allclose(a[-4:] + b[:4], torch.ones(4, dtype=torch.float64))


@pytest.mark.parametrize("h, w", SIZES)
@pytest.mark.parametrize("tile, overlap", TILES)
def test_pointwise_fn_tiled_equals_untiled(h, w, tile, overlap):
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    fn = lambda t: 2 * t + 1  # noqa: E731
    got = tiled_map(fn, [(x, 1)], tile=tile, overlap=overlap, out_scale=1)
    torch.testing.assert_close(got, fn(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("h, w", SIZES)
@pytest.mark.parametrize("tile, overlap", TILES)
def test_decoder_and_encoder_like_scales(h, w, tile, overlap):
    g = torch.Generator().manual_seed(0)
    latent, image = torch.rand(1, 4, h, w, generator=g), torch.rand(1, 3, 4 * h, 4 * w, generator=g)
    decode = lambda z: F.interpolate(z[:, :3], scale_factor=4, mode="nearest") * 2 - 1  # noqa: E731
    got = tiled_map(decode, [(latent, 1)], tile=tile, overlap=overlap, out_scale=4)
    torch.testing.assert_close(got, decode(latent), atol=1e-6, rtol=0)
    encode = lambda im: F.avg_pool2d(im, 4)  # noqa: E731
    got = tiled_map(encode, [(image, 4)], tile=tile, overlap=overlap, out_scale=1, out_channels=3)
    torch.testing.assert_close(got, encode(image), atol=1e-6, rtol=0)


@pytest.mark.parametrize("lq_scale", [1, 4])
def test_denoiser_like_two_inputs(lq_scale):
    g = torch.Generator().manual_seed(1)
    x_t = torch.rand(2, 3, 30, 21, generator=g)
    lq = torch.rand(2, 3, 30 * lq_scale, 21 * lq_scale, generator=g)
    net = lambda x, y: x * 3 - F.avg_pool2d(y, lq_scale)  # noqa: E731
    got = tiled_map(net, [(x_t, 1), (lq, lq_scale)], tile=8, overlap=2, out_scale=1)
    torch.testing.assert_close(got, net(x_t, lq), atol=1e-6, rtol=0)


def test_one_tile_is_one_call_and_bit_identical():
    x = torch.rand(1, 3, 20, 12)
    calls = []
    fn = lambda t: calls.append(t.shape) or torch.sin(t) * 3  # noqa: E731
    got = tiled_map(fn, [(x, 1)], tile=20, overlap=4, out_scale=1)
    assert torch.equal(got, torch.sin(x) * 3) and calls == [x.shape]


def test_weights_are_normalised():
    x = torch.rand(1, 1, 37, 45)
    got = tiled_map(torch.ones_like, [(x, 1)], tile=10, overlap=3, out_scale=1)
    torch.testing.assert_close(got, torch.ones_like(x), atol=1e-6, rtol=0)


def test_half_precision_tiles_come_back_in_half():
    x = torch.rand(1, 3, 24, 24).half()
    assert tiled_map(lambda t: t, [(x, 1)], tile=8, overlap=2, out_scale=1).dtype == torch.float16


def test_convolution_exact_away_from_seams_close_near_them():
    g = torch.Generator().manual_seed(2)
    x = F.avg_pool2d(torch.rand(1, 3, 70, 70, generator=g), 3, stride=1, padding=1)  # (1, 3, 70, 70) smooth
    kernel = torch.rand(3, 3, 3, 3, generator=g) / 27
    conv = lambda t: F.conv2d(t, kernel, padding=1)  # noqa: E731  receptive field radius 1
    tile, overlap = 16, 6
    expected, got = conv(x), tiled_map(conv, [(x, 1)], tile=tile, overlap=overlap, out_scale=1)
    # A pixel is exact when every tile covering it has it at least 1 pixel inside any edge it shares.
    exact = torch.ones(70, 70, dtype=torch.bool)
    for y in tile_starts(70, tile, overlap):
        for x0 in tile_starts(70, tile, overlap):
            covered = torch.zeros(70, 70, dtype=torch.bool)
            covered[y : y + tile, x0 : x0 + tile] = True
            top, bottom = y + (y > 0), y + tile - (y + tile < 70)
            left, right = x0 + (x0 > 0), x0 + tile - (x0 + tile < 70)
            inner = torch.zeros(70, 70, dtype=torch.bool)
            inner[top:bottom, left:right] = True
            exact &= ~covered | inner
    error = (got - expected).abs()[0].amax(0)  # (70, 70)
    assert exact.float().mean() > 0.5 and error[exact].max() < 1e-6
    # Near the seams the wrong edge values of one tile get little weight next to its neighbour's.
    seams = tiled_map(conv, [(x, 1)], tile=tile, overlap=0, out_scale=1)
    assert error.max() < 0.1 * (seams - expected).abs().max()


def test_mismatched_inputs_and_outputs_are_reported():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(InputError, match="base grid"):
        tiled_map(lambda a, b: a, [(x, 1), (torch.rand(1, 3, 30, 30), 2)], tile=8, overlap=2, out_scale=1)
    with pytest.raises(InputError, match="expected 8x8"):
        tiled_map(lambda a: a[..., :4, :4], [(x, 1)], tile=8, overlap=2, out_scale=1)
    with pytest.raises(InputError, match="out_channels"):
        tiled_map(lambda a: a, [(x, 1)], tile=8, overlap=2, out_scale=1, out_channels=4)
