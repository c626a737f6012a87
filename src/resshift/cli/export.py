"""`resshift export`: a model's networks as files another runtime runs (ONNX graphs and a manifest)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

EPILOG = """\
The folder holds denoiser.onnx, encoder.onnx, decoder.onnx (float32, dynamic batch, height and width)
and manifest.json: the schedule, the model's settings, each graph's inputs and outputs and the chain
step by step, so that a runtime in any language can run the whole restoration.

examples:
  resshift export realsr-x4 --format onnx -o exports/realsr-x4
  resshift export models/realsr-v3 --format onnx -o exports/realsr-v3 --overwrite
  resshift upscale -i photo.jpg -o out/ --backend onnxruntime     # exports into the cache by itself
"""


def add_export(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="write a model's networks as ONNX graphs with a manifest, for other runtimes",
        description="Export a model's denoiser, encoder and decoder to ONNX, with a manifest.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL",
                        help="bundled model name, official model name (downloaded once) or model folder")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="file format (default: onnx)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="folder to write (missing or empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace a folder that is not empty")
    parser.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    from ..export import MANIFEST_NAME, export_onnx
    from ..models import load_model

    start = time.perf_counter()
    pipe = load_model(args.model, device="cpu")
    folder = export_onnx(pipe, args.output, overwrite=args.overwrite)
    sizes = ", ".join(f"{path.name} {path.stat().st_size / 2**20:.1f} MiB" for path in sorted(folder.glob("*.onnx")))
    print(f"resshift export: wrote {folder} ({sizes}, {MANIFEST_NAME}) in {time.perf_counter() - start:.1f} s")
    return 0
