"""The ONNX Runtime backend: the exported graphs as the networks of an ordinary `ResShiftPipeline`.

`onnx_pipeline(folder)` builds a pipeline whose `unet` and `autoencoder` are stand-ins that run the
graphs of an export folder in onnxruntime sessions (CPU, float32). Everything else stays PyTorch and
unchanged: padding, tiling, the hole fill, the sampler and its noise, colour fixes. So a seed gives the
same noise on both backends, and their results differ only by the graphs' float rounding.
`onnxruntime_pipeline(pipe)` does the same for a loaded model, exporting it into the cache first
(`resshift.export.folder.cached_export`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError, ResShiftError
from ..pipeline import ResShiftPipeline
from ..presets import ModelConfig
from .folder import cached_export
from .manifest import read_manifest

__all__ = ["INSTALL_HINT", "OnnxAutoencoder", "OnnxDenoiser", "OnnxGraph", "onnx_pipeline", "onnxruntime_pipeline",
           "require_onnxruntime"]

INSTALL_HINT = 'pip install "resshift[onnx]"'


def require_onnxruntime() -> Any:
    """The onnxruntime module; ResShiftError with the install command when it is missing."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ResShiftError(f"the onnxruntime backend needs the onnxruntime package, which is not installed: "
                            f"{INSTALL_HINT}") from exc
    return onnxruntime


class OnnxGraph(nn.Module):
    """One graph file in an onnxruntime session: forward(*tensors) -> its output as a CPU tensor.

    The session uses as many threads as PyTorch does when it is created (`torch.get_num_threads()`).
    """

    def __init__(self, path: Path, input_names: list[str]) -> None:
        super().__init__()
        onnxruntime = require_onnxruntime()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        feeds = {name: np.ascontiguousarray(tensor.detach().cpu().numpy())
                 for name, tensor in zip(self.input_names, inputs)}
        return torch.from_numpy(self.session.run(None, feeds)[0])


class OnnxDenoiser(nn.Module):
    """Stands in for `SwinUNet`: `forward(x, timesteps, lq=None, mask=None)`, `config`, `device`, `dtype`."""

    def __init__(self, graph: OnnxGraph, config: ModelConfig) -> None:
        super().__init__()
        self.graph = graph
        self.config = config.unet

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, lq: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        t = timesteps.reshape(-1).to(torch.int64).expand(x.shape[0])       # one timestep per image
        conditions = [tensor.float() for tensor in (lq, mask) if tensor is not None]
        return self.graph(x.float(), t, *conditions).to(x.dtype)


class OnnxAutoencoder(nn.Module):
    """Stands in for the autoencoder: `encode(image)`, `decode(latent)` (quantised, as exported)."""

    def __init__(self, encoder: OnnxGraph, decoder: OnnxGraph) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.float())

    def decode(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        if not quantize:
            raise InputError("the exported decoder always quantises (decode(z, quantize=False) needs the torch backend)")
        return self.decoder(z.float())


def onnx_pipeline(folder: str | Path) -> ResShiftPipeline:
    """A pipeline running the graphs of an export folder (`resshift export`) in onnxruntime."""
    folder = Path(folder).expanduser()
    manifest = read_manifest(folder)
    config = ModelConfig.from_dict(manifest["config"])
    graphs = {name: OnnxGraph(folder / graph["file"], [tensor["name"] for tensor in graph["inputs"]])
              for name, graph in manifest["graphs"].items()}
    return ResShiftPipeline(OnnxDenoiser(graphs["denoiser"], config),
                            OnnxAutoencoder(graphs["encoder"], graphs["decoder"]), config)


def onnxruntime_pipeline(pipe: ResShiftPipeline) -> ResShiftPipeline:
    """`pipe` on the onnxruntime backend: exported into the cache on first use, then loaded from there."""
    require_onnxruntime()
    return onnx_pipeline(cached_export(pipe))
