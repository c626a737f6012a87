"""`resshift upscale`: the argparse side; the work is done by `resshift.upscale`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import InputError
from .imageio import DEFAULT_MAX_PIXELS
from .memory import AUTO_TILE_MAX_LATENT
from .models import DTYPES, load_model, resolve_device, resolve_dtype
from .presets import PRESETS
from .upscale import (COLOR_FIXES, Job, Ranks, Restore, UpscaleOptions, find_inputs, plan_jobs,
                      prepare_output_folder, run_batch, upscale_job)

EPILOG = f"""\
inputs and outputs:
  -i takes a file, a folder (with --recursive: its subfolders too, mirrored under -o) or a quoted
  glob such as 'photos/*.jpg'. Folders and globs take .png .jpg .jpeg .webp .tif .tiff .bmp files.
  -o is a folder (created when missing) that receives NAME<suffix>.<ext>; with one input file it may
  also name the output file itself (e.g. -o big.png). Outputs are written atomically; an input is
  never overwritten. Outputs already present are skipped unless --overwrite, so a killed run resumes.
  Alpha is kept (restored colour, alpha resized), grey stays grey, 16-bit PNG/TIFF stays 16-bit,
  EXIF orientation is applied and ICC/EXIF are carried over.

tiling and memory:
  Without --tile the tile is chosen per image from the free memory (RAM, or GPU memory on CUDA):
  as large as fits, at most {AUTO_TILE_MAX_LATENT}x{AUTO_TILE_MAX_LATENT} latent pixels (128x128 input pixels for the x4 models),
  since the autoencoder's global attention grows with the square of a tile's area.
  Images that fit are not tiled. Tiles are blended smoothly in the latent space and share one noise
  draw, so there are no seams. --tile 0 turns tiling off.
  An image whose full-size output buffers alone would not fit in memory fails with a message.

colour fix:
  Diffusion restorers can shift colours slightly. --color-fix wavelet keeps the restored detail and
  takes the low frequencies (colour) from the input; adain matches each channel's mean and spread.
  The reference is the input resized bicubically to the output size. Off by default: the official
  models keep colours well, and a fix also copies the input's own colour casts and low-frequency noise.

exit status:
  0 every image done or skipped, 1 some images failed (each listed on stderr with its reason),
  2 usage errors (bad flags, no input, no images found, unknown or unloadable model).

several processes or machines:
  torchrun --nproc-per-node 4 -m resshift upscale -i in -o out --model M
  splits the sorted inputs across ranks (each file exactly once; cuda:LOCAL_RANK on GPUs) and
  rank 0 prints one summary for all of them.

examples:
  resshift upscale -i photo.jpg -o out --model models/realsr-v3
  resshift upscale -i photos -o upscaled --recursive --model models/realsr-v3 -s 2 --ext png
  resshift upscale -i 'scans/*.tif' -o out --model resshift_realsrx4_s4_v3.pth \\
      --autoencoder autoencoder_vq_f4.pth --task realsr-v3 --device cuda --dtype fp16
  resshift upscale -i photo.png -o photo_x4.png --model models/realsr-v3 --tile 256 --color-fix wavelet

getting a model:
  resshift convert --unet resshift_realsrx4_s4_v3.pth --autoencoder autoencoder_vq_f4.pth \\
      -o models/realsr-v3   (official checkpoints: github.com/zsyOAOA/ResShift releases)
