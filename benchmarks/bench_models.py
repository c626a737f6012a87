"""Quality and speed of the bundled models beside bicubic, Lanczos and the ncnn peers, for docs/results.md.

Runs (each through `resshift.benchmark.run_benchmark`, so the numbers are those `resshift benchmark` prints):

* `bicubic-x4` on Set5 and Set14, LR made by MATLAB bicubic: PSNR/SSIM (Y, 4-pixel border), ST-LPIPS;
* the real-photo models (`--realsr-model`, several side by side) on Val_SR (its given `lq/` inputs against
  `gt/`, not degraded again): ST-LPIPS, PSNR, SSIM and the phase variance of the error (a 4-pixel grid);
* the same models on RealSet65 (real photos, no reference): NIQE and JPEG blockiness;
* speed of each model and the peers on one 256x256 input (-> 1024x1024): median of `--repeat` calls after
  a warm-up, with `--threads` CPU threads (default: all cores).

The peers (SPAN x4, Real-ESRGAN x4plus; CPU, ncnn) join every run when installed. Writes
`benchmarks/results/bench_models.json`, each run's folder (outputs, benchmark.json/.csv, grid.png) under
`--out`, and prints a markdown block ready for docs/results.md.

    python benchmarks/bench_models.py --bicubic-model models/bicubic-x4 --realsr-model realsr-x4 runs/x/export
        [--limit N] [--steps N] [--device auto] [--dtype auto] [--threads N] [--out bench-models]

`--limit 2` with tiny random models checks in minutes that everything runs; `--realsr-model none` (or
`--bicubic-model none`) leaves one model's runs out; `--no-peers` leaves the peers out (their numbers don't
change between runs: ncnn on the same inputs); `--speed-only` times the models without the quality runs (the
quality numbers don't depend on the machine's load, the times do).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import RESULTS, machine, median_seconds  # noqa: E402  (helpers shared by the benchmarks)

from resshift.benchmark import (BenchmarkOptions, BenchmarkResult, format_metric, model_method,  # noqa: E402
                                peer_methods, run_benchmark)
from resshift.data import center_crop  # noqa: E402
from resshift.errors import ConfigError  # noqa: E402
from resshift.fileio import atomic_write_json  # noqa: E402
from resshift.evaluation import LABELS  # noqa: E402
from resshift.imageio import read_image  # noqa: E402
from resshift.distributed import resolve_device  # noqa: E402
from resshift.models import load_model, resolve_dtype  # noqa: E402
from resshift.peers import find_peers  # noqa: E402
from resshift.batch import RestoreOptions, resize  # noqa: E402

DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
SET5, SET14 = DATA / "benchmarks" / "Set5", DATA / "benchmarks" / "Set14"
VAL_SR, REALSET65 = DATA / "resshift_testdata" / "Val_SR", DATA / "resshift_testdata" / "RealSet65"
SPEED_IMAGE = SET14 / "img_001.png"


def model_name(spec: str) -> str:
    """A bundled name as it is; a folder by its path's last two parts (runs/x/export -> x-export)."""
    path = Path(spec)
    return spec if not path.exists() else "-".join(path.resolve().parts[-2:])


def peers_available() -> bool:
    try:
        find_peers()
    except ConfigError as err:
        print(f"note: peers left out ({err})", file=sys.stderr)
        return False
    return True


def quality_runs(args: argparse.Namespace, models: dict[str, dict], peers: bool) -> dict[str, BenchmarkResult]:
    """Each (run name, model group, set, options) through run_benchmark; outputs under args.out/<run name>."""
    base = dict(limit=args.limit, peers=peers, threads=args.threads, overwrite=True,
                metrics_device=str(args.device))
    runs = [("bicubic-x4 Set5", "bicubic", SET5, BenchmarkOptions(degradation="bicubic", **base)),
            ("bicubic-x4 Set14", "bicubic", SET14, BenchmarkOptions(degradation="bicubic", **base)),
            ("realsr-x4 Val_SR", "realsr", VAL_SR / "gt",
             BenchmarkOptions(lq=VAL_SR / "lq", metrics=("psnr", "ssim", "stlpips", "phase"), **base)),
            ("realsr-x4 RealSet65", "realsr", REALSET65, BenchmarkOptions(no_reference=True, **base))]
    restore_options = RestoreOptions(steps=args.steps, seed=args.seed)
    results = {}
    for name, group, folder, options in runs:
        if not models[group]:
            continue
        print(f"== {name}", file=sys.stderr)
        out = args.out / name.replace(" ", "_")
        results[name] = run_benchmark(models[group], folder, out, options, restore_options=restore_options)
        print(results[name].table(), file=sys.stderr)
    return results


