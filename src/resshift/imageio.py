"""Read and write real photos: 8/16-bit, greyscale, alpha, EXIF orientation, ICC profiles, atomic writes.

Pillow decodes and encodes everything except 16-bit colour and 16-bit grey+alpha, which it cuts to
8 bits; OpenCV (`opencv-python-headless`) handles those PNG and TIFF files so that no bit is lost.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import io
import logging
import os
import re
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
import torch
from PIL import ExifTags, ImageCms, UnidentifiedImageError
from PIL import Image as PILImage

from resshift.errors import InputError
from resshift.fileio import atomic_write

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_SUFFIXES", "Image", "check_output_size", "from_tensor", "is_image_name",
           "list_image_files", "read_image", "to_tensor", "write_image"]

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 8192 * 8192  # larger inputs are rare for restoration; --max-pixels raises it
_SUPPORTED = "JPEG, PNG, WebP, TIFF or BMP"

_ORIENTATION = ExifTags.Base.Orientation
# Tags of a TIFF's directory that describe the picture rather than the file layout (strips, samples, ...).
_TIFF_DESCRIPTIVE_TAGS = (270, 271, 272, 282, 283, 296, 305, 306, 315, 33432)
_TIFF_ICC_TAG = 34675
_TIFF_EXTRA_SAMPLES = 338
_PILLOW_LOCK = threading.Lock()
# What Pillow (its format plugins and decoders) and the colour management raise for a file it cannot
# parse or decode; UnidentifiedImageError, an OSError, is told apart first as "not an image".
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, ImageCms.PyCMSError)


def _quiet_libtiff() -> None:
    """libtiff prints its decoding errors and warnings on stderr itself ("ZIPDecode: Decoding error ..."),
    besides the error that Pillow raises and read_image reports as one line naming the file: turn the
    printing off in the copy of libtiff that Pillow loaded. Linux only (found in /proc/self/maps)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return
    for path in sorted(set(re.findall(r"\s(/\S*/libtiff[^/\s]*\.so[^/\s]*)$", maps, re.MULTILINE))):
        with contextlib.suppress(OSError, AttributeError):
            library = ctypes.CDLL(path)
            library.TIFFSetErrorHandler(None)
            library.TIFFSetWarningHandler(None)


_quiet_libtiff()


@dataclass
class Image:
    """A decoded photo: RGB pixels in [0, 1] plus what is needed to write it back as it came."""

    pixels: np.ndarray  # (H, W, 3) float32 in [0, 1]; greyscale sources are repeated over 3 channels
    alpha: np.ndarray | None = None  # (H, W) float32 in [0, 1]
    grey: bool = False  # the source had one colour channel
    bit_depth: int = 8  # 8 or 16 bits per sample
    icc_profile: bytes | None = None
    exif: bytes | None = None  # orientation reset to 1: the pixels are already upright
    format: str = "PNG"


@dataclass(frozen=True)
class _Format:
    name: str  # Pillow's format name
    alpha: bool
    wide: bool  # can hold 16 bits per sample
    metadata: bool  # can hold ICC and EXIF
    max_side: int  # the largest width or height it can hold


_FORMATS = {
    ".png": _Format("PNG", alpha=True, wide=True, metadata=True, max_side=2**31 - 1),
    ".jpg": _Format("JPEG", alpha=False, wide=False, metadata=True, max_side=65500),
    ".jpeg": _Format("JPEG", alpha=False, wide=False, metadata=True, max_side=65500),
    ".webp": _Format("WEBP", alpha=True, wide=False, metadata=True, max_side=16383),
    ".tif": _Format("TIFF", alpha=True, wide=True, metadata=True, max_side=2**32 - 1),
    ".tiff": _Format("TIFF", alpha=True, wide=True, metadata=True, max_side=2**32 - 1),
    # Pillow writes BMP alpha but reads it back without, so BMP output is treated as opaque.
    ".bmp": _Format("BMP", alpha=False, wide=False, metadata=False, max_side=2**31 - 1),
}
_PILLOW_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP")
_JPEG_MAX_EXIF = 65533  # bytes, "Exif\0\0" included: what one APP1 segment holds
# Grey from RGB, as Pillow's convert('L'): exact for pixels whose three channels are equal.
BT601_LUMA = (0.299, 0.587, 0.114)
# The file extensions every command takes as images (and writes).
IMAGE_SUFFIXES = tuple(_FORMATS)

