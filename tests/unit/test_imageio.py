"""Reading and writing real photos: bit depths, alpha, grey, orientation, metadata, errors, atomic writes."""

import logging
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from PIL import ImageCms, ImageOps

from resshift import fileio, imageio
from resshift.errors import InputError
from resshift.imageio import Image, from_tensor, read_image, to_tensor, write_image

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # ../shared/data
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def set14(number: int) -> Path:
    """Set14's img_{number:03d}.png (img_003 is greyscale); skips the test where ../shared is missing."""
    path = DATA / "benchmarks" / "Set14" / f"img_{number:03d}.png"
    if not path.exists():
        pytest.skip(f"test data not found: {path}")
    return path


def png_file(path: Path, chunks: list[tuple[bytes, bytes]]) -> Path:
    """A PNG file assembled chunk by chunk, for files that no library writes."""
    body = b"".join(struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d)) for t, d in chunks)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + b"\0\0\0\0IEND\xaeB`\x82")
    return path


def png16(path: Path, samples: np.ndarray) -> Path:
    """A 16-bit PNG of (H, W, C) uint16 samples, C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA."""
    h, w, c = samples.shape
    rows = samples.astype(">u2").view(np.uint8).reshape(h, -1)
    rows = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1)  # filter type 0 before each row
    header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    return png_file(path, [(b"IHDR", header), (b"IDAT", zlib.compress(rows.tobytes()))])


def random16(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    samples = np.random.default_rng(seed).integers(0, 65536, (h, w, c), dtype=np.uint16)
    samples[0, 0], samples[0, 1] = 0, 65535  # both ends of the range
    return samples


def exif_with(orientation: int | None = None, make: str = "TestCam") -> PILImage.Exif:
    """EXIF with a camera make in IFD0 and a capture date in the Exif sub-directory."""
    exif = PILImage.Exif()
    exif[271] = make
    if orientation is not None:
        exif[274] = orientation
    exif.get_ifd(0x8769)[0x9003] = "2024:05:06 07:08:09"
    return exif


def assert_camera_exif(exif_bytes: bytes, *, sub_directory: bool = True) -> None:
    exif = PILImage.Exif()
    exif.load(exif_bytes)
    assert exif[271] == "TestCam" and exif[274] == 1
    if sub_directory:  # Pillow's TIFF writer keeps only the main directory
        assert exif.get_ifd(0x8769)[0x9003] == "2024:05:06 07:08:09"


def _tags(exif_bytes: bytes) -> dict:
    exif = PILImage.Exif()
    exif.load(exif_bytes)
    return dict(exif)


# Reading real photos


def test_reads_every_set14_photo():
    for number in range(1, 15):
        path = set14(number)
        image = read_image(path)
        assert image.pixels.dtype == np.float32 and image.pixels.shape[2] == 3
        assert 0 <= image.pixels.min() and image.pixels.max() <= 1
        assert image.bit_depth == 8 and image.format == "PNG" and image.alpha is None
        assert image.grey == (path.name == "img_003.png")


@pytest.mark.parametrize("ext", [".png", ".tif", ".bmp"])
def test_lossless_formats_round_trip_8bit_exactly(tmp_path, ext):
    path = DATA / "resshift_testdata" / "Val_SR" / "gt" / "ILSVRC2012_val_00000067.png"
    if not path.exists():
        pytest.skip(f"test data not found: {path}")
    image = read_image(path)
    write_image(tmp_path / f"out{ext}", image)
    again = read_image(tmp_path / f"out{ext}")
    assert np.array_equal(again.pixels, image.pixels) and again.bit_depth == 8


@pytest.mark.parametrize("ext, tolerance", [(".jpg", 0.03), (".webp", 0.04)])  # a baboon: hard to compress
def test_lossy_formats_stay_close(tmp_path, ext, tolerance):
    image = read_image(set14(1))
    write_image(tmp_path / f"out{ext}", image, quality=90)
    assert np.abs(read_image(tmp_path / f"out{ext}").pixels - image.pixels).mean() < tolerance


# 16 bits, alpha, grey


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_png_round_trips_bit_exactly(tmp_path, channels, ext):
    samples = random16(9, 13, channels)
    image = read_image(png16(tmp_path / "in.png", samples))
    assert image.bit_depth == 16 and image.grey == (channels <= 2)
    assert (image.alpha is not None) == (channels in (2, 4))
    write_image(tmp_path / f"out{ext}", image)
    again = read_image(tmp_path / f"out{ext}")
    assert again.bit_depth == 16 and np.array_equal(again.pixels, image.pixels)
    if image.alpha is not None:
        assert np.array_equal(again.alpha, image.alpha)
    assert again.grey == (channels == 1)  # 16-bit grey+alpha comes back as RGBA (OpenCV writes it so)
    stored = cv2.imread(str(tmp_path / f"out{ext}"), cv2.IMREAD_UNCHANGED)  # BGR(A) order
    layout = {1: [0], 2: [0, 0, 0, 1], 3: [2, 1, 0], 4: [2, 1, 0, 3]}[channels]
    assert stored.dtype == np.uint16 and np.array_equal(stored.reshape(9, 13, -1), samples[..., layout])


@pytest.mark.parametrize("mode, ext", [("RGBA", ".png"), ("RGBA", ".tif"), ("LA", ".png"), ("LA", ".tif")])
def test_8bit_alpha_and_grey_alpha_preserved(tmp_path, mode, ext):
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, (6, 5, len(mode)), dtype=np.uint8)
    PILImage.fromarray(array).save(tmp_path / "in.png")
    image = read_image(tmp_path / "in.png")
    assert image.grey == (mode == "LA") and np.array_equal(image.alpha, array[..., -1] / np.float32(255))
    write_image(tmp_path / f"out{ext}", image)
    again = read_image(tmp_path / f"out{ext}")
    assert again.grey == image.grey and np.array_equal(again.alpha, image.alpha)
    assert np.array_equal(again.pixels, image.pixels)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif", ".bmp"])
