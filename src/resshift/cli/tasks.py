"""`resshift inpaint` and `resshift restore-face`: their flags; their tasks' `Restore` functions
(`resshift.tasks`) run in the batch engine as `resshift upscale` does (skip and resume, atomic
writes, one-line errors per file, progress, torchrun ranks, exit codes)."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from ..batch import Job, RestoreOptions, find_inputs, plan_jobs
from ..tasks import inpaint_job, match_masks, restore_face_job
from .arguments import non_negative_int
from .batch import add_batch_arguments, run_jobs


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


def _options(args: argparse.Namespace) -> RestoreOptions:
    return RestoreOptions(steps=args.steps, seed=args.seed, tile=args.tile, tile_overlap=args.tile_overlap,
                          overwrite=args.overwrite, max_pixels=args.max_pixels)


def _jobs(args: argparse.Namespace) -> tuple[list[Job], Path]:
    inputs = find_inputs(args.input, args.recursive)
    return plan_jobs(inputs, args.output.expanduser(), suffix=args.suffix, ext=args.ext), inputs.base


def run_inpaint(args: argparse.Namespace) -> int:
    jobs, base = _jobs(args)
    jobs = match_masks(jobs, args.mask, base)
    restore = functools.partial(inpaint_job, dilate=args.mask_dilate, paste_back=args.paste_back)
    return run_jobs(args, jobs, _options(args), task="inpaint", restore=restore)


def run_restore_face(args: argparse.Namespace) -> int:
    restore = functools.partial(restore_face_job, resize_input=args.resize)
    return run_jobs(args, _jobs(args)[0], _options(args), task="face", restore=restore)
