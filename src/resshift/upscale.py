"""Upscale and restore photo files in batches: the library side of `resshift upscale`.

* `find_inputs`: a file, a folder (optionally recursive) or a glob -> sorted image files.
* `plan_jobs`: input files -> (source, target) pairs; a target that would overwrite an input or
  collide with another target is refused for that file alone.
* `upscale_image`: one decoded `imageio.Image` -> its restoration at any `outscale`: the model's
  own scale, then a resize (Lanczos to enlarge, area averaging to shrink). Alpha is resized apart
  and kept; grey, 16-bit, ICC and EXIF are carried over.
* `run_batch`: skip finished outputs (so a killed run resumes), read, choose a tile, restore and
  write atomically; a bad file is recorded with a one-line reason and the batch goes on. One
  mechanism for every command: a per-task `Restore` callable (`upscale_job` by default) turns a
  job's decoded image into its output, and may return a note (e.g. "the mask is empty").
* `Ranks`: under torchrun each rank takes every world-th job and the ranks gather their summaries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import glob
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import takewhile
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage
from tqdm import tqdm

from . import memory
from .color import adain_color_fix, wavelet_color_fix
from .errors import InputError, ResShiftError
from .imageio import DEFAULT_MAX_PIXELS, Image, from_tensor, read_image, to_tensor, write_image
from .pipeline import ResShiftPipeline

__all__ = ["COLOR_FIXES", "IMAGE_SUFFIXES", "Inputs", "Job", "Ranks", "Restore", "Summary", "UpscaleOptions",
           "choose_tile", "find_inputs", "latent_size", "output_size", "plan_jobs", "prepare_output_folder", "resize",
           "run_batch", "upscale_image", "upscale_job"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
COLOR_FIXES = {"none": None, "wavelet": wavelet_color_fix, "adain": adain_color_fix}
# Relative CPU cost of one tile through each network (official sizes: encode 1.85 s, one UNet step
# 0.81 s, decode 4.13 s per 64x64 latent), so that the per-image bar's ETA is about right.
ENCODE_COST, UNET_COST, DECODE_COST = 2, 1, 5


@dataclass(frozen=True)
class UpscaleOptions:
    """How each image is processed; None means the model's own value (or automatic, for `tile`)."""

    outscale: Optional[float] = None
    steps: Optional[int] = None
    seed: int = 12345
    tile: Optional[int] = None          # input pixels; None: automatic from free memory; 0: no tiling
    tile_overlap: Optional[int] = None  # input pixels; None: a quarter of the tile
    color_fix: str = "none"
    overwrite: bool = False
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS
    paste_back: bool = True             # inpainting: keep the known pixels exactly

    def __post_init__(self) -> None:
        if self.color_fix not in COLOR_FIXES:
            raise InputError(f"unknown colour fix {self.color_fix!r}; choose one of {', '.join(COLOR_FIXES)}")
        if self.outscale is not None and not self.outscale > 0:
            raise InputError(f"--outscale must be positive, got {self.outscale}")


# ---------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Inputs:
    files: list[Path]
    base: Path          # outputs keep the files' folders relative to this one
    single: bool        # the input named one file (so -o may name the output file)


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path
    error: Optional[str] = None     # refused before any work, e.g. the output would overwrite an input
    mask: Optional[Path] = None     # inpainting: the mask file matched to this input


