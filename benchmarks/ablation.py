"""The (T, p, kappa) ablation of ResShift (paper 001, Table 1) with compact CPU models: train, score, report.

Every configuration trains the same compact model from the same seed on the same data for the same number
of steps; only the chain differs (T steps, growth p, noise kappa; official end points min_noise_level 0.04
and sqrt_eta_end 0.99, as the released 15-step models). The model: a 0.94 M-parameter Swin-UNet in the
lossless pixel-unshuffle latent (f = 4: the latent grid is the LR grid), predicting x0 through the global
skip x0 = output + z_y. The data: ../shared/data/train (BSD200 + T91), 64-pixel HR crops, Real-ESRGAN
second-order degradations made on the fly. The loss: the paper's x0 MSE in the latent, no perceptual term
(NeurIPS Table 1). AdamW 4e-4 (200 warm-up steps, cosine to 1e-5), batch 16, EMA 0.999, seed 0.

Each configuration has its own run folder (RUNS/<name>: `resshift train`'s checkpoints every 500 steps, so
an interrupted run continues where its last checkpoint left it when the script is run again), then its
exported EMA model is scored with the same seed (0), sampling with its own T:

    Val_SR      the given lq/ inputs against gt/ (32 pairs, 64 -> 256): PSNR-Y and SSIM (4-pixel border),
                ST-LPIPS, NIQE of the outputs, and their fine detail over the ground truths' (`detail_ratio`)
    RealSet65   real photos, no reference: the centre 128x128 of each LR photo (so that T = 30 costs minutes,
                not an hour: the photos average 355x355), NIQE of the 512x512 outputs, and the seconds
                per image, wall clock and CPU (the denoiser's cost grows with T)

One JSON record per configuration goes to RESULTS (atomically; running a configuration again replaces its
record; configurations whose record has the same step budget and --limit are skipped). `--report` prints
the Table 1 layout, the paper's numbers beside ours, as markdown for docs/research.md, and draws each
metric against T, p and kappa into IMAGES/ablation-{T,p,kappa}.png.

Budget (measured on the project's shared 2-core Intel Xeon, 1 thread, while other jobs ran; wall clock was
2.5x the CPU time there): one training step (16 crops, degradation included) takes 0.17-0.23 CPU-seconds,
so the 6000-step budget is about 20 minutes a configuration; scoring costs about 65 x T x 0.2 seconds
(RealSet65 crops) plus ~3 minutes (Val_SR, NIQE). The default sweep's 8 configurations (T summing to
119): ~2.7 h of training and ~1 h of scoring, ~3.7 CPU-hours in all; `--full` (the paper's 13 and T = 4)
about 7 CPU-hours.

    python benchmarks/ablation.py [--only NAME ...] [--full] [--threads 1]       # train and score (resumable)
    python benchmarks/ablation.py --report                                      # table + plots
    python benchmarks/ablation.py --add-detail      # the detail column for records scored before it existed
    python benchmarks/ablation.py --only T4-p0.3-k2 T10-p0.3-k2 --steps 2 --limit 2 \\
        --runs /tmp/ablation-smoke --results /tmp/ablation-smoke.json          # a smoke run in minutes
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import cv2
import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import RESULTS, machine  # noqa: E402  (helpers shared by the benchmarks)

from resshift.batch import RestoreOptions  # noqa: E402
from resshift.benchmark import model_method  # noqa: E402
from resshift.data import center_crop  # noqa: E402
from resshift.evaluation import evaluate_folders, images_by_stem  # noqa: E402
from resshift.fileio import atomic_write_bytes, atomic_write_json  # noqa: E402
from resshift.imageio import Image, read_image, write_image  # noqa: E402
from resshift.metrics.psnr_ssim import rgb_to_y  # noqa: E402
from resshift.pipeline import ResShiftPipeline  # noqa: E402
from resshift.training import TrainConfig, train  # noqa: E402
from resshift.training.checkpoint import list_checkpoints, load_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data").resolve()
TRAIN = DATA / "train"
VAL_SR, REALSET65 = DATA / "resshift_testdata" / "Val_SR", DATA / "resshift_testdata" / "RealSet65"
STEPS, SEED, SCALE = 6000, 0, 4
REALSET65_CROP = 128                              # LR pixels: the centre crop of each RealSet65 photo scored


@dataclass(frozen=True)
class Chain:
    """One configuration of the ablation: the chain's number of steps T, growth p and noise kappa."""

    T: int
    p: float
    kappa: float

    @property
    def name(self) -> str:
        return f"T{self.T}-p{self.p:g}-k{self.kappa:g}"


