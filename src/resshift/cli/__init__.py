"""The `resshift` command: one entry point with subcommands that call the library API.

Errors the user can act on are printed as one line on stderr with exit code 2 (usage and
input problems) or 1 (a job or a download that failed); never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Callable, Sequence

from .. import __version__
from ..errors import DownloadError, ResShiftError, TrainingError
from .benchmark import add_benchmark
from .degrade import add_degrade
from .evaluate import add_eval
from .export import add_export
from .models import add_convert, add_download, add_models, add_presets
from .serve import add_serve
from .tasks import add_inpaint, add_restore_face
from .train import add_train
from .upscale import add_upscale

EXIT_FAILED = 1
EXIT_USAGE = 2


COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    add_upscale, add_inpaint, add_restore_face, add_benchmark, add_eval, add_serve, add_train, add_degrade,
    add_convert, add_download, add_models, add_presets, add_export)


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
    # Pillow's complaints about a file's metadata (a tag off the file, corrupt EXIF): a file it cannot read
    # is one error line from resshift, and one it reads is fine.
    warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
    try:
        return args.run(args)
    except (DownloadError, TrainingError) as exc:      # the request was right; the run failed it
        print(f"resshift {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ResShiftError as exc:
        print(f"resshift {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"resshift {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
