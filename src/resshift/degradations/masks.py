"""Random inpainting masks in the style of LaMa's mixed masks (Suvorov et al. 2022), as ResShift's
inpainting configs (``inpaint_lama256_*``) train with them.

Each mask is drawn by ONE generator, picked with the normalised kind probabilities (LaMa's
``MixedMaskGenerator`` picks, it does not union):

- ``irregular``: brush strokes, each a polyline of 1-5 thick segments (round caps) turning by roughly
  integer angles; stroke count, segment length and brush width are uniform integers.
- ``box``: 1..``box_max_times`` axis-aligned rectangles, side in [``box_min_size``, ``box_max_size``),
  kept ``box_margin`` pixels inside the image.
- ``outpainting``: bands along the left/top/right/bottom sides, each present with its probability
  (one side is forced when none came up), width a fraction in [min, max) of the image side.

Notation: mask value 1 = hole (to be filled), 0 = known pixel; ``x`` column, ``y`` row.
Randomness comes only from the ``torch.Generator`` passed in; masks are created on its device.
:func:`random_masks_in_range` redraws each mask until its hole fraction lies in a range, as the fixed
evaluation masks (10-40 % holes) are drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from resshift.configs import Config
from resshift.errors import ConfigError, InputError

MASK_KINDS = ("irregular", "box", "outpainting")
SIDES = ("left", "top", "right", "bottom")
# Hole fractions of the fixed evaluation masks (`resshift degrade --preset inpaint`, benchmarks/bench_inpaint.py):
# large enough to need generation, small enough to leave context around every hole.
EVAL_HOLE_RANGE = (0.10, 0.40)


@dataclass(frozen=True)
class MaskConfig(Config):
    """Mixed-mask parameters; defaults = official ResShift ``inpaint_lama256_imagenet`` ``mask_kwargs``.

    Field names follow the YAML with the kind as prefix. As in the official code (a LaMa ``LinearRamp``
    offset that is always active), irregular masks draw 1 .. ``irregular_max_times`` + 1 strokes.
    """

    irregular_proba: float = 1.0
    irregular_max_angle: int = 4
    irregular_max_len: int = 200
    irregular_max_width: int = 100
    irregular_min_times: int = 1
    irregular_max_times: int = 5
    box_proba: float = 1.0
    box_margin: int = 10
    box_min_size: int = 30
    box_max_size: int = 150
    box_min_times: int = 1
    box_max_times: int = 4
    outpainting_proba: float = 1.0
    outpainting_min_padding: float = 0.04
    outpainting_max_padding: float = 0.25
    outpainting_side_probs: tuple[float, float, float, float] = (0.5, 0.5, 0.5, 0.5)  # left, top, right, bottom

    def __post_init__(self) -> None:
        probas = self.kind_probs()
        if any(p < 0 for p in probas) or sum(probas) <= 0:
            raise ConfigError(f"irregular/box/outpainting_proba must be >= 0 and not all 0, got {probas}.")
        for name in ("irregular_max_angle", "irregular_max_len", "irregular_max_width"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        for kind in ("irregular", "box"):
            low, high = getattr(self, f"{kind}_min_times"), getattr(self, f"{kind}_max_times")
            if not 0 <= low <= high:
                raise ConfigError(f"{kind}_min_times/max_times must satisfy 0 <= min <= max, got {low}, {high}.")
        if not 1 <= self.box_min_size < self.box_max_size or self.box_margin < 0:
            raise ConfigError(f"box sizes must satisfy 1 <= box_min_size < box_max_size and box_margin >= 0, got "
                              f"{self.box_min_size}, {self.box_max_size}, {self.box_margin}.")
        if not 0.0 <= self.outpainting_min_padding <= self.outpainting_max_padding <= 1.0:
            raise ConfigError("outpainting paddings must satisfy 0 <= min <= max <= 1, got "
                              f"{self.outpainting_min_padding}, {self.outpainting_max_padding}.")
        side = self.outpainting_side_probs
        if len(side) != 4 or any(not 0.0 <= p <= 1.0 for p in side) or sum(side) <= 0:
            raise ConfigError(f"outpainting_side_probs must be 4 probabilities (left, top, right, bottom), "
                              f"not all 0, got {tuple(side)}.")

    @property
    def min_side(self) -> int:
        """The smallest image side these masks fit: a box needs its margins on both sides."""
        return 2 * self.box_margin + self.box_min_size + 1 if self.box_proba > 0 else 1

    def kind_probs(self) -> tuple[float, float, float]:
        """Unnormalised probabilities of :data:`MASK_KINDS`."""
        return (self.irregular_proba, self.box_proba, self.outpainting_proba)


# ----------------------------------------------------------------------------- random helpers

def _randint(g: torch.Generator, low: int, high: int) -> int:
    """One integer uniform in [low, high)."""
    return int(torch.randint(low, high, (), generator=g, device=g.device).item())


def _rand(g: torch.Generator) -> float:
    return float(torch.rand((), generator=g, device=g.device).item())


# ----------------------------------------------------------------------------- drawing

def _draw_segment(mask: Tensor, x0: float, y0: float, x1: float, y1: float, radius: float) -> None:
    """Set to 1 the pixels of (H, W) ``mask`` within ``radius`` of the segment (x0,y0)-(x1,y1) (a capsule)."""
    h, w = mask.shape
    left, right = max(0, math.floor(min(x0, x1) - radius)), min(w, math.ceil(max(x0, x1) + radius) + 1)
    top, bottom = max(0, math.floor(min(y0, y1) - radius)), min(h, math.ceil(max(y0, y1) + radius) + 1)
    if left >= right or top >= bottom:
        return
    ys = torch.arange(top, bottom, device=mask.device, dtype=torch.float32)[:, None]  # (h', 1)
    xs = torch.arange(left, right, device=mask.device, dtype=torch.float32)[None, :]  # (1, w')
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    if length2 > 0:
        t = (((xs - x0) * dx + (ys - y0) * dy) / length2).clamp(0.0, 1.0)  # (h', w') projection on the segment
    else:
        t = torch.zeros(1, 1, device=mask.device)
    dist2 = (xs - x0 - t * dx) ** 2 + (ys - y0 - t * dy) ** 2
    mask[top:bottom, left:right][dist2 <= radius * radius] = 1.0


def _irregular(mask: Tensor, cfg: MaskConfig, g: torch.Generator) -> None:
    h, w = mask.shape
    strokes = _randint(g, cfg.irregular_min_times, cfg.irregular_max_times + 2)
    for i in range(strokes):
        x, y = _randint(g, 0, w), _randint(g, 0, h)
        for _ in range(1 + _randint(g, 0, 5)):
            angle = 0.01 + _randint(g, 0, cfg.irregular_max_angle)
            if i % 2 == 0:  # even strokes turn the other way
                angle = 2 * math.pi - angle
            length = 10 + _randint(g, 0, cfg.irregular_max_len)
            brush = 5 + _randint(g, 0, cfg.irregular_max_width)
            x_end = min(max(int(x + length * math.sin(angle)), 0), w)
            y_end = min(max(int(y + length * math.cos(angle)), 0), h)
            _draw_segment(mask, x, y, x_end, y_end, brush / 2)
            x, y = x_end, y_end


def _boxes(mask: Tensor, cfg: MaskConfig, g: torch.Generator) -> None:
    h, w = mask.shape
    margin = cfg.box_margin
    max_size = min(cfg.box_max_size, h - 2 * margin, w - 2 * margin)
    if max_size <= cfg.box_min_size:
        raise ConfigError(f"A {h}x{w} image is too small for boxes of at least {cfg.box_min_size} px with a "
                          f"{margin} px margin; lower box_min_size/box_margin or use larger images.")
    for _ in range(_randint(g, cfg.box_min_times, cfg.box_max_times + 1)):
        bw, bh = _randint(g, cfg.box_min_size, max_size), _randint(g, cfg.box_min_size, max_size)
        x0, y0 = _randint(g, margin, w - margin - bw + 1), _randint(g, margin, h - margin - bh + 1)
        mask[y0:y0 + bh, x0:x0 + bw] = 1.0


def _outpainting(mask: Tensor, cfg: MaskConfig, g: torch.Generator) -> None:
    h, w = mask.shape

    def band(size: int) -> int:  # band width in pixels, uniform integer in [min·size, max·size)
        low, high = int(cfg.outpainting_min_padding * size), int(cfg.outpainting_max_padding * size)
        return _randint(g, low, high) if high > low else low

    widths = (band(w), band(h), band(w), band(h))  # left, top, right, bottom
    probs = cfg.outpainting_side_probs
    chosen = [_rand(g) < p for p in probs]
    if not any(chosen):
        weights = torch.tensor(probs, dtype=torch.float32, device=g.device)
        chosen[int(torch.multinomial(weights, 1, generator=g).item())] = True
    for side, (on, width) in enumerate(zip(chosen, widths)):
        if on and width > 0:
            if side == 0:
                mask[:, :width] = 1.0
            elif side == 1:
                mask[:width, :] = 1.0
            elif side == 2:
                mask[:, w - width:] = 1.0
            else:
                mask[h - width:, :] = 1.0


_DRAW = (_irregular, _boxes, _outpainting)


def random_masks_with_kinds(n: int, height: int, width: int, config: MaskConfig,
                            generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Like :func:`random_masks`, and also the (n,) long index into :data:`MASK_KINDS` of each mask's kind."""
    if n < 0 or height < 1 or width < 1:
        raise ConfigError(f"Need n >= 0 and a positive mask size, got n={n}, {height}x{width}.")
    g = generator
    probs = torch.tensor(config.kind_probs(), dtype=torch.float32, device=g.device)
    kinds = (torch.multinomial(probs, n, replacement=True, generator=g) if n else
             torch.zeros(0, dtype=torch.long, device=g.device))
    masks = torch.zeros(n, 1, height, width, device=g.device)  # (n, 1, H, W)
    for i, kind in enumerate(kinds.tolist()):
        _DRAW[kind](masks[i, 0], config, g)
    return masks, kinds


