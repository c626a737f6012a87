"""Score a folder of restored images: the library side of `resshift eval` (and later `resshift benchmark`).

* Full reference (`gt` given): each prediction is paired with the ground-truth file of the same stem
  (`pred/img_001.png` <-> `gt/img_001.jpg`); PSNR and SSIM on the BT.601 Y channel by default
  (`y_channel=False`: on RGB), ST-LPIPS (VGG) on RGB when the stlpips-pytorch package is installed.
* No reference (`gt=None`): NIQE of each prediction.

`crop_border` pixels are removed on each side before every metric. Greyscale files are read as RGB
with three equal channels, so their Y-channel metrics are those of the grey values themselves; an
alpha channel is ignored.

Nothing here stops at a bad file: unmatched names, size mismatches, non-image or unreadable files and
images too small for a metric become `Problem`s (one line naming the file) and the rest is scored.

Identical images have PSNR = inf. Means are taken over the finite values only (the number left out
is in `Report.infinite`); a metric whose every value is inf has mean inf. JSON writes inf as "inf".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .data import KEY_DEGRADE, keyed_generator
from .degradations.masks import EVAL_HOLE_RANGE, MaskConfig, random_masks_in_range
from .errors import CheckpointError, InputError, ResShiftError
from .fileio import atomic_write_csv, atomic_write_json
from .holes import telea_inpaint
from .imageio import IMAGE_SUFFIXES, Image, list_image_files, read_image
from .metrics import STLPIPS, blockiness, niqe, phase_variance, psnr, rgb_to_y, ssim
from .metrics.psnr_ssim import PEAK, to_255
from .pipeline import ResShiftPipeline
from .batch import RestoreOptions, find_inputs
from .tasks import restore_image

__all__ = ["FULL_REFERENCE", "METRICS", "NO_REFERENCE", "Problem", "Report", "Row", "evaluate_folders",
           "hole_psnr", "hole_shift_rms", "hole_stlpips", "images_by_stem", "masked_eval_set", "model_inpaint",
           "paste_into_holes", "telea_inpaint"]

FULL_REFERENCE = ("psnr", "ssim", "stlpips")
NO_REFERENCE = ("niqe", "blockiness")
# On request only: the sub-pixel phase variance of the error (a grid tied to the scale; lower is better).
OPTIONAL = ("phase",)
METRICS = FULL_REFERENCE + NO_REFERENCE + OPTIONAL
NEEDS_GT = FULL_REFERENCE + OPTIONAL
LABELS = {"psnr": "PSNR", "ssim": "SSIM", "stlpips": "ST-LPIPS", "niqe": "NIQE", "blockiness": "Blockiness",
          "phase": "Phase var"}
DIGITS = {"psnr": 2, "ssim": 4, "stlpips": 4, "niqe": 4, "blockiness": 3, "phase": 7}


@dataclass(frozen=True)
class Problem:
    file: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


@dataclass(frozen=True)
class Row:
    name: str                 # the shared file stem
    pred: Path
    gt: Optional[Path]
    values: dict[str, float]  # metric name -> value


@dataclass
class Report:
    """Per-image scores, their means, and every file that was skipped (with why)."""

    metrics: tuple[str, ...]  # the metrics computed (ST-LPIPS is dropped when its package is missing)
    crop_border: int = 0
    y_channel: bool = True
    rows: list[Row] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # not problems: e.g. a metric that is unavailable

    @property
    def count(self) -> int:
        return len(self.rows)

    @property
    def infinite(self) -> dict[str, int]:
        """Metric -> how many of its values are inf (identical images under PSNR), left out of the mean."""
        return {m: sum(math.isinf(r.values[m]) for r in self.rows) for m in self.metrics}

    @property
    def means(self) -> dict[str, float]:
        """Mean of each metric over its finite values; inf when all are inf; nan when nothing was scored."""
        means = {}
        for m in self.metrics:
            values = [r.values[m] for r in self.rows]
            finite = [v for v in values if math.isfinite(v)]
            means[m] = float(np.mean(finite)) if finite else (math.inf if values else math.nan)
        return means

    def to_dict(self) -> dict:
        return {"metrics": list(self.metrics), "crop_border": self.crop_border, "y_channel": self.y_channel,
                "count": self.count, "mean": {m: _json_number(v) for m, v in self.means.items()},
                "infinite": self.infinite,
                "images": [{"name": r.name, "pred": str(r.pred), "gt": None if r.gt is None else str(r.gt),
                            **{m: _json_number(v) for m, v in r.values.items()}} for r in self.rows],
                "problems": [{"file": str(p.file), "reason": p.reason} for p in self.problems],
                "notes": list(self.notes)}

    def write_json(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    def write_csv(self, path: str | Path) -> None:
        """One row per scored image: image, pred, gt, then one column per metric (no mean row)."""
        atomic_write_csv(path, ["image", "pred", "gt", *self.metrics],
                         ([r.name, r.pred, r.gt or "", *(repr(r.values[m]) for m in self.metrics)]
                          for r in self.rows))

    def table(self, per_image: bool = False) -> str:
        """A text table: optional per-image rows, then the mean row with the image count."""
        header = ["image", *(LABELS[m] for m in self.metrics)]
        lines = [[r.name, *(_fmt(m, r.values[m]) for m in self.metrics)] for r in self.rows] if per_image else []
        means = self.means
        lines.append([f"mean (n={self.count})", *(_fmt(m, means[m]) for m in self.metrics)])
        widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
        render = [header[0].ljust(widths[0]) + "".join(f"  {c:>{w}}" for c, w in zip(header[1:], widths[1:]))]
        for row in lines:
            render.append(row[0].ljust(widths[0]) + "".join(f"  {c:>{w}}" for c, w in zip(row[1:], widths[1:])))
        return "\n".join(render)


def _fmt(metric: str, value: float) -> str:
    return f"{value:.{DIGITS[metric]}f}" if math.isfinite(value) else str(value)


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)  # JSON has no inf/nan: "inf", "nan"


def images_by_stem(folder: str | Path, role: str) -> tuple[dict[str, Path], list[Problem]]:
    """A folder's image files by stem, and a Problem for each other file or repeated stem.

    InputError (a usage error) when the folder is missing or holds no images.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"--{role} {folder}: not a folder")
    try:
        images = find_inputs(str(folder)).files
    except InputError as err:
        raise InputError(f"--{role} {folder}: no images found ({', '.join(IMAGE_SUFFIXES)})") from err
    taken = set(images)
    problems = [Problem(p, "not an image file (skipped)") for p in sorted(folder.iterdir())
                if p.is_file() and not p.name.startswith(".") and p not in taken]
    by_stem: dict[str, Path] = {}
    for path in images:
        if path.stem in by_stem:
            problems.append(Problem(path, f"same name as {by_stem[path.stem].name} (skipped)"))
        else:
            by_stem[path.stem] = path
    return by_stem, problems


