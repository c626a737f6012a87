"""The Swin-UNet denoiser against the official ResShift networks (layouts and test vectors)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from official_reference import REFERENCE, UNET_SEED, apply_recipe, load_vectors, read_key_list
from resshift.errors import ConfigError
from resshift.nets.swin_unet import ChannelAffine, ResBlock, SwinUNet, SwinUNetConfig

TOLERANCE = 1e-4

# The official UNet of each official config (model.params of the yaml named in the first line
# of ../shared/reference/official_v3/unet_keys_<name>.txt). Only these fields vary.
_OFFICIAL_COMMON = dict(
    model_channels=160,
    channel_mult=(1, 2, 2, 4),
    num_res_blocks=(2, 2, 2, 2),
    attention_resolutions=(64, 32, 16, 8),
    num_head_channels=32,
    swin_depth=2,
    swin_embed_dim=192,
    window_size=8,
    mlp_ratio=4.0,
    patch_norm=False,
    cond_lq=True,
    image_size=64,
    use_scale_shift_norm=True,
    conv_resample=True,
)
OFFICIAL_UNETS: dict[str, SwinUNetConfig] = {
    "realsr_v1v2": SwinUNetConfig(**_OFFICIAL_COMMON, in_channels=3, out_channels=3, lq_size=64),
    "realsr_v3": SwinUNetConfig(**_OFFICIAL_COMMON, in_channels=3, out_channels=3, lq_size=64),
    "realsr_x2": SwinUNetConfig(**_OFFICIAL_COMMON, in_channels=3, out_channels=3, lq_size=128),
    "bicsr": SwinUNetConfig(**_OFFICIAL_COMMON, in_channels=3, out_channels=3, lq_size=64),
    "inpaint_imagenet": SwinUNetConfig(
        **_OFFICIAL_COMMON, in_channels=3, out_channels=3, lq_size=256, cond_mask=True
    ),
    "inpaint_face": SwinUNetConfig(
        **_OFFICIAL_COMMON, in_channels=3, out_channels=3, lq_size=256, cond_mask=True
    ),
    "faceir": SwinUNetConfig(**_OFFICIAL_COMMON, in_channels=8, out_channels=8, lq_size=512),
}
OFFICIAL_YAML = {
    "realsr_v1v2": "realsr_swinunet_realesrgan256.yaml",
    "realsr_v3": "realsr_swinunet_realesrgan256_journal.yaml",
    "realsr_x2": "realsr_realesrgan256_x2.yaml",
    "bicsr": "bicx4_swinunet_lpips.yaml",
    "inpaint_imagenet": "inpaint_lama256_imagenet.yaml",
    "inpaint_face": "inpaint_lama256_face.yaml",
    "faceir": "faceir_gfpgan512_lpips.yaml",
}

SMALL = SwinUNetConfig(
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=(1, 1),
    attention_resolutions=(32, 16),
    num_head_channels=16,
    swin_embed_dim=32,
    image_size=32,
    lq_size=64,
)


def _key_list_or_skip(name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    path = REFERENCE / "official_v3" / f"unet_keys_{name}.txt"
    if not path.exists():
        pytest.skip(f"{path} is missing (../shared is not beside the checkout)")
    header = path.read_text().splitlines()[0]
    assert OFFICIAL_YAML[name] in header, header
    return read_key_list(path.name)


def _max_diff(out: torch.Tensor, expected: np.ndarray) -> float:
    assert out.shape == expected.shape
    return (out - torch.from_numpy(expected)).abs().max().item()


@pytest.fixture(scope="module")
def realsr_v3() -> SwinUNet:
    return apply_recipe(SwinUNet(OFFICIAL_UNETS["realsr_v3"]), UNET_SEED)


@pytest.mark.parametrize("name", sorted(OFFICIAL_UNETS))
def test_state_dict_layout_is_official(name: str) -> None:
    expected = _key_list_or_skip(name)
    with torch.device("meta"):
        net = SwinUNet(OFFICIAL_UNETS[name])
    ours = {
        key: (tuple(value.shape), str(value.dtype).removeprefix("torch."))
        for key, value in net.state_dict().items()
    }
    assert list(ours.items()) == list(expected.items())


def test_computed_buffers_are_official(realsr_v3: SwinUNet) -> None:
    expected = load_vectors("official_v3/buffers_realsr_v3.npz")
    state = realsr_v3.state_dict()
    computed = {k for k in state if k.endswith(("attn_mask", "relative_position_index"))}
    assert computed == set(expected)
    for key, value in expected.items():
        assert state[key].dtype == torch.from_numpy(value).dtype, key
        assert torch.equal(state[key], torch.from_numpy(value)), key


def test_realsr_v3_matches_official_outputs(realsr_v3: SwinUNet) -> None:
    v = load_vectors("official_v3/official_v3_outputs.npz")
    x, lq = torch.from_numpy(v["x_lat"]), torch.from_numpy(v["lq"])
    with torch.inference_mode():
        for t in range(4):
            out = realsr_v3(x, torch.tensor([t]), lq=lq)
            assert _max_diff(out, v[f"unet_t{t}"]) < TOLERANCE, t


@pytest.mark.parametrize("name", ["inpaint_imagenet", "faceir"])
def test_task_networks_match_official_outputs(name: str) -> None:
    v = load_vectors(f"official_tasks/official_{name}.npz")
    net = apply_recipe(SwinUNet(OFFICIAL_UNETS[name]), UNET_SEED)
    cond = {"lq": torch.from_numpy(v["lq"])}
    if "mask" in v:
        cond["mask"] = torch.from_numpy(v["mask"])
    with torch.inference_mode():
        for t in (3, 0):
            out = net(torch.from_numpy(v["z_y"]), torch.tensor([t]), **cond)
            assert _max_diff(out, v[f"unet_t{t}"]) < TOLERANCE, t


def test_any_multiple_of_the_window_size_and_batches() -> None:
    assert SMALL.size_multiple == 16
    torch.manual_seed(0)
    net = SwinUNet(SMALL).eval()
    x = torch.randn(2, 3, 48, 80)
    lq = torch.rand(2, 3, 96, 160) * 2 - 1  # lq_size / image_size = 2
    with torch.inference_mode():
        out = net(x, torch.tensor([1, 3]), lq=lq)
        assert out.shape == (2, 3, 48, 80) and torch.isfinite(out).all()
        # Each image is processed independently; one timestep may serve the whole batch.
        single = net(x[1:], torch.tensor([3]), lq=lq[1:])
        torch.testing.assert_close(out[1:], single, atol=1e-4, rtol=1e-4)
        shared = net(x, torch.tensor([3]), lq=lq)
        torch.testing.assert_close(shared[1:], single, atol=1e-4, rtol=1e-4)
        with pytest.raises(ValueError, match="multiple of 16"):
            net(torch.randn(1, 3, 40, 80), torch.tensor([0]), lq=torch.rand(1, 3, 80, 160))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    net = SwinUNet(SMALL).eval()
    x, lq = torch.randn(1, 3, 32, 32), torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        reference = net(x, torch.tensor([2]), lq=lq)
        out = net.to(dtype)(x.to(dtype), torch.tensor([2]), lq=lq.to(dtype))
    assert out.dtype == dtype
    assert (out.float() - reference).abs().max().item() < 0.05 * reference.abs().max().item() + 1e-3


def test_config_round_trips_through_a_plain_dict() -> None:
    config = OFFICIAL_UNETS["inpaint_imagenet"]
    as_json = json.loads(json.dumps(dataclasses.asdict(config)))  # tuples become lists
    assert SwinUNetConfig.from_dict(as_json) == config
    assert SwinUNetConfig(**as_json) == config
    assert hash(SwinUNetConfig(**as_json)) == hash(config)
    assert SwinUNetConfig(num_res_blocks=2) == SwinUNetConfig(num_res_blocks=(2, 2, 2, 2))


def test_config_rejects_unknown_keys() -> None:
    values = dataclasses.asdict(SMALL) | {"use_checkpoint": True}
    with pytest.raises(ConfigError, match="use_checkpoint"):
        SwinUNetConfig.from_dict(values)


def test_config_from_official_model_params() -> None:
    params = {
        "image_size": 64, "in_channels": 3, "model_channels": 160, "out_channels": 3,
        "attention_resolutions": [64, 32, 16, 8], "dropout": 0, "channel_mult": [1, 2, 2, 4],
        "num_res_blocks": [2, 2, 2, 2], "conv_resample": True, "dims": 2, "use_fp16": False,
        "num_head_channels": 32, "use_scale_shift_norm": True, "resblock_updown": False,
        "swin_depth": 2, "swin_embed_dim": 192, "window_size": 8, "mlp_ratio": 4,
        "cond_lq": True, "lq_size": 128,
    }
    assert SwinUNetConfig.from_official(params) == OFFICIAL_UNETS["realsr_x2"]
    with pytest.raises(ConfigError, match="dropout"):
        SwinUNetConfig.from_official(params | {"dropout": 0.1})


def test_affine_conv_norm_resblock_in_closed_form() -> None:
    """conv_norm='affine': h = conv1(silu(x*w1 + b1)); FiLM on h*w2 + b2; out = conv2(silu(.)) + x."""
    torch.manual_seed(0)
    block = ResBlock(8, 16, 8, scale_shift=True, norm="affine")
    for module in block.modules():   # no zero weights, so every term shows in the output
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear, ChannelAffine)):
            torch.nn.init.normal_(module.weight, std=0.3)
            torch.nn.init.normal_(module.bias, std=0.3)
    x, emb = torch.randn(2, 8, 6, 5), torch.randn(1, 16)
    norm1, _, conv1 = block.in_layers
    norm2, _, _, conv2 = block.out_layers
    channel = lambda v: v[None, :, None, None]   # noqa: E731
    h = F.conv2d(F.silu(x * channel(norm1.weight) + channel(norm1.bias)), conv1.weight, conv1.bias, padding=1)
    scale, shift = block.emb_layers[1](F.silu(emb)).chunk(2, dim=1)
    h = (h * channel(norm2.weight) + channel(norm2.bias)) * (1 + scale[..., None, None]) + shift[..., None, None]
    expected = F.conv2d(F.silu(h), conv2.weight, conv2.bias, padding=1) + x
    with torch.no_grad():
        torch.testing.assert_close(block(x, emb), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(block(x, emb.expand(2, -1)), expected, atol=1e-5, rtol=1e-5)


def test_affine_conv_norm_keeps_the_parameter_layout() -> None:
    """Only the statistics go: same keys and shapes as GroupNorm, different outputs, unknown kinds refused."""
    group, affine = SwinUNet(SMALL), SwinUNet(dataclasses.replace(SMALL, conv_norm="affine"))
    shapes = lambda net: {k: v.shape for k, v in net.state_dict().items()}   # noqa: E731
    assert shapes(group) == shapes(affine)
    affine.load_state_dict(group.state_dict())
    for module in group.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, std=0.1)
    affine.load_state_dict(group.state_dict())
    x, lq = torch.randn(1, 3, 32, 32), torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert (group(x, torch.tensor([1]), lq=lq) - affine(x, torch.tensor([1]), lq=lq)).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="conv_norm"):
        dataclasses.replace(SMALL, conv_norm="batch")
