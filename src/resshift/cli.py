"""The `resshift` command: one entry point with subcommands that call the library API.

Errors the user can act on are printed as one line on stderr with exit code 2 (usage and
input problems) or 1 (a job that failed); never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from . import __version__
from .cli_benchmark import add_benchmark
from .cli_eval import add_eval
from .cli_serve import add_serve
from .cli_tasks import add_inpaint, add_restore_face
from .cli_upscale import add_upscale
from .degradations.cli import add_degrade
from .errors import ResShiftError
from .models import BUNDLED, DEFAULT_MODELS, DTYPES
from .presets import PRESETS
from .training.cli import add_train

EXIT_USAGE = 2


def _add_convert(subparsers: argparse._SubParsersAction) -> None:
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
    parser.set_defaults(run=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from .pipeline import ResShiftPipeline

    if args.output.exists() and any(args.output.iterdir()) and not args.overwrite:
        raise ResShiftError(f"{args.output}: folder exists and is not empty (use --overwrite)")
    pipe = ResShiftPipeline.from_official(args.unet, args.autoencoder, task=args.task)
    pipe.save_pretrained(args.output, dtype=DTYPES[args.dtype])
    print(f"wrote {args.output} ({pipe.config.task}, x{pipe.config.scale}, "
          f"{pipe.config.schedule.num_steps} steps)")
    return 0


def _add_presets(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("presets", help="list the official presets and their files")
    parser.set_defaults(run=_run_presets)


def _add_models(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the models bundled with resshift (no download needed)")
    parser.set_defaults(run=_run_models)


def _run_models(args: argparse.Namespace) -> int:
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


def _run_presets(args: argparse.Namespace) -> int:
    for preset in PRESETS.values():
        files = f"{preset.unet_file or '(no official weights)'} + {preset.autoencoder_file}"
        print(f"{preset.name:18} {preset.description:58} {files}")
    return 0


COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    add_upscale, add_inpaint, add_restore_face, add_benchmark, add_eval, add_serve, add_train, add_degrade,
    _add_convert, _add_models, _add_presets)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resshift", description="Efficient diffusion-based image restoration (ResShift).")
    parser.add_argument("--version", action="version", version=f"resshift {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ResShiftError as exc:
        print(f"resshift {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"resshift {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
