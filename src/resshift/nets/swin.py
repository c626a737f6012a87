"""Swin transformer stages of the ResShift UNet.

A stage (:class:`SwinStage`) maps a (B, C, H, W) feature map to the Swin width with a point-wise
projection, runs ``depth`` window-attention blocks (every second one on cyclically shifted
windows) and projects back. Module and buffer names follow the official ResShift checkpoints, so
their ``state_dict`` loads unchanged (the point-wise layers are stored as 1x1 convolutions).

Internally a stage works on channels-last tokens (B, H, W, C): the projections and the MLP are
plain matrix products on that layout. The cyclic shift is two slice concatenations and the window
partition a reshape and permute, all computed from the input's shape, so that a traced graph (ONNX export)
runs at any size that is a multiple of the window.

Shifted-window mask: the official ResShift blocks do not build the mask of the original Swin
paper (their region-label map is filled along the wrong axes of a (1, 1, H, W) tensor and its
windows are flattened transposed). Their labels end up depending only on the window row and on
the *column* inside the window: every window outside the last window row is unmasked, and in
the last window row the tokens in columns ``< window - shift`` cannot attend to those in columns
``>= window - shift`` (and vice versa). :func:`shifted_window_mask` reproduces exactly that,
including the value -100 for blocked pairs, because the pretrained weights were trained with it.
The mask is built for the actual input size (windows in the last row share one (N, N) mask).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MASKED = -100.0
GROUPS = 32


class GroupNorm32(nn.GroupNorm):
    """GroupNorm over 32 groups that always computes in float32 and returns the input dtype."""

    def __init__(self, channels: int, groups: int = GROUPS) -> None:
        super().__init__(groups, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(
            x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps
        ).to(x.dtype)

    def tokens(self, t: torch.Tensor) -> torch.Tensor:
        """The same normalisation on channels-last tokens (B, H, W, C)."""
        return self(t.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def relative_position_index(window: int) -> torch.Tensor:
    """(N, N) int64 index into the (2w-1)^2 bias table for the N = w*w tokens of a window.

    Tokens are numbered row-major; the pair (i, j) maps to
    ``(row_i - row_j + w - 1) * (2w - 1) + (col_i - col_j + w - 1)``.
    """
    pos = torch.arange(window * window)
    rows, cols = pos // window, pos % window  # (N,)
    d_row = rows[:, None] - rows[None, :] + window - 1  # (N, N)
    d_col = cols[:, None] - cols[None, :] + window - 1  # (N, N)
    return d_row * (2 * window - 1) + d_col


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """(nW, N, N) float32 additive mask of the official ResShift shifted-window attention.

    ``height`` and ``width`` are the feature-map size (multiples of ``window``); windows are
    numbered row-major, tokens within a window row-major. See the module docstring. This is the
    value of the official ``attn_mask`` buffers; the forward pass uses :func:`last_row_mask`.
    """
    rows, cols = height // window, width // window
    mask = torch.zeros(rows, cols, window * window, window * window)  # (rows, cols, N, N)
    mask[-1] = last_row_mask(window, shift)
    return mask.reshape(rows * cols, window * window, window * window)


def last_row_mask(window: int, shift: int) -> torch.Tensor:
    """(N, N) mask shared by every window of the last window row (the others have none)."""
    col = torch.arange(window * window) % window  # (N,) column of each token in its window
    region = (col >= window - shift).float() if shift > 0 else torch.zeros(col.shape)  # 1 right of the cut
    differs = (region[:, None] - region[None, :]).abs()  # (N, N) 1 where the two tokens' regions differ
    # Arithmetic rather than boolean masking, which torch.compile's CPU code generator fails on.
    return torch.where(differs > 0, MASKED, 0.0)


def cyclic_shift(t: torch.Tensor, shift: int) -> torch.Tensor:
    """Tokens (B, H, W, C) -> a new tensor with ``out[:, i, j] = t[:, (i + shift) % H, (j + shift) % W]``.

    The value of ``torch.roll(t, (-shift, -shift), (1, 2))`` as two slice concatenations, which
    are many times faster on the CPU; ``cyclic_shift(t, -shift)`` undoes ``cyclic_shift(t, shift)``.
    """
    t = torch.cat([t[:, shift:], t[:, :shift]], dim=1)
    return torch.cat([t[:, :, shift:], t[:, :, :shift]], dim=2)


def to_windows(t: torch.Tensor, window: int) -> torch.Tensor:
    """Tokens (B, H, W, C) -> windows (B, rows, cols, window * window, C), each row-major."""
    b, h, w, c = t.shape
    t = t.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return t.reshape(b, h // window, w // window, window * window, c)


def from_windows(windows: torch.Tensor, window: int) -> torch.Tensor:
    """The inverse of :func:`to_windows`: (B, rows, cols, N, C) -> a new (B, H, W, C) tensor."""
    b, rows, cols, _, c = windows.shape
    t = windows.view(b, rows, cols, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return t.reshape(b, rows * window, cols * window, c)


def _window_batch(windows: torch.Tensor) -> torch.Tensor:
    """(B, rows, cols, N, C) -> contiguous (B*rows*cols, N, C): the attention's batch of windows.

    Contiguous because a strided view of a part of them gives other low-precision GEMM results.
    """
    return windows.flatten(0, 2).contiguous()


def window_size_and_shift(resolution: int, window: int, shifted: bool) -> tuple[int, int]:
    """Official rule: a stage whose configured resolution fits in one window uses one
    resolution-sized window and never shifts."""
    if resolution <= window:
        return resolution, 0
    return window, (window // 2 if shifted else 0)


def _pointwise(conv: nn.Conv2d, t: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution applied to channels-last tokens (..., C_in) -> (..., C_out)."""
    return F.linear(t, conv.weight.flatten(1), conv.bias)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias."""

    def __init__(self, dim: int, window: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, num_heads)
        )
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self) -> torch.Tensor:
        """(heads, N, N) relative position bias."""
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, tokens: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        """tokens (B*nW, N, C); attn_bias (1, heads, N, N) additive -> (B*nW, N, C)."""
        bw, n, c = tokens.shape
        qkv = self.qkv(tokens).view(bw, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B*nW, heads, N, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)  # (B*nW, heads, N, d)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    """Point-wise feed-forward network, stored as 1x1 convolutions (the official layout)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, kernel_size=1)
        self.fc2 = nn.Conv2d(hidden, dim, kernel_size=1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., C)
        return _pointwise(self.fc2, F.gelu(_pointwise(self.fc1, t)))