def find_inputs(spec: str, recursive: bool = False) -> Inputs:
    """A file, a folder or a glob -> the image files it names, sorted; InputError when there are none.

    Folders and globs take files with an image extension only (not hidden ones); a named file is
    taken as it is, so that a wrong one gets a clear error later.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        found = path.rglob("*") if recursive else path.iterdir()
        files, base = [p for p in found if _is_image_name(p.relative_to(path)) and p.is_file()], path
    elif path.exists() or path.is_symlink():
        return Inputs([path], path.parent, single=True)
    elif glob.has_magic(spec):
        base = Path(*takewhile(lambda part: not glob.has_magic(part), Path(spec).expanduser().parts))
        matches = (Path(m) for m in glob.glob(str(path), recursive=recursive))
        files = [p for p in matches if _is_image_name(p.relative_to(base)) and p.is_file()]
    else:
        raise InputError(f"{spec}: no such file or folder")
    if not files:
        hint = "" if recursive or not path.is_dir() else "; use --recursive to look in subfolders"
        raise InputError(f"{spec}: no images found ({', '.join(IMAGE_SUFFIXES)}){hint}")
    return Inputs(sorted(files), base, single=False)


def _is_image_name(relative: Path) -> bool:
    return relative.suffix.lower() in IMAGE_SUFFIXES and not any(p.startswith(".") for p in relative.parts)


def plan_jobs(inputs: Inputs, output: Path, *, suffix: str = "_out", ext: str = "same") -> list[Job]:
    """Each input's output path: OUTPUT/<relative folder>/<stem><suffix>.<ext>, or OUTPUT itself when
    one file is given and OUTPUT has an image extension.

    With a non-empty suffix, an input that is exactly another input's output is a previous run's
    result, not an input (so that a folder upscaled into itself can be resumed). Outputs that would
    overwrite an input, or that two inputs share, are refused as per-file errors.
    """
    output = Path(output).expanduser()
    to_file = output.suffix.lower() in IMAGE_SUFFIXES and not output.is_dir()
    if to_file and not inputs.single:
        raise InputError(f"-o {output}: names one file, but the input holds several images; give a folder")
    targets = {source: output if to_file else _target(source, inputs.base, output, suffix, ext)
               for source in inputs.files}
    key = os.path.realpath
    produced = {key(target): source for source, target in targets.items()}
    if suffix:
        targets = {s: t for s, t in targets.items() if produced.get(key(s), s) == s}
    sources = {key(source): source for source in targets}
    claimed: dict[str, Path] = {}
    jobs = []
    for source, target in targets.items():
        error, other = None, sources.get(key(target))
        if other == source:
            error = (f"{source}: the output would be the input itself; refusing to overwrite an input "
                     "(change -o, --suffix or --ext)")
        elif other is not None:
            error = f"{source}: its output {target} is another input ({other}); refusing to overwrite it"
        elif key(target) in claimed:
            error = (f"{source}: its output {target} is also the output of {claimed[key(target)]} "
                     "(use --ext same or separate folders)")
        claimed.setdefault(key(target), source)
        jobs.append(Job(source, target, error))
    return jobs


def _target(source: Path, base: Path, output: Path, suffix: str, ext: str) -> Path:
    relative = source.relative_to(base) if source.is_relative_to(base) else Path(source.name)
    extension = source.suffix.lower() if ext == "same" else "." + ext.lower().lstrip(".")
    if extension not in IMAGE_SUFFIXES:
        extension = ".png"
    return output / relative.parent / f"{relative.stem}{suffix}{extension}"


# ------------------------------------------------------------------------------------ one image
def output_size(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) or (H, W, C) float32 -> `size` (h, w): Pillow's Lanczos to enlarge (float, so 16-bit
    detail survives), OpenCV's area averaging to shrink (no aliasing)."""
    height, width = size
    if array.shape[:2] == (height, width):
        return array
    if height * width < array.shape[0] * array.shape[1]:
        return cv2.resize(array, (width, height), interpolation=cv2.INTER_AREA)
    planes = array[..., None] if array.ndim == 2 else array
    resized = [np.asarray(PILImage.fromarray(np.ascontiguousarray(planes[..., c]), mode="F")
                          .resize((width, height), PILImage.Resampling.LANCZOS)) for c in range(planes.shape[2])]
    return resized[0] if array.ndim == 2 else np.stack(resized, axis=2)


