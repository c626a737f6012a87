"""What a run writes besides checkpoints: metrics.csv, TensorBoard events (optional), curves.png and
sample grids, all drawn with Pillow (no matplotlib). Used on the main process only."""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from resshift.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

COLUMNS = ("step", "loss", "mse", "perceptual", "phase", "shift", "gan", "critic", "distill", "inverse", "consistency",
           "lr", "grad_norm", "images_per_s", "data_frac", "val_psnr")


class MetricsLog:
    """metrics.csv (one row per logged step) plus TensorBoard scalars when tensorboard is installed.

    On resume the rows after the resumed step (written by the run that was killed) are dropped.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None, tensorboard: bool = True) -> None:
        self.path = run_dir / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as fp:
                self.rows = [r for r in csv.DictReader(fp) if r.get("step") and int(r["step"]) <= resume_step]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_bytes(self.path, buffer.getvalue().encode())
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step)
            except ImportError:
                log.info("TensorBoard logging off: pip install tensorboard to enable it")

    def write(self, row: dict[str, Any]) -> None:
        row = {k: _fmt(row.get(k)) for k in COLUMNS}
        self.rows.append(row)
        with open(self.path, "a", newline="") as fp:
            csv.DictWriter(fp, fieldnames=COLUMNS).writerow(row)
        if self.writer is not None:
            for key in COLUMNS[1:]:
                if row[key] != "":
                    self.writer.add_scalar(f"train/{key}" if key != "val_psnr" else "val/psnr_y",
                                           float(row[key]), int(row["step"]))

    def series(self, key: str) -> list[tuple[int, float]]:
        return [(int(r["step"]), float(r[key])) for r in self.rows if r.get(key) not in ("", None)]

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _fmt(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.8g}"
    return value


# --------------------------------------------------------------------------- pictures

def _font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


Series = tuple[str, str, Sequence[tuple[int, float]]]     # (legend, colour, (step, value) points)


def _plot(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], series: Sequence[Series], title: str,
          log_y: bool = False) -> None:
    """One panel: axes, min/max labels and one polyline per series inside `box`, on a shared scale; a
    panel of several series names each in its colour under the title."""
    left, top, right, bottom = box
    font = _font()
    draw.rectangle(box, outline="#888888")
    draw.text((left + 6, top + 4), title, fill="black", font=font)
    lines = [(colour, [(s, math.log10(v) if log_y else v) for s, v in points
                       if math.isfinite(v) and (v > 0 or not log_y)]) for _, colour, points in series]
    pts = [p for _, points in lines for p in points]
    if len(pts) < 1:
        draw.text((left + 6, top + 22), "no data yet", fill="#888888", font=font)
        return
    if len(series) > 1:
        x = left + 6 + int(draw.textlength(title, font=font)) + 12
        for legend, colour, _ in series:
            draw.text((x, top + 4), legend, fill=colour, font=font)
            x += int(draw.textlength(legend, font=font)) + 12
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1e-9
    inner = (left + 50, top + 24, right - 10, bottom - 20)

    def at(s: float, v: float) -> tuple[float, float]:
        return (inner[0] + (s - x0) / (x1 - x0) * (inner[2] - inner[0]),
                inner[3] - (v - y0) / (y1 - y0) * (inner[3] - inner[1]))

    label = (lambda v: f"{10 ** v:.3g}") if log_y else (lambda v: f"{v:.3g}")
    draw.text((left + 4, inner[1] - 6), label(y1), fill="black", font=font)
    draw.text((left + 4, inner[3] - 6), label(y0), fill="black", font=font)
    draw.text((inner[0], bottom - 16), f"step {x0}", fill="black", font=font)
    draw.text((inner[2] - 70, bottom - 16), f"step {x1}", fill="black", font=font)
    for colour, points in lines:
        line = [at(s, v) for s, v in points]
        if len(line) == 1:
            x, y = line[0]
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
        elif line:
            draw.line(line, fill=colour, width=2)


def draw_curves(metrics: MetricsLog, path: Path, panel: tuple[int, int] = (450, 360)) -> None:
    """curves.png: training loss (log scale) and validation PSNR-Y side by side; a run without validation
    but with the perceptual term shows that term (ST-LPIPS on the training crops) instead, and an
    adversarial run adds a third panel with the generator's adversarial loss beside the discriminator's."""
    right, title = metrics.series("val_psnr"), "validation PSNR-Y (dB), EMA model"
    perceptual = [(step, value) for step, value in metrics.series("perceptual") if value > 0]
    if not right and perceptual:
        right, title = perceptual, "ST-LPIPS on the training crops"
    panels = [([("loss", "#1f77b4", metrics.series("loss"))], "training loss", True),
              ([(title, "#d62728", right)], title, False)]
    adversarial = [(step, value) for step, value in metrics.series("critic") if value > 0]
    if adversarial:     # the steps where the discriminator trained
        steps = {step for step, _ in adversarial}
        generator = [(step, value) for step, value in metrics.series("gan") if step in steps]
        panels.append(([("generator", "#2ca02c", generator), ("discriminator", "#ff7f0e", adversarial)],
                       "adversarial losses", False))
    width, height = panel
    image = Image.new("RGB", (width * len(panels), height), "white")
    draw = ImageDraw.Draw(image)
    for index, (series, name, log_y) in enumerate(panels):
        _plot(draw, (index * width + 5, 5, (index + 1) * width - 5, height - 5), series, name, log_y=log_y)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def sample_grid(rows: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], path: Path,
                labels: Sequence[str] = ("LR (nearest)", "output", "HR")) -> None:
    """A PNG with one row per image: LR upscaled (nearest) | output | HR, each (3, H, W) in [0, 1]."""
    tiles = []
    for lq, out, hq in rows:
        height, width = hq.shape[-2:]
        up = torch.nn.functional.interpolate(lq[None].float(), size=(height, width), mode="nearest")[0]
        tiles.append([to_uint8(up), to_uint8(out[..., :height, :width]), to_uint8(hq)])
    header, gap = 18, 4
    cell_w = max(t[0].shape[1] for t in tiles)
    heights = [t[0].shape[0] for t in tiles]
    image = Image.new("RGB", (3 * cell_w + 4 * gap, header + sum(heights) + gap * (len(tiles) + 1)), "white")
    draw = ImageDraw.Draw(image)
    for column, label in enumerate(labels):
        draw.text((gap + column * (cell_w + gap), 3), label, fill="black", font=_font())
    y = header + gap
    for row, height in zip(tiles, heights):
        for column, array in enumerate(row):
            image.paste(Image.fromarray(array), (gap + column * (cell_w + gap), y))
        y += height + gap
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
