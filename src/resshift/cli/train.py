"""`resshift train`: train, resume, or export a checkpoint (argparse only; the work is in trainer.py).

    resshift train CONFIG.yaml [key.sub=value ...] [--out RUN_DIR] [--resume [CKPT]] [--device cuda]
    resshift train --resume --out RUN_DIR              # the run's latest checkpoint, its own config
    resshift train export --checkpoint CKPT -o FOLDER [--dtype fp16] [--raw]
    resshift train distill TEACHER [key.sub=value ...] --out RUN_DIR   # a one-step student (preset distill-one-step)
    torchrun --nproc-per-node 4 -m resshift train CONFIG.yaml
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

LATEST = "latest"
DISTILL_PRESET = "distill-one-step"


def add_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train or fine-tune a model (single process, or under torchrun)",
        description="Train a ResShift model from a YAML config (a file, or a bundled preset such as tiny-cpu, "
                    "realsr-x4-official or compact-realsr-x4: docs/training.md lists them all, and so does "
                    "the error for an unknown name); any value can be overridden as key.sub=value. "
                    "`resshift train export --checkpoint CKPT -o FOLDER` writes a checkpoint's EMA model "
                    "as a model folder; `resshift train distill TEACHER` distils a multi-step model (a folder, "
                    "a bundled or official name) into a one-step student. See docs/training.md.",
        epilog="examples:\n  resshift train tiny-cpu optim.total_steps=300 --out runs/tiny\n"
               "  resshift train --resume --out runs/tiny\n"
               "  torchrun --nproc-per-node 8 -m resshift train realsr-x4-official "
               "data.train_dirs=[/data/hr] model.autoencoder_weights=autoencoder_vq_f4.pth\n"
               "  resshift train export --checkpoint runs/tiny/checkpoints/step_00000300.pt -o models/tiny\n"
               "  resshift train distill runs/ablation/T15-p0.3-k2/export --out runs/distill-T15",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("items", nargs="*", metavar="CONFIG | key=value",
                        help="a YAML file or bundled preset name, then overrides such as optim.lr=1e-4")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/<config name>)")
    parser.add_argument("--resume", nargs="?", const=LATEST, metavar="CKPT",
                        help="continue exactly from CKPT, or from the run folder's latest checkpoint")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda:LOCAL_RANK if available)")
    parser.add_argument("--checkpoint", type=Path, help="export: the training checkpoint to read")
    parser.add_argument("-o", "--output", type=Path, help="export: the model folder to write")
    parser.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32", help="export: weight storage")
    parser.add_argument("--raw", action="store_true", help="export: the trained weights instead of the EMA")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    parser.set_defaults(run=run_train)


def _setup_logging(quiet: bool, run_dir: Path) -> logging.Handler | None:
    """Progress on stderr (rank 0; others warnings only) and in RUN_DIR/train.log; returns the file handler."""
    main = int(os.environ.get("RANK", "0")) == 0
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("resshift").setLevel(logging.WARNING if quiet or not main else logging.INFO)
    if not main:
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def distill_items(items: list[str]) -> list[str]:
    """`distill TEACHER [overrides]` -> the distillation preset with model.teacher=TEACHER, then the overrides."""
    from ..errors import ConfigError

    teachers = [item for item in items if "=" not in item]
    if len(teachers) != 1:
        raise ConfigError("usage: resshift train distill TEACHER [key.sub=value ...] --out RUN_DIR "
                          "(TEACHER: a model folder, a bundled or an official model's name)")
    return [DISTILL_PRESET, f"model.teacher={json.dumps(teachers[0])}", *(item for item in items if "=" in item)]


def run_train(args: argparse.Namespace) -> int:
    import torch

    from ..errors import ConfigError
    from ..training.checkpoint import latest_checkpoint, load_checkpoint
    from ..training.config import load_config
    from ..training.trainer import export_checkpoint, train

    items = list(args.items)
    if items[:1] == ["distill"]:
        items = distill_items(items[1:])
    if items[:1] == ["export"]:
        if args.checkpoint is None or args.output is None or len(items) > 1:
            raise ConfigError("usage: resshift train export --checkpoint CKPT -o FOLDER [--dtype fp16] [--raw]")
        dtype = torch.float16 if args.dtype == "fp16" else None
        export_checkpoint(args.checkpoint, args.output, dtype=dtype, use_ema=not args.raw)
        print(f"wrote {args.output} ({'raw' if args.raw else 'EMA'} weights of {args.checkpoint})")
        return 0
    if args.resume is not None and "=" in args.resume and not Path(args.resume).is_file():
        items.append(args.resume)                       # `--resume key=value`: an override, not a file
        args.resume = LATEST
    overrides = [item for item in items if "=" in item]
    sources = [item for item in items if "=" not in item]
    if len(sources) > 1:
        raise ConfigError(f"give one config (got {', '.join(sources)}); overrides look like key.sub=value")
    source = sources[0] if sources else None

    resume, run_dir = None, args.out
    if args.resume is not None:
        if args.resume == LATEST:
            if run_dir is None:
                raise ConfigError("--resume without a checkpoint needs --out RUN_DIR")
            resume = latest_checkpoint(run_dir)
        else:
            resume = Path(args.resume)
            run_dir = run_dir or resume.parent.parent
    elif source is None:
        raise ConfigError("give a config file or preset name (e.g. `resshift train tiny-cpu`), or --resume")
    if run_dir is None:
        run_dir = Path("runs") / Path(source).stem
    if resume is None and any((run_dir / "checkpoints").glob("step_*.pt")):
        raise ConfigError(f"{run_dir} already holds checkpoints: add --resume to continue, or choose --out")

    base = load_checkpoint(resume)["config"] if resume is not None and source is None else None
    config = load_config(source, overrides, base=base)
    handler = _setup_logging(args.quiet, run_dir)
    try:
        train(config, run_dir, resume=resume, device=args.device)
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
    return 0
