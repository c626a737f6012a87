"""Writing an export folder whole, and the cache of exports that `--backend onnxruntime` runs from.

An export is written into a hidden staging folder beside its target (each file atomically) and renamed
into place only once complete, so a reader never sees a partial export and a failed or interrupted
export leaves nothing behind. The cache keys each export by a fingerprint of what decides the graphs:
the configuration, every tensor of both networks, this exporter's format and PyTorch's version.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path

import torch

from .. import hub
from ..errors import InputError
from ..fileio import atomic_write_bytes, atomic_write_json
from ..pipeline import ResShiftPipeline
from .graphs import example_inputs, graphs_of, trace_to_onnx
from .manifest import FORMAT_VERSION, MANIFEST_NAME, build_manifest

__all__ = ["cached_export", "export_onnx", "fingerprint"]

METHODS = {"denoiser": ("unet", "forward"), "encoder": ("autoencoder", "encode"), "decoder": ("autoencoder", "decode")}


def export_onnx(pipe: ResShiftPipeline, folder: str | Path, *, overwrite: bool = False) -> Path:
    """Write `pipe`'s denoiser, encoder and decoder as ONNX graphs and their manifest.json into `folder`.

    `folder` may be missing or empty; a non-empty one is replaced only with `overwrite`. The pipeline
    must be on the CPU in float32 (the graphs are float32).
    """
    folder = Path(folder).expanduser()
    _check_target(folder, overwrite)
    staging = _write_staging(pipe, folder.parent)
    try:
        _check_target(folder, overwrite)       # it may have been filled meanwhile
        _replace(folder, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def cached_export(pipe: ResShiftPipeline) -> Path:
    """The export of `pipe` in the cache (hub.cache_dir()/onnx/<fingerprint>), made the first time.

    Several processes may export at once: the first rename wins and the others use its folder.
    """
    folder = hub.cache_dir() / "onnx" / fingerprint(pipe)
    if (folder / MANIFEST_NAME).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = _write_staging(pipe, folder.parent)
    try:
        os.replace(staging, folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (folder / MANIFEST_NAME).is_file():
            raise
    return folder


def fingerprint(pipe: ResShiftPipeline) -> str:
    """sha256 (hex, 32 characters) of the exporter's format, PyTorch's version, the config and every tensor."""
    digest = hashlib.sha256(f"{FORMAT_VERSION} {torch.__version__}".encode())
    digest.update(json.dumps(pipe.config.to_dict(), sort_keys=True).encode())
    for name, tensor in pipe.networks().state_dict().items():
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()[:32]


def _write_staging(pipe: ResShiftPipeline, parent: Path) -> Path:
    """Every graph and the manifest in a new hidden folder inside `parent`; removed again on failure."""
    if pipe.device.type != "cpu" or pipe.dtype != torch.float32:
        raise InputError(f"ONNX export needs the model on the CPU in float32, not {pipe.device.type} "
                         f"{str(pipe.dtype).removeprefix('torch.')}; load it with device='cpu', dtype=torch.float32")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = parent / f".export.{secrets.token_hex(4)}.tmp"
        staging.mkdir()
    except OSError as exc:
        raise InputError(f"cannot write into {parent} ({exc.strerror or exc})") from exc
    try:
        for graph in graphs_of(pipe.config):
            network, method = METHODS[graph.name]
            onnx_bytes = trace_to_onnx(getattr(pipe, network), method, graph, example_inputs(pipe.config, graph))
            atomic_write_bytes(staging / graph.file, onnx_bytes)
        atomic_write_json(staging / MANIFEST_NAME, build_manifest(pipe, staging))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _check_target(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise InputError(f"-o {folder}: exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise InputError(f"-o {folder}: the folder is not empty; pass --overwrite to replace it")


def _replace(folder: Path, staging: Path) -> None:
    """Rename `staging` to `folder`; an existing `folder` is moved aside first and removed after."""
    if not folder.exists():
        os.replace(staging, folder)
        return
    old = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}.old")
    os.replace(folder, old)
    try:
        os.replace(staging, folder)
    except BaseException:
        os.replace(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)