def _strip_suffix(by_stem: dict[str, Path], suffix: str, problems: list[Problem]) -> dict[str, Path]:
    """Re-key images by their stem without `suffix`; a file whose new key is taken becomes a Problem
    (files that carry the suffix come first: they are the predictions the user named)."""
    if not suffix:
        return by_stem
    stripped: dict[str, Path] = {}
    for stem, path in sorted(by_stem.items(), key=lambda item: (not item[0].endswith(suffix), item[0])):
        key = stem.removesuffix(suffix) or stem     # a file named just "_out.png" keeps its name
        if key in stripped:
            problems.append(Problem(path, f"pairs with the same name as {stripped[key].name} once "
                                          f"--pred-suffix {suffix!r} is removed (skipped)"))
        else:
            stripped[key] = path
    return stripped


def _load_stlpips(metrics: Sequence[str], notes: list[str], device: torch.device) -> Optional[STLPIPS]:
    if "stlpips" not in metrics:
        return None
    try:
        return STLPIPS.from_package("vgg").to(device)
    except CheckpointError as err:
        notes.append(f"ST-LPIPS column skipped: {err}")
        return None


def _to_batch(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].to(device)  # (1, 3, H, W)


def _crop(pixels: np.ndarray, border: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    if border and min(h, w) <= 2 * border:
        raise InputError(f"a {h}x{w} image is too small for --crop-border {border}")
    return pixels[border:h - border, border:w - border] if border else pixels


def _score(pred: np.ndarray, gt: Optional[np.ndarray], metrics: Sequence[str], crop_border: int,
           y_channel: bool, lpips: Optional[STLPIPS], device: torch.device, scale: int) -> dict[str, float]:
    """All metrics of one image (pair); InputError when one of them cannot be computed."""
    values = {}
    for m in metrics:
        if m == "blockiness":            # the whole image: the JPEG grid starts at its first pixel
            values[m] = blockiness(pred, scale)
        elif m == "phase":               # the whole image: the grid is tied to the first output pixel
            values[m] = _phase(pred, gt, max(scale, 2))
        elif m == "psnr":
            values[m] = psnr(pred, gt, crop_border, y_channel)
        elif m == "ssim":
            values[m] = ssim(pred, gt, crop_border, y_channel)
        elif m == "niqe":
            values[m] = niqe(pred, crop_border)
        elif m == "stlpips" and lpips is not None:
            a, b = (_to_batch(_crop(x, crop_border), device) for x in (pred, gt))
            with torch.no_grad():
                values[m] = float(lpips(a, b)[0])
    return values


def _phase(pred: np.ndarray, gt: np.ndarray, period: int) -> float:
    """phase_variance of the error, with the metric's own one-line error for a too-small image."""
    try:
        return float(phase_variance(torch.from_numpy(pred - gt).permute(2, 0, 1)[None], period))
    except ValueError as err:
        raise InputError(str(err)) from err


def _read(path: Path, problems: list[Problem]) -> Optional[np.ndarray]:
    """The image's RGB pixels, or None with a Problem when it cannot be decoded."""
    try:
        return read_image(path).pixels
    except InputError as err:
        reason = str(err).removeprefix(f"{path}: ")  # read_image names the file itself
        problems.append(Problem(path, f"{reason} (skipped)"))
        return None


def evaluate_folders(pred: str | Path, gt: str | Path | None = None, metrics: Sequence[str] | None = None,
                     crop_border: int = 0, y_channel: bool = True,
                     device: str | torch.device = "cpu", pred_suffix: str = "", scale: int = 1) -> Report:
    """Score every image in `pred` (against the same-stem image in `gt` when given) -> Report.

    `pred_suffix` is removed from the end of prediction stems before pairing and in the rows' names
    (`photo_out.png` <-> `photo.png` with "_out", as `resshift upscale` names its outputs).
    `metrics` defaults to psnr, ssim, stlpips with `gt` and to niqe and blockiness without; `scale` is how
    many times larger the predictions are than their inputs, which puts the inputs' 8x8 JPEG grid every
    8 * scale pixels (blockiness; 1: the images' own grid). Usage errors (unknown
    metric, full-reference metric without `gt`, missing or empty folder) raise InputError; problems
    with single files are recorded in `Report.problems` and those files skipped.
    """
    metrics = tuple(metrics or (FULL_REFERENCE if gt is not None else NO_REFERENCE))
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise InputError(f"unknown metric {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    if gt is None and any(m in NEEDS_GT for m in metrics):
        needing = ", ".join(m for m in metrics if m in NEEDS_GT)
        raise InputError(f"--metrics {needing}: needs --gt; without ground truth only "
                         f"{' and '.join(NO_REFERENCE)} can be computed")
    if crop_border < 0:
        raise InputError(f"--crop-border must be >= 0, got {crop_border}")
    device = torch.device(device)
    report = Report(metrics, crop_border, y_channel)
    preds, problems = images_by_stem(pred, "pred")
    report.problems += problems
    preds = _strip_suffix(preds, pred_suffix, report.problems)
    gts: dict[str, Path] = {}
    if gt is not None:
        gts, problems = images_by_stem(gt, "gt")
        report.problems += problems
        report.problems += [Problem(p, "no ground truth with this name in --gt (skipped)")
                            for s, p in preds.items() if s not in gts]
        report.problems += [Problem(p, "no prediction with this name in --pred (skipped)")
                            for s, p in gts.items() if s not in preds]

    lpips = _load_stlpips(metrics, report.notes, device)  # after the folders: usage errors come first
    if "stlpips" in metrics and lpips is None:
        report.metrics = tuple(m for m in metrics if m != "stlpips")
        if not report.metrics:
            raise ResShiftError(report.notes[-1])
    for stem, pred_path in sorted(preds.items()):
        gt_path = gts.get(stem)
        if gt is not None and gt_path is None:
            continue
        pred_pixels = _read(pred_path, report.problems)  # (H, W, 3) float32 in [0, 1]
        gt_pixels = None if gt_path is None else _read(gt_path, report.problems)
        if pred_pixels is None or (gt_path is not None and gt_pixels is None):
            continue
        if gt_pixels is not None and gt_pixels.shape != pred_pixels.shape:
            (h, w), (gh, gw) = pred_pixels.shape[:2], gt_pixels.shape[:2]
            report.problems.append(Problem(pred_path, f"size {w}x{h} differs from {gt_path} ({gw}x{gh}) (skipped)"))
            continue
        try:
            values = _score(pred_pixels, gt_pixels, report.metrics, crop_border, y_channel, lpips, device, scale)
        except InputError as err:
            report.problems.append(Problem(pred_path, f"{err} (skipped)"))
            continue
        report.rows.append(Row(stem, pred_path, gt_path, values))
    return report


# ------------------------------------------------------------------------------------ inpainting
# Scores inside the holes: mask (H, W) with 1 = hole, as `resshift inpaint` reads white. Every method is
# scored on the ground truth with its prediction pasted into the holes, so that what it does to the known
# pixels never counts.

def paste_into_holes(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W, 3) `pred` inside the holes and `gt` elsewhere; InputError when the shapes disagree."""
    if pred.shape != gt.shape or mask.shape != gt.shape[:2]:
        raise InputError(f"prediction {pred.shape}, ground truth {gt.shape} and mask {mask.shape} do not match")
    return np.where(mask[..., None] > 0.5, pred, gt)


def hole_psnr(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, y_channel: bool = True) -> float:
    """PSNR (dB) over the hole pixels only: 10 log10(255² / their MSE), on BT.601 Y or RGB; inf if equal."""
    holes = mask > 0.5
    if not holes.any():
        raise InputError("the mask has no hole: nothing to score")
    x, y = (rgb_to_y(a) if y_channel else to_255(a) for a in (paste_into_holes(pred, gt, mask), gt))
    mse = float(np.mean((x[holes] - y[holes]) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(PEAK**2 / mse)


SHIFTS = ((1, 2), (3, 7), (6, 13))   # pixel offsets of `hole_shift_rms`: odd and even, off every lattice


def hole_shift_rms(fill, masked: np.ndarray, mask: np.ndarray, filled: np.ndarray, shifts=SHIFTS) -> float:
    """How much a method's fill moves when the image moves: `fill(masked, mask)` run on the image shifted
    by each (dy, dx) (reflect-padded at the top and left, cropped back), the RMS difference from
    `filled` (the caller's unshifted `fill(masked, mask)`) over the hole pixels, in 8-bit levels,
    averaged over the shifts. A fill that follows the image scores about 0; a pattern tied to the grid
    of latent cells or attention windows (a plaid, to which ST-LPIPS is nearly blind) scores its
    amplitude."""
    holes = mask > 0.5
    if not holes.any():
        raise InputError("the mask has no hole: nothing to score")
    height, width = mask.shape
    differences = []
    for dy, dx in shifts:
        padded = fill(np.pad(masked, ((dy, 0), (dx, 0), (0, 0)), mode="reflect"),
                      np.pad(mask, ((dy, 0), (dx, 0)), mode="reflect"))
        moved = padded[dy:dy + height, dx:dx + width]
        differences.append(float(np.sqrt(np.mean((moved[holes] - filled[holes]) ** 2))) * PEAK)
    return float(np.mean(differences))


def hole_stlpips(lpips: STLPIPS, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray,
                 device: str | torch.device = "cpu") -> float:
    """ST-LPIPS between `gt` and `gt` with `pred` pasted into the holes.

    Only the holes differ, so only they count, seen with their surroundings as the network sees them;
    the distance is a mean over the whole image, so it grows with the hole area: compare methods on the
    same masks.
    """
    device = torch.device(device)
    pair = (paste_into_holes(pred, gt, mask), gt)
    a, b = (_to_batch(x.astype(np.float32, copy=False), device) for x in pair)  # the network's dtype
    with torch.no_grad():
        return float(lpips(a, b)[0])


def masked_eval_set(folder: str | Path, limit: int, seed: int) -> list[dict]:
    """The fixed inpainting set: the first `limit` images of `folder` (sorted), image i with one LaMa mixed
    mask (official parameters, redrawn until holes cover EVAL_HOLE_RANGE) from the generator keyed
    (seed, KEY_DEGRADE, i), the masks `resshift degrade --preset inpaint --seed S` writes.
    Returns [{name, gt (H, W, 3) float32, mask (H, W) float32 1 = hole, masked (gt with black holes)}]."""
    items = []
    for index, path in enumerate(list_image_files([folder])[:limit]):
        gt = read_image(path).pixels
        height, width = gt.shape[:2]
        generator = keyed_generator(seed, KEY_DEGRADE, index)
        mask = random_masks_in_range(1, height, width, MaskConfig(), generator, EVAL_HOLE_RANGE)[0, 0].numpy()
        items.append({"name": path.stem, "gt": gt, "mask": mask, "masked": gt * (1 - mask[..., None])})
    return items


def eight_bit(pixels: np.ndarray) -> np.ndarray:
    """Rounded to the 8-bit grid, as a written file, back in [0, 1] float32."""
    return (np.round(np.clip(pixels, 0, 1) * 255) / 255).astype(np.float32)


def model_inpaint(pipe: ResShiftPipeline, options: RestoreOptions, masked: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """An inpainting pipeline on one image, as `resshift inpaint` runs it (the options' noise seed; known
    pixels pasted back), rounded to 8 bits."""
    fill = torch.from_numpy(mask)[None, None]                                      # (1, 1, H, W)
    return eight_bit(restore_image(pipe, Image(pixels=masked), options, mask=fill).pixels)
