"""`resshift degrade`: write LR/HR pairs and a contact sheet, to see what a model is trained on and to
build fixed validation sets.

    resshift degrade -i HR_FOLDER -o OUT --preset realesrgan --scale 4 --seed 0 [--crop 256]

Each HR image (recursive, any common format) is centre-cropped (``--crop``) and cut down to a multiple
of the scale, then degraded on its own with a generator keyed by (seed, its index in sorted order):
the same seed gives the same pairs. Writes OUT/gt/NAME.png, OUT/lq/NAME.png and OUT/contact_sheet.png
(HR | LR upscaled with nearest neighbours, with file names).
"""

from __future__ import annotations

import argparse
from pathlib import Path

PRESETS = ("realesrgan", "bicubic", "first-order")


def add_degrade(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "degrade", help="synthesise LR/HR pairs (Real-ESRGAN, bicubic, first-order) with a contact sheet",
        description="Degrade a folder of HR images as training does and write OUT/lq, OUT/gt and a "
                    "contact sheet; the seed reproduces the pairs exactly.",
        epilog="example: resshift degrade -i ../shared/data/benchmarks/Set14 -o val/set14-realesrgan "
               "--preset realesrgan --scale 4 --seed 0 --crop 256",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--input", required=True, type=Path, help="folder of HR images (recursive)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="folder to write (lq/, gt/, sheet)")
    parser.add_argument("--preset", choices=PRESETS, default="realesrgan", help="degradation (default realesrgan)")
    parser.add_argument("-s", "--scale", type=int, default=4, help="downscaling factor (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--crop", type=int, help="centre-crop the HR images to this size first")
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--sheet-count", type=int, default=48, help="images on the contact sheet (default 48)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    parser.set_defaults(run=run_degrade)


def run_degrade(args: argparse.Namespace) -> int:
    import logging

    import numpy as np
    import torch

    from resshift.data import KEY_DEGRADE, center_crop, degrade_batch, keyed_generator, list_images
    from resshift.degradations import FirstOrderDegradation, RealESRGANDegradation
    from resshift.errors import InputError, ResShiftError
    from resshift.imageio import Image, read_image, write_image

    log = logging.getLogger("resshift.degrade")
    if args.scale < 1:
        raise ResShiftError(f"--scale must be a positive integer, got {args.scale}")
    if args.output.exists() and any(args.output.iterdir()) and not args.overwrite:
        raise ResShiftError(f"{args.output}: folder exists and is not empty (use --overwrite)")
    files = list_images([args.input])[: args.limit]
    if not files:
        raise InputError(f"{args.input}: no images (.png, .jpg, .bmp, .tif, .webp) found")
    for sub in ("gt", "lq"):
        (args.output / sub).mkdir(parents=True, exist_ok=True)
    configs = {"realesrgan": RealESRGANDegradation(sf=args.scale), "first_order": FirstOrderDegradation(sf=args.scale)}
    sheet, written = [], 0
    for index, path in enumerate(files):
        name = "_".join(path.relative_to(args.input).with_suffix("").parts)
        try:
            pixels = center_crop(read_image(path).pixels, args.crop, args.scale)
            hq = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None]     # (1, 3, H, W)
            g = keyed_generator(args.seed, KEY_DEGRADE, index)
            lq = degrade_batch(hq, args.preset, args.scale, g, **configs)
        except InputError as exc:
            log.warning("%s: skipped (%s)", path, exc)
            print(f"skipped {path}: {exc}")
            continue
        lq_pixels = lq[0].permute(1, 2, 0).numpy()
        write_image(args.output / "gt" / f"{name}.png", Image(pixels=pixels), overwrite=True)
        write_image(args.output / "lq" / f"{name}.png", Image(pixels=lq_pixels), overwrite=True)
        written += 1
        if len(sheet) < args.sheet_count:
            sheet.append((name, pixels, lq_pixels))
    if not written:
        raise InputError(f"{args.input}: no image could be degraded")
    contact_sheet(sheet, args.output / "contact_sheet.png", args.scale)
    print(f"wrote {written} pairs ({args.preset}, x{args.scale}, seed {args.seed}) and "
          f"{args.output / 'contact_sheet.png'}")
    return 0


def contact_sheet(items: list, path: Path, scale: int, cell: int = 256, columns: int = 3) -> None:
    """A grid of (HR | LR upscaled nearest) pairs, each fitted into cell x cell, names underneath."""
    import io

    import numpy as np
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    from resshift.fileio import atomic_write_bytes

    label, gap = 16, 6
    rows = -(-len(items) // columns)
    width = columns * (2 * cell + 3 * gap)
    sheet = PILImage.new("RGB", (width, rows * (cell + label + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (name, hq, lq) in enumerate(items):
        x = (i % columns) * (2 * cell + 3 * gap) + gap
        y = (i // columns) * (cell + label + gap) + gap
        hq_image = PILImage.fromarray((np.clip(hq, 0, 1) * 255).round().astype(np.uint8))
        lq_image = PILImage.fromarray((np.clip(lq, 0, 1) * 255).round().astype(np.uint8))
        lq_image = lq_image.resize((lq_image.width * scale, lq_image.height * scale), PILImage.NEAREST)
        for offset, image in ((0, hq_image), (cell + gap, lq_image)):
            image = image.copy()
            image.thumbnail((cell, cell), PILImage.NEAREST)
            sheet.paste(image, (x + offset, y))
        draw.text((x, y + cell + 2), f"{name}  (HR | LR x{scale} nearest)"[:48], fill="black", font=font)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
