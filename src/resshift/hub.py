"""Models by name: bundled ones, official ones (downloaded once, converted once, then loaded from a
cache) and model folders; `model_folder` resolves any of them.

Bundled models live in the package (`BUNDLED`, resshift/weights/<name>/). ``ensure_model("realsr-v3")``
fetches an official preset's two release files (its UNet and its autoencoder), checks that each is a
plain weights file of exactly the expected network, converts them into a model folder (as ``resshift
convert`` does) and writes beside it a manifest (each release file's URL, size and sha256; each model
file's size and sha256) and the weights' licence notice. The cache (`cache_dir()`):

    downloads/<file>.pth        release files; an autoencoder that several models share stays here
    downloads/<file>.pth.part   an interrupted transfer, resumed by the next attempt
    models/<name>/              config.json, model.safetensors, manifest.json, LICENSE
    locks/                      one lock file per model and per release file

Environment: RESSHIFT_HOME (the cache folder), RESSHIFT_MODEL_URL (replaces the release URL; the
file name is appended), RESSHIFT_OFFLINE=1 (never download). docs/official-models.md has the details.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import secrets
import shutil
import socket
import ssl
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

import torch
from tqdm import tqdm

from torch import nn

from .checkpoints import CONFIG_NAME, load_weights, read_official, write_model_folder
from .errors import CheckpointError, ConfigError, DownloadError, OfflineError
from .fileio import atomic_write_json
from .nets.autoencoders import build_autoencoder
from .nets.swin_unet import SwinUNet
from .presets import PRESETS, Preset, Task, get_preset

__all__ = ["BUNDLED", "BundledModel", "OfficialModel", "RELEASE_URL", "ReleaseFile", "RetryPolicy", "cache_dir",
           "cached_model", "ensure_model", "is_official_name", "list_official", "model_folder", "release_files",
           "verify"]

WEIGHTS_DIR = Path(__file__).parent / "weights"

RELEASE_URL = "https://github.com/zsyOAOA/ResShift/releases/download/v2.0"
LICENCE_NAME = "S-Lab License 1.0"
LICENCE_URL = "https://github.com/zsyOAOA/ResShift/blob/journal/LICENSE"
LICENCE_NOTICE = ("Note: the official ResShift weights are licensed under the S-Lab License 1.0, for "
                  "non-commercial use only (commercial use needs the authors' permission); the licence is "
                  "saved beside the model as LICENSE.")
MANIFEST_NAME = "manifest.json"
LICENCE_FILE_NAME = "LICENSE"
CHUNK_BYTES = 1 << 20
RETRIED_HTTP_CODES = (408, 429)      # besides every 5xx: the server asks to come back later


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a download tries: attempts per file, exponential back-off between them, socket timeout."""

    attempts: int = 5
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"RetryPolicy.attempts must be at least 1, got {self.attempts}")

    def delay(self, failures: int) -> float:
        return min(self.first_delay_s * 2 ** (failures - 1), self.max_delay_s)


@dataclass(frozen=True)
class ReleaseFile:
    """One file of the official release, and the network ('unet' or 'autoencoder') it must hold."""

    name: str
    role: str

    @property
    def url(self) -> str:
        return f"{os.environ.get('RESSHIFT_MODEL_URL', RELEASE_URL).rstrip('/')}/{self.name}"


@dataclass(frozen=True)
class OfficialModel:
    """One row of `list_official()`."""

    name: str
    task: str
    description: str
    files: tuple[str, ...]
    cached: bool
    download_bytes: int             # as downloaded once cached; before, the fp32 size of the networks'
                                    # tensors (the release page publishes no sizes; .pth files add ~1 %)
    licence: str = LICENCE_NAME


class _Retryable(Exception):
    """A failed attempt worth repeating; `unreachable` when no server answered at all."""

    def __init__(self, problem: str, unreachable: bool = False) -> None:
        super().__init__(problem)
        self.unreachable = unreachable


class _Unreachable(Exception):
    """No server answered after every attempt: turned into an OfflineError naming all of a model's files."""


# ---------------------------------------------------------------------------------- bundled models

@dataclass(frozen=True)
class BundledModel:
    """A model shipped inside the package, under `resshift/weights/<name>/` (docs/models.md has its card)."""

    name: str
    task: Task
    description: str

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.name

    @property
    def installed(self) -> bool:
        return (self.path / CONFIG_NAME).is_file()


