"""The VQGAN autoencoder whose latent space ResShift diffuses in.

Architecture and state_dict layout follow the autoencoders of the official ResShift release
(a VQ-regularised convolutional encoder/decoder in the style of "Taming Transformers" /
latent diffusion), so official checkpoints load with ``load_state_dict(..., strict=True)``:

* encoder:  conv_in -> levels (ResNet blocks, stride-2 downsample) -> mid (block, attention,
  block) -> GroupNorm+SiLU -> conv_out (z_channels)
* quant_conv (1x1) gives the latent the diffusion model sees (``encode`` does not quantise)
* decode: nearest-codebook quantisation (optional) -> post_quant_conv (1x1) -> decoder, the
  mirror image of the encoder with one extra ResNet block per level and 2x upsampling.

Two presets are provided: ``VQGAN_F4`` (f = 4, 3-channel latent, 8192 codes; super-resolution
and inpainting) and ``VQGAN_F8_FACE`` (f = 8, 8-channel latent, 4096 codes; face restoration).

Implementation notes (inference speed / memory, same mathematics as the official network):
* the mid-block attention uses ``scaled_dot_product_attention`` (no (HW x HW) matrix);
* nearest-upsample-then-3x3-conv is computed as four 2x2 convolutions on the low-resolution
  input (sub-pixel form), which needs 16/36 of the multiply-adds;
* the codebook search is chunked (bounded memory) and uses one fused GEMM per chunk;
* GroupNorm+SiLU and residual additions reuse their freshly allocated outputs (in place);
* GroupNorm runs in float32 when the module is in float16/bfloat16.
Activations stay in the default (NCHW) layout: on CPU, channels_last GroupNorm and convolution
kernels were measurably less accurate (up to 1e-4 on the f4 latent) for no clear speed gain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from resshift.configs import Config
from resshift.errors import ConfigError, InputError

__all__ = ["VQGANConfig", "VQGAN", "VectorQuantizer", "VQGAN_F4", "VQGAN_F8_FACE", "nearest_code"]

_GROUPS = 32
_NORM_EPS = 1e-6
# Entries of the (positions x codes) distance matrix held at once: 2**24 floats = 64 MiB.
_DISTANCE_BUDGET = 1 << 24


# --------------------------------------------------------------------------- configuration


def _as_int_tuple(value: Any, name: str) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigError(f"VQGAN config: {name} must be a sequence of integers, got {value!r}")
    items = tuple(value)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ConfigError(f"VQGAN config: {name} must contain integers only, got {value!r}")
    return items


@dataclass(frozen=True)
class VQGANConfig(Config):
    """Hyper-parameters of a VQGAN; field names are those of the official config files.

    ``num_res_blocks`` is one count for every level or one count per level (same length as
    ``ch_mult``). The defaults are the f4 autoencoder of super-resolution and inpainting.
    """

    TYPE_NAME: ClassVar[str] = "vqgan"

    embed_dim: int = 3
    n_embed: int = 8192
    z_channels: int = 3
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int | tuple[int, ...] = 2
    attn_resolutions: tuple[int, ...] = ()
    dropout: float = 0.0
    double_z: bool = False
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # normalise sequences to tuples on a frozen instance
        set_(self, "ch_mult", _as_int_tuple(self.ch_mult, "ch_mult"))
        set_(self, "attn_resolutions", _as_int_tuple(self.attn_resolutions, "attn_resolutions"))
        if not isinstance(self.num_res_blocks, int):
            set_(self, "num_res_blocks", _as_int_tuple(self.num_res_blocks, "num_res_blocks"))
        self._validate()

    def _validate(self) -> None:
        positive = ("embed_dim", "n_embed", "z_channels", "resolution", "in_channels", "out_ch", "ch")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"VQGAN config: {name} must be a positive integer, got {value!r}")
        if not self.ch_mult or min(self.ch_mult) <= 0:
            raise ConfigError(f"VQGAN config: ch_mult must be non-empty and positive, got {self.ch_mult}")
        if len(self.blocks_per_level) != len(self.ch_mult) or min(self.blocks_per_level) < 0:
            raise ConfigError(
                f"VQGAN config: num_res_blocks {self.num_res_blocks!r} must be a non-negative "
                f"integer or one per level of ch_mult {self.ch_mult}"
            )
        for width in {self.ch * m for m in self.ch_mult}:
            if width % _GROUPS:
                raise ConfigError(f"VQGAN config: channel width {width} is not a multiple of {_GROUPS}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"VQGAN config: dropout must be in [0, 1), got {self.dropout!r}")
        if self.double_z:
            raise ConfigError("VQGAN config: double_z=True belongs to KL autoencoders, not to the VQGAN")
        if self.padding_mode != "zeros":
            # The official network accepts the key but always pads with zeros.
            raise ConfigError(f"VQGAN config: padding_mode must be 'zeros', got {self.padding_mode!r}")

    @property
    def blocks_per_level(self) -> tuple[int, ...]:
        """ResNet blocks of each encoder level (the decoder has one more per level)."""
        if isinstance(self.num_res_blocks, int):
            return (self.num_res_blocks,) * len(self.ch_mult)
        return self.num_res_blocks

    @property
    def downsample_factor(self) -> int:
        """Image side / latent side (4 for the f4 model, 8 for the face model)."""
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def global_attention(self) -> bool:
        """The middle block attends over the whole latent, so its cost grows with the square of a tile's area."""
        return True


    @classmethod
    def from_official(cls, params: Mapping[str, Any]) -> VQGANConfig:
        """Build from the ``autoencoder.params`` section of an official ResShift YAML config."""
        flat = {k: v for k, v in params.items() if k != "ddconfig"}
        overlap = set(flat) & set(params.get("ddconfig", {}))
        if overlap:
            raise ConfigError(f"VQGAN config: keys {sorted(overlap)} given twice")
        flat.update(params.get("ddconfig", {}))
        return cls.from_dict(flat)


