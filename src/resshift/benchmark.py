"""Benchmark a model against bicubic, Lanczos and (optionally) learned peers on one image set: the library
side of `resshift benchmark`.

Inputs, one per image of the set (sorted by name; `limit` keeps the first N):

* reference (default): the image is the ground truth, cropped to a multiple of the scale; its LR input
  is made by `degradation` ('bicubic': MATLAB imresize; 'realesrgan': the second-order pipeline with
  one draw per image from a generator keyed by (seed, the image's index), so runs are reproducible);
* given pairs (`lq`): the LR input is the same-stem image in the `lq` folder, not degraded again;
* no reference (`no_reference`): the images themselves are the LR inputs (real photos), NIQE only.

Every method turns each LR input into an output of `scale` times its size; outputs go to
`out/<method>/NAME.png` beside `out/lr/` and `out/gt/`, each call is timed (wall clock, after one
warm-up call per method), and each method folder is scored by `evaluation.evaluate_folders`
(PSNR/SSIM on Y and ST-LPIPS with a `scale`-pixel border crop; NIQE without reference).
Images whose LR input is under 8 pixels a side, or that cannot be read, are reported and skipped.
"""

from __future__ import annotations

import io
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from .data import KEY_DEGRADE, center_crop, degrade_batch, keyed_generator
from .degradations import imresize
from .errors import InputError
from .evaluation import DIGITS, LABELS, Problem, Report, eight_bit, evaluate_folders, images_by_stem
from .fileio import atomic_write_bytes, atomic_write_csv, atomic_write_json
from .imageio import Image, from_tensor, read_image, to_tensor, write_image
from .peers import PeerUpscaler, find_peers
from .pipeline import ResShiftPipeline
from .batch import RestoreOptions, choose_tile, resize
from .tasks import restore_image

__all__ = ["DEGRADATIONS", "BenchmarkOptions", "BenchmarkResult", "Method", "MethodResult", "comparison_grid",
           "format_metric", "run_benchmark"]

DEGRADATIONS = ("bicubic", "realesrgan")
# The pipeline pads any size, but below 8 LR pixels a side the model sees mostly its own padding and
# the `scale`-pixel border crop of the metrics leaves almost nothing to score.
MIN_LR_SIDE = 8
WARMUP_SIDE = 32          # the warm-up call runs on this corner of the first input
GAP, BAND = 4, 14         # grid: space between cells; height of a text band (PIL's default font)
CROP_BOX = "red"

Upscaler = Callable[[np.ndarray], np.ndarray]  # (h, w, 3) float32 in [0, 1] -> (s*h, s*w, 3)


@dataclass(frozen=True)
class Method:
    name: str           # output folder and table row
    title: str          # grid column title
    upscale: Upscaler
    about: str          # what it is, for benchmark.json


@dataclass(frozen=True)
class BenchmarkOptions:
    degradation: str = "bicubic"
    seed: int = 0                        # degradation seed
    lq: Optional[Path] = None            # given LR inputs, matched by stem (no degradation)
    no_reference: bool = False           # the set's images are the LR inputs; NIQE only
    limit: Optional[int] = None          # only the first N images
    peers: bool = False
    threads: int = 1                     # CPU threads of the peers
    grid_count: int = 4                  # images in grid.png
    grid_cell: int = 192                 # pixels per grid cell
    overwrite: bool = False              # replace this command's folders and files in a non-empty output
    metrics_device: str = "cpu"          # where ST-LPIPS runs
    metrics: Optional[tuple[str, ...]] = None   # default: resshift eval's (with or without ground truth)

    def __post_init__(self) -> None:
        if self.degradation not in DEGRADATIONS:
            raise InputError(f"unknown degradation {self.degradation!r}; choose from {', '.join(DEGRADATIONS)}")
        if self.no_reference and self.lq is not None:
            raise InputError("--lq gives LR inputs for ground truth; with --no-reference the set itself is the LR")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"--limit must be at least 1, got {self.limit}")


@dataclass(frozen=True)
class Sample:
    name: str
    lr: np.ndarray                  # (h, w, 3) float32 on the 8-bit grid, as written to lr/
    gt: Optional[np.ndarray]        # (s*h, s*w, 3) or None without reference


@dataclass
class MethodResult:
    name: str
    title: str
    about: str
    seconds: list[float]            # wall clock per image
    report: Report

    @property
    def seconds_per_image(self) -> float:
        return float(np.mean(self.seconds)) if self.seconds else math.nan