# A compact model gets a row when it reaches its target (docs/models.md has each model's card).
BUNDLED: dict[str, BundledModel] = {
    model.name: model for model in (
        BundledModel("realsr-x4", "sr", "x4 super-resolution of real photos: noise, blur, JPEG (one step, 4.5 M)"),
        BundledModel("realsr-x4-v2", "sr", "realsr-x4 fine-tuned with a light adversarial term: a little more "
                     "texture, same speed (one step, 4.5 M)"),
        BundledModel("bicubic-x4", "sr", "x4 super-resolution of clean images (bicubic-trained, one step, 4.5 M)"),
        BundledModel("inpaint-natural", "inpaint", "inpainting of photos: fills the mask from its surroundings "
                     "(Telea start, one step, 4.6 M)"),
    )
}


def model_folder(spec: str) -> Path | None:
    """The model folder that `spec` names: a folder, a bundled model's name, or an official preset's
    (downloaded and converted into the cache the first time, `ensure_model`); None when it names none.
    ConfigError for a bundled model whose files are missing; `ensure_model`'s errors for an official one."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    bundled = BUNDLED.get(spec.strip().lower())
    if bundled is not None:
        if not bundled.installed:
            raise ConfigError(f"--model {spec}: the bundled model's files are missing from {bundled.path}; "
                              "reinstall resshift")
        return bundled.path
    return ensure_model(spec) if is_official_name(spec) else None


# ---------------------------------------------------------------------------------- official models

def cache_dir() -> Path:
    """RESSHIFT_HOME if set, else $XDG_CACHE_HOME/resshift, else ~/.cache/resshift."""
    if os.environ.get("RESSHIFT_HOME"):
        return Path(os.environ["RESSHIFT_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "resshift"


def is_official_name(name: str) -> bool:
    """Whether `name` is an official preset (realsr-x2 included, whose weights were never released)."""
    return name.strip().lower().replace("_", "-") in PRESETS


def release_files(name: str) -> tuple[ReleaseFile, ReleaseFile]:
    """The UNet and autoencoder files of an official model; ConfigError where none were released."""
    preset = _released_preset(name)
    return ReleaseFile(preset.unet_file, "unet"), ReleaseFile(preset.autoencoder_file, "autoencoder")


def cached_model(name: str) -> Path | None:
    """The converted model's folder if it is in the cache (not checked: see `verify`), else None."""
    folder = _model_folder(get_preset(name).name)
    return folder if (folder / MANIFEST_NAME).is_file() else None


def ensure_model(name: str, *, dtype: torch.dtype = torch.float32, keep_pth: bool = False,
                 progress: bool = True, retry: RetryPolicy = RetryPolicy()) -> Path:
    """The folder of official model `name`, downloading and converting it the first time.

    `dtype` is the storage dtype of a new conversion (a cached model is returned as it is);
    `keep_pth` keeps the release files after conversion (an autoencoder other models use stays anyway).
    Safe to call from several processes at once: each model and each release file is fetched under a
    lock. Raises ConfigError (unknown name, no released weights), OfflineError, DownloadError, and
    CheckpointError (a file that is not the expected network, or a damaged cached model).
    """
    preset = _released_preset(name)
    if _model_folder(preset.name).exists():     # a model folder appears whole (renamed), so no lock here
        return verify(preset.name)
    try:
        with _locked(preset.name):
            if not _model_folder(preset.name).exists():     # another process may have made it meanwhile
                _install(preset, dtype, keep_pth, progress, retry)
                return _model_folder(preset.name)
    except OSError as exc:   # network errors are handled inside; what reaches here is the file system
        raise DownloadError(f"cannot write to the model cache {cache_dir()} ({exc.strerror or exc}"
                            f"{': ' + str(exc.filename) if exc.filename else ''}); free some space or set "
                            "RESSHIFT_HOME to a writable folder") from exc
    return verify(preset.name)