"""


def int_in_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from `low` to `high` (inclusive; no upper bound when None)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < low or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"{low} to {high}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value
    parse.__name__ = "integer"   # argparse names the type in "invalid integer value: 'x'"
    return parse


positive_int = int_in_range(1)
non_negative_int = int_in_range(0)


def positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_upscale(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "upscale", help="upscale and restore photos: files, folders or globs, any size",
        description="Super-resolve and restore real photos with a ResShift model, one file or many.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_batch_arguments(parser, resizing=True)
    parser.set_defaults(run=run_upscale)


def add_batch_arguments(parser: argparse.ArgumentParser, *, resizing: bool) -> argparse.ArgumentParser:
    """The flags every batch command shares (files, model, running); `resizing` adds --outscale and
    --color-fix, which only super-resolution uses. Returns the parser; its groups hold the flags."""
    io = parser.add_argument_group("files")
    io.add_argument("-i", "--input", required=True, help="image file, folder, or quoted glob pattern")
    io.add_argument("-o", "--output", required=True, type=Path,
                    help="output folder (created if missing), or the output file for one input")
    io.add_argument("--recursive", action="store_true", help="also take images in subfolders")
    io.add_argument("--suffix", default="_out",
                    help="added to each output's name: photo.jpg -> photo_out.jpg (default: _out; "
                         "'' for none, then -o must differ from the input folder)")
    io.add_argument("--ext", choices=("same", "png", "jpg", "webp"), default="same",
                    help="output format; same: the input's (default)")
    io.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    io.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                    help="refuse inputs with more pixels (decompression-bomb guard; "
                         f"default {DEFAULT_MAX_PIXELS})")
    model = parser.add_argument_group("model")
    model.add_argument("--model", help="bundled model name (see `resshift models`), model folder (from "
                                       "`resshift convert`/save_pretrained), or an official UNet .pth "
                                       "together with --autoencoder (default: the bundled model of the task)")
    model.add_argument("--autoencoder", help="official VQGAN .pth, with an official UNet --model")
    model.add_argument("--task", choices=sorted(PRESETS),
                       help="official preset of a UNet .pth (recognised from the file when unambiguous)")
    if resizing:
        model.add_argument("-s", "--outscale", type=positive_float,
                           help="final scale, any number (default: the model's, e.g. 4); the model's "
                                "output is resized with Lanczos (larger) or area averaging (smaller)")
    model.add_argument("--steps", type=positive_int, help="sampling steps (default: the model's)")
    model.add_argument("--seed", type=int, default=12345,
                       help="noise seed, the same for every image so results do not depend on the "
                            "batch (default: 12345)")
    if resizing:
        model.add_argument("--color-fix", choices=tuple(COLOR_FIXES), default="none",
                           help="pull colours back to the input's (default: none; see below)")
    run = parser.add_argument_group("running")
    run.add_argument("--device", default="auto",
                     help="auto (CUDA, else MPS, else CPU; default), cpu, cuda, cuda:N or mps")
    run.add_argument("--dtype", choices=("auto", *DTYPES), default="auto",
                     help="auto: fp16 on CUDA, fp32 elsewhere (default)")
    run.add_argument("-t", "--tile", type=non_negative_int,
                     help="tile size in input pixels; 0: no tiling (default: automatic from free memory)")
    run.add_argument("--tile-overlap", type=non_negative_int,
                     help="overlap of neighbouring tiles in input pixels (default: a quarter of the tile)")
    run.add_argument("-q", "--quiet", action="store_true",
                     help="no progress bars and no summary (errors and notes are still printed)")
    return parser


def run_upscale(args: argparse.Namespace) -> int:
    """Usage problems raise ResShiftError (exit 2 in cli.main); failed images give exit 1."""
    options = UpscaleOptions(outscale=args.outscale, steps=args.steps, seed=args.seed, tile=args.tile,
                             tile_overlap=args.tile_overlap, color_fix=args.color_fix,
                             overwrite=args.overwrite, max_pixels=args.max_pixels)
    jobs = plan_jobs(find_inputs(args.input, args.recursive), args.output.expanduser(), suffix=args.suffix,
                     ext=args.ext)
    return run_jobs(args, jobs, options, command="upscale", task="sr")


# Each model task, what it is called, and the command that runs it.
TASKS = {"sr": ("a super-resolution model", "upscale"), "inpaint": ("an inpainting model", "inpaint"),
         "face": ("a face restoration model", "restore-face")}


def run_jobs(args: argparse.Namespace, jobs: list[Job], options: UpscaleOptions, *, command: str,
             task: str, restore: Restore = upscale_job) -> int:
    """What every batch command shares: check the flags and the output folder, load the model
    (refusing one of another task), split the jobs over torchrun's ranks, run them, print a summary."""
    if args.tile and args.tile_overlap is not None and args.tile_overlap >= args.tile:
        raise InputError(f"--tile-overlap {args.tile_overlap} must be smaller than --tile {args.tile}")
    ranks, output = Ranks.from_env(), args.output.expanduser()
    _check_output_root(output, jobs)
    device = resolve_device(args.device, ranks.local_rank)
    pipe = load_model(args.model, args.autoencoder, args.task, default_for=task, device=device,
                      dtype=resolve_dtype(args.dtype, device))
    if pipe.config.task != task:
        name, other = TASKS[pipe.config.task]
        raise InputError(f"`resshift {command}` needs {TASKS[task][0]}, but this is {name}; "
                         f"use it with `resshift {other}`")
    with ranks.process_group(device):
        progress = not args.quiet and ranks.rank == 0 and sys.stderr.isatty()
        summary = ranks.gather(run_batch(pipe, ranks.share(jobs), options, progress=progress,
                                         restore=restore, command=command))
        if ranks.rank == 0:
            if not args.quiet:
                print(summary.describe())
            if summary.failed:
                print("failed:\n" + "\n".join(f"  {source}" for source, _ in summary.failed), file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        ranks.barrier()     # torchrun stops every rank once one exits non-zero: let rank 0 print first
    return summary.exit_code


def _check_output_root(output: Path, jobs: list) -> None:
    """Create the output folder (or the output file's folder) before any work; unwritable is a usage error."""
    prepare_output_folder(output if len(jobs) != 1 or jobs[0].target != output else output.parent)
