"""What each task does to one image, in one place: super-resolution, inpainting, face restoration.

`TASKS` names each task's model ("a super-resolution model") and the command and web endpoint that
run it (`resshift upscale`, `POST /v1/upscale`). Each task's `Restore` function turns a decoded image
into its result for the batch engine (`resshift.batch.run_batch`), which the CLI and the web app
share; all of them end in `restore_image`, so every task gets the same tiling, noise and resizing.

| task      | command        | Restore             | its own parameters (bound with functools.partial) |
|-----------|----------------|---------------------|---------------------------------------------------|
| `sr`      | `upscale`      | `upscale_job`       | -                                                 |
| `inpaint` | `inpaint`      | `inpaint_job`       | `dilate`, `paste_back`; the job's mask file       |
| `face`    | `restore-face` | `restore_face_job`  | `resize_input`                                    |
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .batch import Job, RestoreOptions, output_size, resize
from .color import COLOR_FIXES
from .errors import InputError
from .imageio import IMAGE_SUFFIXES, Image, from_tensor, read_image, to_tensor
from .pipeline import ResShiftPipeline
from .presets import Task

__all__ = ["TASKS", "TaskInfo", "check_task", "inpaint_job", "match_masks", "read_mask", "restore_face_job",
           "restore_image", "upscale_job"]

Callback = Optional[Callable[[dict], None]]


@dataclass(frozen=True)
class TaskInfo:
    noun: str       # what a model of the task is called in messages
    command: str    # the CLI command and the web endpoint (POST /v1/<command>) that run it


TASKS: dict[Task, TaskInfo] = {
    "sr": TaskInfo("a super-resolution model", "upscale"),
    "inpaint": TaskInfo("an inpainting model", "inpaint"),
    "face": TaskInfo("a face restoration model", "restore-face"),
}


def check_task(pipe: ResShiftPipeline, task: Task) -> None:
    """InputError when `pipe` is a model of another task than the command's, naming the right command."""
    found = pipe.config.task
    if found != task:
        raise InputError(f"`resshift {TASKS[task].command}` needs {TASKS[task].noun}, but this is "
                         f"{TASKS[found].noun}; use it with `resshift {TASKS[found].command}`")


@torch.inference_mode()
def restore_image(pipe: ResShiftPipeline, image: Image, options: RestoreOptions = RestoreOptions(), *,
                  tile: Optional[int] = None, callback: Callback = None, mask: Optional[torch.Tensor] = None,
                  paste_back: bool = True) -> Image:
    """Restore `image` with the model and resize it to `options.outscale` times its size.

    `mask` (inpainting models only): (1, 1, h, w) in [0, 1], 1 marks the pixels to fill; the known
    pixels are pasted back unless `paste_back` is False.

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
                    steps=options.steps, paste_back=paste_back, tile=tile, tile_overlap=overlap,
                    callback=callback)
    fix = COLOR_FIXES[options.color_fix]
    if fix is not None:
        reference = F.interpolate(lq, size=restored.shape[-2:], mode="bicubic").clamp_(0, 1)
        restored = fix(restored, reference)
        del reference
    pixels = from_tensor(restored.clamp_(0, 1))                        # (H, W, 3) float32
    del restored, lq
    size = output_size(height, width, options.outscale or pipe.config.scale)
    return _resized(dataclasses.replace(image, pixels=pixels), size)


def _resized(image: Image, size: tuple[int, int]) -> Image:
    """`image` with its pixels and alpha resized to `size` (h, w), values kept in [0, 1]."""
    alpha = None if image.alpha is None else np.clip(resize(image.alpha, size), 0, 1)
    return dataclasses.replace(image, pixels=np.clip(resize(image.pixels, size), 0, 1), alpha=alpha)


# ------------------------------------------------------------------------------ super-resolution
def upscale_job(pipe: ResShiftPipeline, job: Job, image: Image, options: RestoreOptions, *,
                tile: Optional[int], callback: Callback) -> tuple[Image, Optional[str]]:
    """The `Restore` of `resshift upscale`: `restore_image`, no note."""
    return restore_image(pipe, image, options, tile=tile, callback=callback), None


# ------------------------------------------------------------------------------------ inpainting
def match_masks(jobs: list[Job], spec: str, base: Path) -> list[Job]:
    """Give each job its mask: `spec` itself when it is a file (not an input then), else the file in
    folder `spec` with the input's relative folder and stem. A missing or ambiguous mask is that
    job's error."""
    path = Path(spec).expanduser()
    if path.is_file():      # one mask for every image; when it lies among the inputs it is not one
        return [dataclasses.replace(job, mask=path) for job in jobs
                if os.path.realpath(job.source) != os.path.realpath(path)]
    if not path.is_dir():
        raise InputError(f"-m {spec}: no such file or folder")
    if os.path.realpath(path) == os.path.realpath(base):
        raise InputError(f"-m {spec}: the masks must be in another folder than the images")
    return [_with_mask_from(job, path, base) for job in jobs]