def latent_size(pipe: ResShiftPipeline, height: int, width: int) -> tuple[int, int]:
    """The latent grid an input of this size runs on (after padding)."""
    multiple = pipe.input_multiple
    cond_scale = pipe.config.autoencoder.downsample_factor // pipe.config.scale
    return -(-height // multiple) * multiple // cond_scale, -(-width // multiple) * multiple // cond_scale


def choose_tile(pipe: ResShiftPipeline, height: int, width: int, scale: float,
                available: Optional[int] = None) -> tuple[Optional[int], int]:
    """Automatic tile (input pixels, None for no tiling) for an input of this size, and the bytes
    it is estimated to need beyond the loaded model (see `memory`)."""
    out_h, out_w = output_size(height, width, max(scale, pipe.config.scale))
    cond_scale = pipe.config.autoencoder.downsample_factor // pipe.config.scale
    tile, need = memory.auto_tile(latent_size(pipe, height, width), out_h * out_w,
                                  multiple=pipe.unet.config.size_multiple, device=pipe.device,
                                  dtype=pipe.dtype, available=available)
    return (None if tile is None else tile * cond_scale), need


@torch.inference_mode()
def upscale_image(pipe: ResShiftPipeline, image: Image, options: UpscaleOptions = UpscaleOptions(), *,
                  tile: Optional[int] = None, callback: Optional[Callable[[dict], None]] = None,
                  mask: Optional[torch.Tensor] = None) -> Image:
    """Restore `image` with the model and resize it to `options.outscale` times its size.

    `mask` (inpainting models only): (1, 1, h, w) in [0, 1], 1 marks the pixels to fill; the known
    pixels are pasted back unless `options.paste_back` is False.

    `tile`: input pixels per tile, None for untiled (`run_batch` takes `options.tile` or picks one
    from the free memory; an automatic tile cuts `options.tile_overlap` to half of it). The colour
    reference for `options.color_fix` is the input resized bicubically to the model's output size.
    The noise comes from a CPU generator seeded with `options.seed`, so an image's result does not
    depend on the device, on the batch order or on the other images.
    """
    height, width = image.pixels.shape[:2]
    lq = to_tensor(image.pixels).to(pipe.device)                       # (1, 3, h, w) in [0, 1]
    generator = torch.Generator().manual_seed(options.seed)
    overlap = options.tile_overlap if tile else None
    if overlap is not None and options.tile is None:       # automatic tile: keep the overlap sensible
        overlap = min(overlap, tile // 2)
    restored = pipe(lq, None if mask is None else mask.to(pipe.device), generator=generator,
                    steps=options.steps, paste_back=options.paste_back, tile=tile, tile_overlap=overlap,
                    callback=callback)
    fix = COLOR_FIXES[options.color_fix]
    if fix is not None:
        reference = F.interpolate(lq, size=restored.shape[-2:], mode="bicubic").clamp_(0, 1)
        restored = fix(restored, reference)
        del reference
    pixels = from_tensor(restored.clamp_(0, 1))                        # (H, W, 3) float32
    del restored, lq
    size = output_size(height, width, options.outscale or pipe.config.scale)
    alpha = None if image.alpha is None else np.clip(resize(image.alpha, size), 0, 1)
    return dataclasses.replace(image, pixels=resize(pixels, size), alpha=alpha)


# ---------------------------------------------------------------------------------------- batches
# (pipe, job, decoded input, options, *, tile, callback) -> (output image, optional one-line note);
# raises ResShiftError (naming job.source) for a file it cannot process, before anything is written.
Restore = Callable[..., tuple[Image, Optional[str]]]


def upscale_job(pipe: ResShiftPipeline, job: Job, image: Image, options: UpscaleOptions, *,
                tile: Optional[int], callback: Optional[Callable[[dict], None]]) -> tuple[Image, Optional[str]]:
    """The `Restore` of `resshift upscale`: `upscale_image`, no note."""
    return upscale_image(pipe, image, options, tile=tile, callback=callback), None


@dataclass
class Summary:
    """What a batch did; `merge` combines the summaries of several ranks."""

    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)    # (input, one-line reason)
    seconds: float = 0.0
    ranks: int = 1
    command: str = "upscale"
    notes: list[tuple[str, str]] = field(default_factory=list)     # (input, one-line note), done anyway

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    @classmethod
    def merge(cls, parts: Sequence["Summary"]) -> "Summary":
        failed = sorted(item for part in parts for item in part.failed)
        notes = sorted(item for part in parts for item in part.notes)
        return cls(sum(p.done for p in parts), sum(p.skipped for p in parts), failed,
                   max((p.seconds for p in parts), default=0.0), sum(p.ranks for p in parts),
                   parts[0].command if parts else "upscale", notes)

    def describe(self) -> str:
        ranks = f" on {self.ranks} ranks" if self.ranks > 1 else ""
        per_image = f", {self.seconds / self.done:.1f} s per image" if self.done else ""
        notes = f", {len(self.notes)} with notes" if self.notes else ""
        return (f"{self.command}: {self.done} done, {self.skipped} skipped, {len(self.failed)} failed{notes} "
                f"in {self.seconds:.1f} s{per_image}{ranks}")


def run_batch(pipe: ResShiftPipeline, jobs: Sequence[Job], options: UpscaleOptions = UpscaleOptions(), *,
              progress: bool = False, report: Optional[Callable[[str], None]] = None,
              restore: Restore = upscale_job, command: str = "upscale") -> Summary:
    """Process `jobs` in order with `restore`; each failure is passed to `report` as one line and the
    batch goes on (notes too, as "note: ..."; by default both go to stderr, named after `command`).

    `progress` shows one bar for the batch and one for the current image's tiles and steps (tqdm,
    on stderr). Out-of-memory errors fail the image with a hint instead of ending the batch.
    """
    summary, start = Summary(command=command), time.perf_counter()
    files = tqdm(total=len(jobs), unit="img", desc=command, disable=not progress, dynamic_ncols=True)
    say = report or (lambda line: tqdm.write(f"resshift {command}: {line}", file=sys.stderr))

    def fail(job: Job, message: str) -> None:
        message = message if str(job.source) in message else f"{job.source}: {message}"
        summary.failed.append((str(job.source), message))
        say(message if report else f"error: {message}")

    for job in jobs:
        try:
            if job.error:
                fail(job, job.error)
            elif job.target.exists() and not options.overwrite:
                summary.skipped += 1
            else:
                with _image_bar(pipe, job.source.name, options.steps, progress) as callback:
                    note = process_job(pipe, job, options, callback, restore)
                summary.done += 1
                if note:
                    summary.notes.append((str(job.source), f"{job.source}: {note}"))
                    say(f"note: {job.source}: {note}")
        except ResShiftError as exc:
            fail(job, str(exc))
        except (torch.OutOfMemoryError, MemoryError):
            if pipe.device.type == "cuda":
                torch.cuda.empty_cache()        # give the next image the memory this one held
            fail(job, "out of memory; pass a smaller --tile (e.g. --tile 128) or free some memory")
        files.update()
    files.close()
    summary.seconds = time.perf_counter() - start
    return summary


def process_job(pipe: ResShiftPipeline, job: Job, options: UpscaleOptions,
             callback: Optional[Callable[[dict], None]], restore: Restore) -> Optional[str]:
    prepare_output_folder(job.target.parent)
    image = read_image(job.source, max_pixels=options.max_pixels)
    height, width = image.pixels.shape[:2]
    scale = options.outscale or pipe.config.scale
    available = memory.available_memory(pipe.device)
    tile = options.tile or None                                          # 0: untiled
    if options.tile is None:
        tile = choose_tile(pipe, height, width, scale, available)[0]
    fixed = memory.estimate_peak(int(np.prod(output_size(height, width, max(scale, pipe.config.scale)))), 0)
    if available is not None and fixed > available:
        raise InputError(f"{job.source}: a {width}x{height} image at x{scale:g} needs about "
                         f"{fixed / 2**30:.1f} GiB for its full-size buffers, but only "
                         f"{available / 2**30:.1f} GiB is free; use a smaller --outscale")
    result, note = restore(pipe, job, image, options, tile=tile, callback=callback)
    write_image(job.target, result, overwrite=options.overwrite)
    return note


def prepare_output_folder(folder: Path) -> None:
    """Create a missing output folder; refuse one that cannot be written before any work is done."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {folder} ({exc.strerror or exc})") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"the output folder {folder} is not writable")


@contextlib.contextmanager
def _image_bar(pipe: ResShiftPipeline, name: str, steps: Optional[int],
               enabled: bool) -> Iterator[Optional[Callable[[dict], None]]]:
    """A bar over one image's work: every tile through the encoder, each UNet step and the decoder.

    Forward hooks count tiles (removed on exit); the pipeline's per-step callback names the step.
    """
    if not enabled:
        yield None
        return
    num_steps = len(pipe.schedule(steps))
    bar = tqdm(desc=name, unit="tile", leave=False, dynamic_ncols=True, position=1,
               bar_format="{desc}: encoding{postfix}")
    tiles = [0]

    def on_encode(*_) -> None:
        tiles[0] += 1
        bar.update(ENCODE_COST)
        bar.set_postfix_str(f"{tiles[0]} tiles")

    def on_unet(*_) -> None:
        if bar.total is None:       # the encoder has seen every tile: the total is known now
            bar.total = tiles[0] * (ENCODE_COST + num_steps * UNET_COST + DECODE_COST)
            bar.bar_format = "{l_bar}{bar}| {elapsed}<{remaining}{postfix}"    # work units, not tiles
        bar.update(UNET_COST)

    def on_decode(*_) -> None:     # a hook that returns something replaces the module's output
        bar.update(DECODE_COST)

    def on_step(info: dict) -> None:
        bar.set_postfix_str(f"{tiles[0]} tiles, step {num_steps - info['index']}/{num_steps}")

    hooks = [pipe.autoencoder.encoder.register_forward_hook(on_encode),
             pipe.unet.register_forward_hook(on_unet),
             pipe.autoencoder.decoder.register_forward_hook(on_decode)]
    try:
        yield on_step
    finally:
        for hook in hooks:
            hook.remove()
        bar.close()


# ------------------------------------------------------------------------------- several machines
@dataclass(frozen=True)
class Ranks:
    """This process's place among torchrun's workers (world 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Ranks":
        try:
            rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
            return cls(rank, world, int(os.environ.get("LOCAL_RANK", rank)))
        except ValueError as exc:
            raise InputError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({exc})") from exc

    def share(self, jobs: Sequence[Job]) -> list[Job]:
        """Every world-th job from this rank's index: each job runs exactly once across ranks."""
        return list(jobs[self.rank :: self.world])

    @contextlib.contextmanager
    def process_group(self, device: torch.device) -> Iterator[None]:
        """A process group (nccl on CUDA, gloo otherwise) when there are several ranks."""
        import torch.distributed as dist

        if self.world == 1 or dist.is_initialized():
            yield
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # Ranks meet only at the end, after their share of images: allow a long wait there.
        try:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(hours=24))
        except (ValueError, RuntimeError) as exc:
            raise InputError(f"cannot join the other ranks (WORLD_SIZE={self.world}; start the command "
                             f"with torchrun): {exc}") from exc
        try:
            yield
        finally:
            dist.destroy_process_group()

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.world > 1 and dist.is_initialized():
            dist.barrier()

    def gather(self, summary: Summary) -> Summary:
        """Every rank's summary combined (the same on every rank); the own one without torchrun."""
        import torch.distributed as dist

        if self.world == 1 or not dist.is_initialized():
            return summary
        parts: list[Optional[Summary]] = [None] * self.world
        dist.all_gather_object(parts, summary)
        return Summary.merge([part for part in parts if part is not None])
