"""`resshift degrade`: write what a model is trained on (degraded inputs beside their ground truth) and a
contact sheet, to look at the training data and to build fixed validation sets.

    resshift degrade -i HR_FOLDER -o OUT --preset realesrgan --scale 4 --seed 0 [--crop 256]
    resshift degrade -i HR_FOLDER -o OUT --preset inpaint --seed 0 [--hole-ratio 0.1 0.4]
    resshift degrade -i FACES -o OUT --preset face --seed 0

Each image (recursive, any common format) is centre-cropped (``--crop``), then synthesised on its own with
a generator keyed by (seed, its index in sorted order): the same seed gives the same files, whatever
``--limit``. The degradations are batched; each batch here is one image so that its draws depend on
nothing else. An image that cannot be used (unreadable, too small) is skipped with a line saying why.
Every preset writes OUT/<folder>/NAME.png for each of its folders (table `DEGRADE_PRESETS`) and OUT/contact_sheet.png
with the folders side by side, each panel shown at the gt's size (nearest neighbours).
"""

from __future__ import annotations

import argparse
import functools
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

FACE_SIZE = 512  # faceir trains on whole aligned 512x512 faces (faceir-official.yaml: crop_size 512)


@dataclass(frozen=True)
class DegradePreset:
    """One --preset: its output folders (in contact-sheet order) and the function that fills them."""

    folders: tuple[str, ...]
    # (hq (1, 3, H, W) in [0, 1], generator, args) -> {folder: (1, C, h, w) in [0, 1]}, C = 3 or 1 (grey)
    synthesize: Callable[[torch.Tensor, torch.Generator, argparse.Namespace], dict[str, torch.Tensor]]
    help: str
    resizes: bool = False  # takes --scale: lq is --scale times smaller, gt is cut to a multiple of it


def _super_resolution(hq: torch.Tensor, generator: torch.Generator, args: argparse.Namespace, *,
                      kind: str) -> dict[str, torch.Tensor]:
    from ..data import degrade_batch

    return {"gt": hq, "lq": degrade_batch(hq, kind, args.scale, generator)}


def _inpaint(hq: torch.Tensor, generator: torch.Generator, args: argparse.Namespace) -> dict[str, torch.Tensor]:
    from ..degradations.masks import MaskConfig, random_masks_in_range

    _, _, height, width = hq.shape
    mask = random_masks_in_range(1, height, width, MaskConfig(), generator, tuple(args.hole_ratio))  # (1, 1, H, W)
    return {"gt": hq, "lq": hq * (1 - mask), "mask": mask}


def _face(hq: torch.Tensor, generator: torch.Generator, args: argparse.Namespace) -> dict[str, torch.Tensor]:
    from ..degradations import FaceDegradation, degrade_face_pair
    from ..errors import InputError

    height, width = hq.shape[-2:]
    if (height, width) != (FACE_SIZE, FACE_SIZE):
        raise InputError(f"is {width}x{height}; the face preset takes aligned {FACE_SIZE}x{FACE_SIZE} face crops "
                         f"as faceir trains on (resize them to {FACE_SIZE}, or --crop {FACE_SIZE} larger ones)")
    gt, lq = degrade_face_pair(hq, FaceDegradation(), generator)
    return {"gt": gt, "lq": lq}


DEGRADE_PRESETS = {
    "realesrgan": DegradePreset(("gt", "lq"), functools.partial(_super_resolution, kind="realesrgan"),
                         "second-order Real-ESRGAN LR (official parameters)", resizes=True),
    "bicubic": DegradePreset(("gt", "lq"), functools.partial(_super_resolution, kind="bicubic"),
                      "MATLAB bicubic LR", resizes=True),
    "first-order": DegradePreset(("gt", "lq"), functools.partial(_super_resolution, kind="first-order"),
                          "the paper's first-order test degradation", resizes=True),
    "inpaint": DegradePreset(("gt", "lq", "mask"), _inpaint,
                      "lq = gt with black holes (the official input), mask = white holes: LaMa mixed masks "
                      "(official parameters) redrawn until the hole fraction is in --hole-ratio; "
                      "`resshift inpaint -i OUT/lq -m OUT/mask` fills them"),
    "face": DegradePreset(("gt", "lq"), _face,
                   f"GFPGAN degradation (official parameters), lq the size of gt, gt greyed where lq was; "
                   f"inputs: aligned {FACE_SIZE}x{FACE_SIZE} faces"),
}


