"""Runtimes for the bundled realsr-x4 side by side on this CPU, with what each does to quality.

One run times a 256x256 -> 1024x1024 upscale (median of `--repeat` calls after a warm-up) with

* PyTorch eager fp32 (the reference), channels_last, torch.compile (its first call, the compilation,
  is reported apart), bf16;
* ONNX Runtime fp32 (`resshift.export`), and with the denoiser dynamically quantised to int8
  (`onnxruntime.quantization.quantize_dynamic`: int8 weights, activations quantised per call);
* SPAN x4 through ncnn (`resshift.peers`), the speed target's yardstick;

and measures each one's quality against the fp32 reference: PSNR-Y (4-pixel border) on Set5 from
resshift's MATLAB-bicubic LR, ST-LPIPS on Val_SR (its lq/ against gt/), and the largest 8-bit
difference from the reference's outputs. Everything runs with `--threads` threads (OpenMP, PyTorch,
onnxruntime, ncnn). Writes benchmarks/results/bench_runtime.json and prints a markdown table.

    python benchmarks/bench_runtime.py [--threads 2] [--repeat 5] [--val-limit 32] [--no-compile]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import RESULTS, machine, median_seconds  # noqa: E402

from resshift.batch import RestoreOptions, resize  # noqa: E402
from resshift.benchmark import peer_methods  # noqa: E402
from resshift.data import center_crop  # noqa: E402
from resshift.degradations.bicubic import imresize  # noqa: E402
from resshift.export import export_onnx, onnx_pipeline  # noqa: E402
from resshift.export.runtime import OnnxDenoiser, OnnxGraph  # noqa: E402
from resshift.fileio import atomic_write_json  # noqa: E402
from resshift.imageio import Image, read_image  # noqa: E402
from resshift.metrics.psnr_ssim import psnr  # noqa: E402
from resshift.metrics.stlpips import STLPIPS  # noqa: E402
from resshift.models import load_model  # noqa: E402
from resshift.pipeline import ResShiftPipeline  # noqa: E402
from resshift.tasks import restore_image  # noqa: E402

DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
SET5, VAL_SR = DATA / "benchmarks" / "Set5", DATA / "resshift_testdata" / "Val_SR"
SPEED_IMAGE = DATA / "benchmarks" / "Set14" / "img_001.png"
MODEL = "realsr-x4"
REFERENCE = "PyTorch eager fp32"
Upscale = Callable[[np.ndarray], np.ndarray]        # (h, w, 3) float32 in [0, 1] -> (4h, 4w, 3)


def pipeline_upscale(pipe: ResShiftPipeline) -> Upscale:
    """The model as `resshift upscale` runs it (seed 12345), untiled."""
    return lambda lr: restore_image(pipe, Image(pixels=lr), RestoreOptions(), tile=None).pixels


def torch_variants() -> dict[str, Callable[[], Upscale]]:
    """Each PyTorch variant's builder (built only when its turn comes, so a failure is that row's)."""
    def channels_last() -> Upscale:
        pipe = load_model(MODEL)
        pipe.unet.to(memory_format=torch.channels_last)
        return pipeline_upscale(pipe)

    def compiled() -> Upscale:
        pipe = load_model(MODEL)
        pipe.unet = torch.compile(pipe.unet)
        return pipeline_upscale(pipe)

    return {REFERENCE: lambda: pipeline_upscale(load_model(MODEL)),
            "PyTorch channels_last": channels_last,
            "torch.compile (inductor)": compiled,
            "PyTorch bf16": lambda: pipeline_upscale(load_model(MODEL, dtype=torch.bfloat16))}


def onnx_variants(folder: Path) -> dict[str, Callable[[], Upscale]]:
    def int8() -> Upscale:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantised = folder.parent / "denoiser.int8.onnx"
        quantize_dynamic(folder / "denoiser.onnx", quantised, weight_type=QuantType.QInt8)
        pipe = onnx_pipeline(folder)
        names = pipe.unet.graph.input_names
        pipe.unet = OnnxDenoiser(OnnxGraph(quantised, names), pipe.config).eval()
        return pipeline_upscale(pipe)

    return {"ONNX Runtime fp32": lambda: pipeline_upscale(onnx_pipeline(folder)),
            "ONNX Runtime int8 (dynamic)": int8}


def span_variant(threads: int) -> dict[str, Callable[[], Upscale]]:
    def span() -> Upscale:
        method = next(m for m in peer_methods(4, threads, []) if m.name == "span-x4")
        return method.upscale
    return {"SPAN x4 (ncnn)": span}


# ------------------------------------------------------------------------------------------ data
def speed_input() -> np.ndarray:
    pixels = read_image(SPEED_IMAGE).pixels
    return resize(center_crop(pixels, min(pixels.shape[:2]), 1), (256, 256))


def set5_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """(LR by MATLAB bicubic /4, HR cropped to a multiple of 4) for each Set5 image."""
    pairs = []
    for path in sorted(SET5.glob("*.png")):
        hr = read_image(path).pixels
        hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4]
        tensor = torch.from_numpy(hr.astype(np.float64)).permute(2, 0, 1)[None]
        lr = imresize(tensor, scale=0.25).clamp(0, 1)[0].permute(1, 2, 0).numpy()
        pairs.append((np.round(lr * 255).astype(np.float32) / 255, hr))       # LR as an 8-bit file holds it
    return pairs


def val_sr_pairs(limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
    names = sorted(p.name for p in (VAL_SR / "lq").glob("*.png"))[:limit]
    return [(read_image(VAL_SR / "lq" / n).pixels, read_image(VAL_SR / "gt" / n).pixels) for n in names]


def eight_bit(pixels: np.ndarray) -> np.ndarray:
    return np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)


# ------------------------------------------------------------------------------------ measuring
def quality(upscale: Upscale, set5: list, val: list, lpips: STLPIPS, reference: list | None) -> dict:
    """Mean PSNR-Y on Set5 (None for an empty list), mean ST-LPIPS on Val_SR, the Val_SR outputs, and
    their largest 8-bit difference from `reference`'s."""
    psnrs = [psnr(eight_bit(upscale(lr)), eight_bit(hr), crop_border=4, y_channel=True) for lr, hr in set5]
    outputs = [eight_bit(upscale(lr)) for lr, _ in val]
    with torch.no_grad():
        distances = [float(lpips(*(torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255 for x in (out, eight_bit(gt)))))
                     for out, (_, gt) in zip(outputs, val)]
    largest = None if reference is None else max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(outputs, reference))
    return {"set5_psnr_y": float(np.mean(psnrs)) if psnrs else None, "val_sr_stlpips": float(np.mean(distances)),
            "max_8bit_difference": largest, "outputs": outputs}