# EXIF orientation -> the numpy view that turns the stored pixels upright (same as Pillow's exif_transpose).
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def is_image_name(relative: Path) -> bool:
    """An image extension, and no hidden file or folder on the way (relative to the searched folder)."""
    return relative.suffix.lower() in IMAGE_SUFFIXES and not any(p.startswith(".") for p in relative.parts)


def list_image_files(folders: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files under the folders (recursive, no hidden ones), sorted per folder; InputError for a
    missing folder."""
    files: list[Path] = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise InputError(f"{folder}: no such folder of images")
        files += sorted(p for p in folder.rglob("*") if is_image_name(p.relative_to(folder)) and p.is_file())
    return files


def read_image(path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image:
    """Decode a JPEG/PNG/WebP/TIFF/BMP file fully, upright, with its alpha, bit depth, ICC and EXIF.

    Raises InputError (naming the file) for a missing, empty, unreadable, corrupt or too large file;
    the size is checked from the header before any pixel is decoded.
    """
    path = Path(path)
    _check_readable(path)
    try:
        with open_header(path) as im:
            _check_size(path, im.size, max_pixels)
            stored_orientation = im.getexif().get(_ORIENTATION, 1)
            wide_channels = _wide_channels(path, im)
            im.load()  # a full decode, so that truncated or corrupt data is found here and not later
            # Pillow turns TIFFs upright while loading and drops the tag, so ask again what is left to do.
            orientation = stored_orientation if wide_channels else im.getexif().get(_ORIENTATION, 1)
            icc, exif = im.info.get("icc_profile") or None, _exif_bytes(im)
            fmt = "JPEG" if im.format == "MPO" else im.format  # MPO: a camera JPEG with extra frames
            if wide_channels is None:
                array, bits, icc = _pillow_array(im, icc)
        if wide_channels is not None:
            array, bits = _opencv_array(path, wide_channels), 16
    except _DECODE_ERRORS as exc:
        raise InputError(f"{path}: the image data is truncated or corrupt ({exc})") from exc
    array = _UPRIGHT.get(orientation, lambda a: a)(array)
    return _to_image(array, bits, icc, exif, fmt)


def write_image(path: str | os.PathLike, image: Image, *, overwrite: bool = False, quality: int = 95) -> None:
    """Encode `image` in the format its extension names, atomically (temporary file, fsync, rename).

    16-bit PNG/TIFF output when image.bit_depth is 16; greyscale stays one channel where the format
    has it; alpha is kept by PNG, WebP and TIFF, while JPEG and BMP get the image composited on white.
    ICC and EXIF are carried by PNG, JPEG, WebP and TIFF; TIFF keeps only EXIF's main directory
    (make, model, date; not exposure or GPS), and 16-bit colour TIFF no EXIF (OpenCV cannot write it).
    16-bit grey+alpha is written as 16-bit RGBA, the closest that OpenCV can encode.
    """
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unknown extension {path.suffix!r}; use .png, .jpg, .webp, .tif or .bmp")
    if not path.parent.is_dir():
        raise InputError(f"{path}: the output folder {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name for the output")
    if path.exists() and not overwrite:
        raise InputError(f"{path}: already exists; use --overwrite to replace it")
    array = _output_array(path, image, fmt)
    check_output_size(path, array.shape[1], array.shape[0])
    image = _without_unfitting_exif(path, image, fmt)
    try:
        atomic_write(path, lambda fp: _encode(fp, array, image, fmt, quality))
    except (OSError, ValueError) as exc:      # the disk, or an encoder refusing what it was given
        raise InputError(f"{path}: cannot write the output ({getattr(exc, 'strerror', None) or exc})") from exc


def check_output_size(path: str | os.PathLike, width: int, height: int) -> None:
    """InputError when the format that `path`'s extension names cannot hold a width x height image
    (JPEG: 65500 pixels per side, WebP: 16383), so that a batch learns it before restoring the image."""
    fmt = _FORMATS.get(Path(path).suffix.lower())
    if fmt is not None and max(width, height) > fmt.max_side:
        raise InputError(f"{path}: a {width}x{height} result is over {fmt.name}'s limit of {fmt.max_side} pixels "
                         "per side; write PNG or TIFF instead (--ext png), or scale less")


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float pixels -> (1, 3, H, W) float32 tensor."""
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise InputError(f"expected (H, W, 3) pixels, got shape {pixels.shape}")
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32))[None]