class SwinBlock(nn.Module):
    """Pre-norm (shifted) window attention and MLP, both residual, on tokens (B, H, W, C).

    The windows of the last window row of every image (the only ones the shifted-window mask
    touches) run as one attention call and all the others as another, so each call shares one
    (heads, N, N) additive bias, whatever the input size and batch.
    """

    def __init__(
        self, dim: int, num_heads: int, window: int, shift: int, mlp_ratio: float, resolution: int
    ) -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        # The official checkpoints store the mask of the configured resolution; it is kept
        # (same values) for compatibility, while forward() works for any input size.
        mask = shifted_window_mask(resolution, resolution, window, shift) if shift else None
        self.register_buffer("attn_mask", mask)
        self.norm1 = GroupNorm32(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = GroupNorm32(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def _biases(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(1, heads, N, N) additive biases of the unmasked and (if shifted) the masked windows.

        Recomputed on every call (a small gather) so they always follow the parameter.
        """
        bias = self.attn.position_bias().to(dtype).unsqueeze(0)
        if not self.shift:
            return bias, None
        mask = last_row_mask(self.window, self.shift).to(device=bias.device, dtype=dtype)
        return bias, bias + mask

    def _attention(self, windows: torch.Tensor) -> torch.Tensor:
        """Windowed tokens (B, rows, cols, N, C) -> attention output, same layout."""
        b, _, cols, n, c = windows.shape
        plain_bias, masked_bias = self._biases(windows.dtype)
        if masked_bias is None:
            return self.attn(_window_batch(windows), plain_bias).view(windows.shape)
        # With a single window row the first call gets no windows, which costs nothing.
        plain = self.attn(_window_batch(windows[:, :-1]), plain_bias)
        last = self.attn(_window_batch(windows[:, -1:]), masked_bias)
        return torch.cat([plain.view(b, -1, cols, n, c), last.view(b, 1, cols, n, c)], dim=1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, H, W, C)
        h, w = t.shape[1:3]
        if h % self.window or w % self.window:
            raise ValueError(f"feature map {h}x{w} is not a multiple of the window {self.window}")
        y = self.norm1.tokens(t)
        if self.shift:
            y = cyclic_shift(y, self.shift)
        y = from_windows(self._attention(to_windows(y, self.window)), self.window)
        if self.shift:
            y = cyclic_shift(y, -self.shift)
        t = y.add_(t)
        return self.mlp(self.norm2.tokens(t)).add_(t)


class PointwiseProjection(nn.Module):
    """1x1 convolution, optionally followed by GroupNorm (the official patch (un)embedding)."""

    def __init__(self, in_channels: int, out_channels: int, norm: bool) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.norm = GroupNorm32(out_channels) if norm else None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) feature map -> (B, H, W, C_out) tokens."""
        # For a contiguous map and B = 1 the permuted view is a transposed matrix operand of
        # the GEMM, not a copy.
        t = _pointwise(self.proj, x.permute(0, 2, 3, 1))
        return t if self.norm is None else self.norm.tokens(t)

    def unembed(self, t: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C_in) tokens -> (B, C_out, H, W) contiguous feature map."""
        b, h, w, c = t.shape
        weight = self.proj.weight.flatten(1)  # (C_out, C_in)
        # (C_out, C_in) @ (C_in, H*W) per image writes the NCHW result directly.
        x = torch.matmul(weight, t.view(b, h * w, c).transpose(1, 2))  # (B, C_out, H*W)
        x = x.view(b, -1, h, w).add_(self.proj.bias.view(-1, 1, 1))
        return x if self.norm is None else self.norm(x)


class SwinStage(nn.Module):
    """Swin stage of the UNet: project to ``embed_dim``, ``depth`` blocks, project back.

    There is no residual around the stage itself (only inside its blocks).
    """

    def __init__(
        self,
        channels: int,
        embed_dim: int,
        num_heads: int,
        window: int,
        depth: int,
        resolution: int,
        mlp_ratio: float,
        patch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.patch_embed = PointwiseProjection(channels, embed_dim, patch_norm)
        self.patch_unembed = PointwiseProjection(embed_dim, channels, patch_norm)
        blocks = []
        for i in range(depth):
            win, shift = window_size_and_shift(resolution, window, shifted=i % 2 == 1)
            blocks.append(SwinBlock(embed_dim, num_heads, win, shift, mlp_ratio, resolution))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        t = self.patch_embed.embed(x)  # (B, H, W, E)
        for block in self.blocks:
            t = block(t)
        return self.patch_unembed.unembed(t)
