"""Fuzz the image inputs: broken, hostile and odd files through `resshift upscale` and `POST /v1/upscale`.

A seeded mutator makes the corpus from real photos (crops of the Set5 PNGs, re-encoded by Pillow as
PNG, JPEG, TIFF, WebP and BMP in several flavours):

| kind           | what                                                                            |
|----------------|---------------------------------------------------------------------------------|
| valid          | the re-encoded files themselves (the control group)                             |
| truncated      | cut at a random offset                                                          |
| header-bits    | random bits flipped in the first 64 bytes                                       |
| data-bytes     | random bytes overwritten after the header (chunks, scans, strips)                |
| wrong-ext      | a valid file under another format's extension                                   |
| huge-size      | the declared width/height patched in the PNG/JPEG/TIFF/WebP/BMP header (CRC kept) |
| empty          | 0 bytes                                                                         |
| tiny           | 1x1, 1x2 and 2x1 images                                                         |
| wide           | 65535 (JPEG 65500, WebP 16383) pixels wide, 1 high                              |
| animated       | APNG, GIF saved as .png, animated WebP, multi-page TIFF                          |
| polyglot       | files that are two formats at once, or an image with another format's magic      |
| metadata       | odd EXIF orientations, broken EXIF, garbage or huge ICC profiles                 |

Each case goes through the CLI batch (`resshift.cli.main(["upscale", ...])` with a tiny model, one file
per run) and through the upload endpoint (FastAPI's test client). Every case must end, on both paths, in
a correct output (4x the decoded size, decodable) or a one-line error naming the file (the CLI: exactly
one `error:` line naming it, exit code 1 or 2; the API: a 4xx JSON `{"error"}` of one line), within
SECONDS_LIMIT seconds and RSS_LIMIT bytes of peak resident memory, never a traceback, a 500 or a hang.

    python benchmarks/fuzz_inputs.py [--seed 0] [--variants 6] [--results benchmarks/results/fuzz_inputs.json]

Each case runs in a worker process that the runner kills after HANG_SECONDS (a hang) or when its
memory passes RSS_LIMIT; the summary table (kind x outcome) is printed and the JSON written atomically.
`tests/cli/test_fuzz_inputs.py` runs a seeded subset of about 60 cases in-process.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import select
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SET5 = ROOT / ".." / "shared" / "data" / "benchmarks" / "Set5"
RESULTS = ROOT / "benchmarks" / "results" / "fuzz_inputs.json"
MAX_PIXELS = 64 * 64            # --max-pixels of both paths: every valid case restores in a few seconds
SECONDS_LIMIT = 10.0
RSS_LIMIT = 2 * 2**30
HANG_SECONDS = 60.0             # the runner kills a worker stuck this long on one case
SCALE = 4
OK_OUTCOMES = ("output", "error")


@dataclass(frozen=True)
class Case:
    name: str       # a unique file name, extension included
    kind: str
    data: bytes


# ------------------------------------------------------------------------------------ base files
def photo(index: int, size: tuple[int, int]) -> Image.Image:
    """A crop of Set5 image `index` (1-5), resized to `size`: real photo content, small enough to run fast."""
    with Image.open(SET5 / f"img_00{index}.png") as source:
        return source.convert("RGB").crop((32, 32, 160, 128)).resize(size, Image.Resampling.BICUBIC)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def base_files() -> dict[str, tuple[bytes, str]]:
    """The valid files every mutation starts from: name -> (bytes, extension)."""
    rgb = photo(1, (48, 40))
    rgba = photo(2, (40, 32)).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    wide16 = Image.fromarray((np.asarray(photo(3, (32, 24)).convert("L"), np.uint16) * 257))
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "png-rgb": (encoded(rgb, "PNG"), ".png"), "png-rgba": (encoded(rgba, "PNG"), ".png"),
        "png-grey": (encoded(rgb.convert("L"), "PNG"), ".png"),
        "png-palette": (encoded(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), ".png"),
        "png-16bit": (encoded(wide16, "PNG"), ".png"),
        "jpeg": (encoded(rgb, "JPEG", quality=90), ".jpg"),
        "jpeg-progressive": (encoded(rgb, "JPEG", progressive=True), ".jpg"),
        "jpeg-grey": (encoded(rgb.convert("L"), "JPEG"), ".jpg"),
        "jpeg-cmyk": (encoded(rgb.convert("CMYK"), "JPEG"), ".jpg"),
        "jpeg-exif": (encoded(photo(4, (40, 24)), "JPEG", exif=exif), ".jpg"),
        "tiff-deflate": (encoded(rgb, "TIFF", compression="tiff_deflate"), ".tif"),
        "tiff-lzw": (encoded(rgba, "TIFF", compression="tiff_lzw"), ".tif"),
        "tiff-raw": (encoded(rgb, "TIFF"), ".tif"),
        "tiff-16bit": (encoded(wide16, "TIFF"), ".tif"),
        "webp-lossy": (encoded(rgb, "WEBP", quality=80), ".webp"),
        "webp-lossless": (encoded(rgba, "WEBP", lossless=True), ".webp"),
        "bmp-24": (encoded(rgb, "BMP"), ".bmp"),
        "bmp-palette": (encoded(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "BMP"), ".bmp"),
    }


# ------------------------------------------------------------------------------------ mutations
def truncated(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(1, len(data))]


def header_bits(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        out[rng.randrange(min(64, len(out)))] ^= 1 << rng.randrange(8)
    return bytes(out)


def data_bytes(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    start = min(64, len(out) - 1)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(start, len(out))] = rng.randrange(256)
    return bytes(out)


def png_with_size(data: bytes, width: int, height: int) -> bytes:
    """The IHDR's width and height replaced, with its CRC recomputed (so only the size lies)."""
    ihdr = bytearray(data[12:29])
    ihdr[4:12] = struct.pack(">II", width, height)
    return data[:12] + bytes(ihdr) + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """The first SOFn segment's height and width replaced (16 bits each)."""
    sof = re.search(rb"\xff[\xc0-\xc3\xc5-\xc7\xc9-\xcb\xcd-\xcf]", data)
    at = sof.start() + 5
    return data[:at] + struct.pack(">HH", height & 0xFFFF, width & 0xFFFF) + data[at + 4:]