def verify(name: str) -> Path:
    """Check a cached model against its manifest (each file's size and sha256: hashing runs at about
    1.5 GB/s) and return its folder; CheckpointError names the first file that differs."""
    folder = _model_folder(get_preset(name).name)
    manifest = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise CheckpointError(f"official model {name} is not in the cache ({folder})")
    try:
        recorded = dict(json.loads(manifest.read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{manifest}: missing or unreadable ({exc}); delete {folder} and run again "
                              "to download the model anew") from exc
    for file_name, expected in recorded.items():
        if _file_record(folder / file_name) != expected:
            raise CheckpointError(f"{folder / file_name}: differs from the file converted (see {manifest}); "
                                  f"delete {folder} and run again to download the model anew")
    return folder


def list_official() -> list[OfficialModel]:
    """Every official model with released weights: name, task, files, cached or not, size, licence."""
    rows = []
    for preset in PRESETS.values():
        if preset.unet_file is None:
            continue
        folder = cached_model(preset.name)
        size = (_downloaded_bytes(folder) if folder is not None else None) or _tensor_bytes(preset)
        rows.append(OfficialModel(preset.name, preset.config.task, preset.description,
                                  (preset.unet_file, preset.autoencoder_file), folder is not None, size))
    return rows


# ---------------------------------------------------------------------------------- installing

def _released_preset(name: str) -> Preset:
    preset = get_preset(name)
    if preset.unet_file is None:
        raise ConfigError(f"{preset.name}: no official weights were released for this preset (only its "
                          "configuration is known); train one with `resshift train` or pick another model")
    return preset


def _model_folder(name: str) -> Path:
    return cache_dir() / "models" / name


def _downloads() -> Path:
    return cache_dir() / "downloads"


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """An exclusive lock on `name` (a model or a release file), shared with other processes and threads."""
    import fcntl    # POSIX only; imported here so that resshift itself still imports on Windows
    folder = cache_dir() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield                                   # closing the file releases the lock


def _install(preset: Preset, dtype: torch.dtype, keep_pth: bool, progress: bool, retry: RetryPolicy) -> None:
    files = release_files(preset.name)
    missing = [file for file in files if not (_downloads() / file.name).is_file()]
    if missing and os.environ.get("RESSHIFT_OFFLINE", "").strip().lower() not in ("", "0", "false", "no"):
        raise OfflineError(_offline_message(preset, files, "RESSHIFT_OFFLINE is set"))
    print(LICENCE_NOTICE, file=sys.stderr)
    try:
        sources = {file.role: _fetch(file, preset, progress, retry) for file in files}
    except _Unreachable as exc:
        raise OfflineError(_offline_message(preset, files, f"the server cannot be reached ({exc})")) from exc
    _convert(preset, files, sources, dtype)
    if not keep_pth:
        _remove_unshared(sources)


def _offline_message(preset: Preset, files: tuple[ReleaseFile, ...], reason: str) -> str:
    unet, autoencoder = files
    return (f"official model {preset.name} is not in the cache and {reason}: download "
            + " and ".join(f"{file.name} ({file.url})" for file in files)
            + f" elsewhere, then put them in {_downloads()} or convert them yourself: `resshift convert "
              f"--unet {unet.name} --autoencoder {autoencoder.name} --task {preset.name} -o models/{preset.name}`")


def _fetch(file: ReleaseFile, preset: Preset, progress: bool, retry: RetryPolicy) -> Path:
    """The checked release file in the cache, downloaded first if it is not there yet."""
    target = _downloads() / file.name
    with _locked(file.name):                 # models sharing an autoencoder fetch it once
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        _download(file.url, part, progress, retry)
        _check_network(part, file, preset)
        os.replace(part, target)
    return target


def _network(preset: Preset, role: str) -> nn.Module:
    """The preset's UNet or autoencoder, on the meta device (its weights come from a file)."""
    with torch.device("meta"):
        return SwinUNet(preset.config.unet) if role == "unet" else build_autoencoder(preset.config.autoencoder)


def _check_network(path: Path, file: ReleaseFile, preset: Preset) -> None:
    """Refuse (and delete) a download that is not a plain weights file of exactly the expected network."""
    try:
        load_weights(_network(preset, file.role), read_official(path), f"the {file.role} of {preset.name}")
    except CheckpointError as exc:
        path.unlink(missing_ok=True)
        raise CheckpointError(f"{file.url}: downloaded file rejected: {exc}") from exc


def _convert(preset: Preset, files: tuple[ReleaseFile, ...], sources: dict[str, Path], dtype: torch.dtype) -> None:
    """Write the model folder (as `resshift convert` does) beside its final place, and rename it there
    only once it is complete."""
    models = cache_dir() / "models"
    models.mkdir(parents=True, exist_ok=True)
    for stale in models.glob(f".{preset.name}.*.tmp"):     # left by a killed process; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    staging = models / f".{preset.name}.{secrets.token_hex(4)}.tmp"
    try:
        networks = nn.ModuleDict({file.role: _network(preset, file.role) for file in files})
        for file in files:
            load_weights(networks[file.role], read_official(sources[file.role]), str(sources[file.role]))
        write_model_folder(staging, preset.config, networks, dtype)
        (staging / LICENCE_FILE_NAME).write_text(licence_notice(preset, files))
        atomic_write_json(staging / MANIFEST_NAME, _manifest(preset, files, sources, staging, dtype))
        os.replace(staging, _model_folder(preset.name))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def licence_notice(preset: Preset, files: tuple[ReleaseFile, ...]) -> str:
    """What travels with a converted official model: whose weights they are and on which terms."""
    sources = "\n".join(f"  {file.url}" for file in files)
    return (f"{LICENCE_NAME}\n\n"
            f"The weights in this folder ({preset.name}) were converted by resshift from the official ResShift\n"
            f"release files of Zongsheng Yue et al. (S-Lab, Nanyang Technological University):\n{sources}\n\n"
            f"They are licensed under the {LICENCE_NAME}: use and redistribution for non-commercial purposes\n"
            f"only, keeping the copyright notice; commercial use needs the authors' permission. The full\n"
            f"licence text: {LICENCE_URL}\n"
            f"(resshift's own code is Apache-2.0; that licence does not extend to these weights.)\n")


def _manifest(preset: Preset, files: tuple[ReleaseFile, ...], sources: dict[str, Path], folder: Path,
              dtype: torch.dtype) -> dict:
    return {
        "model": preset.name,
        "description": preset.description,
        "licence": LICENCE_NAME,
        "dtype": str(dtype).removeprefix("torch."),
        "sources": [{"file": file.name, "role": file.role, "url": file.url, **_file_record(sources[file.role])}
                    for file in files],
        "files": {path.name: _file_record(path) for path in sorted(folder.iterdir())},
    }


def _file_record(path: Path) -> dict | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def _tensor_bytes(preset: Preset) -> int:
    """The bytes of the preset's UNet and autoencoder state_dicts in fp32 (built on the meta device)."""
    networks = (_network(preset, "unet"), _network(preset, "autoencoder"))
    return sum(4 * value.numel() for network in networks for value in network.state_dict().values())


def _downloaded_bytes(folder: Path) -> int | None:
    try:
        return sum(source["size"] for source in json.loads((folder / MANIFEST_NAME).read_text())["sources"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remove_unshared(sources: dict[str, Path]) -> None:
    """Drop the release files no other official model uses (the SR models share one autoencoder)."""
    for path in sources.values():
        users = [p for p in PRESETS.values() if p.unet_file and path.name in (p.unet_file, p.autoencoder_file)]
        if len(users) <= 1:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- downloading

def _download(url: str, part: Path, progress: bool, retry: RetryPolicy) -> None:
    """Fetch `url` into `part`, resuming what earlier attempts left there, with back-off between tries."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(f"{url}: not an http(s) URL; check RESSHIFT_MODEL_URL")
    for attempt in range(1, retry.attempts + 1):
        try:
            _transfer(url, part, progress, retry.timeout_s)
            return
        except _Retryable as exc:
            failure = exc
        if attempt < retry.attempts:
            time.sleep(retry.delay(attempt))
    if failure.unreachable:
        raise _Unreachable(str(failure))
    kept = part.stat().st_size if part.exists() else 0
    resume = f"; {kept} bytes are kept in {part} and the next run resumes from there" if kept else ""
    raise DownloadError(f"{url}: download failed after {retry.attempts} tries ({failure}){resume}")


def _transfer(url: str, part: Path, progress: bool, timeout: float) -> None:
    """One attempt: ask for the bytes `part` lacks and append them; _Retryable for a passing failure."""
    offset = part.stat().st_size if part.exists() else 0
    request = Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        with urlopen(request, timeout=timeout) as response:
            if response.headers.get_content_type() == "text/html":
                raise DownloadError(f"{url}: the server answered with an HTML page, not the checkpoint "
                                    "(an error or login page?)")
            if response.status != 206:          # the whole file: the server ignored the Range request
                offset = 0
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            _append(response, part, offset, total, progress)
    except HTTPError as exc:
        if exc.code == 416:                     # nothing left to send past our offset: start again
            part.unlink(missing_ok=True)
            raise _Retryable("HTTP 416: the partial file is not a prefix of this one") from exc
        if exc.code >= 500 or exc.code in RETRIED_HTTP_CODES:
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from exc
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except URLError as exc:                     # no answer at all: DNS failure, refused, connect timeout
        unreachable = isinstance(exc.reason, (ConnectionRefusedError, socket.gaierror))
        raise _Retryable(str(exc.reason), unreachable) from exc
    except (http.client.HTTPException, ConnectionError, TimeoutError, ssl.SSLError) as exc:   # cut or stalled
        raise _Retryable(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Retryable(f"transfer cut short at {size} of {total} bytes")


def _append(response: http.client.HTTPResponse, part: Path, offset: int, total: int | None,
            progress: bool) -> None:
    """Write the response body after the first `offset` bytes of `part` (all of it when offset is 0)."""
    with open(part, "ab" if offset else "wb") as out, \
            tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                 desc=part.name.removesuffix(".part"), disable=not progress, file=sys.stderr) as bar:
        while chunk := response.read(CHUNK_BYTES):
            out.write(chunk)
            bar.update(len(chunk))
        out.flush()
        os.fsync(out.fileno())