def test_grey_stays_grey(tmp_path, ext):
    image = read_image(set14(3))  # img_003 is greyscale
    write_image(tmp_path / f"out{ext}", image)
    assert PILImage.open(tmp_path / f"out{ext}").mode == "L" and read_image(tmp_path / f"out{ext}").grey


@pytest.mark.parametrize("mode", ["P", "L", "RGB"])
def test_transparent_colour_key_reads_as_alpha(tmp_path, mode):
    indices = np.arange(12, dtype=np.uint8).reshape(3, 4) % 3
    if mode == "P":
        im = PILImage.fromarray(indices).convert("P")
        im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
        key = 1
    else:
        im = PILImage.fromarray(indices * 100).convert(mode)
        key = 100 if mode == "L" else (100, 100, 100)
    im.save(tmp_path / "key.png", transparency=key)
    image = read_image(tmp_path / "key.png")
    assert np.array_equal(image.alpha == 0, indices == 1) and image.grey == (mode == "L")


@pytest.mark.parametrize("ext", [".jpg", ".tif"])
def test_cmyk_reads_as_rgb(tmp_path, ext):
    rgb = PILImage.open(set14(1)).convert("RGB")
    rgb.convert("CMYK").save(tmp_path / f"c{ext}")
    image = read_image(tmp_path / f"c{ext}")
    expected = np.asarray(PILImage.open(tmp_path / f"c{ext}").convert("RGB")) / np.float32(255)
    assert image.pixels.shape == expected.shape and np.abs(image.pixels - expected).max() < 1e-6


def test_jpeg_output_composites_alpha_on_white(tmp_path):
    image = Image(np.zeros((8, 8, 3), np.float32), alpha=np.zeros((8, 8), np.float32))
    write_image(tmp_path / "out.jpg", image)
    assert read_image(tmp_path / "out.jpg").pixels.min() > 0.98


# Orientation and metadata


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_like_pillow(tmp_path, orientation):
    array = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10  # 3 wide, 2 high
    exif = exif_with(orientation)
    PILImage.fromarray(array).save(tmp_path / "o.png", exif=exif)
    PILImage.fromarray(array).save(tmp_path / "o.tif", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(PILImage.open(tmp_path / "o.png"))) / np.float32(255)
    exif_block = np.frombuffer(exif.tobytes().removeprefix(b"Exif\0\0"), np.uint8)
    wide = array[..., ::-1].astype(np.uint16) * 257  # the same picture in 16 bits, BGR for OpenCV
    _, encoded = cv2.imencodeWithMetadata(".png", wide, [cv2.IMAGE_METADATA_EXIF], [exif_block])
    (tmp_path / "o16.png").write_bytes(encoded.tobytes())
    for name in ("o.png", "o.tif", "o16.png"):  # Pillow, Pillow's own TIFF turn, OpenCV
        image = read_image(tmp_path / name)
        assert np.allclose(image.pixels, expected, atol=1e-7, rtol=0), name
        assert_camera_exif(image.exif, sub_directory=name != "o.tif")
    if orientation == 6:
        assert read_image(tmp_path / "o.png").pixels.shape == (3, 2, 3)


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tif"])
def test_icc_and_exif_carried_over(tmp_path, bits, ext):
    image = read_image(set14(2))
    image.icc_profile, image.exif, image.bit_depth = SRGB, exif_with(1).tobytes(), bits
    write_image(tmp_path / f"out{ext}", image)
    again = read_image(tmp_path / f"out{ext}")
    assert again.icc_profile == SRGB
    if not (bits == 16 and ext == ".tif"):  # OpenCV writes no EXIF into TIFF
        assert_camera_exif(again.exif, sub_directory=ext != ".tif")


