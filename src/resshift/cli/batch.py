"""The flags and the run of every batch command (upscale, inpaint, restore-face): files in, files out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..batch import Job, Restore, RestoreOptions, gather_summaries, prepare_output_folder, run_batch
from ..color import COLOR_FIXES
from ..distributed import INFERENCE_TIMEOUT, World, barrier, process_group, resolve_device
from ..errors import InputError
from ..imageio import DEFAULT_MAX_PIXELS
from ..models import backend_device, load_model, resolve_dtype
from ..presets import PRESETS, Task
from ..tasks import TASKS, check_task
from .arguments import add_runtime_arguments, non_negative_int, positive_float, positive_int


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
                    help="refuse inputs with more pixels, from the header before decoding (decompression-bomb "
                         "guard) and again as padded for the networks (a 1-pixel strip costs a padding multiple); "
                         f"default {DEFAULT_MAX_PIXELS}")
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
    add_runtime_arguments(run)
    run.add_argument("-t", "--tile", type=non_negative_int,
                     help="tile size in input pixels; 0: no tiling (default: automatic from free memory)")
    run.add_argument("--tile-overlap", type=non_negative_int,
                     help="overlap of neighbouring tiles in input pixels (default: a quarter of the tile)")
    run.add_argument("-q", "--quiet", action="store_true",
                     help="no progress bars and no summary (errors and notes are still printed)")
    return parser


def run_jobs(args: argparse.Namespace, jobs: list[Job], options: RestoreOptions, *, task: Task,
             restore: Restore) -> int:
    """What every batch command shares: check the flags and the output folder, load the model
    (refusing one of another task), split the jobs over torchrun's ranks, run them, print a summary."""
    if args.tile and args.tile_overlap is not None and args.tile_overlap >= args.tile:
        raise InputError(f"--tile-overlap {args.tile_overlap} must be smaller than --tile {args.tile}")
    world, output = World.from_env(), args.output.expanduser()
    _check_output_root(output, jobs)
    device = resolve_device(backend_device(args.backend, args.device), world.local_rank)
    pipe = load_model(args.model, args.autoencoder, args.task, default_for=task, device=device,
                      dtype=resolve_dtype(args.dtype, device), backend=args.backend)
    check_task(pipe, task)
    command = TASKS[task].command
    with process_group(world, device, INFERENCE_TIMEOUT):
        progress = not args.quiet and world.is_main and sys.stderr.isatty()
        summary = gather_summaries(run_batch(pipe, world.share(jobs), options, restore=restore, command=command,
                                             progress=progress), world)
        if world.is_main:
            if not args.quiet:
                print(summary.describe())
            if summary.failed:
                print("failed:\n" + "\n".join(f"  {source}" for source, _ in summary.failed), file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        barrier(world)     # torchrun stops every rank once one exits non-zero: let rank 0 print first
    return summary.exit_code


def _check_output_root(output: Path, jobs: list) -> None:
    """Create the output folder (or the output file's folder) before any work; unwritable is a usage error."""
    prepare_output_folder(output if len(jobs) != 1 or jobs[0].target != output else output.parent)