def random_masks(n: int, height: int, width: int, config: MaskConfig, generator: torch.Generator) -> Tensor:
    """(n, 1, H, W) float32 masks in {0, 1} (1 = hole), each of one kind drawn with ``config``'s probabilities;
    on the generator's device and reproducible from its state."""
    return random_masks_with_kinds(n, height, width, config, generator)[0]


def random_masks_in_range(n: int, height: int, width: int, config: MaskConfig, generator: torch.Generator,
                          hole_range: tuple[float, float] = EVAL_HOLE_RANGE, max_draws: int = 1000) -> Tensor:
    """(n, 1, H, W) masks as :func:`random_masks`, each redrawn from ``generator`` until its hole fraction
    lies in [low, high] (so the result is still a function of the generator's state).

    InputError when the image is smaller than ``config.min_side``; ConfigError for a bad range or when
    ``max_draws`` draws in a row miss it (the range does not suit the config at this size).
    """
    low, high = hole_range
    if not 0.0 <= low <= high <= 1.0:
        raise ConfigError(f"hole range must satisfy 0 <= min <= max <= 1, got {low}, {high}.")
    if min(height, width) < config.min_side:
        raise InputError(f"a {width}x{height} image is smaller than the {config.min_side}x{config.min_side} "
                         f"pixels the masks need (box size and margins).")
    masks = []
    for _ in range(n):
        for _ in range(max_draws):
            mask = random_masks(1, height, width, config, generator)  # (1, 1, H, W)
            if low <= mask.mean().item() <= high:
                break
        else:
            raise ConfigError(f"no {width}x{height} mask with a hole fraction in [{low}, {high}] in {max_draws} "
                              f"draws; widen the range or change the mask config.")
        masks.append(mask)
    return torch.cat(masks) if masks else torch.zeros(0, 1, height, width, device=generator.device)
