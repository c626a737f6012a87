"""The batch engine of every command: files in, restored files out, for any task.

* `find_inputs`: a file, a folder (optionally recursive) or a glob -> sorted image files.
* `plan_jobs`: input files -> (source, target) pairs; a target that would overwrite an input or
  collide with another target is refused for that file alone.
* `run_batch`: skip finished outputs (so a killed run resumes, after removing the temporary files the
  killed run left), read, choose a tile, restore and write atomically; a bad file is recorded with a
  one-line reason and the batch goes on. What is
  done to each image is the task's `Restore` function (`resshift.tasks`), which may return a note
  (e.g. "the mask is empty").
* Under torchrun each rank runs `World.share(jobs)` and `gather_summaries` combines their summaries.
"""

from __future__ import annotations

import contextlib
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
from PIL import Image as PILImage
from tqdm import tqdm

from . import memory
from .color import COLOR_FIXES
from .distributed import World, gather_objects
from .errors import InputError, ResShiftError
from .fileio import remove_stale_temporaries
from .imageio import (DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, Image, check_output_size, is_image_name, read_image,
                      write_image)
from .pipeline import ResShiftPipeline

__all__ = ["Inputs", "Job", "Restore", "RestoreOptions", "Summary", "check_work_size", "choose_tile", "find_inputs",
           "gather_summaries", "latent_size", "output_size", "padded_size", "plan_jobs", "prepare_output_folder",
           "process_job", "resize", "run_batch"]

# Relative CPU cost of one tile through each network (official sizes: encode 1.85 s, one UNet step
# 0.81 s, decode 4.13 s per 64x64 latent), so that the per-image bar's ETA is about right.
ENCODE_COST, UNET_COST, DECODE_COST = 2, 1, 5


@dataclass(frozen=True)
class RestoreOptions:
    """How each image of a batch is read, restored and written, whatever the task; None means the
    model's own value (or automatic, for `tile`). What only one task takes (a mask's dilation,
    pasting the known pixels back, resizing faces) is bound into that task's `Restore` instead."""

    outscale: Optional[float] = None
    steps: Optional[int] = None
    seed: int = 12345
    tile: Optional[int] = None          # input pixels; None: automatic from free memory; 0: no tiling
    tile_overlap: Optional[int] = None  # input pixels; None: a quarter of the tile
    color_fix: str = "none"
    overwrite: bool = False
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS

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
        files, base = [p for p in found if is_image_name(p.relative_to(path)) and p.is_file()], path
    elif path.exists() or path.is_symlink():
        return Inputs([path], path.parent, single=True)
    elif glob.has_magic(spec):
        base = Path(*takewhile(lambda part: not glob.has_magic(part), Path(spec).expanduser().parts))
        matches = (Path(m) for m in glob.glob(str(path), recursive=recursive))
        files = [p for p in matches if is_image_name(p.relative_to(base)) and p.is_file()]
    else:
        raise InputError(f"{spec}: no such file or folder")
    if not files:
        hint = "" if recursive or not path.is_dir() else "; use --recursive to look in subfolders"
        raise InputError(f"{spec}: no images found ({', '.join(IMAGE_SUFFIXES)}){hint}")
    return Inputs(sorted(files), base, single=False)


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


def padded_size(pipe: ResShiftPipeline, height: int, width: int) -> tuple[int, int]:
    """The (height, width) an input of this size is padded to for the networks."""
    multiple = pipe.input_multiple
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def latent_size(pipe: ResShiftPipeline, height: int, width: int) -> tuple[int, int]:
    """The latent grid an input of this size runs on (after padding)."""
    cond_scale = pipe.config.autoencoder.downsample_factor // pipe.config.scale
    padded_height, padded_width = padded_size(pipe, height, width)
    return padded_height // cond_scale, padded_width // cond_scale


def check_work_size(pipe: ResShiftPipeline, source: Path, height: int, width: int, max_pixels: Optional[int]) -> None:
    """InputError when the padded input the networks see is over `max_pixels`: a strip one pixel high
    costs as much as one a whole padding multiple high (64 pixels for the official models)."""
    padded_height, padded_width = padded_size(pipe, height, width)
    work = padded_height * padded_width
    if max_pixels is not None and work > max_pixels:
        raise InputError(f"{source}: {width}x{height} is padded to {padded_width}x{padded_height} = {work} pixels "
                         f"for the networks, over the limit of {max_pixels}; pass --max-pixels {work} (or more) "
                         "to process it")


def choose_tile(pipe: ResShiftPipeline, height: int, width: int, scale: float,
                available: Optional[int] = None) -> tuple[Optional[int], int]:
    """Automatic tile (input pixels, None for no tiling) for an input of this size, and the bytes
    it is estimated to need beyond the loaded model (see `memory`)."""
    out_h, out_w = output_size(height, width, max(scale, pipe.config.scale))
    cond_scale = pipe.config.autoencoder.downsample_factor // pipe.config.scale
    max_latent = memory.AUTO_TILE_MAX_LATENT if pipe.config.autoencoder.global_attention else None
    tile, need = memory.auto_tile(latent_size(pipe, height, width), out_h * out_w,
                                  multiple=pipe.unet.config.size_multiple, device=pipe.device,
                                  dtype=pipe.dtype, available=available, max_latent=max_latent)
    return (None if tile is None else tile * cond_scale), need


# ---------------------------------------------------------------------------------------- batches
# (pipe, job, decoded input, options, *, tile, callback) -> (output image, optional one-line note);
# raises ResShiftError (naming job.source) for a file it cannot process, before anything is written.
Restore = Callable[..., tuple[Image, Optional[str]]]


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


def run_batch(pipe: ResShiftPipeline, jobs: Sequence[Job], options: RestoreOptions = RestoreOptions(), *,
              restore: Restore, command: str, progress: bool = False,
              report: Optional[Callable[[str], None]] = None) -> Summary:
    """Process `jobs` in order with the task's `restore`; each failure is passed to `report` as one line and the
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
        if not job.error:
            remove_stale_temporaries(job.target)    # a killed run's: only this process writes this target
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


def process_job(pipe: ResShiftPipeline, job: Job, options: RestoreOptions,
                callback: Optional[Callable[[dict], None]], restore: Restore) -> Optional[str]:
    """Read one job's input, pick its tile, restore it and write the output atomically; the note."""
    prepare_output_folder(job.target.parent)
    image = read_image(job.source, max_pixels=options.max_pixels)
    height, width = image.pixels.shape[:2]
    check_work_size(pipe, job.source, height, width, options.max_pixels)
    scale = options.outscale or pipe.config.scale
    out_height, out_width = output_size(height, width, scale)
    check_output_size(job.target, out_width, out_height)                 # before the work, not after it
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
def gather_summaries(summary: Summary, world: World) -> Summary:
    """Every rank's summary combined (the same on every rank); the own one without torchrun."""
    parts = gather_objects(summary, world)
    return parts[0] if len(parts) == 1 else Summary.merge(parts)
