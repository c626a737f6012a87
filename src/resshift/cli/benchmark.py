"""`resshift benchmark`: models beside bicubic, Lanczos and (with --peers) SPAN and Real-ESRGAN on one set.

Exit codes: 0 when every image was scored, 1 when some were skipped (each printed on one line naming
the file), 2 for usage errors (through `resshift.cli`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..batch import RestoreOptions
from ..benchmark import DEGRADATIONS, BenchmarkOptions, run_benchmark
from ..distributed import resolve_device
from ..errors import InputError
from ..models import DEFAULT_MODELS, DTYPES, load_model, resolve_dtype
from ..peers import INSTALL_HINT, find_peers
from ..presets import PRESETS
from .arguments import non_negative_int, positive_int

EXIT_SKIPPED = 1


def add_benchmark(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmark", help="compare a model with bicubic, Lanczos and peers on an image set (table, JSON, CSV, grid)",
        description="Make LR inputs from a set of HR images (or take given ones), run bicubic, Lanczos, the\n"
                    "model(s) (--model may be repeated: side by side on the same inputs and noise) and, with\n"
                    "--peers, SPAN x4 and Real-ESRGAN x4plus on the CPU (ncnn), then score every method with\n"
                    "`resshift eval`'s metrics: PSNR/SSIM (Y) and ST-LPIPS with a border crop of the scale, or\n"
                    "NIQE and JPEG blockiness with --no-reference. Writes OUT/lr, OUT/gt, one folder\n"
                    "per method, OUT/benchmark.json, OUT/benchmark.csv and OUT/grid.png (LR | methods | GT,\n"
                    "each with an enlarged crop). Times are wall-clock seconds per image after a warm-up.\n\n"
                    "The same --seed draws the Real-ESRGAN degradation (one draw per image, keyed by its\n"
                    "position in the sorted set) and the model's noise, so a run is reproducible.\n"
                    "Images whose LR input is under 8 pixels a side are reported and skipped.",
        epilog="examples:\n"
               "  resshift benchmark --model models/bicubic-x4 --set Set5 -o bench/set5 --peers\n"
               "  resshift benchmark --model models/realsr-x4 --set Val_SR/gt --lq Val_SR/lq -o bench/val\n"
               "  resshift benchmark --model realsr-x4 --model realsr-v3 --set RealSet65 --no-reference -o bench/real\n"
               f"peers: {INSTALL_HINT}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("images")
    data.add_argument("--set", required=True, type=Path, dest="set_folder",
                      help="folder of HR images (or of LR photos with --no-reference)")
    data.add_argument("-o", "--output", required=True, type=Path, help="folder to write (must be empty)")
    data.add_argument("--degradation", choices=DEGRADATIONS, default="bicubic",
                      help="how LR inputs are made from the HR images (default: bicubic, MATLAB imresize)")
    data.add_argument("--lq", type=Path, help="given LR inputs, paired with --set by name (not degraded again)")
    data.add_argument("--no-reference", action="store_true",
                      help="the --set images are the LR inputs (real photos): NIQE only")
    data.add_argument("--limit", type=positive_int, help="only the first N images (sorted by name)")
    data.add_argument("--grid-count", type=non_negative_int, default=4, help="images in grid.png (default 4)")
    data.add_argument("--overwrite", action="store_true",
                      help="write into a non-empty output folder (its lr/, gt/ and method folders are replaced)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", action="append", help="model folder, bundled or official name, or official UNet "
                                                        ".pth (with --autoencoder); repeat to compare several "
                                                        "(default: the bundled super-resolution model)")
    model.add_argument("--autoencoder", help="official VQGAN .pth, with an official UNet --model")
    model.add_argument("--task", choices=sorted(PRESETS), help="official preset of a UNet .pth")
    model.add_argument("--steps", type=positive_int, help="sampling steps (default: the model's)")
    model.add_argument("--seed", type=int, default=0, help="degradation and noise seed (default 0)")
    model.add_argument("--peers", action="store_true",
                       help="also run SPAN x4 and Real-ESRGAN x4plus (pip install \"resshift[peers]\")")
    run = parser.add_argument_group("running")
    run.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    run.add_argument("--dtype", choices=("auto", *DTYPES), default="auto", help="auto: fp16 on CUDA, else fp32")
    run.add_argument("-t", "--tile", type=non_negative_int,
                     help="model tile size in input pixels; 0: none (default: automatic from free memory)")
    run.add_argument("--tile-overlap", type=non_negative_int, help="tile overlap (default: a quarter of the tile)")
    run.add_argument("--threads", type=positive_int, default=torch.get_num_threads(),
                     help="CPU threads of the peers (default: torch's, %(default)s here)")
    parser.set_defaults(run=run_benchmark_command)


def _model_name(spec: str | None) -> str:
    """The model's folder and row name: a bundled name, or the file or folder name of the spec."""
    spec = spec or DEFAULT_MODELS["sr"]     # called after load_model, which found the default or raised
    path = Path(spec).expanduser()
    return path.stem if path.is_file() else path.name


def run_benchmark_command(args: argparse.Namespace) -> int:
    if args.tile and args.tile_overlap is not None and args.tile_overlap >= args.tile:
        raise InputError(f"--tile-overlap {args.tile_overlap} must be smaller than --tile {args.tile}")
    device = resolve_device(args.device)
    options = BenchmarkOptions(degradation=args.degradation, seed=args.seed, lq=args.lq,
                               no_reference=args.no_reference, limit=args.limit, peers=args.peers,
                               threads=args.threads, grid_count=args.grid_count, overwrite=args.overwrite,
                               metrics_device=str(device))
    if args.peers:
        find_peers()            # a missing package is a usage error: say so before loading the model
    models = {}
    for spec in args.model or [None]:
        pipe = load_model(spec, args.autoencoder, args.task, device=device, dtype=resolve_dtype(args.dtype, device))
        if pipe.config.task != "sr":
            raise InputError(f"--model {spec}: benchmark needs a super-resolution model, "
                             f"this one is for {pipe.config.task!r}")
        models[_model_name(spec)] = pipe
    restore_options = RestoreOptions(steps=args.steps, seed=args.seed, tile=args.tile,
                                     tile_overlap=args.tile_overlap)
    result = run_benchmark(models, args.set_folder, args.output, options, restore_options=restore_options)
    for note in result.notes:
        print(f"resshift benchmark: note: {note}", file=sys.stderr)
    problems = [str(p) for p in result.problems]
    for method in result.methods:
        problems += [f"{method.name}: {p}" for p in method.report.problems]
    for problem in problems:
        print(f"resshift benchmark: {problem}", file=sys.stderr)
    print(f"{args.set_folder} ({result.inputs}, x{result.scale}, seed {args.seed})")
    print(result.table())
    print(f"wrote {args.output / 'benchmark.json'}, benchmark.csv and grid.png")
    return EXIT_SKIPPED if problems else 0
