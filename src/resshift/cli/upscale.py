"""`resshift upscale`: the argparse side; the batch engine (`resshift.batch`) does the work."""

from __future__ import annotations

import argparse

from ..batch import RestoreOptions, find_inputs, plan_jobs
from ..memory import AUTO_TILE_MAX_LATENT
from ..tasks import upscale_job
from .batch import add_batch_arguments, run_jobs

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
  as large as fits. With a VQGAN (the official models) a tile is at most {AUTO_TILE_MAX_LATENT}x{AUTO_TILE_MAX_LATENT} latent
  pixels (128x128 input pixels for x4), since its global attention grows with the square of a tile's
  area; the bundled models' latent has no attention, so memory alone bounds their tiles.
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



def add_upscale(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "upscale", help="upscale and restore photos: files, folders or globs, any size",
        description="Super-resolve and restore real photos with a ResShift model, one file or many.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_batch_arguments(parser, resizing=True)
    parser.set_defaults(run=run_upscale)


def run_upscale(args: argparse.Namespace) -> int:
    """Usage problems raise ResShiftError (exit 2 in cli.main); failed images give exit 1."""
    options = RestoreOptions(outscale=args.outscale, steps=args.steps, seed=args.seed, tile=args.tile,
                             tile_overlap=args.tile_overlap, color_fix=args.color_fix,
                             overwrite=args.overwrite, max_pixels=args.max_pixels)
    jobs = plan_jobs(find_inputs(args.input, args.recursive), args.output.expanduser(), suffix=args.suffix,
                     ext=args.ext)
    return run_jobs(args, jobs, options, task="sr", restore=upscale_job)
