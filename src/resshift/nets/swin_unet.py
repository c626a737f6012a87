"""The ResShift denoiser: a UNet of residual blocks with Swin transformer stages.

The network takes the latent ``x_t`` (N, C, h, w), the integer timestep and the conditioning
low-quality image ``lq`` (N, 3, H, W) in [-1, 1] (plus, for inpainting, the mask (N, 1, H, W) in
[-1, 1], +1 = unknown) and predicts the clean latent x0. ``lq`` is given at its own resolution:
when ``lq_size`` equals ``image_size`` it is concatenated to the latent as is, otherwise a small
convolutional feature extractor halves its resolution ``log2(lq_size / image_size)`` times
(16, 32, 64, ... channels) before the concatenation.

Parameter and buffer names follow the official ResShift checkpoints (``UNetModelSwin``), so an
official ``state_dict`` loads without renaming.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resshift.configs import Config
from resshift.errors import ConfigError
from resshift.nets.swin import GroupNorm32, SwinStage

# Official model.params keys that this implementation does not model, with the only value it
# accepts for each (they do not change the network of any official config).
_FIXED_OFFICIAL_PARAMS: dict[str, Any] = {
    "dims": 2,
    "use_fp16": False,
    "dropout": 0,
    "resblock_updown": False,
}
# Defaults of the official UNetModelSwin constructor for the keys a yaml may leave out.
_OFFICIAL_DEFAULTS: dict[str, Any] = {
    "channel_mult": (1, 2, 4, 8),
    "conv_resample": True,
    "num_heads": 1,
    "num_head_channels": -1,
    "use_scale_shift_norm": False,
    "swin_depth": 2,
    "swin_embed_dim": 96,
    "window_size": 8,
    "mlp_ratio": 2.0,
    "patch_norm": False,
    "cond_lq": True,
    "cond_mask": False,
    "lq_size": 256,
}


@dataclass(frozen=True)
class SwinUNetConfig(Config):
    """Architecture of :class:`SwinUNet`; field names are the official ``model.params`` keys.

    The defaults are the official real-world x4 SR network. ``image_size`` is the latent size the
    network was configured for: it decides at which levels Swin stages exist
    (``attention_resolutions``, the first residual block of each such level), which stages are
    too small to shift their windows (resolution <= ``window_size``) and the stored
    ``attn_mask`` buffers; any latent whose sides are multiples of :attr:`size_multiple` runs.
    ``lq_size / image_size`` (a power of two) is how much larger ``lq`` is than the latent.
    ``num_res_blocks`` may be given as one int for every level; lists become tuples.
    """

    in_channels: int = 3
    out_channels: int = 3
    model_channels: int = 160
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int | tuple[int, ...] = (2, 2, 2, 2)
    attention_resolutions: tuple[int, ...] = (64, 32, 16, 8)
    num_head_channels: int = 32
    swin_depth: int = 2
    swin_embed_dim: int = 192
    window_size: int = 8
    mlp_ratio: float = 4.0
    patch_norm: bool = False
    cond_lq: bool = True
    cond_mask: bool = False
    lq_size: int = 64
    image_size: int = 64
    use_scale_shift_norm: bool = True
    # Not an official key: "group" (official) normalises the residual blocks' features with GroupNorm;
    # "affine" keeps only a learned per-channel scale and shift, which learns pixel-space regression
    # (e.g. the compact models' pixel-unshuffle latent) much faster; the Swin stages keep their norms.
    conv_norm: str = "group"
    conv_resample: bool = True

    def __post_init__(self) -> None:
        blocks = self.num_res_blocks
        if isinstance(blocks, int):
            blocks = (blocks,) * len(self.channel_mult)
        for name, value in (
            ("channel_mult", self.channel_mult),
            ("num_res_blocks", blocks),
            ("attention_resolutions", self.attention_resolutions),
        ):
            object.__setattr__(self, name, tuple(int(v) for v in value))
        object.__setattr__(self, "mlp_ratio", float(self.mlp_ratio))
        self._validate()

    def _validate(self) -> None:
        if len(self.num_res_blocks) != len(self.channel_mult):
            raise ConfigError("num_res_blocks needs one entry per channel_mult level")
        if self.swin_embed_dim % self.num_head_channels:
            raise ConfigError("swin_embed_dim must be a multiple of num_head_channels")
        ratio = self.lq_size / self.image_size
        if self.cond_lq and (ratio < 1 or ratio != 2 ** round(math.log2(ratio))):
            raise ConfigError("lq_size must be image_size times a power of two")
        if self.cond_mask and not self.cond_lq:
            raise ConfigError("cond_mask needs cond_lq")
        if self.conv_norm not in CONV_NORMS:
            raise ConfigError(f"conv_norm must be one of {', '.join(CONV_NORMS)}, got {self.conv_norm!r}")


    @classmethod
    def from_official(cls, params: dict[str, Any]) -> SwinUNetConfig:
        """Build from an official config's ``model.params`` (interpolations resolved).

        Keys it leaves out take the official constructor's defaults, not this class's.
        """
        params = _OFFICIAL_DEFAULTS | dict(params)
        for name, expected in _FIXED_OFFICIAL_PARAMS.items():
            if name in params and params.pop(name) != expected:
                raise ConfigError(f"official parameter {name} is only supported as {expected!r}")
        num_heads = params.pop("num_heads")
        if params["num_head_channels"] == -1:
            params["num_head_channels"] = params["swin_embed_dim"] // num_heads
        return cls.from_dict(params)


    @property
    def lq_channels(self) -> int:
        """Channels of the conditioning image (lq, plus the mask when ``cond_mask``)."""
        return 4 if self.cond_mask else 3

    @property
    def num_downsamplings(self) -> int:
        """How many times the lq feature extractor halves the resolution."""
        return round(math.log2(self.lq_size / self.image_size))

    @property
    def size_multiple(self) -> int:
        """Latent height and width must be multiples of this (windows at every level)."""
        multiple = 1
        for level in range(len(self.channel_mult)):
            resolution = self.image_size // 2**level
            if resolution in self.attention_resolutions:
                window = min(self.window_size, resolution)
                multiple = max(multiple, window * 2**level)
        return max(multiple, 2 ** (len(self.channel_mult) - 1))


def timestep_embedding(
    timesteps: torch.Tensor, dim: int, max_period: float = 10000.0
) -> torch.Tensor:
    """(N,) timesteps -> (N, dim) float32 sinusoidal embedding, cosines first."""
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(-math.log(max_period) * exponents / half)  # (half,)
    angles = timesteps.float()[:, None] * freqs[None]  # (N, half)
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the timestep embedding as FiLM (or added), residual."""

    def __init__(
        self, channels: int, emb_channels: int, out_channels: int, scale_shift: bool,
        norm: str = "group",
    ) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(
            conv_norm(norm, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        emb_out = 2 * out_channels if scale_shift else out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(
            conv_norm(norm, out_channels),
            nn.SiLU(),
            nn.Identity(),  # the official dropout slot (p = 0), kept for the parameter names
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )
        nn.init.zeros_(self.out_layers[3].weight)
        nn.init.zeros_(self.out_layers[3].bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # x (B, C, H, W), emb (B or 1, E) -> (B, C_out, H, W)
        in_norm, _, in_conv = self.in_layers
        out_norm, _, _, out_conv = self.out_layers
        h = in_conv(_silu(in_norm(x)))
        e = self.emb_layers(emb).to(h.dtype)  # (B or 1, 2*C_out or C_out)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = _norm_scale_shift(out_norm, h, scale, shift)
        else:
            h = out_norm(h + e[:, :, None, None])
        h = _silu(h)
        skip = self.skip_connection
        if isinstance(skip, nn.Identity):
            return out_conv(h).add_(x)
        # The 1x1 skip projection is one GEMM accumulated into the conv output (its bias
        # folded into the conv bias): no separate skip tensor and no extra add pass.
        out = F.conv2d(h, out_conv.weight, out_conv.bias + skip.bias, padding=1)
        fusable = out.is_contiguous() and x.is_contiguous() and out.dtype == x.dtype == skip.weight.dtype
        if not fusable:  # e.g. under autocast, where the conv output is half precision
            return out.add_(skip(x))
        b, c = out.shape[:2]
        weight = skip.weight.flatten(1).expand(b, -1, -1)  # (B, C_out, C_in)
        # += W (C_out, C_in) @ x (C_in, H*W), in place; returning the in-place op's own result (not
        # `out`) lets a traced graph (ONNX export) see the sum.
        return out.view(b, c, -1).baddbmm_(weight, x.flatten(2)).view(out.shape)


class ChannelAffine(nn.Module):
    """A learned per-channel scale and shift (GroupNorm's affine without its statistics)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias[:, None, None].to(x.dtype), x, self.weight[:, None, None].to(x.dtype))


CONV_NORMS = {"group": GroupNorm32, "affine": ChannelAffine}


def conv_norm(kind: str, channels: int) -> nn.Module:
    """The normalisation of the residual blocks and the output head (`SwinUNetConfig.conv_norm`)."""
    return CONV_NORMS[kind](channels)


def _silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU of a freshly computed tensor, in place unless autograd needs the input."""
    return F.silu(x, inplace=not x.requires_grad)


def _norm_scale_shift(
    norm: nn.Module, h: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """``norm(h) * (1 + scale) + shift`` with scale, shift (B or 1, C).

    When one scale/shift serves the whole batch it is folded into the GroupNorm affine (one
    pass over h instead of two).
    """
    if scale.shape[0] != 1 or not isinstance(norm, GroupNorm32):
        return torch.addcmul(shift[:, :, None, None], norm(h), 1 + scale[:, :, None, None])
    factor = 1 + scale[0].float()  # (C,)
    weight = norm.weight.float() * factor
    bias = torch.addcmul(shift[0].float(), norm.bias.float(), factor)
    return F.group_norm(h.float(), norm.num_groups, weight, bias, norm.eps).to(h.dtype)


class Downsample(nn.Module):
    """Halve the resolution: strided 3x3 convolution, or 2x2 average pooling."""

    def __init__(self, channels: int, out_channels: int, use_conv: bool) -> None:
        super().__init__()
        if use_conv:
            self.op: nn.Module = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1)
        else:
            if channels != out_channels:
                raise ConfigError("average-pool downsampling cannot change the channel count")
            self.op = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double the resolution (nearest), then an optional 3x3 convolution."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return x if self.conv is None else self.conv(x)


class EmbedSequential(nn.Sequential):
    """Sequential whose :class:`ResBlock` children also receive the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


def _lq_feature_extractor(config: SwinUNetConfig) -> tuple[nn.Module, int]:
    """The lq branch and its output channel count."""
    if config.num_downsamplings == 0:
        return nn.Identity(), config.lq_channels
    layers: list[nn.Module] = []
    channels_in, width = config.lq_channels, 16
    for _ in range(config.num_downsamplings):
        layers += [
            nn.Conv2d(channels_in, width, 3, padding=1),
            nn.SiLU(),
            Downsample(width, 2 * width, use_conv=True),
        ]
        channels_in = width = 2 * width
    return nn.Sequential(*layers), width


class SwinUNet(nn.Module):
    """ResShift's UNetModelSwin: ``forward(x, timesteps, lq=None, mask=None)``."""

    def __init__(self, config: SwinUNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        emb_dim = 4 * c.model_channels
        self.time_embed = nn.Sequential(
            nn.Linear(c.model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        extra = 0
        if c.cond_lq:
            self.feature_extractor, extra = _lq_feature_extractor(c)

        def res_block(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, emb_dim, cout, c.use_scale_shift_norm, c.conv_norm)

        def swin(channels: int, resolution: int) -> SwinStage:
            return SwinStage(
                channels,
                c.swin_embed_dim,
                c.swin_embed_dim // c.num_head_channels,
                c.window_size,
                c.swin_depth,
                resolution,
                c.mlp_ratio,
                c.patch_norm,
            )

        ch = c.channel_mult[0] * c.model_channels
        self.input_blocks = nn.ModuleList(
            [EmbedSequential(nn.Conv2d(c.in_channels + extra, ch, 3, padding=1))]
        )
        skip_channels = [ch]
        resolution = c.image_size
        last = len(c.channel_mult) - 1
        for level, mult in enumerate(c.channel_mult):
            for i in range(c.num_res_blocks[level]):
                layers: list[nn.Module] = [res_block(ch, mult * c.model_channels)]
                ch = mult * c.model_channels
                if i == 0 and resolution in c.attention_resolutions:
                    layers.append(swin(ch, resolution))
                self.input_blocks.append(EmbedSequential(*layers))
                skip_channels.append(ch)
            if level != last:
                self.input_blocks.append(EmbedSequential(Downsample(ch, ch, c.conv_resample)))
                skip_channels.append(ch)
                resolution //= 2

        self.middle_block = EmbedSequential(
            res_block(ch, ch), swin(ch, resolution), res_block(ch, ch)
        )

        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(c.channel_mult))):
            mult = c.channel_mult[level]
            for i in range(c.num_res_blocks[level] + 1):
                layers = [res_block(ch + skip_channels.pop(), mult * c.model_channels)]
                ch = mult * c.model_channels
                if i == 0 and resolution in c.attention_resolutions:
                    layers.append(swin(ch, resolution))
                if level and i == c.num_res_blocks[level]:
                    layers.append(Upsample(ch, c.conv_resample))
                    resolution *= 2
                self.output_blocks.append(EmbedSequential(*layers))

        self.out = nn.Sequential(
            conv_norm(c.conv_norm, ch), nn.SiLU(), nn.Conv2d(ch, c.out_channels, 3, padding=1)
        )

    @property
    def dtype(self) -> torch.dtype:
        return self.time_embed[0].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.time_embed[0].weight.device

    def _check_inputs(
        self, x: torch.Tensor, lq: torch.Tensor | None, mask: torch.Tensor | None
    ) -> None:
        c = self.config
        if x.ndim != 4 or x.shape[1] != c.in_channels:
            raise ValueError(f"x must be (N, {c.in_channels}, h, w), got {tuple(x.shape)}")
        m = c.size_multiple
        if x.shape[2] % m or x.shape[3] % m:
            raise ValueError(f"latent size {tuple(x.shape[2:])} must be a multiple of {m} (pad it)")
        if c.cond_lq != (lq is not None):
            raise ValueError("lq is required" if c.cond_lq else "this network takes no lq")
        if c.cond_mask != (mask is not None):
            raise ValueError("mask is required" if c.cond_mask else "this network takes no mask")
        if lq is not None:
            factor = 2**c.num_downsamplings
            expected = (x.shape[2] * factor, x.shape[3] * factor)
            if tuple(lq.shape[2:]) != expected:
                raise ValueError(
                    f"lq must be {expected[0]}x{expected[1]}, got {tuple(lq.shape[2:])}"
                )

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        lq: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict x0: (N, C_out, h, w).

        x (N, C, h, w) latent; timesteps (N,) or (1,) integers; lq (N, 3, H, W) in [-1, 1] at
        ``lq_size / image_size`` times the latent size; mask (N, 1, H, W) in [-1, 1], +1 where
        unknown. Computes in the parameters' dtype and returns the dtype of ``x``.
        """
        self._check_inputs(x, lq, mask)
        dtype = self.dtype
        t = timestep_embedding(timesteps.reshape(-1), self.config.model_channels)
        emb = self.time_embed(t.to(dtype))  # (N or 1, 4 * model_channels)
        h = x.to(dtype).contiguous()
        if lq is not None:
            cond = lq if mask is None else torch.cat([lq, mask.to(lq.dtype)], dim=1)
            h = torch.cat([h, self.feature_extractor(cond.to(dtype))], dim=1)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        norm, _, conv = self.out
        return conv(_silu(norm(h))).to(x.dtype)