def add_degrade(subparsers: argparse._SubParsersAction) -> None:
    from ..degradations.masks import EVAL_HOLE_RANGE

    presets = "\n".join(textwrap.fill(f"{name:12} {'/, '.join(p.folders)}/: {p.help}", width=100,
                                       initial_indent="  ", subsequent_indent=" " * 15, break_on_hyphens=False)
                         for name, p in DEGRADE_PRESETS.items())
    parser = subparsers.add_parser(
        "degrade", help="synthesise training inputs (SR, inpainting masks, faces) with a contact sheet",
        description="Degrade a folder of images as training does and write OUT/gt, OUT/lq (and OUT/mask) and "
                    "a contact sheet; the seed reproduces the files exactly.",
        epilog=f"presets:\n{presets}\n\nexamples:\n"
               "  resshift degrade -i ../shared/data/benchmarks/Set14 -o val/set14-realesrgan "
               "--preset realesrgan --scale 4 --seed 0 --crop 256\n"
               "  resshift degrade -i ../shared/data/resshift_testdata/Val_SR/gt -o val/inpaint --preset inpaint",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--input", required=True, type=Path, help="folder of HR images (recursive)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="folder to write (gt/, lq/, ..., sheet)")
    parser.add_argument("--preset", choices=DEGRADE_PRESETS, default="realesrgan", help="degradation (default realesrgan)")
    parser.add_argument("-s", "--scale", type=int, default=4, help="SR presets: downscaling factor (default 4)")
    parser.add_argument("--hole-ratio", type=float, nargs=2, default=EVAL_HOLE_RANGE, metavar=("MIN", "MAX"),
                        help="inpaint preset: range of each mask's hole fraction (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--crop", type=int, help="centre-crop the images to this size first")
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--sheet-count", type=int, default=48, help="images on the contact sheet (default 48)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    parser.set_defaults(run=run_degrade)


def run_degrade(args: argparse.Namespace) -> int:
    import logging

    import numpy as np
    import torch

    from ..data import KEY_DEGRADE, center_crop, keyed_generator
    from ..errors import InputError, ResShiftError
    from ..imageio import Image, list_image_files, read_image, write_image

    log = logging.getLogger("resshift.degrade")
    preset = DEGRADE_PRESETS[args.preset]
    if args.scale < 1:
        raise ResShiftError(f"--scale must be a positive integer, got {args.scale}")
    if args.output.exists() and any(args.output.iterdir()) and not args.overwrite:
        raise ResShiftError(f"{args.output}: folder exists and is not empty (use --overwrite)")
    files = list_image_files([args.input])[: args.limit]
    if not files:
        raise InputError(f"{args.input}: no images (.png, .jpg, .bmp, .tif, .webp) found")
    sheet, written = [], 0
    for index, path in enumerate(files):
        name = "_".join(path.relative_to(args.input).with_suffix("").parts)
        try:
            pixels = center_crop(read_image(path).pixels, args.crop, args.scale if preset.resizes else 1)
            hq = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None]     # (1, 3, H, W)
            outputs = preset.synthesize(hq, keyed_generator(args.seed, KEY_DEGRADE, index), args)
        except InputError as exc:
            log.warning("%s: skipped (%s)", path, exc)
            print(f"skipped {path}: {exc}")
            continue
        panels = []
        for folder in preset.folders:
            image = outputs[folder][0]                                                     # (C, h, w)
            rgb = image.expand(3, -1, -1).permute(1, 2, 0).numpy()                         # (h, w, 3)
            (args.output / folder).mkdir(parents=True, exist_ok=True)  # here: a failed run leaves no empty folders
            write_image(args.output / folder / f"{name}.png", Image(pixels=rgb, grey=image.shape[0] == 1),
                        overwrite=True)
            panels.append(rgb)
        written += 1
        if len(sheet) < args.sheet_count:
            sheet.append((f"{name}  ({' | '.join(preset.folders)})", panels))
    if not written:
        raise InputError(f"{args.input}: no image could be degraded")
    contact_sheet(sheet, args.output / "contact_sheet.png")
    scale = f", x{args.scale}" if preset.resizes else ""
    print(f"wrote {written} images into {', '.join(f'{f}/' for f in preset.folders)} ({args.preset}{scale}, "
          f"seed {args.seed}) and {args.output / 'contact_sheet.png'}")
    return 0


def contact_sheet(items: list[tuple[str, list[np.ndarray]]], path: Path, cell: int = 256,
                  columns: int = 3) -> None:
    """A grid of (label, panels) items: each item's (h, w, 3) panels in [0, 1] side by side, every panel
    resized (nearest) to the first one's size and fitted into cell x cell, the label underneath."""
    import io

    import numpy as np
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    from ..fileio import atomic_write_bytes

    label_height, gap, char_width = 16, 6, 6
    panel_count = max(len(panels) for _, panels in items)
    item_width = panel_count * (cell + gap) + gap
    rows = -(-len(items) // columns)
    sheet = PILImage.new("RGB", (columns * item_width, rows * (cell + label_height + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (label, panels) in enumerate(items):
        x = (i % columns) * item_width + gap
        y = (i // columns) * (cell + label_height + gap) + gap
        first = panels[0].shape[1::-1]                                                     # (w, h)
        for k, pixels in enumerate(panels):
            image = PILImage.fromarray((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8))
            image = image.resize(first, PILImage.NEAREST)
            image.thumbnail((cell, cell), PILImage.NEAREST)
            left = x + k * (cell + gap)
            sheet.paste(image, (left, y))
            # a grey frame: white mask areas and white image borders stay visible on the white sheet
            draw.rectangle((left - 1, y - 1, left + image.width, y + image.height), outline="grey")
        draw.text((x, y + cell + 2), label[: item_width // char_width], fill="black", font=font)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
