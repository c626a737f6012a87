"""Training data: HR-folder datasets, random crops and flips, a deterministic sample stream, LR synthesis.

The stream. Training reads an endless sequence of samples g = 0, 1, 2, ...: sample g is image
``perm(seed, epoch)[g % N]`` of epoch ``g // N`` (a fresh permutation per epoch), and its crop,
flip and rotation come from a generator keyed by (seed, g). Step s of a run with global batch B
uses samples s*B .. s*B + B - 1; process r of R takes its contiguous share. So the data of a step is a
function of (seed, step) alone: resuming at step s skips exactly the consumed batches, and the
crops do not depend on how many DataLoader workers or processes share the work.

Worker seeding. Each DataLoader worker seeds Python's, numpy's and torch's global generators with
``seed + rank * 1000 + worker_id`` (`seed_worker`), so any library randomness inside a worker is
distinct and reproducible; our own draws use the keyed per-sample generators above, because a
per-worker generator would tie the crops to the worker that happened to load them (and a
mid-epoch resume hands batches to different workers).

Images. Every common format (imageio.read_image); folders are searched recursively and sorted.
An unreadable file is skipped and logged once with its name. An image smaller than the crop is
reflect-padded when its short side is more than half the crop (the largest padding a reflection
defines) and skipped with a note otherwise; paired LR/HR images are never padded (too-small pairs
are skipped). An empty folder, or one with no usable image, raises InputError.

LR synthesis happens after the DataLoader, on the training device and batched (`synthesize_batch`):
'realesrgan' (second order), 'first-order' (the paper's test degradation), 'bicubic' (MATLAB
imresize 1/sf) or 'paired' (the LR crops come from files); for the scale-1 tasks 'inpaint' (LaMa-style
masks; lq = hq with the holes set to 0, plus the mask, 1 = hole) and 'face' (GFPGAN degradation, HQ
greyed where the LQ was, as the official gt_gray).
"""

from __future__ import annotations

import functools
import logging
import random
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image as PILImage
from torch.utils.data import DataLoader, Dataset, Sampler

from resshift.degradations import (FaceDegradation, FirstOrderDegradation, MaskConfig, RealESRGANDegradation,
                                   degrade, degrade_face_pair, degrade_first_order, imresize, random_masks)
from resshift.errors import ConfigError, InputError
from resshift.imageio import IMAGE_SUFFIXES, list_image_files, read_image

log = logging.getLogger(__name__)

# Purposes that key the generators, so that no two kinds of draw share a stream.
KEY_PERMUTATION, KEY_AUGMENT, KEY_NOISE, KEY_DEGRADE, KEY_VALIDATION, KEY_INIT, KEY_SHIFT, KEY_RESEED = range(1, 9)