@dataclass
class BenchmarkResult:
    """One row per method: mean scores and seconds per image; inputs skipped (with why) in `problems`."""

    set_folder: Path
    options: BenchmarkOptions
    scale: int
    methods: list[MethodResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def inputs(self) -> str:
        if self.options.no_reference:
            return "given LR (no reference)"
        return f"given LR ({self.options.lq})" if self.options.lq else self.options.degradation

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.methods[0].report.metrics if self.methods else ()

    def table(self) -> str:
        header = ["method", "images", *(LABELS[m] for m in self.metrics), "s/image"]
        lines = [[r.name, str(r.report.count), *(format_metric(m, r.report.means[m]) for m in self.metrics),
                  f"{r.seconds_per_image:.3g}"] for r in self.methods]
        widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
        return "\n".join(row[0].ljust(widths[0]) + "".join(f"  {c:>{w}}" for c, w in zip(row[1:], widths[1:]))
                         for row in [header, *lines])

    def to_dict(self) -> dict:
        return {"set": str(self.set_folder), "inputs": self.inputs, "seed": self.options.seed,
                "scale": self.scale, "metrics": list(self.metrics),
                "methods": [{"name": r.name, "title": r.title, "about": r.about,
                             "seconds_per_image": r.seconds_per_image,
                             "seconds": r.seconds, **r.report.to_dict()} for r in self.methods],
                "problems": [{"file": str(p.file), "reason": p.reason} for p in self.problems],
                "notes": list(self.notes)}

    def write_json(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    def write_csv(self, path: str | Path) -> None:
        """One row per method: name, images scored, the metrics' means, seconds per image."""
        atomic_write_csv(path, ["method", "images", *self.metrics, "seconds_per_image"],
                         ([r.name, r.report.count, *(repr(r.report.means[m]) for m in self.metrics),
                           repr(r.seconds_per_image)] for r in self.methods))


def format_metric(metric: str, value: float) -> str:
    """A metric's value with its usual digits (PSNR 2, the others 4); inf and nan as words."""
    return f"{value:.{DIGITS[metric]}f}" if math.isfinite(value) else str(value)


# ------------------------------------------------------------------------------------------ methods
def bicubic_method(scale: int) -> Method:
    """MATLAB bicubic interpolation, the baseline SR papers report."""
    return Method("bicubic", "bicubic", lambda lr: from_tensor(imresize(to_tensor(lr), scale=scale)),
                  "MATLAB-style bicubic imresize")


def lanczos_method(scale: int) -> Method:
    """PIL's Lanczos, what photo software does (via `upscale.resize`)."""
    return Method("lanczos", "Lanczos", lambda lr: resize(lr, (lr.shape[0] * scale, lr.shape[1] * scale)),
                  "PIL Lanczos")


def model_method(pipe: ResShiftPipeline, name: str, options: RestoreOptions) -> Method:
    """The model as `resshift upscale` runs it: same seed for every image, tile from free memory unless given."""
    def upscale(lr: np.ndarray) -> np.ndarray:
        tile = options.tile or None                                    # 0: untiled
        if options.tile is None:
            tile = choose_tile(pipe, lr.shape[0], lr.shape[1], pipe.config.scale)[0]
        return restore_image(pipe, Image(pixels=lr), options, tile=tile).pixels

    about = (f"ResShift {pipe.config.task} x{pipe.config.scale}, {options.steps or pipe.config.schedule.num_steps} "
             f"steps, seed {options.seed}, {str(pipe.dtype).removeprefix('torch.')} on {pipe.device}")
    return Method(name, f"ResShift ({name})", upscale, about)


def peer_methods(scale: int, threads: int, notes: list[str]) -> list[Method]:
    methods = []
    for peer, param, weights in find_peers():
        if peer.scale != scale:
            notes.append(f"{peer.name} left out: it upscales x{peer.scale}, the benchmark x{scale}")
            continue
        about = (f"{peer.distribution} {peer.version} {Path(peer.param).stem} on the CPU (ncnn, fp32, "
                 f"{threads} threads); trained on {peer.trained_on}")
        methods.append(Method(peer.name, peer.title, PeerUpscaler(peer, param, weights, threads), about))
    return methods


# ------------------------------------------------------------------------------------------- inputs
def _make_sample(name: str, index: int, pixels: np.ndarray, lq_path: Optional[Path], scale: int,
                 options: BenchmarkOptions) -> Sample:
    if options.no_reference:
        return Sample(name, eight_bit(pixels), None)
    if lq_path is not None:
        lr = read_image(lq_path).pixels
        if pixels.shape[:2] != (lr.shape[0] * scale, lr.shape[1] * scale):
            raise InputError(f"size {pixels.shape[1]}x{pixels.shape[0]} is not x{scale} of its LR input "
                             f"{lq_path} ({lr.shape[1]}x{lr.shape[0]})")
        return Sample(name, eight_bit(lr), pixels)
    gt = center_crop(pixels, None, scale)
    generator = keyed_generator(options.seed, KEY_DEGRADE, index)     # one fixed draw per image
    lr = degrade_batch(to_tensor(gt), options.degradation, scale, generator)
    return Sample(name, eight_bit(from_tensor(lr)), gt)


def load_samples(set_folder: Path, scale: int, options: BenchmarkOptions) -> tuple[list[Sample], list[Problem]]:
    """The benchmark's inputs (see the module docstring) and a Problem for each image skipped."""
    images, problems = images_by_stem(set_folder, "set")
    given = images_by_stem(options.lq, "lq")[0] if options.lq is not None else {}
    samples = []
    for index, name in enumerate(sorted(images)[: options.limit]):
        path = images[name]
        if options.lq is not None and name not in given:
            problems.append(Problem(path, f"no LR input with this name in --lq {options.lq} (skipped)"))
            continue
        try:
            sample = _make_sample(name, index, read_image(path).pixels, given.get(name), scale, options)
        except InputError as err:
            problems.append(Problem(path, f"{str(err).removeprefix(f'{path}: ')} (skipped)"))
            continue
        h, w = sample.lr.shape[:2]
        if min(h, w) < MIN_LR_SIDE:
            problems.append(Problem(path, f"LR input {w}x{h} is smaller than the minimum of {MIN_LR_SIDE} "
                                          "pixels a side (skipped)"))
            continue
        samples.append(sample)
    return samples, problems


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out}: is a file, not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"-o {out}: folder exists and is not empty (use --overwrite)")