BASE = Chain(15, 0.3, 2.0)                       # the NeurIPS paper's model, shared by the three sweeps
SWEEPS = {"T": [4, 10, 15, 30], "p": [0.3, 1.0, 3.0], "kappa": [0.5, 2.0, 8.0]}
PAPER_ONLY = {"T": [40, 50], "p": [0.5, 2.0], "kappa": [1.0, 16.0]}   # --full: the rest of Table 1

# Yue et al., "ResShift: Efficient Diffusion Model for Image Super-resolution by Residual Shifting", NeurIPS
# 2023, Table 1 (ImageNet-Test, x4 real-world SR; /work/shared/seeds/001): (T, p, kappa) -> PSNR, SSIM, LPIPS,
# CLIPIQA, MUSIQ, as printed (the SSIM of p = 3.0, 0.5813, is the paper's figure).
PAPER_TABLE1 = {
    (10, 0.3, 2.0): (25.20, 0.6828, 0.2517, 0.5492, 50.6617),
    (15, 0.3, 2.0): (25.01, 0.6769, 0.2312, 0.5922, 53.6596),
    (30, 0.3, 2.0): (24.52, 0.6585, 0.2253, 0.6273, 55.7904),
    (40, 0.3, 2.0): (24.29, 0.6513, 0.2225, 0.6468, 56.8482),
    (50, 0.3, 2.0): (24.22, 0.6483, 0.2212, 0.6489, 56.8463),
    (15, 0.5, 2.0): (25.05, 0.6745, 0.2387, 0.5816, 52.4475),
    (15, 1.0, 2.0): (25.12, 0.6780, 0.2613, 0.5314, 48.4964),
    (15, 2.0, 2.0): (25.32, 0.6827, 0.3050, 0.4601, 43.3060),
    (15, 3.0, 2.0): (25.39, 0.5813, 0.3432, 0.4041, 38.5324),
    (15, 0.3, 0.5): (24.90, 0.6709, 0.2437, 0.5700, 50.6101),
    (15, 0.3, 1.0): (24.84, 0.6699, 0.2354, 0.5914, 52.9933),
    (15, 0.3, 8.0): (25.31, 0.6858, 0.2592, 0.5231, 49.3182),
    (15, 0.3, 16.0): (24.46, 0.6891, 0.2772, 0.4898, 46.9794),
}
PAPER_COLUMNS = ("PSNR", "SSIM", "LPIPS", "CLIPIQA", "MUSIQ")
# Our columns: (record path, header, digits, which way is better).
OUR_COLUMNS = ((("val_sr", "psnr"), "PSNR-Y", 2, "higher"), (("val_sr", "ssim"), "SSIM", 4, "higher"),
               (("val_sr", "stlpips"), "ST-LPIPS", 4, "lower"),
               (("val_sr", "detail"), "detail Val_SR", 3, "closer to 1"),
               (("val_sr", "niqe"), "NIQE Val_SR", 3, "lower"),
               (("realset65", "niqe"), "NIQE RealSet65", 3, "lower"),
               (("realset65", "cpu_seconds_per_image"), "CPU s/img RealSet65", 1, "lower"))


def sweep_chains(sweep: str, full: bool) -> list[Chain]:
    """The chains of one sweep: BASE with `sweep` set to each value (Table 1's order)."""
    values = sorted(SWEEPS[sweep] + (PAPER_ONLY[sweep] if full else []))
    return [Chain(**{**BASE.__dict__, sweep: value}) for value in values]


def all_chains(full: bool) -> list[Chain]:
    """Every configuration once (the shared BASE is trained once)."""
    chains: list[Chain] = []
    for sweep in SWEEPS:
        chains += [chain for chain in sweep_chains(sweep, full) if chain not in chains]
    return chains


# --------------------------------------------------------------------------- training