def measure(name: str, build: Callable[[], Upscale], lr: np.ndarray, data: dict, repeat: int) -> dict:
    """One row: build, first call (compilation included), median time, quality; an error is the row's."""
    print(f"== {name}", file=sys.stderr, flush=True)
    try:
        upscale = build()
        start = time.perf_counter()
        upscale(lr)
        first = time.perf_counter() - start
        seconds = median_seconds(lambda: upscale(lr), torch.device("cpu"), repeat)
        set5 = [] if name.startswith("torch.compile") else data["set5"]      # one compilation per image size
        row = {"seconds": seconds, "first_call_seconds": first,
               **quality(upscale, set5, data["val"], data["lpips"], data.get("reference"))}
    except Exception as exc:                     # a runtime that fails here is reported, not fatal
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}
    print(f"   {seconds:.3f} s, first call {first:.1f} s", file=sys.stderr, flush=True)
    return row


def markdown(rows: dict[str, dict], threads: int) -> str:
    base = rows[REFERENCE]
    lines = [f"| runtime ({threads} threads) | s, 256->1024 | vs eager | Set5 PSNR-Y (change) | "
             "Val_SR ST-LPIPS (change) | max 8-bit diff. from eager |", "|---|---:|---:|---:|---:|---:|"]
    for name, row in rows.items():
        if "error" in row:
            lines.append(f"| {name} | failed: {row['error']} | | | | |")
            continue
        psnr_cell = "not run" if row["set5_psnr_y"] is None else (
            f"{row['set5_psnr_y']:.2f} ({row['set5_psnr_y'] - base['set5_psnr_y']:+.3f})")
        lpips_cell = f"{row['val_sr_stlpips']:.4f} ({row['val_sr_stlpips'] - base['val_sr_stlpips']:+.4f})"
        diff = "-" if row["max_8bit_difference"] is None else str(row["max_8bit_difference"])
        lines.append(f"| {name} | {row['seconds']:.3f} | {row['seconds'] / base['seconds']:.2f}x | {psnr_cell} | "
                     f"{lpips_cell} | {diff} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--val-limit", type=int, default=32, help="Val_SR pairs for ST-LPIPS (default: all 32)")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out (its compilation is slow)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    data = {"set5": set5_pairs(), "val": val_sr_pairs(args.val_limit), "lpips": STLPIPS.from_package("vgg")}
    lr = speed_input()
    with tempfile.TemporaryDirectory() as scratch:
        folder = export_onnx(load_model(MODEL), Path(scratch) / "onnx")
        builders = {**torch_variants(), **onnx_variants(folder), **span_variant(args.threads)}
        if args.no_compile:
            builders.pop("torch.compile (inductor)")
        rows = {}
        for name, build in builders.items():
            rows[name] = measure(name, build, lr, data, args.repeat)
            if name == REFERENCE:
                data["reference"] = rows[name]["outputs"]
    for row in rows.values():
        row.pop("outputs", None)
    result = {"model": MODEL, "input": "256x256 -> 1024x1024", "repeat": args.repeat, "machine": machine(),
              "onnxruntime": __import__("onnxruntime").__version__, "val_sr_pairs": len(data["val"]),
              "set5_images": len(data["set5"]), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / "bench_runtime.json", result)
    print(markdown(rows, args.threads))


if __name__ == "__main__":
    main()