def tiff_with_size(data: bytes, width: int, height: int) -> bytes:
    """ImageWidth (256) and ImageLength (257) of the first directory, as LONG values."""
    order = "<" if data[:2] == b"II" else ">"
    out = bytearray(data)
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    (count,) = struct.unpack_from(order + "H", data, ifd)
    for index in range(count):
        entry = ifd + 2 + 12 * index
        tag = struct.unpack_from(order + "H", data, entry)[0]
        if tag in (256, 257):
            struct.pack_into(order + "HII", out, entry + 2, 4, 1, width if tag == 256 else height)
    return bytes(out)


def webp_with_size(data: bytes, width: int, height: int) -> bytes:
    """The size in the VP8 (lossy, 14 bits each) or VP8L (lossless, 14 bits each) bitstream header."""
    out = bytearray(data)
    chunk = data[12:16]
    if chunk == b"VP8 ":
        struct.pack_into("<HH", out, 26, width & 0x3FFF, height & 0x3FFF)
    elif chunk == b"VP8L":
        bits = ((width - 1) & 0x3FFF) | (((height - 1) & 0x3FFF) << 14) | (int.from_bytes(data[21:25], "little")
                                                                            & ~((1 << 28) - 1))
        struct.pack_into("<I", out, 21, bits & 0xFFFFFFFF)
    return bytes(out)


def bmp_with_size(data: bytes, width: int, height: int) -> bytes:
    """BITMAPINFOHEADER's signed 32-bit width and height (a negative height means top-down rows)."""
    return data[:18] + struct.pack("<II", width & 0xFFFFFFFF, height & 0xFFFFFFFF) + data[26:]


SIZE_PATCHERS: dict[str, Callable[[bytes, int, int], bytes]] = {
    ".png": png_with_size, ".jpg": jpeg_with_size, ".tif": tiff_with_size, ".webp": webp_with_size,
    ".bmp": bmp_with_size}
