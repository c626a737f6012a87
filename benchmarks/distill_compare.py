"""A one-step distilled student beside its multi-step teacher (issue #20, item 5), scored as the ablation scores.

Rows: the teacher with all its steps, the teacher truncated (official respacing) to 4 and to 1 step without
distillation, and each student (one step). Every row is scored by `ablation.score_chain`, with the same seed:
Val_SR PSNR-Y, SSIM, ST-LPIPS, NIQE and the fine detail against the ground truth's (`ablation.detail_ratio`);
NIQE of RealSet65's centre crops; wall-clock and CPU seconds per image. Writes benchmarks/results/distill.json
(atomically) and prints a markdown table for docs/research.md.

    python benchmarks/distill_compare.py --teacher runs/ablation/T15-p0.3-k2/export \\
        --student runs/distill-T15/export [--student NAME=FOLDER ...] [--threads 1] [--limit N]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).parent))
from ablation import SEED, score_chain  # noqa: E402
from bench_core import RESULTS, machine  # noqa: E402

from resshift.checkpoints import read_model_config  # noqa: E402
from resshift.fileio import atomic_write_json  # noqa: E402
from resshift.pipeline import ResShiftPipeline  # noqa: E402

TRUNCATED_STEPS = (4, 1)
COLUMNS = ((("val_sr", "psnr"), "Val_SR PSNR-Y", 2), (("val_sr", "ssim"), "SSIM", 4),
           (("val_sr", "stlpips"), "ST-LPIPS", 4), (("val_sr", "detail"), "detail Val_SR", 3),
           (("val_sr", "niqe"), "NIQE Val_SR", 3),
           (("realset65", "niqe"), "NIQE RealSet65", 3),
           (("realset65", "cpu_seconds_per_image"), "CPU s/img RealSet65", 2))


def named_folder(text: str) -> tuple[str, Path]:
    """'NAME=FOLDER' or 'FOLDER' (named 'student')."""
    name, _, folder = text.rpartition("=")
    return name or "student", Path(folder)


def rows_to_score(teacher: Path, students: list[tuple[str, Path]]) -> list[tuple[str, Path, Optional[int]]]:
    """(row name, model folder, steps or None for all) in the table's order."""
    steps = read_model_config(teacher).schedule.num_steps
    rows = [(f"teacher, {steps} steps", teacher, None)]
    rows += [(f"teacher truncated to {n}", teacher, n) for n in TRUNCATED_STEPS if n < steps]
    return rows + [(name, folder, None) for name, folder in students]


def markdown(records: list[dict]) -> str:
    lines = ["| model | denoiser calls | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|---|---:|" + "---:|" * len(COLUMNS)]
    for record in records:
        cells = [f"{record[key][metric]:.{digits}f}" for (key, metric), _, digits in COLUMNS]
        lines.append(f"| {record['name']} | {record['denoiser_calls']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, required=True, help="the multi-step model folder")
    parser.add_argument("--student", type=named_folder, action="append", default=[], metavar="[NAME=]FOLDER",
                        help="a one-step student's model folder (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("bench/distill"), help="where the outputs go")
    parser.add_argument("--results", type=Path, default=RESULTS / "distill.json")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, help="only the first N images of each set (smoke runs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    records, pipes = [], {}
    for name, folder, steps in rows_to_score(args.teacher, args.student):
        print(f"== {name}: {folder}", file=sys.stderr, flush=True)
        if folder not in pipes:                        # the teacher's rows share one loaded model
            pipes[folder] = ResShiftPipeline.from_pretrained(folder)
        pipe = pipes[folder]
        out = args.out / re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        scores = score_chain(pipe, out, args.limit, "cpu", steps)
        records.append({"name": name, "model": str(folder), "denoiser_calls": steps or pipe.config.schedule.num_steps,
                        **scores})
    atomic_write_json(args.results, {"about": "benchmarks/distill_compare.py: one-step students beside their teacher",
                                     "seed": SEED, "threads": args.threads, "limit": args.limit, "machine": machine(),
                                     "records": records})
    print(markdown(records))


if __name__ == "__main__":
    main()