def _with_mask_from(job: Job, folder: Path, base: Path) -> Job:
    relative = job.source.relative_to(base) if job.source.is_relative_to(base) else Path(job.source.name)
    pattern = glob.escape(str(folder / relative.parent / relative.stem)) + ".*"
    found = sorted(p for p in map(Path, glob.glob(pattern)) if p.suffix.lower() in IMAGE_SUFFIXES)
    error = job.error
    if not found and error is None:
        error = f"{job.source}: no mask {relative.with_suffix('.*')} in {folder}"
    elif len(found) > 1 and error is None:
        error = f"{job.source}: several masks match it ({', '.join(p.name for p in found)}); keep one"
    return dataclasses.replace(job, mask=found[0] if len(found) == 1 else None, error=error)


def read_mask(path: Path, size: tuple[int, int], dilate: int = 0, *,
              max_pixels: Optional[int] = None) -> torch.Tensor:
    """A mask file -> (1, 1, h, w) float {0, 1}, 1 = fill (over half white), grown by `dilate` pixels."""
    mask = read_image(path, max_pixels=max_pixels).pixels                  # (h, w, 3) in [0, 1]
    if mask.shape[:2] != size:
        raise InputError(f"its mask {path} is {mask.shape[1]}x{mask.shape[0]} but the image is "
                         f"{size[1]}x{size[0]}; a mask must have its image's size")
    fill = torch.from_numpy((mask.mean(axis=2) > 0.5).astype(np.float32))[None, None]
    if dilate:
        fill = F.max_pool2d(fill, 2 * dilate + 1, stride=1, padding=dilate)
    return fill


def inpaint_job(pipe: ResShiftPipeline, job: Job, image: Image, options: RestoreOptions, *,
                tile: Optional[int], callback: Callback, dilate: int = 0,
                paste_back: bool = True) -> tuple[Image, Optional[str]]:
    """The `Restore` of `resshift inpaint`: fill `job.mask`'s white pixels of `image`."""
    assert job.mask is not None, "match_masks gives every job without an error a mask"
    try:
        fill = read_mask(job.mask, image.pixels.shape[:2], dilate, max_pixels=options.max_pixels)
    except InputError as exc:
        raise InputError(f"{job.source}: {exc}") from exc
    if not fill.any():
        return image, f"its mask {job.mask.name} is empty (no white pixels): written unchanged"
    note = f"its mask {job.mask.name} is all white: every pixel is generated" if fill.all() else None
    return restore_image(pipe, image, options, tile=tile, callback=callback, mask=fill, paste_back=paste_back), note


# ----------------------------------------------------------------------------------------- faces
def restore_face_job(pipe: ResShiftPipeline, job: Job, image: Image, options: RestoreOptions, *,
                     tile: Optional[int], callback: Callback,
                     resize_input: bool = False) -> tuple[Image, Optional[str]]:
    """The `Restore` of `resshift restore-face`: an aligned crop of the model's size (512 for faceir)."""
    side = pipe.config.unet.lq_size
    height, width = image.pixels.shape[:2]
    if (height, width) == (side, side):
        return restore_image(pipe, image, options, tile=tile, callback=callback), None
    if not resize_input:
        raise InputError(f"{job.source}: is {width}x{height}, but the face model takes aligned {side}x{side} "
                         f"face crops (FFHQ-style); crop and align it, or pass --resize")
    restored = restore_image(pipe, _resized(image, (side, side)), options, tile=tile, callback=callback)
    return _resized(restored, (height, width)), f"resized from {width}x{height} to {side}x{side} and back"