# Declared sizes: far over any limit, zero or negative, and lies that pass MAX_PIXELS (more or fewer rows
# than the data holds, a strip that only the padded-size check refuses).
HUGE_SIZES = ((65535, 65535), (2**31 - 1, 1), (1, 2**31 - 1), (0, 40), (40, 0), (257, 256), (16383, 16383),
              (2**32 - 1, 2**32 - 1), (-40, 40), (40, -2**31), (64, 64), (48, 39), (4096, 1))


def huge_size_cases(bases: dict[str, tuple[bytes, str]]) -> list[Case]:
    cases = []
    for base, (data, ext) in bases.items():
        if not base.endswith(("-rgb", "jpeg", "deflate", "lossy", "lossless", "-24")):
            continue
        for width, height in HUGE_SIZES:
            if ext != ".bmp" and (width < 0 or height < 0) or ext in (".jpg", ".webp") and max(width, height) > 65535:
                continue
            cases.append(Case(f"huge-size-{base}-{width}x{height}{ext}", "huge-size",
                              SIZE_PATCHERS[ext](data, width, height)))
    return cases


# ------------------------------------------------------------------------------------ special files
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".tif": "TIFF", ".webp": "WEBP", ".bmp": "BMP"}


def tiny_cases() -> list[Case]:
    cases = []
    for width, height in ((1, 1), (1, 2), (2, 1)):
        image = photo(5, (width, height))
        for ext, fmt in FORMATS.items():
            cases.append(Case(f"tiny-{width}x{height}{ext}", "tiny", encoded(image, fmt)))
        cases.append(Case(f"tiny-{width}x{height}-rgba.png", "tiny", encoded(image.convert("RGBA"), "PNG")))
    return cases


def wide_cases() -> list[Case]:
    """Strips one pixel high: the widest each format holds, one that only the padded-size check refuses
    (4096x1 pads to 4096x16 for the tiny model), and one that runs (256x1)."""
    strip = np.asarray(photo(1, (256, 1)))
    cases = []
    for ext, widest in ((".png", 65535), (".jpg", 65500), (".tif", 65535), (".webp", 16383), (".bmp", 65535)):
        for width in (widest, 4096, 256):
            image = Image.fromarray(np.resize(strip, (1, width, 3)))
            cases.append(Case(f"wide-{width}x1{ext}", "wide", encoded(image, FORMATS[ext])))
    return cases


def animated_cases() -> list[Case]:
    frames = [photo(index, (32, 24)) for index in (1, 2, 3)]
    gif = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    return [Case("animated-apng.png", "animated", encoded(frames[0], "PNG", save_all=True, append_images=frames[1:])),
            Case("animated-gif-as.png", "animated", gif),
            Case("animated-gif-as.jpg", "animated", gif),
            Case("animated.webp", "animated", encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:])),
            Case("animated-multipage.tif", "animated", encoded(frames[0], "TIFF", save_all=True,
                                                                append_images=frames[1:]))]


def polyglot_cases(bases: dict[str, tuple[bytes, str]]) -> list[Case]:
    png, jpeg, bmp = bases["png-rgb"][0], bases["jpeg"][0], bases["bmp-24"][0]
    zip_tail = b"PK\x03\x04" + bytes(26) + b"PK\x05\x06" + bytes(18)
    html = b"<!doctype html><script>alert(1)</script>"
    return [Case("polyglot-png-zip.png", "polyglot", png + zip_tail),
            Case("polyglot-jpeg-html.jpg", "polyglot", jpeg + html),
            Case("polyglot-html-png.png", "polyglot", html + png),
            Case("polyglot-pdf-jpeg.jpg", "polyglot", b"%PDF-1.4\n" + jpeg),
            Case("polyglot-gif-magic-png.png", "polyglot", b"GIF89a" + png[6:]),
            Case("polyglot-png-magic-jpeg.png", "polyglot", png[:8] + jpeg),
            Case("polyglot-jpeg-then-png.jpg", "polyglot", jpeg + png),
            Case("polyglot-bmp-magic-png.bmp", "polyglot", b"BM" + png),
            Case("polyglot-tiff-magic-garbage.tif", "polyglot", b"II*\x00\x08\x00\x00\x00" + bytes(range(256)) * 4),
            Case("polyglot-riff-webp-bmp.webp", "polyglot", b"RIFF" + struct.pack("<I", len(bmp) + 4) + b"WEBP" + bmp),
            Case("polyglot-bmp-in-png-name.png", "polyglot", bmp)]


