"""ResShiftPipeline contract with tiny random networks: kinds, sizes, masks, saving, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config
from resshift.errors import InputError
from resshift.nets.swin_unet import SwinUNetConfig
from resshift.pipeline import ResShiftPipeline
from resshift.presets import ModelConfig
from resshift.schedule import ScheduleConfig


@pytest.fixture(scope="module")
def sr_pipe():
    torch.manual_seed(0)
    return ResShiftPipeline.from_config(tiny_config())


@pytest.fixture(scope="module")
def inpaint_pipe():
    torch.manual_seed(0)
    return ResShiftPipeline.from_config(tiny_config("inpaint", scale=1))


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def test_output_kind_and_size_follow_the_input(sr_pipe):
    array = np.random.default_rng(0).integers(0, 256, (21, 30, 3), dtype=np.uint8)
    out_np = sr_pipe(array, generator=seeded())
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.uint8 and out_np.shape == (84, 120, 3)
    out_pil = sr_pipe(Image.fromarray(array), generator=seeded())
    assert isinstance(out_pil, Image.Image) and out_pil.size == (120, 84)
    np.testing.assert_array_equal(np.asarray(out_pil), out_np)
    tensor = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255
    out_t = sr_pipe(tensor, generator=seeded())
    assert out_t.shape == (1, 3, 84, 120) and 0 <= out_t.min() and out_t.max() <= 1
    np.testing.assert_array_equal((out_t[0].permute(1, 2, 0) * 255).round().byte().numpy(), out_np)


def test_greyscale_numpy_tensor_and_pil_modes_are_accepted(sr_pipe):
    grey = np.random.default_rng(1).integers(0, 256, (16, 16), dtype=np.uint8)
    grey_t = torch.from_numpy(grey)[None, None].float() / 255                       # (1, 1, 16, 16)
    rgb_out = sr_pipe(grey_t.expand(-1, 3, -1, -1), generator=seeded())             # the same image as RGB
    out_t = sr_pipe(grey_t, generator=seeded())
    assert out_t.shape == (1, 1, 64, 64)
    luma = 0.299 * rgb_out[:, 0] + 0.587 * rgb_out[:, 1] + 0.114 * rgb_out[:, 2]    # BT.601, as image files
    torch.testing.assert_close(out_t[:, 0], luma, rtol=0, atol=1e-6)
    out_2d = sr_pipe(grey, generator=seeded())
    assert out_2d.dtype == np.uint8 and out_2d.shape == (64, 64)
    np.testing.assert_array_equal(out_2d, (out_t[0, 0] * 255).round().byte().numpy())
    out_3d = sr_pipe(grey[:, :, None], generator=seeded())
    assert out_3d.shape == (64, 64, 1)
    np.testing.assert_array_equal(out_3d[:, :, 0], out_2d)
    out_pil = sr_pipe(Image.fromarray(grey).convert("LA"), generator=seeded())      # PIL: converted to RGB
    assert out_pil.mode == "RGB" and out_pil.size == (64, 64)


def test_same_seed_same_result_and_batch_matches_singles(sr_pipe):
    x = torch.rand(2, 3, 16, 24, generator=seeded(1))
    a, b = sr_pipe(x, generator=seeded(3)), sr_pipe(x, generator=seeded(3))
    c = sr_pipe(x, generator=seeded(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    batch = sr_pipe(x, generator=[seeded(3), seeded(5)])          # one generator per image
    singles = torch.cat([sr_pipe(x[:1], generator=seeded(3)), sr_pipe(x[1:], generator=seeded(5))])
    torch.testing.assert_close(batch, singles, rtol=0, atol=1e-5)
    assert not torch.allclose(batch[0], batch[1], atol=1e-3)
    with pytest.raises(InputError, match="2 generators for a batch of 1"):
        sr_pipe(x[:1], generator=[seeded(3), seeded(5)])


def test_padding_is_cropped_and_does_not_leak_past_the_border(sr_pipe):
    # 16 is the tiny model's input multiple: a 16x16 input needs no padding, a 13x13 one does.
    assert sr_pipe.input_multiple == 16
    x = torch.rand(1, 3, 13, 13, generator=seeded(2))
    out = sr_pipe(x, generator=seeded())
    assert out.shape == (1, 3, 52, 52)
    # The padding is the image's reflection, and the output is the padded image's, cropped: nothing
    # but the reflected border reaches the kept pixels (same noise: the latents have the same size).
    padded = torch.nn.functional.pad(x, (0, 3, 0, 3), mode="reflect")
    torch.testing.assert_close(out, sr_pipe(padded, generator=seeded())[..., :52, :52], rtol=0, atol=1e-6)
    # A different (zero) border would have changed the kept pixels near the edge.
    zero_padded = torch.nn.functional.pad(x, (0, 3, 0, 3))
    assert not torch.allclose(out, sr_pipe(zero_padded, generator=seeded())[..., :52, :52], atol=1e-4)


def test_fewer_steps_call_the_network_fewer_times():
    pipe = ResShiftPipeline.from_config(tiny_config(num_steps=15))
    seen = []
    pipe(torch.rand(1, 3, 16, 16), generator=seeded(), steps=4, callback=lambda i: seen.append(i["t"]))
    assert seen == [11, 7, 3, 0]


def test_bad_tensors_are_refused_with_clear_errors(sr_pipe):
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        sr_pipe(torch.full((1, 3, 8, 8), 2.0))
    with pytest.raises(InputError, match="3 colour channels"):
        sr_pipe(torch.rand(1, 4, 8, 8))
    with pytest.raises(InputError, match=r"\(N, C, H, W\)"):
        sr_pipe(torch.rand(3, 8, 8))
    with pytest.raises(InputError, match="uint8"):
        sr_pipe(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(InputError, match="takes no mask"):
        sr_pipe(torch.rand(1, 3, 8, 8), torch.ones(1, 1, 8, 8))
    with pytest.raises(InputError, match="expected a PIL image"):
        sr_pipe("photo.png")
    with pytest.raises(InputError, match=r"noise: shape \(1, 3, 8, 8\) differs"):
        sr_pipe(torch.rand(1, 3, 16, 16), noise=torch.zeros(1, 3, 8, 8))


def test_inpainting_keeps_known_pixels_and_checks_the_mask(inpaint_pipe):
    image = torch.rand(1, 3, 40, 56, generator=seeded(5))
    mask = torch.zeros(1, 1, 40, 56)
    mask[..., 10:30, 20:40] = 1
    out = inpaint_pipe(image, mask, generator=seeded())
    assert out.shape == image.shape
    known = mask.expand_as(image) < 0.5
    torch.testing.assert_close(out[known], image[known], atol=1e-6, rtol=0)
    raw = inpaint_pipe(image, mask, generator=seeded(), paste_back=False)
    assert not torch.allclose(raw[known], image[known], atol=1e-3)
    with pytest.raises(InputError, match="needs a mask"):
        inpaint_pipe(image)
    with pytest.raises(InputError, match="differs from the image"):
        inpaint_pipe(image, torch.zeros(1, 1, 8, 8))


def test_save_and_load_round_trip(tmp_path, sr_pipe):
    sr_pipe.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "model.safetensors"]
    loaded = ResShiftPipeline.from_pretrained(tmp_path / "model")
    assert loaded.config == sr_pipe.config
    for a, b in zip(sr_pipe.autoencoder.state_dict().values(), loaded.autoencoder.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(sr_pipe.unet.state_dict().values(), loaded.unet.state_dict().values()):
        assert torch.equal(a, b)
    x = torch.rand(1, 3, 16, 16, generator=seeded(6))
    assert torch.equal(sr_pipe(x, generator=seeded()), loaded(x, generator=seeded()))


def test_half_precision_storage_and_bf16_inference(tmp_path, sr_pipe):
    sr_pipe.save_pretrained(tmp_path / "half", dtype=torch.float16)
    half = ResShiftPipeline.from_pretrained(tmp_path / "half", dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    x = torch.rand(1, 3, 16, 16, generator=seeded(7))
    reference = sr_pipe(x, generator=seeded())
    out = half(x, generator=seeded())
    assert out.dtype == torch.float32 and out.shape == reference.shape
    assert (out - reference).abs().mean() < 0.05


def test_tiling_with_one_tile_is_identical_and_small_tiles_stay_close(sr_pipe):
    x = torch.rand(1, 3, 40, 72, generator=seeded(8))
    untiled = sr_pipe(x, generator=seeded())
    assert torch.equal(sr_pipe(x, generator=seeded(), tile=80), untiled)
    tiled = sr_pipe(x, generator=seeded(), tile=16, tile_overlap=8)
    assert tiled.shape == untiled.shape
    assert (tiled - untiled).abs().mean() < 0.1
    with pytest.raises(InputError, match="tile overlap"):
        sr_pipe(x, tile=16, tile_overlap=16)


def test_pixel_unshuffle_latent_is_lossless_and_round_trips(tmp_path):
    from resshift.nets.unshuffle import PixelUnshuffleAutoencoder, UnshuffleConfig

    space = PixelUnshuffleAutoencoder(UnshuffleConfig(factor=4))
    image = torch.rand(2, 3, 32, 48) * 2 - 1
    latent = space.encode(image)
    assert latent.shape == (2, 48, 8, 12)
    assert torch.equal(space.decode(latent), image)

    unet = SwinUNetConfig(in_channels=48, out_channels=48, model_channels=32, channel_mult=(1, 2),
                          num_res_blocks=(1, 1), attention_resolutions=(64, 32), swin_embed_dim=32,
                          num_head_channels=16, lq_size=64)
    config = ModelConfig(task="sr", scale=4, schedule=ScheduleConfig(), unet=unet,
                         autoencoder=UnshuffleConfig(factor=4))
    pipe = ResShiftPipeline.from_config(config)
    pipe.save_pretrained(tmp_path / "compact")
    loaded = ResShiftPipeline.from_pretrained(tmp_path / "compact")
    assert loaded.config == config
    x = torch.rand(1, 3, 16, 16, generator=seeded(9))
    assert torch.equal(pipe(x, generator=seeded()), loaded(x, generator=seeded()))


def test_residual_prediction_starts_from_the_upsampled_input(tmp_path):
    """With predict_residual the network outputs x0 - z_y: a network that outputs zeros makes every x0
    prediction z_y, and the sampler's last posterior mean (eta_0 = 0) is x0 itself, so the result is
    exactly the official bicubic upsampling of the input, whatever the noise."""
    import dataclasses

    import torch.nn.functional as F

    from resshift.nets.unshuffle import UnshuffleConfig

    unet = SwinUNetConfig(in_channels=48, out_channels=48, model_channels=32, channel_mult=(1, 2),
                          num_res_blocks=(1, 1), attention_resolutions=(64, 32), swin_embed_dim=32,
                          num_head_channels=16, lq_size=64)
    config = ModelConfig(task="sr", scale=4, schedule=ScheduleConfig(), unet=unet,
                         autoencoder=UnshuffleConfig(factor=4), predict_residual=True)
    pipe = ResShiftPipeline.from_config(config)
    torch.nn.init.zeros_(pipe.unet.out[-1].weight)
    torch.nn.init.zeros_(pipe.unet.out[-1].bias)
    x = torch.rand(1, 3, 16, 16, generator=seeded(11))
    expected = ((F.interpolate(x * 2 - 1, scale_factor=4, mode="bicubic") + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(pipe(x, generator=seeded(1)), expected, rtol=0, atol=1e-6)
    plain = ResShiftPipeline(pipe.unet, pipe.autoencoder, dataclasses.replace(config, predict_residual=False))
    assert (plain(x, generator=seeded(1)) - expected).abs().mean() > 0.1     # x0 = 0: grey, not the input
    pipe.save_pretrained(tmp_path / "residual")
    assert ResShiftPipeline.from_pretrained(tmp_path / "residual").config.predict_residual


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_gives_the_cpu_result_for_the_same_cpu_generator(sr_pipe):
    x = torch.rand(1, 3, 16, 24, generator=seeded(1))
    on_cpu = sr_pipe(x, generator=seeded(3))
    cuda = ResShiftPipeline(sr_pipe.unet, sr_pipe.autoencoder, sr_pipe.config)
    try:
        cuda.to("cuda")
        torch.testing.assert_close(cuda(x.cuda(), generator=seeded(3)).cpu(), on_cpu, rtol=0, atol=1e-3)
    finally:
        cuda.to("cpu")