def speed_run(args: argparse.Namespace, pipes: dict[str, object], peers: bool) -> dict[str, float]:
    """Median seconds of one size x size -> 4x input per method (models on args.device, peers on the CPU)."""
    pixels = read_image(SPEED_IMAGE).pixels
    square = center_crop(pixels, min(pixels.shape[:2]), 1)
    lr = resize(square, (args.speed_size, args.speed_size))   # a real photo at the size, not noise
    methods = [model_method(pipe, name, RestoreOptions(steps=args.steps, seed=args.seed))
               for name, pipe in pipes.items()]
    if peers:
        methods += peer_methods(4, args.threads, [])
    return {m.name: median_seconds(lambda m=m: m.upscale(lr), args.device, args.repeat) for m in methods}


def markdown(results: dict[str, BenchmarkResult], speed: dict[str, float], size: int) -> str:
    """One table per run (method, images, metrics, s/image) and the speed table."""
    blocks = []
    for name, result in results.items():
        metrics = result.metrics
        lines = [f"**{name}** ({result.inputs}, x{result.scale})", "",
                 "| method | images | " + " | ".join(LABELS[m] for m in metrics) + " | s/image |",
                 "|---|---:|" + "---:|" * (len(metrics) + 1)]
        for row in result.methods:
            means = row.report.means
            cells = [format_metric(m, means[m]) for m in metrics]
            lines.append(f"| {row.name} | {row.report.count} | " + " | ".join(cells)
                         + f" | {row.seconds_per_image:.3g} |")
        blocks.append("\n".join(lines))
    speed_lines = [f"**speed** ({size}x{size} -> {4 * size}x{4 * size}, median seconds)", "",
                   "| method | seconds |", "|---|---:|", *(f"| {k} | {v:.3g} |" for k, v in speed.items())]
    return "\n\n".join(blocks + ["\n".join(speed_lines)])


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bicubic-model", default="bicubic-x4",
                        help="folder or bundled name (default bicubic-x4); 'none' leaves its runs out")
    parser.add_argument("--realsr-model", nargs="+", default=["realsr-x4"],
                        help="folders or bundled names, compared side by side (default realsr-x4); 'none' "
                             "leaves their runs out")
    parser.add_argument("--out", type=Path, default=Path("bench-models"), help="folder for each run's outputs")
    parser.add_argument("--limit", type=int, help="only the first N images of each set")
    parser.add_argument("--steps", type=int, help="sampling steps (default: the models')")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--speed-size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS / "bench_models.json")
    parser.add_argument("--no-peers", dest="peers", action="store_false",
                        help="leave the ncnn peers out (Real-ESRGAN x4plus takes about 65 s per RealSet65 photo)")
    parser.add_argument("--speed-only", action="store_true",
                        help="only the speed table (e.g. again on an idle machine), no quality runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, args.device)
    groups = {"bicubic": [args.bicubic_model], "realsr": args.realsr_model}
    specs = {group: [spec for spec in group_specs if spec.lower() != "none"] for group, group_specs in groups.items()}
    if not any(specs.values()):
        parser.error("every model is 'none': nothing to benchmark")
    models = {group: {model_name(spec): load_model(spec, device=args.device, dtype=dtype) for spec in group_specs}
              for group, group_specs in specs.items()}
    peers = args.peers and peers_available()
    results = {} if args.speed_only else quality_runs(args, models, peers)
    speed = speed_run(args, {name: pipe for group in models.values() for name, pipe in group.items()}, peers)
    payload = {"machine": machine(), "device": str(args.device), "dtype": str(dtype).removeprefix("torch."),
               "models": {group: list(group_specs) for group, group_specs in specs.items()},
               "steps": args.steps, "seed": args.seed, "limit": args.limit, "peers": peers,
               "runs": {name: {"set": str(r.set_folder), "inputs": r.inputs,
                               "methods": {m.name: {"images": m.report.count, "seconds_per_image": m.seconds_per_image,
                                                    **{k: _json_number(v) for k, v in m.report.means.items()}}
                                           for m in r.methods},
                               "skipped": [str(p) for p in r.problems]} for name, r in results.items()},
               "speed": {"input": f"{args.speed_size}x{args.speed_size}", "threads": args.threads,
                         "median_seconds": speed}}
    args.results.parent.mkdir(exist_ok=True)
    atomic_write_json(args.results, payload)
    print(markdown(results, speed, args.speed_size))
    grids = "" if args.speed_only else f" and the grids under {args.out}/*/grid.png"
    print(f"\nwrote {args.results}{grids}", file=sys.stderr)


if __name__ == "__main__":
    main()
