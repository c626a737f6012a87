"""VQGAN autoencoders: official state_dict layout, official test vectors, quantiser, config."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from official_reference import REFERENCE, VQGAN_SEED, apply_recipe, load_vectors, read_key_list
from resshift.errors import ConfigError, InputError
from resshift.nets import vqgan as vq
from resshift.nets.vqgan import VQGAN, VQGAN_F4, VQGAN_F8_FACE, VQGANConfig, nearest_code

LATENT_TOL = 1e-4
IMAGE_TOL = 1e-3
SMALL = VQGANConfig(
    embed_dim=4, n_embed=16, z_channels=4, resolution=64, ch=32,
    ch_mult=(1, 2, 2), num_res_blocks=(1, 2, 1), attn_resolutions=(32,),
)  # fmt: skip


@pytest.fixture(scope="module")
def f4() -> VQGAN:
    return apply_recipe(VQGAN(VQGAN_F4), VQGAN_SEED)


@pytest.fixture(scope="module")
def face() -> VQGAN:
    return apply_recipe(VQGAN(VQGAN_F8_FACE), VQGAN_SEED)


def tensors(relative: str) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in load_vectors(relative).items()}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


# ------------------------------------------------------------------ official layout and vectors


@pytest.mark.parametrize(
    ("fixture", "key_file"),
    [("f4", "vqgan_keys_autoencoder_vq_f4.txt"), ("face", "vqgan_keys_ffhq512_vq_f8_dim8_face.txt")],
)
def test_state_dict_matches_official_key_list(fixture: str, key_file: str, request) -> None:
    if not (REFERENCE / "official_v3" / key_file).exists():
        pytest.skip("../shared is missing")
    model = request.getfixturevalue(fixture)
    ours = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    official = read_key_list(key_file)
    assert list(ours) == list(official)  # same names in the same order
    assert ours == official


def test_f4_matches_official_v3_vectors(f4: VQGAN) -> None:
    v = tensors("official_v3/official_v3_outputs.npz")
    with torch.inference_mode():
        z_y = f4.encode(F.interpolate(v["lq"], scale_factor=4, mode="bicubic"))
        assert max_diff(z_y, v["z_y"]) < LATENT_TOL
        _, idx = f4.quantize(v["z_dec"])
        assert idx.dtype == torch.int64 and torch.equal(idx, v["codebook_idx"])
        assert max_diff(f4.decode(v["z_dec"]), v["dec_quant"]) < IMAGE_TOL
        assert max_diff(f4.decode(v["z_dec"], quantize=False), v["dec_noquant"]) < IMAGE_TOL


def test_f4_matches_official_inpainting_vectors(f4: VQGAN) -> None:
    v = tensors("official_tasks/official_inpaint_imagenet.npz")
    with torch.inference_mode():
        assert max_diff(f4.encode(v["lq"]), v["z_y"]) < LATENT_TOL
        image = f4.decode(v["pred_xstart_last"]).clamp(-1, 1)
    assert max_diff(image, v["image"]) < IMAGE_TOL  # the raw decode, so everywhere


@pytest.mark.slow
def test_face_f8_matches_official_faceir_vectors(face: VQGAN) -> None:
    v = tensors("official_tasks/official_faceir.npz")
    with torch.inference_mode():
        z_y = face.encode(v["lq"])
        assert z_y.shape == (1, 8, 64, 64)
        assert max_diff(z_y, v["z_y"]) < LATENT_TOL
        image = face.decode(v["pred_xstart_last"]).clamp(-1, 1)
    assert max_diff(image, v["image"]) < IMAGE_TOL


# ------------------------------------------------------------------ quantiser


def test_chunked_nearest_code_equals_unchunked_reference() -> None:
    g = torch.Generator().manual_seed(0)
    codebook = torch.randn(50, 3, generator=g)
    codebook[7] = codebook[3]  # a tie: the first index must win
    z = torch.randn(37, 3, generator=g)
    z[5] = codebook[3]
    dist = (z**2).sum(1, keepdim=True) + (codebook**2).sum(1) - 2 * z @ codebook.t()  # (37, 50)
    reference = dist.argmin(1)
    assert reference[5] == 3
    for chunk in (1, 5, 36, 37, 1000, None):
        assert torch.equal(nearest_code(z, codebook, chunk_size=chunk), reference)


def test_nearest_code_equals_official_expression_at_scale() -> None:
    g = torch.Generator().manual_seed(1)
    codebook = torch.randn(8192, 3, generator=g) / math.sqrt(3)
    z = torch.randn(4096, 3, generator=g)
    official = (torch.sum(z**2, 1, keepdim=True) + torch.sum(codebook**2, 1) - 2 * z @ codebook.t()).argmin(1)
    assert torch.equal(nearest_code(z, codebook, chunk_size=3000), official)


def test_quantizer_chunking_and_lookup() -> None:
    torch.manual_seed(0)
    quantizer = vq.VectorQuantizer(n_embed=64, embed_dim=4)
    z = torch.randn(2, 4, 5, 7) * 0.02
    z_q, idx = quantizer(z)
    z_q_small, idx_small = quantizer(z, chunk_size=3)
    assert idx.shape == (2, 5, 7) and torch.equal(idx, idx_small) and torch.equal(z_q, z_q_small)
    assert torch.equal(z_q, quantizer.embedding.weight[idx].permute(0, 3, 1, 2))
    brute = torch.cdist(z.permute(0, 2, 3, 1).reshape(-1, 4), quantizer.embedding.weight).argmin(1)
    assert torch.equal(idx.flatten(), brute)


# ------------------------------------------------------------------ building blocks


def test_subpixel_upsample_equals_nearest_then_conv() -> None:
    torch.manual_seed(0)
    up = vq.Upsample(32)
    x = torch.randn(2, 32, 5, 9)
    expected = up.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    assert torch.allclose(up(x), expected, atol=1e-5)


def test_attention_uses_sdpa_and_equals_explicit_softmax(monkeypatch) -> None:
    torch.manual_seed(0)
    block = vq.AttnBlock(32)
    x = torch.randn(2, 32, 6, 5)
    h = block.norm(x).flatten(2)  # (B, C, HW)
    q, k, v = (F.conv1d(h, m.weight[..., 0], m.bias) for m in (block.q, block.k, block.v))
    weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(32), dim=-1)  # (B, HW, HW)
    out = F.conv1d(v @ weights.transpose(1, 2), block.proj_out.weight[..., 0], block.proj_out.bias)
    expected = x + out.view_as(x)
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    assert torch.allclose(block(x), expected, atol=1e-5)
    assert calls


def test_small_model_non_square_round_trip() -> None:
    torch.manual_seed(0)
    model = VQGAN(SMALL).eval()
    assert model.downsample_factor == 4
    assert len(model.encoder.down[1].attn) == 2 and len(model.decoder.up[1].attn) == 3
    x = torch.rand(2, 3, 40, 72) * 2 - 1
    with torch.inference_mode():
        z = model.encode(x)
        assert z.shape == (2, 4, 10, 18)
        _, idx = model.quantize(z)
        assert idx.shape == (2, 10, 18)
        out = model.decode(z)
        assert out.shape == (2, 3, 40, 72) and out.dtype == torch.float32
        assert model.decode(z, quantize=False).shape == (2, 3, 40, 72)
        assert model(x).shape == (2, 3, 40, 72)
    with pytest.raises(InputError):
        model.encode(torch.zeros(1, 4, 16, 16))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = VQGAN(SMALL).eval()
    x = torch.rand(1, 3, 16, 24) * 2 - 1
    with torch.inference_mode():
        z = model.encode(x)
        ref = model.decode(z, quantize=False)
        model.to(dtype)
        z_low = model.encode(x.to(dtype))
        dec = model.decode(z.to(dtype), quantize=False)
        assert z_low.dtype == dec.dtype == dtype and torch.isfinite(dec).all()
        assert max_diff(z_low, z) < 0.1 and max_diff(dec, ref) < 0.1
        z_q, idx = model.quantize(z.to(dtype))
        assert z_q.dtype == dtype and idx.shape == (1, 4, 6)


# ------------------------------------------------------------------ configuration


def test_config_presets_and_dict_round_trip() -> None:
    assert VQGAN_F4.downsample_factor == 4 and VQGAN_F8_FACE.downsample_factor == 8
    assert VQGAN_F8_FACE.blocks_per_level == (1, 2, 3, 4) and VQGAN_F4.blocks_per_level == (2, 2, 2)
    for cfg in (VQGAN_F4, VQGAN_F8_FACE, SMALL):
        data = cfg.to_dict()
        assert isinstance(data, dict) and isinstance(data["ch_mult"], list)
        assert VQGANConfig.from_dict(data) == cfg
    from_lists = VQGANConfig.from_dict({"ch_mult": [1, 2, 4, 8], "num_res_blocks": [1, 2, 3, 4]})
    assert from_lists.ch_mult == (1, 2, 4, 8) and from_lists.num_res_blocks == (1, 2, 3, 4)
    hash(from_lists)  # frozen and hashable
    official = {
        "embed_dim": 8, "n_embed": 4096,
        "ddconfig": {"double_z": False, "z_channels": 8, "resolution": 512, "in_channels": 3,
                     "out_ch": 3, "ch": 64, "ch_mult": [1, 2, 4, 8], "num_res_blocks": [1, 2, 3, 4],
                     "attn_resolutions": [], "dropout": 0.0, "padding_mode": "zeros"},
    }  # fmt: skip
    assert VQGANConfig.from_official(official) == VQGAN_F8_FACE


def test_config_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="unknown config key n_embeds; keys of the VQGANConfig: embed_dim"):
        VQGANConfig.from_dict({**VQGAN_F4.to_dict(), "n_embeds": 1})
    with pytest.raises(ConfigError, match="num_res_blocks"):
        VQGANConfig(num_res_blocks=(1, 2))
    with pytest.raises(ConfigError):
        VQGANConfig(ch=40)  # GroupNorm needs multiples of 32
    with pytest.raises(ConfigError):
        VQGANConfig(double_z=True)