def test_tiff_layout_tags_are_not_carried_as_exif(tmp_path):
    PILImage.open(set14(2)).save(tmp_path / "in.tif", exif=exif_with())
    tags = _tags(read_image(tmp_path / "in.tif").exif)
    assert tags[271] == "TestCam" and 273 not in tags and 256 not in tags  # no strip offsets, no width


# Errors when reading


def test_read_errors_name_the_file_and_the_problem(tmp_path):
    cases = {"missing.png": "no such file", "folder": "is a folder", "empty.png": "empty", "text.png": "not an"}
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello, not a picture\n")
    for name, problem in cases.items():
        with pytest.raises(InputError, match=problem) as info:
            read_image(tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("source", ["png", "jpg", "png16"])
def test_truncated_images_are_detected(tmp_path, source):
    if source == "png16":
        png16(tmp_path / "full.png", random16(64, 64, 3))
    else:
        PILImage.open(set14(1)).save(tmp_path / "full.png" if source == "png" else tmp_path / "full.jpg")
    full = next(tmp_path.glob("full.*"))
    cut = tmp_path / f"cut{full.suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_image(cut)


def test_huge_header_refused_before_decoding(tmp_path):
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)  # 10 Gpx RGB, 30 GB once decoded
    bomb = png_file(tmp_path / "bomb.png", [(b"IHDR", header), (b"IDAT", zlib.compress(b"\0" * 1000))])
    limit = PILImage.MAX_IMAGE_PIXELS
    with pytest.raises(InputError, match="--max-pixels 10000000000"):
        read_image(bomb)
    assert PILImage.MAX_IMAGE_PIXELS == limit  # Pillow's own guard is back in place
    with pytest.raises(InputError, match="over the limit of 1000"):
        read_image(set14(1), max_pixels=1000)
    assert read_image(set14(1), max_pixels=None).pixels.size > 0


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "locked.png"
    PILImage.open(set14(1)).save(path)
    if os.name == "posix" and os.geteuid() == 0:  # root reads any file: make opening fail as it would

        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(Path, "open", denied)
    else:
        path.chmod(0)
    with pytest.raises(InputError, match="locked.png: permission denied"):
        read_image(path)


# Writing


def test_overwrite_refused_without_the_flag(tmp_path):
    image = read_image(set14(1))
    target = tmp_path / "out.png"
    target.write_bytes(b"keep me")
    with pytest.raises(InputError, match="--overwrite"):
        write_image(target, image)
    assert target.read_bytes() == b"keep me"
    write_image(target, image, overwrite=True)
    assert np.array_equal(read_image(target).pixels, image.pixels)