def _make_folders(out: Path, folders: Sequence[str]) -> None:
    """Empty (or create) this command's own folders, so that stale outputs of an earlier run are not scored."""
    for name in folders:
        shutil.rmtree(out / name, ignore_errors=True)
        (out / name).mkdir(parents=True)


def _write(folder: Path, name: str, pixels: np.ndarray) -> None:
    write_image(folder / f"{name}.png", Image(pixels=pixels), overwrite=True)


# -------------------------------------------------------------------------------------------- run
def _timed_outputs(method: Method, samples: Sequence[Sample], folder: Path, scale: int) -> list[float]:
    """Run `method` on every sample (after one warm-up call), write the outputs; seconds per image."""
    method.upscale(samples[0].lr[:WARMUP_SIDE, :WARMUP_SIDE])      # lazy loads, CUDA context, caches
    seconds = []
    for sample in samples:
        start = time.perf_counter()
        output = method.upscale(sample.lr)
        seconds.append(time.perf_counter() - start)
        h, w = sample.lr.shape[:2]
        if output.shape[:2] != (h * scale, w * scale):
            raise InputError(f"{method.name}: returned {output.shape[1]}x{output.shape[0]} for the "
                             f"{w}x{h} input {sample.name}, expected x{scale}")
        _write(folder, sample.name, output)
    return seconds


