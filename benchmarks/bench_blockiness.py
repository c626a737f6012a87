"""JPEG blockiness (resshift.metrics.blockiness) of x4 upscalers on real low-resolution photos.

Each image of `--set` (default RealSet65: 65 real photos, 35 of them JPEG files) is scored as:
  lr                 the LR image itself (scale 1);
  bicubic            torch bicubic x4 (align_corners=False, so LR pixel centres map to output centres);
  realsr-x4          the bundled ResShift model as `resshift upscale` runs it (`--realsr-model`; seed 12345);
  span-x4, realesrgan-x4plus   the ncnn peers (resshift.peers; CPU, fp32), when installed.
Two numbers per output: B on the JPEG grid mapped to the output (1 = no blocking), and B on the grid moved
by half a block (`grid_offset` 4), a control that reads about 1 without blocks and below 1 with them
(then its lines sit in flat block centres): a value above 1 there would be a pattern of some other grid.
Means are given over all images and over the JPEG files alone (their grid starts at pixel 0 for certain;
a PNG may never have been a JPEG, or have been cropped after).

Prints a table and writes benchmarks/results/bench_blockiness.json (means and per-image values), rewritten
after every image, so that an interrupted run leaves the images done so far.

    python benchmarks/bench_blockiness.py [--set FOLDER] [--limit N] [--threads 1]
        [--realsr-model realsr-x4|none] [--no-peers] [--results PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import RESULTS, machine  # noqa: E402  (helpers shared by the benchmarks)

from resshift.benchmark import Method, model_method, peer_methods  # noqa: E402
from resshift.fileio import atomic_write_json  # noqa: E402
from resshift.imageio import IMAGE_SUFFIXES, from_tensor, read_image, to_tensor  # noqa: E402
from resshift.metrics import blockiness  # noqa: E402
from resshift.models import load_model  # noqa: E402
from resshift.batch import RestoreOptions  # noqa: E402

SCALE = 4
CONTROL_OFFSET = 4      # LR pixels: half a JPEG block
REALSET65 = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "resshift_testdata"
             / "RealSet65").resolve()


def bicubic_x4(lr: np.ndarray) -> np.ndarray:
    return from_tensor(F.interpolate(to_tensor(lr), scale_factor=SCALE, mode="bicubic").clamp_(0, 1))


def methods(args: argparse.Namespace) -> list[Method]:
    """The upscalers in table order (the LR row is scored apart: it has scale 1)."""
    found = [Method("bicubic", "bicubic", bicubic_x4, "torch bicubic x4, align_corners=False")]
    if args.realsr_model.lower() != "none":
        pipe = load_model(args.realsr_model)
        found.append(model_method(pipe, "realsr-x4", RestoreOptions()))
    if args.peers:
        found += peer_methods(SCALE, args.threads, [])
    return found


def mean_scores(scores: dict[str, dict], names: list[str], key: str) -> float:
    return statistics.fmean(scores[name][key] for name in names)


def summary(per_method: dict[str, dict[str, dict]], jpeg_names: list[str]) -> dict[str, dict]:
    """Per method: images scored, mean B and mean control over all images and over the JPEG files."""
    rows = {}
    for method, scores in per_method.items():
        names = list(scores)
        jpegs = [n for n in names if n in jpeg_names]
        rows[method] = {"images": len(names), "blockiness": mean_scores(scores, names, "grid"),
                        "control": mean_scores(scores, names, "control"), "jpeg_images": len(jpegs),
                        "jpeg_blockiness": mean_scores(scores, jpegs, "grid") if jpegs else None,
                        "jpeg_control": mean_scores(scores, jpegs, "control") if jpegs else None}
    return rows


def table(rows: dict[str, dict]) -> str:
    lines = ["| method | images | B (grid) | B (half-block control) | JPEG files | B on JPEG files |",
             "|---|---:|---:|---:|---:|---:|"]
    for method, row in rows.items():
        jpeg = "-" if row["jpeg_blockiness"] is None else f"{row['jpeg_blockiness']:.3f}"
        lines.append(f"| {method} | {row['images']} | {row['blockiness']:.3f} | {row['control']:.3f} "
                     f"| {row['jpeg_images']} | {jpeg} |")
    return "\n".join(lines)


def score(output: np.ndarray, scale: int) -> dict[str, float]:
    return {"grid": blockiness(output, scale), "control": blockiness(output, scale, CONTROL_OFFSET)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=REALSET65, help="folder of LR photos (default RealSet65)")
    parser.add_argument("--limit", type=int, help="only the first N images, in sorted order")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of torch and the peers")
    parser.add_argument("--realsr-model", default="realsr-x4", help="folder or bundled name; 'none' leaves it out")
    parser.add_argument("--no-peers", dest="peers", action="store_false", help="leave the ncnn peers out")
    parser.add_argument("--results", type=Path, default=RESULTS / "bench_blockiness.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    files = sorted(p for p in args.set.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: args.limit]
    upscalers = methods(args)
    per_method: dict[str, dict[str, dict]] = {"lr": {}, **{m.name: {} for m in upscalers}}
    seconds: dict[str, list[float]] = {m.name: [] for m in upscalers}
    jpeg_names: list[str] = []
    for index, path in enumerate(files, 1):
        image = read_image(path)
        if image.format == "JPEG":
            jpeg_names.append(path.name)
        per_method["lr"][path.name] = score(image.pixels, 1)
        for method in upscalers:
            start = time.perf_counter()
            output = method.upscale(image.pixels)
            seconds[method.name].append(time.perf_counter() - start)
            per_method[method.name][path.name] = score(output, SCALE)
        print(f"[{index}/{len(files)}] {path.name}: "
              + ", ".join(f"{m} {s[path.name]['grid']:.3f}" for m, s in per_method.items()), file=sys.stderr)
        rows = summary(per_method, jpeg_names)
        atomic_write_json(args.results, {
            "machine": machine(), "set": str(args.set), "scale": SCALE, "control_offset": CONTROL_OFFSET,
            "threads": args.threads, "complete": index == len(files),
            "methods": {m.name: m.about for m in upscalers},
            "seconds_per_image": {name: statistics.fmean(s) for name, s in seconds.items()},
            "means": rows, "per_image": per_method, "jpeg_files": jpeg_names})
    print(table(rows))


if __name__ == "__main__":
    main()
