"""`resshift inpaint` and `resshift restore-face`: their flags, and each task's `Restore` for
`resshift.upscale.run_batch`, so that both share `resshift upscale`'s batches (skip and resume,
atomic writes, one-line errors per file, progress, torchrun ranks, exit codes)."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import glob
import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .cli_upscale import non_negative_int, add_batch_arguments, run_jobs
from .errors import InputError
from .imageio import Image, read_image
from .pipeline import ResShiftPipeline
from .upscale import IMAGE_SUFFIXES, Job, UpscaleOptions, find_inputs, plan_jobs, resize, upscale_image

COMMON = """\
inputs, outputs, resuming, tiling and exit status work as in `resshift upscale` (see its --help):
outputs are written atomically and skipped when present (--overwrite redoes them); a file that
cannot be processed is listed on stderr with a one-line reason, the others go on, and the exit
status is 1. Notes (e.g. an empty mask) are printed on stderr and counted in the summary.
"""

INPAINT_EPILOG = COMMON + """
masks:
  -m is one mask file for every image, or a folder holding, for each input, a mask with the same
  name apart from the extension (photos/a.jpg -> masks/a.png; subfolders mirror -i's with
  --recursive). White (over 50% grey) marks the pixels to fill; a mask must have its image's size.
  --mask-dilate N grows the white area by N pixels (a max-pool), to cover the edges of an object.
  An empty mask leaves the image unchanged; an all-white one regenerates every pixel (both noted).
  The known pixels are copied into the result exactly unless --no-paste-back.

examples:
  resshift inpaint -i photo.png -m hole.png -o out                  # the bundled inpaint-natural
  resshift inpaint -i photos -m masks -o filled --mask-dilate 4 --model models/inpaint-imagenet
"""

FACE_EPILOG = COMMON + """
faces:
  The official faceir model restores aligned 512x512 face crops (FFHQ-style: eyes and mouth where
  FFHQ puts them). Other sizes are refused per file; --resize resizes them to 512x512 and the
  result back (the face must still be aligned; whole photos are not detected or cropped).

examples:
  resshift restore-face -i crops -o restored --model models/faceir
"""


def add_inpaint(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inpaint", help="fill masked regions of photos with an inpainting model",
        description="Fill the white regions of each image's mask with a ResShift inpainting model.",
        epilog=INPAINT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_batch_arguments(parser, resizing=False)
    masks = parser.add_argument_group("masks")
    masks.add_argument("-m", "--mask", required=True,
                       help="mask file for every image, or a folder of masks named like the images")
    masks.add_argument("--mask-dilate", type=non_negative_int, default=0, metavar="N",
                       help="grow each mask's white area by N pixels (default: 0)")
    masks.add_argument("--no-paste-back", dest="paste_back", action="store_false",
                       help="keep the model's output everywhere instead of the known pixels")
    parser.set_defaults(run=run_inpaint)


def add_restore_face(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "restore-face", help="restore aligned 512x512 face crops (blind face restoration)",
        description="Restore degraded, aligned face crops with a ResShift face model (faceir).",
        epilog=FACE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_batch_arguments(parser, resizing=False)
    parser.add_argument("--resize", action="store_true",
                        help="resize inputs of another size to 512x512 and the results back")
    parser.set_defaults(run=run_restore_face)


def _options(args: argparse.Namespace, **extra) -> UpscaleOptions:
    return UpscaleOptions(steps=args.steps, seed=args.seed, tile=args.tile, tile_overlap=args.tile_overlap,
                          overwrite=args.overwrite, max_pixels=args.max_pixels, **extra)


def _jobs(args: argparse.Namespace) -> tuple[list[Job], Path]:
    inputs = find_inputs(args.input, args.recursive)
    return plan_jobs(inputs, args.output.expanduser(), suffix=args.suffix, ext=args.ext), inputs.base


def run_inpaint(args: argparse.Namespace) -> int:
    jobs, base = _jobs(args)
    jobs = match_masks(jobs, args.mask, base)
    restore = functools.partial(inpaint_job, dilate=args.mask_dilate)
    return run_jobs(args, jobs, _options(args, paste_back=args.paste_back), command="inpaint",
                    task="inpaint", restore=restore)


def run_restore_face(args: argparse.Namespace) -> int:
    restore = functools.partial(restore_face_job, resize_input=args.resize)
    return run_jobs(args, _jobs(args)[0], _options(args), command="restore-face", task="face", restore=restore)


# ------------------------------------------------------------------------------------- inpainting
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
    matched = []
    for job in jobs:
        relative = job.source.relative_to(base) if job.source.is_relative_to(base) else Path(job.source.name)
        pattern = glob.escape(str(path / relative.parent / relative.stem)) + ".*"
        found = sorted(p for p in map(Path, glob.glob(pattern)) if p.suffix.lower() in IMAGE_SUFFIXES)
        error = job.error
        if not found and error is None:
            error = f"{job.source}: no mask {relative.with_suffix('.*')} in {path}"
        elif len(found) > 1 and error is None:
            error = f"{job.source}: several masks match it ({', '.join(p.name for p in found)}); keep one"
        matched.append(dataclasses.replace(job, mask=found[0] if len(found) == 1 else None, error=error))
    return matched


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


def inpaint_job(pipe: ResShiftPipeline, job: Job, image: Image, options: UpscaleOptions, *,
                tile: Optional[int], callback: Optional[Callable[[dict], None]],
                dilate: int = 0) -> tuple[Image, Optional[str]]:
    """The `Restore` of `resshift inpaint`: fill `job.mask`'s white pixels of `image`."""
    assert job.mask is not None, "match_masks gives every job without an error a mask"
    try:
        fill = read_mask(job.mask, image.pixels.shape[:2], dilate, max_pixels=options.max_pixels)
    except InputError as exc:
        raise InputError(f"{job.source}: {exc}") from exc
    if not fill.any():
        return image, f"its mask {job.mask.name} is empty (no white pixels): written unchanged"
    note = f"its mask {job.mask.name} is all white: every pixel is generated" if fill.all() else None
    return upscale_image(pipe, image, options, tile=tile, callback=callback, mask=fill), note


# ----------------------------------------------------------------------------------------- faces
def restore_face_job(pipe: ResShiftPipeline, job: Job, image: Image, options: UpscaleOptions, *,
                     tile: Optional[int], callback: Optional[Callable[[dict], None]],
                     resize_input: bool = False) -> tuple[Image, Optional[str]]:
    """The `Restore` of `resshift restore-face`: an aligned crop of the model's size (512 for faceir)."""
    side = pipe.config.unet.lq_size
    height, width = image.pixels.shape[:2]
    if (height, width) == (side, side):
        return upscale_image(pipe, image, options, tile=tile, callback=callback), None
    if not resize_input:
        raise InputError(f"{job.source}: is {width}x{height}, but the face model takes aligned {side}x{side} "
                         f"face crops (FFHQ-style); crop and align it, or pass --resize")
    restored = upscale_image(pipe, _resized(image, (side, side)), options, tile=tile, callback=callback)
    return _resized(restored, (height, width)), f"resized from {width}x{height} to {side}x{side} and back"


def _resized(image: Image, size: tuple[int, int]) -> Image:
    alpha = None if image.alpha is None else np.clip(resize(image.alpha, size), 0, 1)
    return dataclasses.replace(image, pixels=np.clip(resize(image.pixels, size), 0, 1), alpha=alpha)