def metadata_cases() -> list[Case]:
    image = photo(3, (40, 24))
    cases = []
    for orientation in (0, 9, 65535):
        exif = Image.Exif()
        exif[0x0112] = orientation
        cases.append(Case(f"metadata-orientation-{orientation}.jpg", "metadata", encoded(image, "JPEG", exif=exif)))
        cases.append(Case(f"metadata-orientation-{orientation}.png", "metadata", encoded(image, "PNG", exif=exif)))
    long_exif = Image.Exif()
    long_exif[0x010E] = "x" * 70000                      # ImageDescription: more than a JPEG segment holds
    cases.append(Case("metadata-long-exif-png-as.jpg", "metadata", encoded(image, "PNG", exif=long_exif)))
    rng = random.Random(7)
    garbage = bytes(rng.randrange(256) for _ in range(2000))
    cases += [Case("metadata-garbage-exif.png", "metadata", encoded(image, "PNG", exif=b"Exif\0\0" + garbage)),
              Case("metadata-garbage-exif.jpg", "metadata", encoded(image, "JPEG", exif=b"Exif\0\0" + garbage)),
              Case("metadata-garbage-icc.png", "metadata", encoded(image, "PNG", icc_profile=garbage)),
              Case("metadata-garbage-icc.jpg", "metadata", encoded(image, "JPEG", icc_profile=garbage)),
              Case("metadata-huge-icc.png", "metadata", encoded(image, "PNG", icc_profile=garbage * 200)),
              Case("metadata-huge-exif.png", "metadata", encoded(image, "PNG", exif=b"Exif\0\0" + garbage * 40)),
              Case("metadata-garbage-icc-cmyk.jpg", "metadata", encoded(image.convert("CMYK"), "JPEG",
                                                                        icc_profile=garbage))]
    return cases


# ------------------------------------------------------------------------------------ the corpus
MUTATIONS = {"truncated": truncated, "header-bits": header_bits, "data-bytes": data_bytes}


def make_corpus(seed: int = 0, variants: int = 8) -> list[Case]:
    """Every case, the same for the same seed: `variants` random mutations of each kind per base file,
    and the hand-made kinds."""
    rng = random.Random(seed)
    bases = base_files()
    cases = [Case(f"valid-{base}{ext}", "valid", data) for base, (data, ext) in bases.items()]
    for kind, mutate in MUTATIONS.items():
        cases += [Case(f"{kind}-{base}-{i}{ext}", kind, mutate(data, rng))
                  for base, (data, ext) in bases.items() for i in range(variants)]
    extensions = list(FORMATS)
    cases += [Case(f"wrong-ext-{base}{other}", "wrong-ext", data) for base, (data, ext) in bases.items()
              for other in rng.sample([e for e in extensions if e != ext], 2)]
    cases += [Case(f"empty{ext}", "empty", b"") for ext in extensions]
    cases += huge_size_cases(bases) + tiny_cases() + wide_cases() + animated_cases()
    cases += polyglot_cases(bases) + metadata_cases()
    return cases


def seeded_subset(cases: list[Case], count: int, seed: int = 0) -> list[Case]:
    """About `count` cases, every kind represented in proportion (at least twice), in a seeded order."""
    rng = random.Random(seed)
    by_kind: dict[str, list[Case]] = {}
    for case in cases:
        by_kind.setdefault(case.kind, []).append(case)
    chosen = []
    for kind, members in by_kind.items():
        share = max(2, round(count * len(members) / len(cases)))
        chosen += rng.sample(members, min(share, len(members)))
    return chosen