def from_tensor(t: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) tensor -> (H, W, 3) float32 array (not clipped: write_image clips)."""
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3 or t.shape[0] != 3:
        raise InputError(f"expected a (1, 3, H, W) or (3, H, W) tensor, got shape {tuple(t.shape)}")
    return t.detach().to("cpu", torch.float32).permute(1, 2, 0).contiguous().numpy()


# Reading


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image file")
    try:
        with path.open("rb"):
            pass
    except PermissionError as exc:
        raise InputError(f"{path}: permission denied, cannot read the file") from exc
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes)")


@contextlib.contextmanager
def open_header(path: Path) -> Iterator[PILImage.Image]:
    """Open lazily (header only); InputError for a file that is no image or whose header is broken.
    Pillow's global bomb limit is lifted meanwhile: _check_size is the guard, and Pillow's would refuse
    sizes that a user allowed with --max-pixels."""
    with _PILLOW_LOCK:
        saved, PILImage.MAX_IMAGE_PIXELS = PILImage.MAX_IMAGE_PIXELS, None
        try:
            im = PILImage.open(path, formats=_PILLOW_FORMATS)
        except UnidentifiedImageError as exc:
            raise InputError(f"{path}: not an image, or not a {_SUPPORTED} file") from exc
        except _DECODE_ERRORS as exc:       # a plugin recognised the format, then failed on the header
            raise InputError(f"{path}: the image data is truncated or corrupt ({exc})") from exc
        finally:
            PILImage.MAX_IMAGE_PIXELS = saved
    with im:
        yield im


def _check_size(path: Path, size: tuple[int, int], max_pixels: int | None) -> None:
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise InputError(
            f"{path}: {w}x{h} is {w * h} pixels, over the limit of {max_pixels} that guards against "
            f"decompression bombs; pass --max-pixels {w * h} (or more) if you trust this file"
        )


def _wide_channels(path: Path, im: PILImage.Image) -> int | None:
    """Channel count (2, 3 or 4) of a 16-bit PNG/TIFF that Pillow would cut to 8 bits, else None."""
    if im.format == "PNG":
        with path.open("rb") as f:
            header = f.read(26)  # signature, IHDR length and type, width, height, bit depth, colour type
        return {4: 2, 2: 3, 6: 4}.get(header[25]) if header[24] == 16 else None
    if im.format == "TIFF":
        tags = im.tag_v2
        samples, photometric = tags.get(277, 1), tags.get(262)
        if max(tags.get(258, (8,))) == 16 and samples in (2, 3, 4) and photometric in (1, 2):
            return samples
    return None


def _pillow_array(im: PILImage.Image, icc: bytes | None) -> tuple[np.ndarray, int, bytes | None]:
    """(H, W, C) uint8 or uint16 with C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA; bit depth; ICC profile."""
    if im.mode.startswith("I"):  # I;16 (16-bit grey) or I (32-bit integer grey)
        return np.clip(np.asarray(im), 0, 65535).astype(np.uint16)[..., None], 16, icc
    if im.mode == "F":
        raise InputError(f"{im.filename}: 32-bit floating-point images are not supported")
    if im.mode == "CMYK" and icc:
        # A CMYK profile cannot describe RGB pixels: convert through it to sRGB, which needs no profile.
        cmyk = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        im, icc = ImageCms.profileToProfile(im, cmyk, ImageCms.createProfile("sRGB"), outputMode="RGB"), None
    elif im.mode in ("P", "L", "RGB") and "transparency" in im.info:
        im = im.convert("LA" if im.mode == "L" else "RGBA")  # a transparent colour key becomes alpha
    elif im.mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert({"1": "L", "La": "LA", "PA": "RGBA", "RGBa": "RGBA"}.get(im.mode, "RGB"))
    array = np.asarray(im)
    return (array[..., None] if array.ndim == 2 else array), 8, icc


def _opencv_array(path: Path, channels: int) -> np.ndarray:
    """16-bit pixels that Pillow cannot keep, decoded by OpenCV: (H, W, channels) uint16, RGB order."""
    array = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)  # IMREAD_UNCHANGED: as stored
    if array is None or array.dtype != np.uint16 or array.ndim != 3:
        raise InputError(f"{path}: the image data is truncated or corrupt (OpenCV cannot decode it)")
    if channels == 2:
        return array[..., [0, -1]]  # OpenCV may expand grey+alpha to BGRA: grey is in any of B, G, R
    return array[..., [2, 1, 0, 3][: array.shape[2]]]  # BGR(A) -> RGB(A)


def _exif_bytes(im: PILImage.Image) -> bytes | None:
    """The source's EXIF with orientation reset to 1, or None when it has none."""
    exif = im.getexif()
    kept = PILImage.Exif()  # a new one: the image's own stays as it is
    if im.format == "TIFF":
        # A TIFF's directory also lists its strips and samples, which would be wrong in any other file.
        for tag in _TIFF_DESCRIPTIVE_TAGS:
            if tag in exif:
                kept[tag] = exif[tag]
        for ifd in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo):
            if ifd in exif:
                kept[ifd] = exif.get_ifd(ifd)
    elif exif:
        kept.load(exif.tobytes())
    if not kept:
        return None
    kept[_ORIENTATION] = 1
    return kept.tobytes()