VQGAN_F4 = VQGANConfig()
VQGAN_F8_FACE = VQGANConfig(
    embed_dim=8,
    n_embed=4096,
    z_channels=8,
    resolution=512,
    ch=64,
    ch_mult=(1, 2, 4, 8),
    num_res_blocks=(1, 2, 3, 4),
)


# --------------------------------------------------------------------------- building blocks


class GroupNorm32(nn.GroupNorm):
    """GroupNorm (32 groups, eps 1e-6) that computes in float32 for half-precision inputs,
    optionally followed by SiLU applied in place on the fresh output."""

    def __init__(self, channels: int) -> None:
        super().__init__(_GROUPS, channels, eps=_NORM_EPS, affine=True)

    def forward(self, x: torch.Tensor, silu: bool = False) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            y = F.group_norm(x.float(), _GROUPS, self.weight.float(), self.bias.float(), self.eps)
            y = y.to(x.dtype)
        else:
            y = F.group_norm(x, _GROUPS, self.weight, self.bias, self.eps)
        return F.silu(y, inplace=True) if silu else y


def _conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)


def _conv1x1(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=1)


class ResnetBlock(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x)))))), with a 1x1 projection of x when widths differ."""

    def __init__(self, c_in: int, c_out: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = GroupNorm32(c_in)
        self.conv1 = _conv3x3(c_in, c_out)
        self.norm2 = GroupNorm32(c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _conv3x3(c_out, c_out)
        self.nin_shortcut = _conv1x1(c_in, c_out) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.norm1(x, silu=True))  # (B, C_out, H, W)
        h = self.conv2(self.dropout(self.norm2(h, silu=True)))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return h.add_(skip)  # h is a fresh conv output: adding in place is safe


class AttnBlock(nn.Module):
    """Single-head spatial self-attention over all H*W positions, with a residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = GroupNorm32(channels)
        self.q = _conv1x1(channels, channels)
        self.k = _conv1x1(channels, channels)
        self.v = _conv1x1(channels, channels)
        self.proj_out = _conv1x1(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)

        def project(conv: nn.Conv2d) -> torch.Tensor:  # 1x1 conv on tokens -> (B, 1, HW, C)
            return F.linear(tokens, conv.weight.view(c, c), conv.bias).unsqueeze(1)

        out = F.scaled_dot_product_attention(project(self.q), project(self.k), project(self.v))
        out = F.linear(out.squeeze(1), self.proj_out.weight.view(c, c), self.proj_out.bias)  # (B, HW, C)
        out = out.transpose(1, 2).reshape(b, c, h, w)
        return x + out


