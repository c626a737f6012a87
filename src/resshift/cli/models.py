"""`resshift convert`, `download`, `models` and `presets`: getting models and seeing which exist."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import hub
from ..errors import ResShiftError
from ..hub import BUNDLED
from ..models import DEFAULT_MODELS, DTYPES
from ..presets import PRESETS


def add_convert(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="turn official ResShift .pth files into a resshift model folder",
        description="Load official ResShift checkpoints (safely: tensors only) and write a folder "
                    "with config.json and safetensors weights that `--model FOLDER` and "
                    "ResShiftPipeline.from_pretrained load.",
        epilog="example: resshift convert --unet resshift_realsrx4_s4_v3.pth "
               "--autoencoder autoencoder_vq_f4.pth --task realsr-v3 -o models/realsr-v3",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet", required=True, type=Path, help="official UNet checkpoint (.pth)")
    parser.add_argument("--autoencoder", required=True, type=Path,
                        help="official VQGAN checkpoint (.pth), e.g. autoencoder_vq_f4.pth")
    parser.add_argument("--task", choices=sorted(PRESETS),
                        help="official preset; recognised from the file when unambiguous")
    parser.add_argument("-o", "--output", required=True, type=Path, help="folder to write")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                        help="storage precision of the weights (default: fp32)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    parser.set_defaults(run=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from ..pipeline import ResShiftPipeline

    if args.output.exists() and any(args.output.iterdir()) and not args.overwrite:
        raise ResShiftError(f"{args.output}: folder exists and is not empty (use --overwrite)")
    pipe = ResShiftPipeline.from_official(args.unet, args.autoencoder, task=args.task)
    pipe.save_pretrained(args.output, dtype=DTYPES[args.dtype])
    print(f"wrote {args.output} ({pipe.config.task}, x{pipe.config.scale}, "
          f"{pipe.config.schedule.num_steps} steps)")
    return 0


def add_presets(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("presets", help="list the official presets and their files")
    parser.set_defaults(run=run_presets)


def add_models(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models", help="list the bundled models and the official ones (cached or not) and where the cache is",
        description="Bundled models run with no download. Official models are fetched by name on first use "
                    "(`--model realsr-v3`, or `resshift download realsr-v3`) into the cache shown.")
    parser.set_defaults(run=run_models)


def run_models(args: argparse.Namespace) -> int:
    defaults = set(DEFAULT_MODELS.values())
    print("bundled (Apache-2.0, no download):")
    for model in BUNDLED.values():
        state = "MISSING" if not model.installed else "default" if model.name in defaults else ""
        print(f"  {model.name:18} {model.task:8} {state:8} {model.description}")
    print(f"official (downloaded by name on first use; cache: {hub.cache_dir()}):")
    for row in hub.list_official():
        state, size = ("cached", f"{row.download_bytes / 1e6:.0f} MB") if row.cached else \
            ("-", f"~{row.download_bytes / 1e6:.0f} MB download")
        print(f"  {row.name:18} {row.task:8} {state:8} {row.description}; {size}; {row.licence} (non-commercial)")
    missing = [name for name, preset in PRESETS.items() if preset.unet_file is None]
    if missing:
        print(f"  (no official weights were released for {', '.join(missing)}: configuration only)")
    return 0


def add_download(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "download", help="fetch official models by name into the cache (done on first use anyway)",
        description="Download, verify and convert official ResShift models into the cache "
                    "(RESSHIFT_HOME, else $XDG_CACHE_HOME/resshift, else ~/.cache/resshift), so that "
                    "`--model NAME` then runs offline. An interrupted download resumes where it stopped. "
                    "The official weights are under the S-Lab License 1.0 (non-commercial use).",
        epilog="environment: RESSHIFT_MODEL_URL replaces the release URL (mirrors, local copies); "
               "RESSHIFT_OFFLINE=1 never downloads.\nexample: resshift download realsr-v3 inpaint-imagenet "
               "--dtype fp16", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", metavar="NAME", help="official model names (`resshift models`)")
    parser.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32",
                        help="storage precision of the converted weights (default: fp32)")
    parser.add_argument("--keep-pth", action="store_true",
                        help="keep the downloaded release .pth files in the cache after converting them")
    parser.set_defaults(run=run_download)


def run_download(args: argparse.Namespace) -> int:
    """Each name in turn; a failed one is reported and the others go on (exit 1 if any failed)."""
    failed = 0
    for name in args.names:
        try:
            folder = hub.ensure_model(name, dtype=DTYPES[args.dtype], keep_pth=args.keep_pth,
                                      progress=sys.stderr.isatty())
        except ResShiftError as exc:
            print(f"resshift download: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{name}: {folder}")
    return 1 if failed else 0


def run_presets(args: argparse.Namespace) -> int:
    for preset in PRESETS.values():
        files = f"{preset.unet_file or '(no official weights)'} + {preset.autoencoder_file}"
        print(f"{preset.name:18} {preset.description:58} {files}")
    return 0