def train_config(chain: Chain, steps: int) -> TrainConfig:
    """The shared recipe with this chain; nothing else differs between configurations."""
    unet = {"in_channels": 48, "out_channels": 48, "model_channels": 32, "channel_mult": [1, 2],
            "num_res_blocks": [1, 1], "attention_resolutions": [8], "num_head_channels": 32, "swin_depth": 2,
            "swin_embed_dim": 64, "window_size": 8, "mlp_ratio": 2.0, "conv_norm": "affine", "cond_lq": True,
            "lq_size": 16, "image_size": 16}
    schedule = {"num_steps": chain.T, "kappa": chain.kappa, "power": chain.p, "min_noise_level": 0.04,
                "sqrt_eta_end": 0.99, "kind": "official"}
    return TrainConfig.from_dict({
        "data": {"train_dirs": [str(TRAIN)], "degradation": "realesrgan", "crop_size": 64, "num_workers": 0,
                 "val_count": 0},
        "model": {"config": {"task": "sr", "scale": SCALE, "latent_scale": 1.0, "predict_residual": True,
                             "schedule": schedule, "autoencoder": {"type": "unshuffle", "factor": 4}, "unet": unet}},
        "optim": {"lr": 4e-4, "min_lr": 1e-5, "warmup_steps": min(200, steps), "total_steps": steps,
                  "batch_size": 16, "grad_clip": 1.0, "ema_decay": 0.999, "perceptual_weight": 0.0},
        "run": {"seed": SEED, "log_interval": 100, "val_interval": 0, "ckpt_interval": 500, "keep_last": 2},
    })


@contextlib.contextmanager
def logged_to(run_dir: Path) -> Iterator[None]:
    """The trainer's progress in RUN_DIR/train.log as well as on stderr, for the block."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def train_chain(chain: Chain, run_dir: Path, steps: int, device: str) -> Path:
    """Train (or continue, from the last checkpoint) up to `steps`; returns the exported model folder."""
    checkpoints = list_checkpoints(run_dir)
    done = int(load_checkpoint(checkpoints[-1])["step"]) if checkpoints else 0
    export = run_dir / "export"
    if done < steps or not (export / "config.json").is_file():
        print(f"== {chain.name}: training from step {done} to {steps}", file=sys.stderr)
        with logged_to(run_dir):
            train(train_config(chain, steps), run_dir, resume=checkpoints[-1] if checkpoints else None,
                  device=device)
    return export


# --------------------------------------------------------------------------- scoring

def restore_folder(pipe: ResShiftPipeline, inputs: dict[str, Path], out: Path, crop: Optional[int],
                   steps: Optional[int]) -> dict[str, float]:
    """Each input (its centre `crop` x `crop` if given) through the model as `resshift upscale` runs it (seed
    SEED, untiled, `steps` of its chain or all), written as PNG to `out`; the mean wall-clock and CPU
    seconds of a call."""
    method = model_method(pipe, "ablation", RestoreOptions(seed=SEED, tile=0, steps=steps))
    out.mkdir(parents=True, exist_ok=True)
    wall = cpu = 0.0
    for name, path in sorted(inputs.items()):
        pixels = center_crop(read_image(path).pixels, crop, multiple=1)
        start, start_cpu = time.perf_counter(), time.process_time()
        restored = method.upscale(pixels)
        wall, cpu = wall + time.perf_counter() - start, cpu + time.process_time() - start_cpu
        write_image(out / f"{name}.png", Image(pixels=restored), overwrite=True)
    return {"seconds_per_image": wall / len(inputs), "cpu_seconds_per_image": cpu / len(inputs)}


def score_chain(pipe: ResShiftPipeline, out: Path, limit: Optional[int], device: str,
                steps: Optional[int] = None) -> dict:
    """Val_SR (PSNR-Y, SSIM, ST-LPIPS, NIQE) and RealSet65 (NIQE) of the model, sampled with its own T (or
    `steps` of it, respaced)."""
    lq = dict(sorted(images_by_stem(VAL_SR / "lq", "lq")[0].items())[:limit])
    real = dict(sorted(images_by_stem(REALSET65, "set")[0].items())[:limit])
    scores = {}
    for key, inputs, gt, crop in (("val_sr", lq, VAL_SR / "gt", None), ("realset65", real, None, REALSET65_CROP)):
        folder = out / key
        seconds = restore_folder(pipe, inputs, folder, crop, steps)
        means = evaluate_folders(folder, metrics=("niqe",), scale=SCALE).means
        if gt is not None:
            means |= evaluate_folders(folder, gt, crop_border=SCALE, device=device).means
            means["detail"] = detail_ratio(folder, gt)
        scores[key] = {"images": len(inputs), "crop": crop, **means, **seconds}
    return scores


def fine_detail_energy(pixels: np.ndarray) -> float:
    """Mean square of the luma minus its Gaussian blur (sigma 1 pixel): the image's finest detail."""
    luma = rgb_to_y(pixels)
    return float(np.mean((luma - cv2.GaussianBlur(luma, (0, 0), 1.0)) ** 2))


