"""The official-size realsr-v3 denoiser (recipe weights) through ONNX Runtime against PyTorch.

Only the denoiser, at its smallest latent (64x64, a 256x256 input): exporting all three official
networks takes about 80 s on a 2-core CPU (denoiser 28 s, encoder 16 s, decoder 29 s), past this
test's budget. The VQGAN's graphs are the same code as the tiny VQGAN's, which
test_export_onnx.py checks at two sizes.
"""

from __future__ import annotations

import pytest
import torch

from official_reference import UNET_SEED, apply_recipe
from resshift.export.graphs import example_inputs, graphs_of, trace_to_onnx
from resshift.nets.swin_unet import SwinUNet
from resshift.presets import get_preset

onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install \"resshift[onnx]\"")


@pytest.mark.slow
def test_official_realsr_v3_denoiser_matches_pytorch():
    config = get_preset("realsr-v3").config
    unet = apply_recipe(SwinUNet(config.unet), UNET_SEED)
    denoiser = graphs_of(config)[0]
    session = onnxruntime.InferenceSession(trace_to_onnx(unet, "forward", denoiser, example_inputs(config, denoiser)),
                                           providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    x_t, lq = torch.randn(1, 3, 64, 64, generator=generator), torch.rand(1, 3, 64, 64, generator=generator) * 2 - 1
    t = torch.tensor([3])
    with torch.inference_mode():
        expected = unet(x_t, t, lq=lq)
    got = session.run(None, {"x_t": x_t.numpy(), "t": t.numpy(), "lq": lq.numpy()})[0]
    assert (torch.from_numpy(got) - expected).abs().max().item() < 1e-4