def _to_image(array: np.ndarray, bits: int, icc: bytes | None, exif: bytes | None, fmt: str) -> Image:
    scaled = array.astype(np.float32) / np.float32(2**bits - 1)  # (H, W, C)
    grey = scaled.shape[2] <= 2
    colour = np.repeat(scaled[..., :1], 3, axis=2) if grey else scaled[..., :3]
    alpha = scaled[..., -1] if scaled.shape[2] in (2, 4) else None
    return Image(np.ascontiguousarray(colour), alpha, grey, bits, icc, exif, fmt)


# Writing


def _output_array(path: Path, image: Image, fmt: _Format) -> np.ndarray:
    """The samples to encode: (H, W, C) uint8 or uint16, C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA."""
    pixels, alpha = image.pixels, image.alpha
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise InputError(f"{path}: expected (H, W, 3) pixels, got shape {pixels.shape}")
    if alpha is not None and alpha.shape != pixels.shape[:2]:
        raise InputError(f"{path}: alpha of shape {alpha.shape} does not match pixels of {pixels.shape}")
    if image.bit_depth not in (8, 16):
        raise InputError(f"{path}: bit_depth must be 8 or 16, not {image.bit_depth}")
    if not np.isfinite(pixels).all() or (alpha is not None and not np.isfinite(alpha).all()):
        raise InputError(f"{path}: the pixels contain NaN or infinity")
    colour = pixels @ np.array(BT601_LUMA, np.float32) if image.grey else pixels
    colour = colour[..., None] if colour.ndim == 2 else colour
    if alpha is not None and not fmt.alpha:
        log.warning("%s: %s has no alpha channel; compositing the image on white", path, fmt.name)
        colour, alpha = colour * alpha[..., None] + (1 - alpha[..., None]), None
    samples = colour if alpha is None else np.concatenate([colour, alpha[..., None]], axis=2)
    top = 65535 if image.bit_depth == 16 and fmt.wide else 255
    return np.round(np.clip(samples, 0, 1) * top).astype(np.uint16 if top == 65535 else np.uint8)


def _without_unfitting_exif(path: Path, image: Image, fmt: _Format) -> Image:
    """`image`, without its EXIF when the output format cannot hold that much (JPEG: one 64 kB segment)."""
    if fmt.name != "JPEG" or image.exif is None or len(image.exif) <= _JPEG_MAX_EXIF:
        return image
    log.warning("%s: the source's EXIF data (%d bytes) does not fit in a JPEG; written without it", path,
                len(image.exif))
    return dataclasses.replace(image, exif=None)