# ------------------------------------------------------------------------------------ one case
@dataclass
class Outcome:
    case: str
    kind: str
    path: str           # "cli" (resshift upscale) or "api" (POST /v1/upscale)
    outcome: str        # output, error; failures: traceback, bad-output, bad-error, server-error, slow, memory, hang
    seconds: float
    peak_rss: int       # bytes; 0 where it was not measured
    detail: str         # the output's size, the error line, or what went wrong

    @property
    def ok(self) -> bool:
        return self.outcome in OK_OUTCOMES


def expected_size(source: Path) -> Optional[tuple[int, int]]:
    """(width, height) of the output that `source` must give: SCALE times the upright decoded size."""
    from resshift.imageio import read_image

    try:
        height, width = read_image(source, max_pixels=MAX_PIXELS).pixels.shape[:2]
    except Exception:           # the library could not read it, yet produced an output: judged by the caller
        return None
    return SCALE * width, SCALE * height


def output_problem(data: bytes, source: Path) -> Optional[str]:
    """Why `data` is not the right output for `source`, or None."""
    want = expected_size(source)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            size = image.size
    except Exception as exc:
        return f"the output does not decode ({exc})"
    return None if size == want else f"the output is {size[0]}x{size[1]}, expected {want}"


@contextlib.contextmanager
def captured_stderr() -> Iterator[io.StringIO]:
    """Everything written to stderr in the block, by Python and by C libraries (file descriptor 2); every
    warning is shown, not only its first occurrence. The text is complete once the block has ended."""
    text = io.StringIO()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
        warnings.simplefilter("always")
        os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stderr(text):
                yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text.write(sink.read().decode(errors="replace"))