def detail_ratio(outputs: Path, references: Path) -> float:
    """The outputs' fine-detail energy over their references', summed over the set (outputs matched by
    stem): 1 = as much fine detail as the ground truth, below 1 = smoother, above 1 = added texture or noise.
    Not a quality score: it says which way a configuration errs, which ST-LPIPS (blur costs it most) and
    PSNR (blur costs it least) both reflect."""
    pairs = [(path, references / path.name) for path in sorted(outputs.glob("*.png"))]
    if not pairs:
        raise FileNotFoundError(f"{outputs}: no PNG outputs to measure")
    missing = [reference for _, reference in pairs if not reference.is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: no reference for the output of the same name in {outputs}")
    ours = sum(fine_detail_energy(read_image(output).pixels) for output, _ in pairs)
    return ours / sum(fine_detail_energy(read_image(reference).pixels) for _, reference in pairs)


def add_detail(results: Path, runs: Path) -> None:
    """The detail column for records scored before it existed, from the Val_SR outputs kept in each run."""
    for record in read_records(results):
        if "detail" not in record["val_sr"]:
            record["val_sr"]["detail"] = detail_ratio(runs / record["name"] / "eval" / "val_sr", VAL_SR / "gt")
            save_record(results, record)
            print(f"== {record['name']}: detail {record['val_sr']['detail']:.3f}", file=sys.stderr)


# --------------------------------------------------------------------------- results

def read_records(path: Path) -> list[dict]:
    return json.loads(path.read_text())["records"] if path.is_file() else []


def save_record(path: Path, record: dict) -> None:
    """`record` in the results file, replacing the record of the same configuration (under a lock file, so
    that sweeps running side by side, e.g. one per core with disjoint --only lists, keep each other's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = [r for r in read_records(path) if r["name"] != record["name"]] + [record]
        atomic_write_json(path, {"about": "benchmarks/ablation.py: ResShift (T, p, kappa) ablation, compact CPU "
                                          "models", "records": records})


def run_chain(chain: Chain, args: argparse.Namespace) -> None:
    """Train (or continue) one configuration, score its export and record the scores."""
    previous = {r["name"]: r for r in read_records(args.results)}.get(chain.name)
    if previous is not None and (previous["train_steps"], previous["limit"]) == (args.steps, args.limit):
        print(f"== {chain.name}: done (recorded in {args.results})", file=sys.stderr)
        return
    run_dir = args.runs / chain.name
    export = train_chain(chain, run_dir, args.steps, args.device)
    print(f"== {chain.name}: scoring {export}", file=sys.stderr)
    scores = score_chain(ResShiftPipeline.from_pretrained(export, device=args.device), run_dir / "eval", args.limit,
                         args.device)
    record = {"name": chain.name, "T": chain.T, "p": chain.p, "kappa": chain.kappa, "train_steps": args.steps,
              "limit": args.limit, "seed": SEED, "threads": args.threads, "machine": machine(), **scores}
    save_record(args.results, record)
    print(f"== {chain.name}: {scores}", file=sys.stderr)


# --------------------------------------------------------------------------- report

def cell(value: Optional[float], digits: int) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def our_value(record: Optional[dict], path: tuple[str, str]) -> Optional[float]:
    if record is None:
        return None
    value = record.get(path[0], {}).get(path[1])
    return float(value) if isinstance(value, (int, float)) else None


def markdown_table(records: Sequence[dict], full: bool) -> str:
    """Table 1's layout (a block per sweep, its base row repeated): the paper's numbers, then ours."""
    by_chain = {(r["T"], r["p"], r["kappa"]): r for r in records}
    header = ["sweep", "T", "p", "κ", *(f"{c} (paper)" for c in PAPER_COLUMNS), *(c[1] for c in OUR_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 4 + "---:|" * (len(header) - 4)]
    for sweep in SWEEPS:
        for chain in sweep_chains(sweep, full):
            key = (chain.T, chain.p, chain.kappa)
            paper = PAPER_TABLE1.get(key)
            paper_cells = [cell(v, d) for v, d in zip(paper, (2, 4, 4, 4, 2))] if paper else ["–"] * 5
            ours = [cell(our_value(by_chain.get(key), path), digits) for path, _, digits, _ in OUR_COLUMNS]
            lines.append("| " + " | ".join([sweep if sweep != "kappa" else "κ", str(chain.T), f"{chain.p:g}",
                                             f"{chain.kappa:g}", *paper_cells, *ours]) + " |")
    return "\n".join(lines)


def font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def draw_panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], points: Sequence[tuple[str, float]],
               title: str) -> None:
    """One metric against the swept values, equally spaced and labelled, with each point's value."""
    left, top, right, bottom = box
    draw.rectangle(box, outline="#888888")
    draw.text((left + 6, top + 4), title, fill="black", font=font())
    if not points:
        draw.text((left + 6, top + 24), "no results yet", fill="#888888", font=font())
        return
    values = [v for _, v in points]
    low, high = min(values), max(values)
    span = (high - low) or max(abs(high), 1.0) * 0.01
    inner = (left + 30, top + 36, right - 30, bottom - 34)
    step = (inner[2] - inner[0]) / max(1, len(points) - 1)
    where = [(inner[0] + i * step if len(points) > 1 else (inner[0] + inner[2]) / 2,
              inner[3] - (v - low) / span * (inner[3] - inner[1])) for i, (_, v) in enumerate(points)]
    if len(where) > 1:
        draw.line(where, fill="#1f77b4", width=2)
    for (label, value), (x, y) in zip(points, where):
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill="#1f77b4")
        draw.text((x - 14, y - 16), f"{value:.4g}", fill="black", font=font())
        draw.text((x - 8, bottom - 18), label, fill="black", font=font())