class Downsample(nn.Module):
    """Stride-2 3x3 convolution after padding one zero row/column at the bottom/right."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # (B, C, H // 2, W // 2)


# _PHASE_TAPS[a, i, k]: along one axis, output row 2r + a of "nearest x2, then 3-tap conv" reads
# low-res rows (r - 1, r) for a = 0 and (r, r + 1) for a = 1; tap i of that 2-tap kernel is the sum
# of the original taps k it covers: a = 0 -> (w0, w1 + w2), a = 1 -> (w0 + w1, w2).
_PHASE_TAPS = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


def _subpixel_weight(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, 3, 3) kernel applied after 2x nearest upsampling -> (4*C_out, C_in, 2, 2)
    kernels on the low-resolution input, one block of C_out per output phase (a, b) = 2a + b."""
    c_out, c_in = weight.shape[:2]
    taps = _PHASE_TAPS.to(device=weight.device)
    mix = torch.einsum("aik,bjl->abijkl", taps, taps).reshape(16, 9)  # (a b i j, k l)
    phased = weight.float().reshape(c_out * c_in, 9) @ mix.t()  # (C_out*C_in, a b i j)
    phased = phased.view(c_out, c_in, 2, 2, 2, 2).permute(2, 3, 0, 1, 4, 5)  # (a, b, C_out, C_in, i, j)
    return phased.reshape(4 * c_out, c_in, 2, 2).to(weight.dtype)