@pytest.mark.parametrize("bits", [8, 16])
def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch, bits):
    image = read_image(set14(1))
    image.bit_depth = bits

    def failing_encoder(*args, **kwargs):
        raise RuntimeError("encoder failed half way")

    def half_written(fp, *args):
        fp.write(b"\x89PNG partial")
        failing_encoder()

    monkeypatch.setattr(imageio, "_encode", half_written)
    with pytest.raises(RuntimeError, match="half way"):
        write_image(tmp_path / "new.png", image)
    existing = tmp_path / "existing.png"
    existing.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        write_image(existing, image, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.png"] and existing.read_bytes() == b"old"
    monkeypatch.undo()
    if bits == 16:
        monkeypatch.setattr(cv2, "imencodeWithMetadata", failing_encoder)
    else:
        monkeypatch.setattr(PILImage.Image, "save", failing_encoder)
    with pytest.raises(RuntimeError):
        write_image(tmp_path / "new.png", image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.png"]


def test_write_errors(tmp_path):
    image = read_image(set14(1))
    with pytest.raises(InputError, match="does not exist"):
        write_image(tmp_path / "nowhere" / "out.png", image)
    with pytest.raises(InputError, match="unknown extension"):
        write_image(tmp_path / "out.gif", image)
    with pytest.raises(InputError, match="NaN"):
        write_image(tmp_path / "out.png", Image(np.full((2, 2, 3), np.nan, np.float32)))
    assert list(tmp_path.iterdir()) == []


def test_tensor_round_trip():
    pixels = read_image(set14(1)).pixels
    tensor = to_tensor(pixels)
    assert tensor.shape == (1, 3, *pixels.shape[:2]) and tensor.dtype == torch.float32
    assert np.array_equal(from_tensor(tensor), pixels) and np.array_equal(from_tensor(tensor[0]), pixels)
    with pytest.raises(InputError):
        to_tensor(pixels[..., :2])


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tif", ".bmp"])
def test_a_full_disk_leaves_no_partial_output_and_the_old_file_intact(tmp_path, full_disk, ext):
    """Every encoder's bytes pass resshift.fileio's write (none writes around it through a descriptor)."""
    image = read_image(set14(1))
    existing = tmp_path / f"existing{ext}"
    existing.write_bytes(b"the user's file")
    full_disk(after=1000)
    for target, overwrite in ((tmp_path / f"new{ext}", False), (existing, True)):
        with pytest.raises(InputError) as error:
            write_image(target, image, overwrite=overwrite)
        assert str(error.value) == f"{target}: cannot write the output (No space left on device)"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing.name]
    assert existing.read_bytes() == b"the user's file"
    full_disk(None)
    write_image(tmp_path / f"new{ext}", image)
    assert read_image(tmp_path / f"new{ext}").pixels.shape == image.pixels.shape


def test_only_the_stale_temporaries_of_that_output_are_removed(tmp_path):
    target = tmp_path / "a+b (1).png"
    stale = [tmp_path / f".{target.name}.0123abcd.tmp", tmp_path / f".{target.name}.ffffffff.tmp"]
    kept = [target, tmp_path / f".{target.name}", tmp_path / f".{target.name}.0123abcd.tmp.x",
            tmp_path / f".{target.name}.0123ABCD.tmp", tmp_path / ".a+b (2).png.0123abcd.tmp",
            tmp_path / ".ab (1).png.0123abcd.tmp"]
    for path in stale + kept:
        path.write_bytes(b"x")
    assert fileio.remove_stale_temporaries(target) == 2
    assert sorted(tmp_path.iterdir()) == sorted(kept)
    assert fileio.remove_stale_temporaries(tmp_path / "missing" / "a.png") == 0


@pytest.mark.parametrize("ext, width, limit", [(".jpg", 65501, 65500), (".webp", 16384, 16383)])
def test_an_output_too_wide_for_its_format_is_an_input_error(tmp_path, ext, width, limit):
    """Found with the input fuzzer's wide strips: WebP's encoder raised ValueError (a traceback in the CLI,
    a 500 in the API) and libjpeg printed its own line before a 'broken data stream' error."""
    image = Image(np.zeros((1, width, 3), np.float32))
    with pytest.raises(InputError, match=rf"a {width}x1 result is over .*'s limit of {limit} pixels per side"):
        write_image(tmp_path / f"wide{ext}", image)
    assert list(tmp_path.iterdir()) == []
    write_image(tmp_path / "wide.png", image)


def test_exif_too_long_for_a_jpeg_is_dropped_with_a_warning(tmp_path, caplog):
    """Found by the input fuzzer's metadata cases: a PNG's 70 kB EXIF made the JPEG encoder raise ValueError."""
    exif = PILImage.Exif()
    exif[0x010E] = "x" * 70000                                           # ImageDescription
    PILImage.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "long.png", exif=exif)
    image = read_image(tmp_path / "long.png")
    assert len(image.exif) > 65533
    with caplog.at_level(logging.WARNING, logger="resshift.imageio"):
        write_image(tmp_path / "long.jpg", image)
    assert "does not fit in a JPEG; written without it" in caplog.text
    with PILImage.open(tmp_path / "long.jpg") as written:
        assert written.size == (8, 8) and not written.getexif()
    write_image(tmp_path / "long.webp", image)                          # WebP holds it
    assert read_image(tmp_path / "long.webp").exif == image.exif
