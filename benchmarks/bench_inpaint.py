"""Inpainting quality inside the holes and time per image: our inpainting model against OpenCV's Telea.

The set: the first `--limit` images (default 32) of `--gt` (default Val_SR/gt: 256x256 ImageNet crops), in
sorted order, image i with one mask from `random_masks_in_range` (LaMa mixed masks, official parameters,
redrawn until holes cover 10-40 % of the image) drawn by the generator keyed (seed, KEY_DEGRADE, i): the
masks `resshift degrade --preset inpaint --seed S` writes for the same folder.

Both methods get the image with black holes and the mask (white = fill):
  telea  cv2.inpaint, Telea's fast marching method, radius 3, on 8-bit pixels;
  ours   the inpainting model (`--model`, default the bundled one) through `restore_image`, as
         `resshift inpaint` runs it (noise seed `--seed`, known pixels pasted back), rounded to 8 bits.

Scores (resshift.evaluation), on the ground truth with each prediction pasted into its holes, so that
nothing outside the holes counts:
  ST-LPIPS in holes  ST-LPIPS (VGG) between the ground truth and that composite. Only the holes differ, and
                     the network sees them with their surroundings; the distance is a mean over the whole
                     image, so it grows with the hole area: compare methods on the same masks only.
  PSNR in holes      10 log10(255² / MSE over the hole pixels), on BT.601 Y.
  shift RMS          how far the fill moves when the image moves by a few pixels (`hole_shift_rms`), in
                     8-bit levels: 0 for a fill that follows the image (Telea), the amplitude of any
                     pattern tied to the latent cells or attention windows (a plaid, which ST-LPIPS
                     barely sees). Not timed.
Time: wall-clock seconds per image for each method alone (no reading or scoring), after one untimed
warm-up image; on CUDA the model's result is on the host when the clock stops.

Prints a table and writes OUT/bench_inpaint.json (means and per-image values) and OUT/bench_inpaint_grid.png
(masked input | Telea | ours | ground truth for the first `--grid` images); OUT is benchmarks/results.

    python benchmarks/bench_inpaint.py [--model FOLDER] [--gt FOLDER] [--seed 0] [--limit 32] [--steps N]
        [--device cpu] [--dtype auto] [--threads 2] [--grid 6] [--out DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from resshift.cli.degrade import contact_sheet
from resshift.degradations.masks import EVAL_HOLE_RANGE
from resshift.errors import ResShiftError
from resshift.evaluation import (hole_psnr, hole_shift_rms, hole_stlpips, masked_eval_set, model_inpaint,
                                 telea_inpaint)
from resshift.fileio import atomic_write_json
from resshift.metrics import STLPIPS
from resshift.distributed import resolve_device
from resshift.models import DEFAULT_MODELS, load_model, resolve_dtype
from resshift.batch import RestoreOptions

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import RESULTS, machine  # noqa: E402  (helpers shared by the benchmarks)

VAL_SR_GT = Path(__file__).resolve().parents[2] / "shared" / "data" / "resshift_testdata" / "Val_SR" / "gt"
METHODS = ("telea", "ours")
LABELS = {"telea": "Telea (OpenCV)", "ours": "ours"}


def timed(method, items: list[dict]) -> tuple[list[np.ndarray], list[float]]:
    """Each item's prediction and seconds, after one untimed warm-up on the first item."""
    method(items[0]["masked"], items[0]["mask"])
    predictions, seconds = [], []
    for item in items:
        start = time.perf_counter()
        predictions.append(method(item["masked"], item["mask"]))
        seconds.append(time.perf_counter() - start)
    return predictions, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="inpainting model folder (default: the bundled inpainting model)")
    parser.add_argument("--gt", type=Path, default=VAL_SR_GT, help="ground-truth images (default Val_SR/gt)")
    parser.add_argument("--seed", type=int, default=0, help="masks and sampling noise (default 0)")
    parser.add_argument("--limit", type=int, default=32, help="first N images (default 32)")
    parser.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps (default cpu)")
    parser.add_argument("--dtype", default="auto", help="auto (fp16 on CUDA, else fp32), fp32, fp16 or bf16")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of torch and OpenCV (default 2)")
    parser.add_argument("--grid", type=int, default=6, help="images on the grid (default 6)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON and grid (default %(default)s)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    try:
        device = resolve_device(args.device)
        pipe = load_model(args.model, default_for="inpaint", device=device, dtype=resolve_dtype(args.dtype, device))
    except ResShiftError as exc:
        raise SystemExit(f"bench_inpaint: {exc}") from exc
    spec = args.model or DEFAULT_MODELS["inpaint"]  # load_model found it, or raised
    if pipe.config.task != "inpaint":
        raise SystemExit(f"--model {spec}: a {pipe.config.task!r} model; the benchmark needs an inpainting one")
    items = masked_eval_set(args.gt, args.limit, args.seed)
    if not items:
        raise SystemExit(f"--gt {args.gt}: no images found")
    options = RestoreOptions(steps=args.steps, seed=args.seed)
    run = {"telea": telea_inpaint, "ours": lambda masked, mask: model_inpaint(pipe, options, masked, mask)}
    lpips = STLPIPS.from_package("vgg").to(device)

    rows = [{"name": item["name"], "hole_ratio": float(item["mask"].mean())} for item in items]
    predictions = {}
    for method in METHODS:
        predictions[method], seconds = timed(run[method], items)
        for row, item, pred, sec in zip(rows, items, predictions[method], seconds):
            row[method] = {"stlpips_holes": hole_stlpips(lpips, pred, item["gt"], item["mask"], device),
                           "psnr_holes": hole_psnr(pred, item["gt"], item["mask"]),
                           "shift_rms": hole_shift_rms(run[method], item["masked"], item["mask"], pred), "seconds": sec}
    means = {m: {k: statistics.fmean(row[m][k] for row in rows) for k in rows[0][m]} for m in METHODS}

    print(f"{len(items)} images from {args.gt}, holes {EVAL_HOLE_RANGE[0]:.0%}-{EVAL_HOLE_RANGE[1]:.0%} "
          f"(mean {statistics.fmean(r['hole_ratio'] for r in rows):.1%}), seed {args.seed}, model {spec}, "
          f"{device.type} {pipe.dtype}, {args.threads} threads")
    print(f"{'method':16} {'ST-LPIPS in holes':>18} {'PSNR-Y in holes':>16} {'shift RMS':>10} {'s / image':>10}")
    for m in METHODS:
        print(f"{LABELS[m]:16} {means[m]['stlpips_holes']:18.4f} {means[m]['psnr_holes']:16.2f} "
              f"{means[m]['shift_rms']:10.2f} {means[m]['seconds']:10.3f}")
    ours_better = means["ours"]["stlpips_holes"] < means["telea"]["stlpips_holes"]
    print(f"ours {'beats' if ours_better else 'does not beat'} Telea on ST-LPIPS inside the holes")

    args.out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine() | {"threads": args.threads}, "device": device.type, "dtype": str(pipe.dtype),
              "model": str(spec), "gt": str(args.gt), "seed": args.seed, "steps": len(pipe.schedule(args.steps)),
              "hole_range": list(EVAL_HOLE_RANGE), "count": len(items), "mean": means, "ours_better_stlpips": ours_better,
              "images": rows}
    atomic_write_json(args.out / "bench_inpaint.json", report)
    grid = [(f"{item['name']}  holes {item['mask'].mean():.0%}  (masked input | Telea | ours | ground truth)",
             [item["masked"], predictions["telea"][i], predictions["ours"][i], item["gt"]])
            for i, item in enumerate(items[: args.grid])]
    contact_sheet(grid, args.out / "bench_inpaint_grid.png", columns=1)
    print(f"wrote {args.out / 'bench_inpaint.json'} and {args.out / 'bench_inpaint_grid.png'}")


if __name__ == "__main__":
    main()