class Upsample(nn.Module):
    """2x nearest upsampling followed by a 3x3 convolution, computed in sub-pixel form."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = _conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv.out_channels
        weight, bias = _subpixel_weight(self.conv.weight), self.conv.bias.repeat(4)
        y = F.conv2d(F.pad(x, (1, 1, 1, 1)), weight, bias)  # (B, 4C, H+1, W+1)
        # out[n, ch, 2r + a, 2s + p] = y[n, (2a + p) * C + ch, r + a, s + p]: each phase (a, p) is a
        # slice of y (no size arithmetic, so that a traced graph runs at any size), interleaved by two stacks.
        crop = (slice(0, -1), slice(1, None))  # rows r + a (columns s + p) for r < H, by phase a (p)
        phases = [[y[:, (2 * a + p) * c : (2 * a + p + 1) * c, crop[a], crop[p]] for p in (0, 1)] for a in (0, 1)]
        out = torch.stack([torch.stack(row, dim=-1) for row in phases], dim=3)  # (B, C, H, 2, W, 2)
        return out.flatten(4).flatten(2, 3)  # (B, C, 2H, 2W)


class _Level(nn.Module):
    """One resolution level: ``block`` (ResNet blocks), ``attn`` (optional, one per block) and
    an optional ``downsample`` / ``upsample``."""

    def __init__(self, widths: list[tuple[int, int]], attention: bool, dropout: float) -> None:
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(i, o, dropout) for i, o in widths)
        self.attn = nn.ModuleList(AttnBlock(o) for _, o in widths) if attention else nn.ModuleList()

    def run_blocks(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h


class _Middle(nn.Module):
    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """(B, in_channels, H, W) image -> (B, z_channels, H/f, W/f)."""

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        self.conv_in = _conv3x3(cfg.in_channels, cfg.ch)
        self.down = nn.ModuleList()
        c_in, res = cfg.ch, cfg.resolution
        for level, (c_out, n_blocks) in enumerate(zip(widths, cfg.blocks_per_level)):
            pairs = [(c_in if i == 0 else c_out, c_out) for i in range(n_blocks)]
            stage = _Level(pairs, res in cfg.attn_resolutions, cfg.dropout)
            c_in = c_out if n_blocks else c_in
            if level != len(widths) - 1:
                stage.downsample = Downsample(c_in)
                res //= 2
            self.down.append(stage)
        self.mid = _Middle(c_in, cfg.dropout)
        self.norm_out = GroupNorm32(c_in)
        self.conv_out = _conv3x3(c_in, cfg.z_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            h = stage.run_blocks(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid(h)
        return self.conv_out(self.norm_out(h, silu=True))


class Decoder(nn.Module):
    """(B, z_channels, h, w) -> (B, out_ch, h*f, w*f)."""

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        top = widths[-1]
        self.conv_in = _conv3x3(cfg.z_channels, top)
        self.mid = _Middle(top, cfg.dropout)
        # Levels are stored in index order (up.0 = full resolution) but run from the last.
        self.up = nn.ModuleList()
        for level, (c_out, n_blocks) in enumerate(zip(widths, cfg.blocks_per_level)):
            c_in = widths[min(level + 1, len(widths) - 1)]
            pairs = [(c_in if i == 0 else c_out, c_out) for i in range(n_blocks + 1)]
            res = (cfg.resolution // 2 ** (len(widths) - 1)) * 2 ** (len(widths) - 1 - level)
            stage = _Level(pairs, res in cfg.attn_resolutions, cfg.dropout)
            if level != 0:
                stage.upsample = Upsample(c_out)
            self.up.append(stage)
        self.norm_out = GroupNorm32(widths[0])
        self.conv_out = _conv3x3(widths[0], cfg.out_ch)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for stage in reversed(self.up):
            h = stage.run_blocks(h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(self.norm_out(h, silu=True))


# --------------------------------------------------------------------------- quantiser


def nearest_code(
    vectors: torch.Tensor, codebook: torch.Tensor, chunk_size: int | None = None
) -> torch.Tensor:
    """Index of the nearest codebook row for each row of ``vectors`` (N, D) -> (N,) int64.

    Squared distances are formed as |z|^2 + |e|^2 - 2 z.e (the official formula, so ties and
    rounding resolve the same way; argmin keeps the first minimum), ``chunk_size`` rows at a time.
    A traced graph (ONNX export) cannot loop over a size it does not know yet, so when tracing
    every row is searched at once (the graph's caller bounds the rows, e.g. by tiling).
    """
    code_sq = codebook.pow(2).sum(1)  # (K,)
    if chunk_size is None:
        chunk_size = max(1, _DISTANCE_BUDGET // codebook.shape[0])
    if torch.jit.is_tracing() or vectors.shape[0] <= chunk_size:
        return _nearest_rows(vectors, codebook, code_sq)
    out = torch.empty(vectors.shape[0], dtype=torch.long, device=vectors.device)
    for start in range(0, vectors.shape[0], chunk_size):
        out[start : start + chunk_size] = _nearest_rows(vectors[start : start + chunk_size], codebook, code_sq)
    return out


def _nearest_rows(z: torch.Tensor, codebook: torch.Tensor, code_sq: torch.Tensor) -> torch.Tensor:
    """(n, D) vectors -> (n,) index of the nearest row of ``codebook`` (whose squared norms are ``code_sq``)."""
    # (|z|^2 + |e|^2) - 2 z.e in one GEMM; scaling by -2 is exact, so the rounding is that of the
    # official expression (checked bit for bit on 2e5 random latents).
    dist = torch.addmm(z.pow(2).sum(1, keepdim=True) + code_sq, z, codebook.t(), alpha=-2)  # (n, K)
    return dist.argmin(1)


class VectorQuantizer(nn.Module):
    """Replaces each latent vector by its nearest codebook entry (``embedding.weight``)."""

    def __init__(self, n_embed: int, embed_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)

    def forward(self, z: torch.Tensor, chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D, h, w) -> quantised latent (B, D, h, w) and code indices (B, h, w)."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)  # (B*h*w, D)
        codebook = self.embedding.weight
        if flat.dtype in (torch.float16, torch.bfloat16):  # search in float32 for stable ties
            idx = nearest_code(flat.float(), codebook.float(), chunk_size)
        else:
            idx = nearest_code(flat, codebook.to(flat.dtype), chunk_size)
        z_q = F.embedding(idx, codebook).view(b, h, w, d).permute(0, 3, 1, 2)  # (B, D, h, w)
        z_q = z_q.to(z.dtype).contiguous()
        if z.requires_grad and torch.is_grad_enabled():
            z_q = z + (z_q - z).detach()  # straight-through estimator
        return z_q, idx.view(b, h, w)


# --------------------------------------------------------------------------- autoencoder


class VQGAN(nn.Module):
    """VQGAN autoencoder with the official state_dict layout.

    ``encode(x)``: image in [-1, 1] (B, in_channels, H, W) -> latent (B, embed_dim, H/f, W/f),
    not quantised. ``decode(z)``: latent -> image, quantising first unless ``quantize=False``.
    ``quantize(z)`` -> (nearest-code latent, indices (B, h, w)).
    """

    quantize: VectorQuantizer

    def __init__(self, config: VQGANConfig = VQGAN_F4) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = VectorQuantizer(config.n_embed, config.embed_dim)
        self.quant_conv = _conv1x1(config.z_channels, config.embed_dim)
        self.post_quant_conv = _conv1x1(config.embed_dim, config.z_channels)

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    def _check(self, x: torch.Tensor, channels: int, what: str) -> None:
        if x.dim() != 4 or x.shape[1] != channels:
            raise InputError(f"VQGAN.{what} expects a (B, {channels}, H, W) tensor, got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x, self.config.in_channels, "encode")
        return self.quant_conv(self.encoder(x))  # (B, embed_dim, H/f, W/f)

    def decode(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        self._check(z, self.config.embed_dim, "decode")
        if quantize:
            z, _ = self.quantize(z)
        return self.decoder(self.post_quant_conv(z))  # (B, out_ch, h*f, w*f)

    def forward(self, x: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        return self.decode(self.encode(x), quantize=quantize)
