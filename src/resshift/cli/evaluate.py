"""`resshift eval`: score restored images against ground truth (PSNR, SSIM, ST-LPIPS) or alone (NIQE).

Exit codes: 0 when every file was scored, 1 when some were skipped for problems (each printed on one
line naming the file), 2 for usage errors (through `resshift.cli`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError
from ..evaluation import FULL_REFERENCE, METRICS, NO_REFERENCE, evaluate_folders
from .arguments import non_negative_int, positive_int

EXIT_SKIPPED = 1


def _metric_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip().lower() for name in text.split(",") if name.strip())
    unknown = [n for n in names if n not in METRICS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown metric {', '.join(unknown) or repr(text)}; "
                                         f"choose from {', '.join(METRICS)}")
    return names


def add_eval(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="score restored images: PSNR/SSIM/ST-LPIPS against ground truth, or NIQE and blockiness alone",
        description="Full reference (--gt given): files are paired by name without extension\n"
                    "(pred/img_001.png <-> gt/img_001.jpg); PSNR and SSIM on the BT.601 Y channel as SR\n"
                    "papers report them (--rgb: on RGB); ST-LPIPS (VGG) on RGB when stlpips-pytorch is\n"
                    "installed (`pip install resshift[metrics]`), otherwise a note and no column.\n"
                    "No reference (no --gt): NIQE, and JPEG blockiness: the luma steps across the inputs'\n"
                    "8x8 JPEG grid over those inside the blocks (1 = none; --scale says where the grid is).\n\n"
                    "Greyscale images are scored as RGB with equal channels (their Y metrics are those of\n"
                    "the grey values); alpha is ignored. Identical pairs have PSNR inf, which is left out\n"
                    "of the PSNR mean (the mean is inf only when every pair is identical).\n\n"
                    "Unmatched names, size mismatches, non-image files and images too small for a metric\n"
                    "are reported one line each and skipped. Exit code: 0 all scored, 1 some skipped,\n"
                    "2 usage error (e.g. an empty folder).",
        epilog="examples:\n"
               "  resshift eval --pred results/ --gt Set5/HR --crop-border 4 --json scores.json\n"
               "  resshift eval --pred upscaled/ --gt Set5/HR --pred-suffix _out --crop-border 4\n"
               "  resshift eval --pred results/ --metrics niqe --per-image\n"
               "  resshift eval --pred upscaled/ --scale 4             # NIQE and blockiness of x4 outputs",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", required=True, type=Path, help="folder of restored images")
    parser.add_argument("--gt", type=Path, help="folder of ground-truth images (same names as --pred)")
    parser.add_argument("--pred-suffix", default="",
                        help="removed from prediction names before pairing: with _out, "
                             "pred/photo_out.png <-> gt/photo.png (as `resshift upscale` names outputs)")
    parser.add_argument("--metrics", type=_metric_list,
                        help=f"comma-separated, from {', '.join(METRICS)} (default: "
                             f"{','.join(FULL_REFERENCE)} with --gt, {','.join(NO_REFERENCE)} without)")
    parser.add_argument("--crop-border", type=non_negative_int, default=0,
                        help="pixels removed on each side before scoring (SR papers: the scale)")
    parser.add_argument("--scale", type=positive_int, default=1,
                        help="how many times larger --pred is than its inputs: their 8x8 JPEG grid lies every "
                             "8 x scale pixels (blockiness; default 1: the images' own grid)")
    parser.add_argument("--rgb", action="store_true", help="PSNR/SSIM on RGB instead of the Y channel")
    parser.add_argument("--per-image", action="store_true", help="print one row per image above the mean")
    parser.add_argument("--json", type=Path, help="also write the scores, means and problems as JSON")
    parser.add_argument("--csv", type=Path, help="also write one row per image as CSV")
    parser.add_argument("--device", default="cpu", help="torch device for ST-LPIPS (default: cpu)")
    parser.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    if args.json is not None and args.json == args.csv:
        raise InputError("--json and --csv name the same file")
    report = evaluate_folders(args.pred, args.gt, metrics=args.metrics, crop_border=args.crop_border,
                              y_channel=not args.rgb, device=args.device, pred_suffix=args.pred_suffix,
                              scale=args.scale)
    for note in report.notes:
        print(f"resshift eval: note: {note}", file=sys.stderr)
    for problem in report.problems:
        print(f"resshift eval: {problem}", file=sys.stderr)
    print(report.table(per_image=args.per_image))
    for metric, count in report.infinite.items():
        if count:
            print(f"{metric}: {count} identical pair(s) scored inf, left out of the mean "
                  "(the mean is inf only when every pair is identical)")
    if args.json:
        report.write_json(args.json)
        print(f"wrote {args.json}")
    if args.csv:
        report.write_csv(args.csv)
        print(f"wrote {args.csv}")
    return EXIT_SKIPPED if report.problems else 0
