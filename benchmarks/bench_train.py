"""Training throughput of the tiny-cpu preset: images/s and the data pipeline's share of the step time.

Runs the real trainer (resshift.training.train) for a few steps per setting, side by side in one
process: DataLoader workers 0 and 2, bicubic and Real-ESRGAN LR synthesis. The data share is the
time a step waits for its batch plus the time to synthesise the LR on the device, over the step's
wall time. The first `--warmup` steps (allocations, kernel selection) are not counted.

    python benchmarks/bench_train.py [--device cpu|cuda] [--steps 20] [--threads 1,2] [--batch 16]

On a shared CPU, more threads can be much slower (OpenMP threads busy-wait for a descheduled peer):
compare thread counts side by side, and read the load average recorded with the results.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

import torch

from bench_core import RESULTS, machine
from resshift.training import load_config, train

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def run(device: str, degradation: str, workers: int, steps: int, warmup: int, batch: int, crop: int) -> dict:
    overrides = [f"data.train_dirs=[{DATA / 'train'}]", f"data.degradation={degradation}",
                 f"data.num_workers={workers}", f"data.crop_size={crop}", "data.val_dir=null",
                 f"optim.batch_size={batch}", f"optim.total_steps={warmup + steps}", "optim.warmup_steps=1",
                 "run.log_interval=1", "run.ckpt_interval=0", "run.val_interval=0"]
    with tempfile.TemporaryDirectory() as folder:
        rows = train(load_config("tiny-cpu", overrides), Path(folder) / "run", device=device)
    timed = rows[warmup:]
    seconds = [batch / r["images_per_s"] for r in timed]
    data_seconds = [r["data_frac"] * s for r, s in zip(timed, seconds)]
    return {"degradation": degradation, "workers": workers, "batch": batch, "crop": crop, "steps": len(timed),
            "images_per_s": batch * len(timed) / sum(seconds), "step_seconds": sum(seconds) / len(timed),
            "data_fraction": sum(data_seconds) / sum(seconds), "final_loss": timed[-1]["loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", default="1,2", help="comma-separated CPU thread counts to compare")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=64)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    load_before = os.getloadavg()[0]
    results = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for degradation in ("bicubic", "realesrgan"):
            for workers in (0, 2):
                result = run(args.device, degradation, workers, args.steps, args.warmup, args.batch, args.crop)
                results.append({"threads": threads, **result})

    print(f"tiny-cpu preset, batch {args.batch}, {args.crop}px crops, {args.device}; "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{'threads':>7} {'degradation':12} {'workers':>7} {'images/s':>9} {'s/step':>7} {'data share':>10}")
    for r in results:
        print(f"{r['threads']:7d} {r['degradation']:12} {r['workers']:7d} {r['images_per_s']:9.1f} "
              f"{r['step_seconds']:7.3f} {100 * r['data_fraction']:9.1f}%")
    RESULTS.mkdir(exist_ok=True)
    device = torch.device(args.device).type
    out = RESULTS / f"bench_train_{device}.json"
    out.write_text(json.dumps({"machine": machine(), "device": args.device, "preset": "tiny-cpu",
                               "load_average_before": load_before, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