def _encode(fp: BinaryIO, array: np.ndarray, image: Image, fmt: _Format, quality: int) -> None:
    icc, exif = (image.icc_profile, image.exif) if fmt.metadata else (None, None)
    if array.dtype == np.uint16 and array.shape[2] > 1:
        fp.write(_opencv_encode(array, fmt, icc, exif))
        return
    options: dict[str, object] = {"icc_profile": icc, "exif": exif}
    if fmt.name in ("JPEG", "WEBP"):
        options["quality"] = quality
    if fmt.name == "JPEG":
        options["subsampling"] = 0  # 4:4:4: halving the chroma would undo part of the upscaling
    if fmt.name == "TIFF":
        options["compression"] = "tiff_deflate"  # lossless; uncompressed TIFFs of upscaled images are huge
        options["exif"] = exif and _main_directory(exif)
    pil = PILImage.fromarray(array[..., 0] if array.shape[2] == 1 else array)  # uint16 (H, W) -> I;16
    pil.save(fp, fmt.name, **{k: v for k, v in options.items() if v is not None})


def _main_directory(exif: bytes) -> PILImage.Exif:
    """EXIF without its Exif and GPS sub-directories, which Pillow's TIFF writer cannot store."""
    main = PILImage.Exif()
    main.load(exif)
    for ifd in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo):
        main.pop(ifd, None)
    return main


def _opencv_encode(array: np.ndarray, fmt: _Format, icc: bytes | None, exif: bytes | None) -> bytes:
    """16-bit colour or grey+alpha, which Pillow cannot write, encoded by OpenCV as PNG or TIFF."""
    if array.shape[2] == 2:
        array = array[..., [0, 0, 0, 1]]  # OpenCV has no two-channel encoder
    bgr = np.ascontiguousarray(array[..., ::-1] if array.shape[2] == 3 else array[..., [2, 1, 0, 3]])
    if fmt.name == "PNG":
        kinds, blocks = [], []
        # PNG's eXIf chunk holds the TIFF structure without the JPEG-style "Exif\0\0" prefix.
        tiff_exif = exif.removeprefix(b"Exif\0\0") if exif else None
        for kind, block in ((cv2.IMAGE_METADATA_ICCP, icc), (cv2.IMAGE_METADATA_EXIF, tiff_exif)):
            if block:
                kinds.append(kind)
                blocks.append(np.frombuffer(block, np.uint8))
        ok, encoded = cv2.imencodeWithMetadata(".png", bgr, kinds, blocks)
    else:
        ok, encoded = cv2.imencode(".tif", bgr, [cv2.IMWRITE_TIFF_COMPRESSION, 8])  # 8: deflate
    if not ok:
        raise InputError(f"OpenCV could not encode a {array.shape} 16-bit {fmt.name}")
    data = encoded.tobytes()
    return _tiff_with_tags(data, icc, alpha=array.shape[2] == 4) if fmt.name == "TIFF" else data


def _tiff_with_tags(data: bytes, icc: bytes | None, alpha: bool) -> bytes:
    """Add what OpenCV's TIFF encoder leaves out of a single-image classic TIFF: the ICC profile, and
    ExtraSamples saying that a fourth sample is unassociated alpha.

    The profile and a copy of the directory with the new entries are appended; the header then points
    at the copy (the old directory stays as unused bytes).
    """
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    entries = [data[ifd + 2 + 12 * k : ifd + 14 + 12 * k] for k in range(count)]
    out = bytearray(data + b"\0" * (len(data) % 2))  # TIFF offsets are word-aligned
    if alpha:
        entries.append(struct.pack(order + "HHIHH", _TIFF_EXTRA_SAMPLES, 3, 1, 2, 0))  # SHORT 2: alpha
    if icc:
        entries.append(struct.pack(order + "HHII", _TIFF_ICC_TAG, 7, len(icc), len(out)))  # UNDEFINED bytes
        out += icc + b"\0" * (len(icc) % 2)
    entries.sort(key=lambda entry: struct.unpack(order + "H", entry[:2])[0])  # TIFF requires tag order
    new_ifd = len(out)
    out += struct.pack(order + "H", len(entries)) + b"".join(entries) + struct.pack(order + "I", 0)
    out[4:8] = struct.pack(order + "I", new_ifd)
    return bytes(out)
