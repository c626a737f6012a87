"""CPU/GPU time per stage of the official-size realsr-v3 model, against the machine's matmul peak.

Stages: UNet forward on a 64x64 latent, VQGAN encode 256 -> 64, VQGAN decode 64 -> 256 (with
quantisation), and the whole 4-step pipeline 64x64 -> 256x256. FLOPs are counted once per stage
with torch's FlopCounterMode; achieved GFLOP/s are compared with a 2048x2048 matmul measured in
the same run (the FLOPs are PyTorch's count of the same graphs for every backend). Official timings
on this kind of machine (../shared/reference/official_v3/README.md) are printed beside ours.
`--backend onnxruntime` runs the same model exported to ONNX (`resshift.export`, CPU fp32) and reports
the whole chain's largest difference from PyTorch's output (tests/export/test_export_official.py holds
it to 1e-4 with the reference's recipe weights).

    python benchmarks/bench_core.py [--threads 2] [--device cpu] [--dtype fp32] [--repeat 3]
                                    [--backend torch|onnxruntime]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from resshift.export import export_onnx, onnx_pipeline
from resshift.models import DTYPES
from resshift.pipeline import ResShiftPipeline
from resshift.presets import get_preset

OFFICIAL_CPU_SECONDS = {"unet": 0.81, "decode": 4.13, "encode": 1.85, "pipeline": 9.49}
RESULTS = Path(__file__).parent / "results"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, device: torch.device, repeat: int) -> float:
    fn()                                       # warm-up: allocations, kernel selection
    times = []
    for _ in range(repeat):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_peak(device: torch.device, dtype: torch.dtype, repeat: int) -> float:
    a = torch.randn(2048, 2048, device=device, dtype=dtype)
    b = torch.randn(2048, 2048, device=device, dtype=dtype)
    seconds = median_seconds(lambda: a @ b, device, max(repeat, 5))
    return 2 * 2048 ** 3 / seconds / 1e9


def machine() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                           if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]

    torch.manual_seed(0)
    reference = ResShiftPipeline.from_config(get_preset("realsr-v3").config, device=device, dtype=dtype)
    with tempfile.TemporaryDirectory() as scratch:
        pipe = reference if args.backend == "torch" else onnx_pipeline(export_onnx(reference, Path(scratch) / "v3"))
        result = measure_stages(pipe, reference, args, device, dtype)
    out = RESULTS / f"bench_core_{device.type}_{args.dtype}{'' if args.backend == 'torch' else '_' + args.backend}.json"
    RESULTS.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "device": str(device), "dtype": args.dtype,
                               "backend": args.backend, **result}, indent=2) + "\n")
    print(f"wrote {out}")


def measure_stages(pipe: ResShiftPipeline, reference: ResShiftPipeline, args: argparse.Namespace,
                   device: torch.device, dtype: torch.dtype) -> dict:
    """Each stage's median time on `pipe`, its FLOPs as counted on the PyTorch `reference`, the matmul
    peak, and (when the two differ) the largest difference of the whole chain's outputs."""
    g = torch.Generator(device).manual_seed(0)
    lq = torch.rand(1, 3, 64, 64, generator=g, device=device)
    latent = torch.randn(1, 3, 64, 64, generator=g, device=device)
    image = torch.rand(1, 3, 256, 256, generator=g, device=device) * 2 - 1
    t = torch.tensor([3], device=device)

    def stages(of: ResShiftPipeline) -> dict:
        return {"unet": lambda: of.unet(latent.to(dtype), t, lq=(lq * 2 - 1).to(dtype)),
                "encode": lambda: of.encode(image),
                "decode": lambda: of.decode(latent),
                "pipeline": lambda: of(lq, generator=torch.Generator().manual_seed(0))}

    peak = matmul_peak(device, dtype, args.repeat)
    rows = []
    with torch.inference_mode():
        for (name, fn), reference_fn in zip(stages(pipe).items(), stages(reference).values()):
            flops = count_flops(reference_fn)
            seconds = median_seconds(fn, device, args.repeat)
            gflops = flops / seconds / 1e9
            rows.append({"stage": name, "seconds": seconds, "gflop": flops / 1e9, "gflops_per_s": gflops,
                         "fraction_of_matmul_peak": gflops / peak,
                         "official_cpu_seconds": OFFICIAL_CPU_SECONDS[name]})
        difference = None if pipe is reference else (stages(pipe)["pipeline"]() - stages(reference)["pipeline"]()
                                                      ).abs().max().item()

    print(f"{args.backend}: matmul peak (2048^2, {args.dtype}, {args.threads} threads): {peak:.1f} GFLOP/s on {device}")
    print(f"{'stage':10} {'seconds':>8} {'GFLOP':>8} {'GFLOP/s':>8} {'% peak':>7} {'official s (CPU)':>17}")
    for r in rows:
        print(f"{r['stage']:10} {r['seconds']:8.3f} {r['gflop']:8.1f} {r['gflops_per_s']:8.1f} "
              f"{100 * r['fraction_of_matmul_peak']:6.1f}% {r['official_cpu_seconds']:17.2f}")
    if difference is not None:
        print(f"whole chain, largest difference from PyTorch: {difference:.2e}")
    return {"matmul_peak_gflops_per_s": peak, "stages": rows, "max_difference_from_torch": difference}


if __name__ == "__main__":
    main()