def keyed_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from non-negative integer keys (numpy SeedSequence)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def keyed_generator(*keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(keyed_seed(*keys))


# --------------------------------------------------------------------------- finding images

_warned: set[str] = set()


def _note(path: Path | str, message: str, level: int = logging.WARNING) -> None:
    """Log once per file and process."""
    if str(path) not in _warned:
        _warned.add(str(path))
        log.log(level, "%s: %s", path, message)


def image_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from the file header without decoding, or None when unreadable."""
    try:
        with PILImage.open(path) as im:
            width, height = im.size
            if im.getexif().get(274, 1) in (5, 6, 7, 8):       # EXIF orientation turns it sideways
                width, height = height, width
            return height, width
    except Exception:  # noqa: BLE001 - any decoder error means: skip this file
        return None


def _stem_key(path: Path) -> str:
    return path.stem


# --------------------------------------------------------------------------- dataset

class HRFolderDataset(Dataset):
    """Random HR crops (and their LR crops when paired) keyed by sample id.

    ``dataset[(index, sample_id)]`` -> {"hq": (3, c, c) float32 in [0, 1], ["lq": (3, c/s, c/s)],
    "sample": sample_id}; an int key means (key, key). The crop position, flip and rotation come from
    ``keyed_generator(seed, KEY_AUGMENT, sample_id)``.
    """

    def __init__(self, folders: Sequence[str | Path], crop_size: int, *, seed: int = 0, scale: int = 1,
                 lq_dir: str | Path | None = None, hflip: bool = True, rotate: bool = True) -> None:
        if lq_dir is not None and crop_size % scale:
            raise ConfigError(f"crop size {crop_size} must be a multiple of the scale {scale}")
        self.crop_size, self.seed, self.scale = crop_size, seed, scale
        self.hflip, self.rotate = hflip, rotate
        files = list_image_files(folders)
        partners = self._partners(lq_dir) if lq_dir is not None else {}
        self.items: list[tuple[Path, Path | None]] = []
        for path in files:
            size = image_size(path)
            if size is None:
                _note(path, "unreadable image, skipped")
                continue
            lq_path = partners.get(_stem_key(path)) if lq_dir is not None else None
            if lq_dir is not None and not self._pair_fits(path, size, lq_path):
                continue
            if min(size) < crop_size and (lq_dir is not None or min(size) * 2 <= crop_size):
                _note(path, f"{size[1]}x{size[0]} is too small for {crop_size}-pixel crops, skipped", logging.INFO)
                continue
            if min(size) < crop_size:
                _note(path, f"{size[1]}x{size[0]} is reflect-padded to the {crop_size}-pixel crop", logging.INFO)
            self.items.append((path, lq_path))
        if not self.items:
            where = ", ".join(map(str, folders))
            raise InputError(f"no usable training image in {where} ({len(files)} image files found; "
                             f"need readable {', '.join(IMAGE_SUFFIXES)} files at least "
                             f"{crop_size // 2 + 1} pixels on each side)")

    def _partners(self, lq_dir: str | Path) -> dict[str, Path]:
        partners: dict[str, Path] = {}
        for path in list_image_files([lq_dir]):
            if _stem_key(path) in partners:
                raise InputError(f"{lq_dir}: two LR files have the stem {path.stem!r}; stems must be unique")
            partners[_stem_key(path)] = path
        return partners

    def _pair_fits(self, path: Path, size: tuple[int, int], lq_path: Path | None) -> bool:
        if lq_path is None:
            _note(path, "no LR file with this stem, skipped")
            return False
        lq_size = image_size(lq_path)
        if lq_size is None:
            _note(lq_path, "unreadable image, skipped")
            return False
        if (lq_size[0] * self.scale, lq_size[1] * self.scale) != size:
            _note(path, f"HR {size[1]}x{size[0]} is not {self.scale} x its LR {lq_size[1]}x{lq_size[0]}, skipped")
            return False
        return True

    def __len__(self) -> int:
        return len(self.items)

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Pixels of item `index`, or of the next readable one (a file whose data is corrupt)."""
        for offset in range(len(self.items)):
            path, lq_path = self.items[(index + offset) % len(self.items)]
            try:
                hq = read_image(path).pixels
                lq = read_image(lq_path).pixels if lq_path is not None else None
                return hq, lq
            except InputError as exc:
                _note(path, f"unreadable image, skipped ({exc})")
        raise InputError("no training image could be read")

    def __getitem__(self, key: Any) -> dict[str, Any]:
        index, sample = (key, key) if isinstance(key, int) else key
        hq, lq = self._read(index)
        g = keyed_generator(self.seed, KEY_AUGMENT, sample)
        c, s = self.crop_size, self.scale
        if lq is None and min(hq.shape[:2]) < c:                   # documented reflection padding
            pad_h, pad_w = max(0, c - hq.shape[0]), max(0, c - hq.shape[1])
            hq = np.pad(hq, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
        step = s if lq is not None else 1                           # paired crops stay on the LR grid
        top = int(torch.randint((hq.shape[0] - c) // step + 1, (), generator=g)) * step
        left = int(torch.randint((hq.shape[1] - c) // step + 1, (), generator=g)) * step
        flip = bool(torch.rand((), generator=g) < 0.5) and self.hflip
        turns = int(torch.randint(4, (), generator=g)) if self.rotate else 0
        out = {"hq": _augment(hq[top:top + c, left:left + c], flip, turns), "sample": sample}
        if lq is not None:
            out["lq"] = _augment(lq[top // s:(top + c) // s, left // s:(left + c) // s], flip, turns)
        return out


def _augment(pixels: np.ndarray, flip: bool, turns: int) -> torch.Tensor:
    """(h, w, 3) -> (3, h, w) float32, flipped left-right then rotated by turns x 90 degrees."""
    t = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
    if flip:
        t = t.flip(-1)
    return torch.rot90(t, turns, dims=(-2, -1)).contiguous()


# --------------------------------------------------------------------------- the sample stream

class StreamBatchSampler(Sampler):
    """Micro-batches of (index, sample_id) for one process, from `start_step` to `total_steps`.

    Step s covers samples [s*B, (s+1)*B); process `rank` of `world` takes the contiguous share
    [s*B + rank*B/world, ...), split into `accum` micro-batches.
    """

    def __init__(self, num_images: int, batch_size: int, *, seed: int, start_step: int, total_steps: int,
                 rank: int = 0, world: int = 1, accum: int = 1) -> None:
        if batch_size % (world * accum):
            raise ConfigError(f"optim.batch_size {batch_size} must be divisible by processes x grad_accum "
                              f"= {world} x {accum}")
        self.num_images, self.batch_size, self.seed = num_images, batch_size, seed
        self.start_step, self.total_steps = start_step, total_steps
        self.share, self.rank, self.accum = batch_size // world, rank, accum
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.int64)

    @property
    def micro_batch(self) -> int:
        return self.share // self.accum

    def index(self, sample: int) -> int:
        epoch = sample // self.num_images
        if epoch != self._epoch:
            g = keyed_generator(self.seed, KEY_PERMUTATION, epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.num_images, generator=g)
        return int(self._perm[sample % self.num_images])

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.total_steps):
            first = step * self.batch_size + self.rank * self.share
            for micro in range(self.accum):
                start = first + micro * self.micro_batch
                yield [(self.index(g), g) for g in range(start, start + self.micro_batch)]

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step) * self.accum


def seed_worker(seed: int, rank: int, worker_id: int) -> None:
    """DataLoader worker_init_fn: global generators seeded with seed + rank * 1000 + worker_id."""
    worker_seed = seed + rank * 1000 + worker_id
    random.seed(worker_seed)
    np.random.seed(worker_seed % 2**32)
    torch.manual_seed(worker_seed)


def make_loader(dataset: HRFolderDataset, sampler: StreamBatchSampler, *, num_workers: int, seed: int,
                rank: int = 0, pin_memory: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
                      worker_init_fn=functools.partial(seed_worker, seed, rank),
                      prefetch_factor=4 if num_workers else None, persistent_workers=False)


# --------------------------------------------------------------------------- LR synthesis

def degrade_batch(hq: torch.Tensor, kind: str, scale: int, generator: torch.Generator, *,
                  realesrgan: RealESRGANDegradation | None = None,
                  first_order: FirstOrderDegradation | None = None) -> torch.Tensor:
    """(N, 3, H, W) HR in [0, 1] -> (N, 3, H/scale, W/scale) LR on the 1/255 grid, on hq's device."""
    if kind == "realesrgan":
        config = realesrgan or RealESRGANDegradation(sf=scale)
        _check_sf(config.sf, scale, "realesrgan")
        return degrade(hq, config, generator)
    if kind == "first-order":
        config = first_order or FirstOrderDegradation(sf=scale)
        _check_sf(config.sf, scale, "first_order")
        return degrade_first_order(hq, config, generator)
    if kind == "bicubic":
        lq = imresize(hq, scale=1 / scale)                          # MATLAB bicubic, antialiased
        return (lq.clamp(0, 1) * 255).round() / 255
    if kind in ("inpaint", "face"):
        raise ConfigError(f"degradation {kind!r} makes more than an LR image; call synthesize_batch")
    raise ConfigError(f"unknown degradation {kind!r}; use realesrgan, first-order, bicubic, paired, inpaint or face")


def synthesize_batch(hq: torch.Tensor, kind: str, scale: int, generator: torch.Generator, *,
                     masks: MaskConfig | None = None, face: FaceDegradation | None = None,
                     **sr_configs: Any) -> dict[str, torch.Tensor]:
    """(N, 3, H, W) HQ in [0, 1] -> {"hq", "lq"[, "mask"]} on hq's device, all draws from `generator`.

    'inpaint': mask (N, 1, H, W) in {0, 1} (1 = hole), lq = hq * (1 - mask), i.e. -1 in [-1, 1] at the
    holes as the official code and `ResShiftPipeline.restore` feed the UNet. 'face': the GFPGAN pair
    (the HQ greyed where the LQ was). Otherwise `degrade_batch` (hq unchanged).
    """
    if kind == "inpaint":
        n, _, h, w = hq.shape
        mask = random_masks(n, h, w, masks or MaskConfig(), generator).to(hq.device, hq.dtype)  # (N, 1, H, W)
        return {"hq": hq, "lq": hq * (1 - mask), "mask": mask}
    if kind == "face":
        gt, lq = degrade_face_pair(hq, face or FaceDegradation(), generator)
        return {"hq": gt, "lq": lq}
    return {"hq": hq, "lq": degrade_batch(hq, kind, scale, generator, **sr_configs)}


def _check_sf(sf: int, scale: int, name: str) -> None:
    if sf != scale:
        raise ConfigError(f"data.{name}.sf is {sf} but the model's scale is {scale}; set data.{name}.sf={scale}")


def center_crop(pixels: np.ndarray, size: int | None, multiple: int) -> np.ndarray:
    """Centre crop to size x size (if given), then down to a multiple of `multiple` on each side."""
    h, w = pixels.shape[:2]
    if size is not None:
        top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
        pixels = pixels[top:top + size, left:left + size]
        h, w = pixels.shape[:2]
    return pixels[: h - h % multiple, : w - w % multiple]


def load_validation_set(folder: str | Path, count: int, *, crop: int | None, scale: int, multiple: int,
                        kind: str, seed: int, lq_folder: str | Path | None = None,
                        realesrgan: RealESRGANDegradation | None = None,
                        first_order: FirstOrderDegradation | None = None, masks: MaskConfig | None = None,
                        face: FaceDegradation | None = None) -> list[dict[str, torch.Tensor]]:
    """The first `count` images of `folder`, centre-cropped, each degraded ONCE (seed, index) or paired.

    Returns one {"hq": (1, 3, H, W), "lq": (1, 3, H/s, W/s)[, "mask": (1, 1, H, W)], "name": str} per
    image, on the CPU (inpainting: the masks are drawn once, like the LR images).
    """
    partners = {_stem_key(p): p for p in list_image_files([lq_folder])} if lq_folder is not None else {}
    out = []
    for index, path in enumerate(list_image_files([folder])):
        if len(out) == count:
            break
        try:
            hq_pixels = read_image(path).pixels
            lq_pixels = read_image(partners[path.stem]).pixels if partners else None
        except (InputError, KeyError) as exc:
            _note(path, f"validation image skipped ({exc})")
            continue
        if lq_pixels is not None:
            lq = torch.from_numpy(center_crop(lq_pixels, crop and crop // scale, max(1, multiple // scale)))
            lq = lq.permute(2, 0, 1)[None]
            hq = torch.from_numpy(center_crop(hq_pixels, crop, multiple)).permute(2, 0, 1)[None]
            item = {"hq": hq[..., : lq.shape[-2] * scale, : lq.shape[-1] * scale], "lq": lq}
        else:
            hq = torch.from_numpy(center_crop(hq_pixels, crop, multiple)).permute(2, 0, 1)[None].contiguous()
            g = keyed_generator(seed, KEY_VALIDATION, index)
            try:
                item = synthesize_batch(hq, kind, scale, g, realesrgan=realesrgan, first_order=first_order,
                                        masks=masks, face=face)
            except InputError as exc:
                _note(path, f"validation image skipped ({exc})")
                continue
        out.append({**{k: v.contiguous() for k, v in item.items()}, "name": path.stem})
    if not out:
        raise InputError(f"{folder}: no usable validation image")
    return out
