"""manifest.json of an exported model: everything a runtime in any language needs to run the chain.

It holds the model's settings (task, scale, padding multiple, latent scale, residual prediction, hole
fill), the full schedule as numbers (timesteps, eta and sqrt(eta) per step, kappa), the autoencoder's
kind and factor, each graph's file, inputs and output (names, shapes with named dynamic axes, dtype,
NCHW layout, value range), the chain written out step by step, each file's size and sha256, and the
resshift `config` it was exported from (which `resshift.export.runtime` rebuilds the pipeline with).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import CheckpointError
from ..nets.swin_unet import SwinUNetConfig
from ..pipeline import ResShiftPipeline
from ..presets import ModelConfig
from ..schedule import Schedule
from .graphs import OPSET, Graph, dynamic_axes, graphs_of

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST_NAME", "build_manifest", "read_manifest"]

FORMAT = "resshift-onnx"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

MEANINGS = {
    "x_t": "the chain's state, scaled: x_t / sqrt(kappa^2 eta_t + 1)",
    "t": "int64 network timestep of the step (schedule.timesteps)",
    "lq": "the padded input image in [-1, 1] (holes filled as `hole_fill` says), at lq_scale times the latent",
    "mask": "+1 where the pixel is to be filled, -1 where it is known",
    "prediction": "x0, or x0 - z_y when predict_residual",
    "image": "RGB in [-1, 1]",
    "latent": "the autoencoder's latent (before latent_scale)",
}

CHAIN = (
    "image: RGB float32 NCHW in [0, 1]; y = 2 * image - 1",
    "pad y on the bottom and right to a multiple of input_multiple: reflect, or replicate when a padding "
    "is not smaller than its side",
    "inpaint: fill = mask > 0.5 (padded alike); y = hole_fill(y, fill); the denoiser's mask input = 2 * fill - 1",
    "z_y = encoder(upsample(y)) * latent_scale, where upsample is bicubic by `scale` (PyTorch's: A = -0.75, "
    "half-pixel centres, no antialiasing) and the identity when scale = 1",
    "x = z_y + kappa * sqrt_etas[S-1] * noise (noise: standard normal, z_y's shape)",
    "for i = S-1 down to 0: out = denoiser(x / sqrt(kappa^2 etas[i] + 1), timesteps[i], lq = y[, mask]); "
    "x0 = out + z_y if predict_residual else out; if i > 0: x = (etas[i-1] / etas[i]) x + "
    "((etas[i] - etas[i-1]) / etas[i]) x0 + kappa sqrt(etas[i-1] (etas[i] - etas[i-1]) / etas[i]) noise "
    "(ancestral; fresh noise each step), else x = x0",
    "out = (clamp(decoder(x / latent_scale), -1, 1) + 1) / 2, cropped to scale times the unpadded size",
    "inpaint: out = out * fill + image * (1 - fill) (the known pixels pasted back); clamp to [0, 1]",
)


def build_manifest(pipe: ResShiftPipeline, folder: Path) -> dict[str, Any]:
    """The manifest of `pipe`'s graphs, already written into `folder`."""
    config = pipe.config
    schedule = Schedule.from_config(config.schedule)
    unet: SwinUNetConfig = config.unet
    factor = config.autoencoder.downsample_factor
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "exporter": {"resshift": __version__, "torch": torch.__version__, "opset": OPSET},
        "task": config.task,
        "scale": config.scale,
        "input_multiple": pipe.input_multiple,
        "latent_multiple": unet.size_multiple,
        "lq_scale": 2 ** unet.num_downsamplings,
        "latent_scale": config.latent_scale,
        "predict_residual": config.predict_residual,
        "hole_fill": config.hole_fill if config.task == "inpaint" else None,
        "schedule": {"kappa": schedule.kappa, "timesteps": list(schedule.timesteps),
                     "sqrt_etas": schedule.sqrt_etas.tolist(), "etas": schedule.etas.tolist()},
        "autoencoder": {"kind": type(config.autoencoder).TYPE_NAME, "factor": factor,
                        "latent_channels": config.autoencoder.embed_dim,
                        "decoder_quantises": type(config.autoencoder).TYPE_NAME == "vqgan"},
        "graphs": {graph.name: _describe(graph, config) for graph in graphs_of(config)},
        "chain": list(CHAIN),
        "files": {graph.file: file_record(folder / graph.file) for graph in graphs_of(config)},
        "config": config.to_dict(),
    }


def _describe(graph: Graph, config: ModelConfig) -> dict[str, Any]:
    axes = dynamic_axes(graph)
    channels = {"x_t": config.autoencoder.embed_dim, "t": None, "lq": 3, "mask": 1, "image": 3,
                "prediction": config.autoencoder.embed_dim, "latent": config.autoencoder.embed_dim}

    def tensor(name: str) -> dict[str, Any]:
        if name == "t":
            return {"name": name, "dtype": "int64", "shape": ["batch"], "meaning": MEANINGS[name]}
        shape = [axes[name][0], channels[name], axes[name][2], axes[name][3]]
        return {"name": name, "dtype": "float32", "layout": "NCHW", "shape": shape, "meaning": MEANINGS[name]}

    return {"file": graph.file, "inputs": [tensor(name) for name in graph.inputs], "output": tensor(graph.output)}


def file_record(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"size": path.stat().st_size, "sha256": digest}


def read_manifest(folder: Path) -> dict[str, Any]:
    """An export folder's manifest, checked: its format and version, and each graph file's size."""
    path = Path(folder) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: missing or unreadable ({exc}); export the model again "
                              "(`resshift export MODEL --format onnx -o DIR`)") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a resshift ONNX export manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {manifest.get('format_version')!r} is not {FORMAT_VERSION}; "
                              "export the model again with this resshift")
    for name, record in manifest["files"].items():
        file = Path(folder) / name
        if not file.is_file() or file.stat().st_size != record["size"]:
            raise CheckpointError(f"{file}: missing or not the file exported (size differs from {path}); "
                                  "export the model again")
    return manifest