def draw_sweep(records: Sequence[dict], sweep: str, full: bool, path: Path) -> None:
    """IMAGES/ablation-<sweep>.png: one panel per metric, each against the sweep's values."""
    by_chain = {(r["T"], r["p"], r["kappa"]): r for r in records}
    panel_w, panel_h = 300, 220
    rows = math.ceil(len(OUR_COLUMNS) / 3)
    image = PILImage.new("RGB", (panel_w * 3 + 20, panel_h * rows + 40), "white")
    draw = ImageDraw.Draw(image)
    fixed = ", ".join(f"{k} {getattr(BASE, k):g}" for k in ("T", "p", "kappa") if k != sweep)
    draw.text((8, 8), f"ResShift ablation: {sweep} ({fixed}); compact CPU models, Val_SR and RealSet65",
              fill="black", font=font())
    for index, (record_path, title, _, better) in enumerate(OUR_COLUMNS):
        points = [(f"{getattr(chain, sweep):g}", value) for chain in sweep_chains(sweep, full)
                  if (value := our_value(by_chain.get((chain.T, chain.p, chain.kappa)), record_path)) is not None]
        column, row = index % 3, index // 3
        box = (8 + column * (panel_w + 2), 30 + row * (panel_h + 4), 8 + column * (panel_w + 2) + panel_w,
               30 + row * (panel_h + 4) + panel_h)
        draw_panel(draw, box, points, f"{title} vs {sweep} ({better} is better)")
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def report(results: Path, images: Path, full: bool) -> str:
    """The markdown table, and the three plots written to `images`; returns the markdown."""
    records = read_records(results)
    for sweep in SWEEPS:
        draw_sweep(records, sweep, full, images / f"ablation-{sweep}.png")
    plots = " ".join(f"![{sweep}]({images.name}/ablation-{sweep}.png)" for sweep in SWEEPS)
    return markdown_table(records, full) + "\n\n" + plots


# --------------------------------------------------------------------------- main

def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="these configurations, in this order (e.g. T15-p0.3-k2 T4-p0.3-k2)")
    parser.add_argument("--full", action="store_true", help="the paper's 13 configurations (and T = 4)")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"training steps per run (default {STEPS})")
    parser.add_argument("--limit", type=int, help="only the first N images of each set (smoke runs)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "ablation", help="run folders")
    parser.add_argument("--results", type=Path, default=RESULTS / "ablation.json")
    parser.add_argument("--images", type=Path, default=ROOT / "docs" / "images", help="--report: plot folder")
    parser.add_argument("--report", action="store_true", help="print the table and draw the plots; no training")
    parser.add_argument("--add-detail", action="store_true",
                        help="add the detail column to records scored without it (their outputs in --runs)")
    args = parser.parse_args(argv)
    if args.add_detail:
        add_detail(args.results, args.runs)
        return
    if args.report:
        print(report(args.results, args.images, args.full))
        return
    chains = all_chains(args.full or bool(args.only))
    if args.only:
        unknown = sorted(set(args.only) - {chain.name for chain in chains})
        if unknown:
            parser.error(f"unknown configuration {unknown[0]}; choose from {', '.join(c.name for c in chains)}")
        by_name = {chain.name: chain for chain in chains}
        chains = [by_name[name] for name in dict.fromkeys(args.only)]        # in the order given
    torch.set_num_threads(args.threads)
    logging.basicConfig(format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("resshift").setLevel(logging.INFO)
    for chain in chains:
        run_chain(chain, args)


if __name__ == "__main__":
    main()
