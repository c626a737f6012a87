"""The traceable forms of the networks (for ONNX export) against the forms they replaced, bit for bit.

Three computations were rewritten so that a traced graph holds no size fixed at tracing time (and the
shifted-window mask is built by arithmetic, which torch.compile can generate code for):

* the shifted-window attention's shift and window partition (a precomputed row gather, cached per
  input size, became a slice-concatenation shift and a reshape/permute partition);
* the VQGAN decoder's sub-pixel upsampling (a strided view of sizes computed in Python became
  slices of the convolution output and two stacks);
* the ResBlock's fused 1x1 skip (an in-place GEMM on a view, which a trace lost).

Each previous form is kept below as the reference; the new ones must give identical bits.
"""

from __future__ import annotations

import pytest
import torch

from resshift.nets import vqgan
from resshift.nets.swin import SwinBlock, last_row_mask
from resshift.nets import swin_unet
from resshift.nets.swin_unet import ResBlock


def window_order(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """The previous form's (rows, cols, N) source pixel of each windowed token, after rolling by -shift."""
    ys = (torch.arange(height) + shift) % height
    xs = (torch.arange(width) + shift) % width
    pixel = (ys[:, None] * width + xs[None, :]).view(height // window, window, width // window, window)
    return pixel.permute(0, 2, 1, 3).reshape(height // window, width // window, window * window)


def gathered_swin_block(block: SwinBlock, t: torch.Tensor) -> torch.Tensor:
    """The previous SwinBlock.forward: one row gather into window order (masked windows last) and back."""
    b, h, w, c = t.shape
    order = window_order(h, w, block.window, block.shift)
    offsets = (torch.arange(b) * (h * w)).view(b, 1)
    if block.shift:
        forward = torch.cat([(order[:-1].reshape(1, -1) + offsets).reshape(-1),
                             (order[-1].reshape(1, -1) + offsets).reshape(-1)])
    else:
        forward = (order.reshape(1, -1) + offsets).reshape(-1)
    y = block.norm1.tokens(t).reshape(b * h * w, c)
    y = y.index_select(0, forward).view(-1, block.window * block.window, c)
    plain_bias, masked_bias = block._biases(y.dtype)
    if masked_bias is None:
        y = block.attn(y, plain_bias)
    else:
        masked = y.shape[0] // (h // block.window)
        y = block.attn(y, masked_bias) if masked == y.shape[0] else torch.cat(
            [block.attn(y[:-masked], plain_bias), block.attn(y[-masked:], masked_bias)])
    t = y.view(b * h * w, c).index_select(0, torch.argsort(forward)).view(b, h, w, c).add_(t)
    return block.mlp(block.norm2.tokens(t)).add_(t)


def strided_upsample(module: vqgan.Upsample, x: torch.Tensor) -> torch.Tensor:
    """The previous Upsample.forward: the sub-pixel convolution's phases read through one strided view."""
    b, c, h, w = x.shape
    weight, bias = vqgan._subpixel_weight(module.conv.weight), module.conv.bias.repeat(4)
    y = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1)), weight, bias).contiguous()
    plane = (h + 1) * (w + 1)
    stride = (y.stride(0), plane, w + 1, 2 * c * plane + (w + 1), 1, c * plane + 1)
    return y.as_strided((b, c, h, 2, w, 2), stride).reshape(b, c, 2 * h, 2 * w)


def randomised(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """`module` with every parameter drawn at a visible scale (fresh blocks start with zero layers)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return module.eval()


@pytest.mark.parametrize(("dim", "heads", "window", "shift", "resolution"),
                         [(32, 2, 8, 4, 32), (32, 2, 8, 0, 32), (96, 3, 8, 4, 16), (32, 1, 4, 2, 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shifted_windows_equal_the_row_gather(one_thread, dim, heads, window, shift, resolution, dtype):
    block = randomised(SwinBlock(dim, heads, window, shift, 2.0, resolution), seed=dim + shift).to(dtype)
    generator = torch.Generator().manual_seed(1)
    # One window row (the mask's only row), several rows and columns, batches, non-square maps.
    for b, rows, cols in [(1, 1, 1), (1, 1, 3), (1, 2, 3), (3, 4, 2), (2, 3, 1)]:
        t = torch.randn(b, rows * window, cols * window, dim, generator=generator).to(dtype)
        with torch.inference_mode():
            assert torch.equal(block(t), gathered_swin_block(block, t)), (b, rows, cols)


@pytest.mark.parametrize("shape", [(1, 32, 8, 8), (2, 32, 5, 12), (1, 64, 16, 9)])
def test_sliced_subpixel_upsample_equals_the_strided_view(one_thread, shape):
    module = randomised(vqgan.Upsample(shape[1]), seed=shape[2])
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert torch.equal(module(x), strided_upsample(module, x))


def test_resblock_fused_skip_equals_the_previous_in_place_form(one_thread):
    block = randomised(ResBlock(32, 64, 64, scale_shift=True), seed=3)
    x, emb = torch.randn(2, 32, 8, 12), torch.randn(2, 64)
    with torch.inference_mode():
        out = block(x, emb)
        in_norm, _, in_conv = block.in_layers
        out_norm, _, _, out_conv = block.out_layers
        h = in_conv(torch.nn.functional.silu(in_norm(x)))
        scale, shift = block.emb_layers(emb).chunk(2, dim=1)
        h = torch.nn.functional.silu(swin_unet._norm_scale_shift(out_norm, h, scale, shift))
        skip = block.skip_connection
        previous = torch.nn.functional.conv2d(h, out_conv.weight, out_conv.bias + skip.bias, padding=1)
        previous.view(2, 64, -1).baddbmm_(skip.weight.flatten(1).expand(2, -1, -1), x.flatten(2))
    assert torch.equal(out, previous)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
def test_traced_nearest_code_searches_all_rows_at_once(one_thread):
    codebook, z = torch.randn(40, 3), torch.randn(300, 3)
    reference = vqgan.nearest_code(z, codebook, chunk_size=7)           # the chunked loop
    traced = torch.jit.trace(lambda v: vqgan.nearest_code(v, codebook, chunk_size=7), (z[:10],),
                             check_trace=False)
    assert torch.equal(traced(z), reference)                          # a size the trace never saw


@pytest.mark.parametrize(("window", "shift"), [(8, 4), (8, 0), (4, 2), (16, 8)])
def test_last_row_mask_equals_the_boolean_form(window, shift):
    """The mask is now built by arithmetic (torch.compile's CPU code generator failed on the boolean form)."""
    col = torch.arange(window * window) % window
    region = col >= window - shift if shift > 0 else torch.zeros_like(col, dtype=torch.bool)
    previous = torch.zeros(window**2, window**2).masked_fill(region[:, None] != region[None, :], -100.0)
    mask = last_row_mask(window, shift)
    assert torch.equal(mask, previous) and not torch.signbit(mask).logical_xor(torch.signbit(previous)).any()
