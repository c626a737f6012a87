"""The official-size realsr-v3 model (recipe weights) through ONNX Runtime against PyTorch.

The denoiser alone at its smallest latent, and the whole 4-step chain (encoder, denoiser, decoder,
the sampler's noise from one seed) at two input sizes, one not square. Exporting the three official
graphs takes about 80 s on a 2-core CPU, so the export is made once for the module.
"""

from __future__ import annotations

import pytest
import torch

from official_reference import UNET_SEED, VQGAN_SEED, apply_recipe
from resshift.export import export_onnx, onnx_pipeline
from resshift.export.graphs import example_inputs, graphs_of, trace_to_onnx
from resshift.nets.swin_unet import SwinUNet
from resshift.pipeline import ResShiftPipeline
from resshift.presets import get_preset

onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install \"resshift[onnx]\"")
pytestmark = pytest.mark.slow
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def official_pipelines(tmp_path_factory):
    """(PyTorch realsr-v3 with the recipe's weights, the same model exported and run in onnxruntime)."""
    pipe = ResShiftPipeline.from_config(get_preset("realsr-v3").config)
    apply_recipe(pipe.unet, UNET_SEED)
    apply_recipe(pipe.autoencoder, VQGAN_SEED)
    return pipe, onnx_pipeline(export_onnx(pipe, tmp_path_factory.mktemp("onnx") / "realsr-v3"))


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
    assert (torch.from_numpy(got) - expected).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("size", [(64, 64), (40, 72)])
def test_official_realsr_v3_chain_matches_pytorch(official_pipelines, size):
    pipe, onnx = official_pipelines
    lq = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(sum(size)))
    expected = pipe(lq, generator=torch.Generator().manual_seed(5))
    got = onnx(lq, generator=torch.Generator().manual_seed(5))
    assert got.shape == expected.shape == (1, 3, 4 * size[0], 4 * size[1])
    assert expected.std() > 0.05                    # a visible image, not a constant that would match anyway
    assert (got - expected).abs().max().item() < TOLERANCE