def cli_error(code: int, stderr: str, source: Path) -> Optional[str]:
    """The error line when the CLI failed as it should: exit code 1 or 2, one error line naming the file,
    and nothing else on stderr but the summary's list of failed files."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("resshift upscale: error: ")]
    others = [line for line in lines if line not in errors and line != "failed:" and line.strip() != str(source)]
    ok = code in (1, 2) and len(errors) == 1 and source.name in errors[0] and not others
    return errors[0] if ok else None


def run_cli(source: Path, output: Path, model: Path) -> tuple[str, str]:
    """`resshift upscale -i SOURCE -o OUTPUT` in this process: (outcome, detail)."""
    from resshift.cli import main

    try:
        with captured_stderr() as err, contextlib.redirect_stdout(io.StringIO()):
            code = main(["upscale", "-i", str(source), "-o", str(output), "--model", str(model), "--steps", "1",
                         "-q", "--device", "cpu", "--max-pixels", str(MAX_PIXELS)])
    except Exception as exc:                                     # anything escaping main is a bug
        return "traceback", f"{type(exc).__name__}: {exc}"
    text = err.getvalue()
    written = sorted(output.iterdir()) if output.is_dir() else []
    if "Traceback" in text:
        return "traceback", text[-500:]
    if code == 0:
        others = [line for line in text.splitlines() if line.strip() and source.stem not in line]
        problem = (f"exit 0 but the output folder holds {[p.name for p in written]}" if len(written) != 1
                   else f"stderr has lines about something else: {others}" if others
                   else output_problem(written[0].read_bytes(), source))
        return ("bad-output", problem) if problem else ("output", "{}x{}".format(*expected_size(source)))
    error = cli_error(code, text, source)
    if error is not None and not written:
        return "error", error
    return "bad-error", f"exit {code}, outputs {[p.name for p in written]}: {text[-500:]}"


def run_api(client, case: Case, source: Path) -> tuple[str, str]:
    """POST /v1/upscale with the case as the uploaded image: (outcome, detail)."""
    try:
        response = client.post("/v1/upscale", files={"image": (case.name, case.data)}, data={"steps": "1"})
    except Exception as exc:
        return "traceback", f"{type(exc).__name__}: {exc}"
    if response.status_code == 200:
        problem = output_problem(response.content, source)
        return ("bad-output", problem) if problem else ("output", "{}x{}".format(*expected_size(source)))
    if response.status_code >= 500 and response.status_code != 503:
        return "server-error", f"{response.status_code}: {response.text[:300]}"
    try:
        message = response.json()["error"]
    except Exception:
        message = None
    if 400 <= response.status_code < 500 and isinstance(message, str) and message and "\n" not in message:
        return "error", f"{response.status_code} {message}"
    return "bad-error", f"{response.status_code}: {response.text[:300]}"


def reset_peak_rss() -> None:
    """Start counting the peak resident memory afresh (Linux's clear_refs; elsewhere the peak only grows)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss() -> int:
    with contextlib.suppress(OSError):
        return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measured(case: Case, path: str, run: Callable[[], tuple[str, str]]) -> Outcome:
    """Run one path of one case, timed and with its peak memory; a correct answer that came too late or
    took too much memory is a failure too."""
    reset_peak_rss()
    start = time.perf_counter()
    outcome, detail = run()
    seconds, peak = time.perf_counter() - start, peak_rss()
    if outcome in OK_OUTCOMES and seconds > SECONDS_LIMIT:
        outcome, detail = "slow", f"{seconds:.1f} s: {detail}"
    elif outcome in OK_OUTCOMES and peak > RSS_LIMIT:
        outcome, detail = "memory", f"{peak / 2**30:.2f} GiB: {detail}"
    return Outcome(case.name, case.kind, path, outcome, round(seconds, 3), peak, detail)


def run_case(case: Case, folder: Path, model: Path, client) -> list[Outcome]:
    """The case through the CLI and through the API; `folder` gets the input file and the CLI's output."""
    source = folder / "in" / case.name
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(case.data)
    output = folder / "out" / case.name.replace(".", "_")     # a folder: a name with an image extension is a file
    outcomes = [measured(case, "cli", lambda: run_cli(source, output, model)),
                measured(case, "api", lambda: run_api(client, case, source))]
    for outcome in outcomes:
        outcome.detail = outcome.detail.replace(f"{folder}{os.sep}", "")
    return outcomes


# ------------------------------------------------------------------------------------ the runner
def make_model(folder: Path) -> Path:
    """The tests' tiny random-weight x4 model (tests/conftest.py), saved in `folder`."""
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import tiny_config
    from resshift.pipeline import ResShiftPipeline

    torch.manual_seed(0)
    ResShiftPipeline.from_config(tiny_config()).save_pretrained(folder / "tiny-x4")
    return folder / "tiny-x4"


def worker(model: Path, cases: Path) -> None:
    """Read case file names from stdin, answer each with a JSON line of its two outcomes."""
    import logging

    import torch
    from fastapi.testclient import TestClient

    from resshift.web import ServeSettings, create_app

    torch.set_num_threads(1)
    logging.disable(logging.CRITICAL)       # the 500s are counted; their logged tracebacks would only be noise
    app = create_app(ServeSettings(models=(str(model),), device="cpu", max_pixels=MAX_PIXELS))
    with TestClient(app, raise_server_exceptions=False) as client, tempfile.TemporaryDirectory() as tmp:
        print("ready", flush=True)
        for line in sys.stdin:
            name, kind = line.rstrip("\n").split("\t")
            case = Case(name, kind, (cases / name).read_bytes())
            print(json.dumps([asdict(o) for o in run_case(case, Path(tmp), model, client)]), flush=True)


class Worker:
    """A worker process, restarted after a hang or a memory overrun (which it cannot report itself)."""

    def __init__(self, model: Path, cases: Path) -> None:
        self.command = [sys.executable, __file__, "--worker", str(model), str(cases)]
        self.process: Optional[subprocess.Popen] = None

    def run(self, case: Case) -> list[Outcome]:
        if self.process is None:
            self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                            env={**os.environ, "OMP_NUM_THREADS": "1"})
            assert self.process.stdout.readline() == "ready\n", "the fuzz worker did not start"
        self.process.stdin.write(f"{case.name}\t{case.kind}\n")
        self.process.stdin.flush()
        failure = self.wait_for_answer()
        if failure is None:
            return [Outcome(**fields) for fields in json.loads(self.process.stdout.readline())]
        self.process.kill()
        self.process.wait()
        self.process = None
        return [Outcome(case.name, case.kind, "cli+api", failure, HANG_SECONDS, 0, "the worker was killed")]

    def wait_for_answer(self) -> Optional[str]:
        """None once an answer is ready; 'hang' or 'memory' when the worker had to be killed."""
        deadline = time.monotonic() + HANG_SECONDS
        while not select.select([self.process.stdout], [], [], 0.2)[0]:
            if time.monotonic() > deadline:
                return "hang"
            if resident(self.process.pid) > RSS_LIMIT + 2**30:     # far past the limit: stop before the machine suffers
                return "memory"
        return None

    def close(self) -> None:
        if self.process is not None:
            self.process.stdin.close()
            self.process.wait()


