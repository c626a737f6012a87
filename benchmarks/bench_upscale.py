"""Time and peak memory of `resshift upscale` with the official-size realsr-v3 networks (random weights).

Each run is a fresh child process that writes an input PNG (a Set5 photo resized to the size),
loads the model and runs the CLI's own batch loop (`run_batch`: read, automatic tile, 4 steps,
write); it reports its wall time and its peak RSS (`ru_maxrss` of itself, so runs do not
contaminate each other). Runs:

* `--sizes` (default 512 1024 2048) with automatic tiling; the target is a peak RSS <= 6 GiB for
  1024x1024 -> 4096x4096 on CPU;
* `--untiled SIZE` (default 512): the same size with --tile 0, for the tiled / untiled time ratio;
* `--fit 64 128 192`: untiled inputs of these sizes with one step, whose peak RSS above the loaded
  model is fitted as a + b * latent_pixels (+ c * output_pixels, c fixed): b is
  `memory.BYTES_PER_LATENT_PIXEL`.

    python benchmarks/bench_upscale.py [--sizes 512 1024 2048] [--untiled 512] [--fit 64 128 192]
        [--steps N] [--threads 2] [--device cpu] [--dtype fp32] [--results FILE.json]

On 2 CPU cores the default sizes take hours (about 25 s per 128x128 latent tile and step set);
`--sizes 64 --untiled 64 --steps 1` checks that everything runs in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import DTYPES, RESULTS, machine  # noqa: E402  (helpers shared by the benchmarks)

from resshift.fileio import atomic_write_json  # noqa: E402

SET5 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "benchmarks" / "Set5" / "img_002.png"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024     # Linux reports kB


def child(spec: dict) -> dict:
    """One run in this process: returns seconds, tile and memory (MiB)."""
    from resshift.pipeline import ResShiftPipeline
    from resshift.presets import get_preset
    from resshift.batch import Job, RestoreOptions, choose_tile, latent_size, run_batch
    from resshift.tasks import upscale_job

    torch.set_num_threads(spec["threads"])
    device, dtype = torch.device(spec["device"]), DTYPES[spec["dtype"]]
    torch.manual_seed(0)
    pipe = ResShiftPipeline.from_config(get_preset("realsr-v3").config, device=device, dtype=dtype)
    loaded = peak_rss_mib()
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.png", Path(folder) / "out.png"
        size = spec["size"]
        image = Image.open(SET5).convert("RGB") if SET5.is_file() else Image.fromarray(
            np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))
        image.resize((size, size), Image.Resampling.BICUBIC).save(source)
        tile = spec["tile"]
        chosen = choose_tile(pipe, size, size, pipe.config.scale)[0] if tile is None else (tile or None)
        options = RestoreOptions(steps=spec["steps"], tile=tile)
        start = time.perf_counter()
        summary = run_batch(pipe, [Job(source, target)], options, restore=upscale_job, command="upscale",
                            report=print)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        assert summary.done == 1, summary.failed
        out_size = Image.open(target).size
    latent = latent_size(pipe, spec["size"], spec["size"])
    result = {**spec, "seconds": seconds, "tile_input_px": chosen, "output": list(out_size),
              "latent_pixels": latent[0] * latent[1],
              "loaded_rss_mib": loaded, "peak_rss_mib": peak_rss_mib()}
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def run_child(spec: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run {spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fit_memory(rows: list[dict]) -> dict:
    """Least squares: peak - loaded = a + b * latent pixels + c * output pixels (bytes)."""
    latent = np.array([r["latent_pixels"] for r in rows], dtype=np.float64)
    output = np.array([r["output"][0] * r["output"][1] for r in rows], dtype=np.float64)
    delta = np.array([(r["peak_rss_mib"] - r["loaded_rss_mib"]) * 2**20 for r in rows])
    if len({r["latent_pixels"] for r in rows}) >= 2:
        # output = 16 * latent here, so b and c cannot be told apart: fix c at the module's value.
        from resshift.memory import FIXED_BYTES_PER_OUTPUT_PIXEL as c
        a, b = np.linalg.lstsq(np.stack([np.ones_like(latent), latent], 1), delta - c * output, rcond=None)[0]
    else:
        a, b, c = float("nan"), float("nan"), float("nan")
    return {"constant_bytes": float(a), "bytes_per_latent_pixel": float(b), "bytes_per_output_pixel": float(c)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[512, 1024, 2048])
    parser.add_argument("--untiled", type=int, default=512, help="size also run with --tile 0 (0: none)")
    parser.add_argument("--fit", type=int, nargs="*", default=[],
                        help="untiled sizes whose peak memory gives the per-latent-pixel constant")
    parser.add_argument("--steps", type=int, help="sampling steps (default: the model's 4)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--results", type=Path,
                        help="JSON file to write (default: benchmarks/results/bench_upscale_<device>.json)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    base = {"threads": args.threads, "device": args.device, "dtype": args.dtype, "steps": args.steps}
    runs = [{**base, "size": size, "tile": None} for size in args.sizes]
    if args.untiled:
        runs.append({**base, "size": args.untiled, "tile": 0})
        if args.untiled not in args.sizes:
            runs.append({**base, "size": args.untiled, "tile": None})
    fits = [{**base, "size": size, "tile": 0, "steps": 1} for size in args.fit]
    rows = []
    print(f"{'input':>6} {'output':>11} {'tile':>6} {'seconds':>9} {'peak RSS MiB':>13} {'model MiB':>10}")
    for spec in runs + fits:
        row = run_child(spec)
        rows.append(row)
        tile = "off" if row["tile_input_px"] is None else str(row["tile_input_px"])
        print(f"{row['size']:>6} {'x'.join(map(str, row['output'])):>11} {tile:>6} {row['seconds']:9.1f} "
              f"{row['peak_rss_mib']:13.0f} {row['loaded_rss_mib']:10.0f}", flush=True)
    report = {"machine": machine() | {"threads": args.threads}, "device": args.device, "dtype": args.dtype,
              "runs": rows[: len(runs)]}
    if args.untiled:
        pair = [r for r in rows[: len(runs)] if r["size"] == args.untiled]
        tiled = next(r for r in pair if r["tile"] is None)
        untiled = next(r for r in pair if r["tile"] == 0)
        if tiled["tile_input_px"] is None:
            report["tiled_over_untiled_time"] = None
            print(f"{args.untiled}x{args.untiled}: fits in one tile, so no tiled / untiled ratio")
        else:
            report["tiled_over_untiled_time"] = tiled["seconds"] / untiled["seconds"]
            print(f"{args.untiled}x{args.untiled}: automatic tiling takes "
                  f"{report['tiled_over_untiled_time']:.2f}x the untiled time")
    if fits:
        report["memory_fit_runs"] = rows[len(runs):]
        report["memory_fit"] = fit_memory(rows[len(runs):])
        print("memory fit:", json.dumps(report["memory_fit"]))
    out = args.results or RESULTS / f"bench_upscale_{torch.device(args.device).type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
