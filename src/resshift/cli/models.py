"""`resshift convert`, `resshift models` and `resshift presets`: getting models and seeing which exist."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ResShiftError
from ..models import BUNDLED, DEFAULT_MODELS, DTYPES
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
    parser = subparsers.add_parser("models", help="list the models bundled with resshift (no download needed)")
    parser.set_defaults(run=run_models)


def run_models(args: argparse.Namespace) -> int:
    if not BUNDLED:
        print("no bundled models in this version yet; use a model folder or official checkpoints "
              "(`resshift presets`)")
    defaults = set(DEFAULT_MODELS.values())
    for model in BUNDLED.values():
        state = "default" if model.name in defaults else ""
        if not model.installed:
            state = "MISSING"
        print(f"{model.name:12} {model.task:8} {state:8} {model.description}")
    return 0


def run_presets(args: argparse.Namespace) -> int:
    for preset in PRESETS.values():
        files = f"{preset.unet_file or '(no official weights)'} + {preset.autoencoder_file}"
        print(f"{preset.name:18} {preset.description:58} {files}")
    return 0