def resident(pid: int) -> int:
    with contextlib.suppress(OSError, AttributeError):
        return int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1)) * 1024
    return 0


def summary_table(outcomes: list[Outcome]) -> str:
    """Case kind x outcome, per path: a plain-text table."""
    names = sorted({(o.path, o.outcome) for o in outcomes}, key=lambda po: (po[0], po[1] not in OK_OUTCOMES, po[1]))
    counts = Counter((o.kind, o.path, o.outcome) for o in outcomes)
    kinds = list(dict.fromkeys(o.kind for o in outcomes))
    header = ["kind", "cases"] + [f"{path} {outcome}" for path, outcome in names] + ["max s", "max RSS MiB"]
    rows = []
    for kind in kinds + ["total"]:
        mine = [o for o in outcomes if kind in (o.kind, "total")]
        rows.append([kind, str(len({o.case for o in mine}))]
                    + [str(sum(counts[(k, p, n)] for k in (kinds if kind == "total" else [kind]))) for p, n in names]
                    + [f"{max(o.seconds for o in mine):.1f}", str(max(o.peak_rss for o in mine) >> 20)])
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in [header] + rows)


def run_corpus(seed: int, variants: int, results: Path) -> int:
    """The full corpus through a worker; prints the table, writes the JSON; exit code 1 if any case failed."""
    from resshift.fileio import atomic_write_json

    cases = make_corpus(seed, variants)
    outcomes: list[Outcome] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="resshift-fuzz-") as tmp:
        folder = Path(tmp)
        (folder / "cases").mkdir()
        for case in cases:
            (folder / "cases" / case.name).write_bytes(case.data)
        runner = Worker(make_model(folder), folder / "cases")
        for index, case in enumerate(cases, 1):
            outcomes += runner.run(case)
            failed = [o for o in outcomes[-2:] if not o.ok]
            for o in failed:
                print(f"FAILED {o.case} ({o.path}): {o.outcome}: {o.detail[:300]}", flush=True)
            if index % 50 == 0:
                print(f"{index}/{len(cases)} cases, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        runner.close()
    table = summary_table(outcomes)
    print(table)
    failures = [asdict(o) for o in outcomes if not o.ok]
    per_case: dict[str, dict[str, str]] = {}
    for o in outcomes:
        per_case.setdefault(o.case, {"kind": o.kind})[o.path] = o.outcome
    atomic_write_json(results, {
        "seed": seed, "variants": variants, "cases": len(cases), "max_pixels": MAX_PIXELS,
        "seconds_limit": SECONDS_LIMIT, "rss_limit": RSS_LIMIT, "wall_seconds": round(time.perf_counter() - start, 1),
        "summary": table.splitlines(), "failures": failures, "outcomes": per_case})
    print(f"{len(cases)} cases, {len(failures)} failed path runs; wrote {results}")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", type=int, default=8, help="random mutations of each kind per base file")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--worker", nargs=2, type=Path, metavar=("MODEL", "CASES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0
    return run_corpus(args.seed, args.variants, args.results)


if __name__ == "__main__":
    sys.exit(main())