def run_benchmark(models: Mapping[str, ResShiftPipeline], set_folder: str | Path, out: str | Path,
                  options: BenchmarkOptions = BenchmarkOptions(), *,
                  restore_options: RestoreOptions = RestoreOptions(), scale: int = 4) -> BenchmarkResult:
    """Make the inputs, run bicubic, Lanczos, the `models` (name -> pipeline, side by side on the same
    inputs and noise; none: baselines only) and the peers, score them, and write `out/benchmark.json`,
    `out/benchmark.csv` and `out/grid.png`.

    `scale` is used only without a model; the models' own scale wins (they must share it). InputError
    for usage problems (bad folders, a non-empty output without `overwrite`, no usable image, models of
    different scales, a model name taken); ConfigError when peers are asked for and not installed.
    """
    set_folder, out = Path(set_folder).expanduser(), Path(out).expanduser()
    _check_output(out, options.overwrite)
    scales = {pipe.config.scale for pipe in models.values()}
    if len(scales) > 1:
        raise InputError(f"the models have different scales ({', '.join(map(str, sorted(scales)))}); "
                         "benchmark models of one scale together")
    scale = scales.pop() if scales else scale
    result = BenchmarkResult(set_folder, options, scale)
    methods = [bicubic_method(scale), lanczos_method(scale)]
    methods += [model_method(pipe, name, restore_options) for name, pipe in models.items()]
    if options.peers:
        methods += peer_methods(scale, options.threads, result.notes)
    folders = ["lr", *([] if options.no_reference else ["gt"]), *(m.name for m in methods)]
    taken = sorted({name for name in folders if folders.count(name) > 1})
    if taken:
        raise InputError(f"model name {taken[0]!r} is taken by another folder of the benchmark; rename it")
    samples, result.problems = load_samples(set_folder, scale, options)
    if not samples:
        first = f"; the first: {result.problems[0]}" if result.problems else ""
        raise InputError(f"--set {set_folder}: no usable image ({len(result.problems)} skipped{first})")
    _make_folders(out, folders)
    for sample in samples:
        _write(out / "lr", sample.name, sample.lr)
        if sample.gt is not None:
            _write(out / "gt", sample.name, sample.gt)
    gt_folder = None if options.no_reference else out / "gt"
    for method in methods:
        seconds = _timed_outputs(method, samples, out / method.name, scale)
        report = evaluate_folders(out / method.name, gt_folder, metrics=options.metrics,
                                  crop_border=0 if gt_folder is None else scale, device=options.metrics_device,
                                  scale=scale)
        result.notes += [n for n in report.notes if n not in result.notes]
        result.methods.append(MethodResult(method.name, method.title, method.about, seconds, report))
    result.write_json(out / "benchmark.json")
    result.write_csv(out / "benchmark.csv")
    columns = [("LR (nearest)", out / "lr"), *((m.title, out / m.name) for m in methods)]
    if gt_folder is not None:
        columns.append(("ground truth", gt_folder))
    comparison_grid([s.name for s in samples[: options.grid_count]], columns, out / "grid.png", scale,
                    options.grid_cell)
    return result


# ------------------------------------------------------------------------------------------- grid
def grid_size(rows: int, columns: int, cell: int) -> tuple[int, int]:
    """(width, height) of `comparison_grid`: a title band, then per image a name band, the full view
    and the zoomed crop, each `cell` pixels square, GAP pixels apart."""
    return GAP + columns * (cell + GAP), BAND + rows * (BAND + 2 * cell + 2 * GAP) + GAP


def _crop_box(height: int, width: int, scale: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom): a centre square a quarter of the short side, on the LR pixel grid."""
    side = max(scale, min(height, width) // 4 // scale * scale)
    top, left = (height - side) // 2 // scale * scale, (width - side) // 2 // scale * scale
    return left, top, left + side, top + side


def _fit(image: PILImage.Image, cell: int) -> tuple[PILImage.Image, float]:
    """The image scaled to fit in cell x cell, and that scale."""
    factor = cell / max(image.size)
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, PILImage.Resampling.LANCZOS if factor < 1 else PILImage.Resampling.NEAREST), factor


def _load_view(folder: Path, name: str, size: tuple[int, int]) -> PILImage.Image:
    """A column's image at the output size (LR inputs are enlarged with nearest neighbours)."""
    pixels = read_image(folder / f"{name}.png").pixels
    image = PILImage.fromarray((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8))
    return image if image.size == size else image.resize(size, PILImage.Resampling.NEAREST)


def comparison_grid(names: Sequence[str], columns: Sequence[tuple[str, Path]], path: Path, scale: int,
                    cell: int = 192) -> None:
    """One row per image, one column per (title, folder): the full view with the crop box drawn, and
    the crop enlarged below it; the image name above each row."""
    width, height = grid_size(len(names), len(columns), cell)
    grid = PILImage.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for c, (title, _) in enumerate(columns):
        draw.text((GAP + c * (cell + GAP), 1), title, fill="black", font=font)
    for r, name in enumerate(names):
        top = BAND + r * (BAND + 2 * cell + 2 * GAP)
        draw.text((GAP, top + 1), name, fill="black", font=font)
        reference = read_image(columns[-1][1] / f"{name}.png").pixels.shape  # the last column is full size
        size = (reference[1], reference[0])
        box = _crop_box(reference[0], reference[1], scale)
        for c, (_, folder) in enumerate(columns):
            left = GAP + c * (cell + GAP)
            image = _load_view(folder, name, size)
            view, factor = _fit(image, cell)
            grid.paste(view, (left, top + BAND))
            x0, y0, x1, y1 = (round(v * factor) for v in box)
            draw.rectangle((left + x0, top + BAND + y0, left + x1, top + BAND + y1), outline=CROP_BOX)
            zoom = image.crop(box).resize((cell, cell), PILImage.Resampling.NEAREST)
            grid.paste(zoom, (left, top + BAND + cell + GAP))
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
