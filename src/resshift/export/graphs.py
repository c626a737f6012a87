"""The three network calls of a model as ONNX graphs: what each takes and returns, and the tracing.

| graph       | call                                | inputs (NCHW float32 unless said)                   | output       |
|-------------|-------------------------------------|-----------------------------------------------------|--------------|
| `denoiser`  | `unet(x_t, t, lq=lq, mask=mask)`    | x_t (N, C, h, w), t int64 (N,), lq (N, 3, H, W),    | prediction   |
|             |                                     | mask (N, 1, H, W), inpainting only                  | (N, C, h, w) |
| `encoder`   | `autoencoder.encode(image)`         | image (N, 3, h*f, w*f) in [-1, 1]                   | latent       |
| `decoder`   | `autoencoder.decode(latent)`        | latent (N, C, h, w); the VQGAN quantises it first   | image        |

Batch, height and width are dynamic: the graphs are traced (PyTorch's TorchScript-based exporter,
`dynamo=False`: deprecated since PyTorch 2.9, but it needs no onnxscript and exports the official
networks in under a minute each) from networks whose shape logic is all tensor operations
(`resshift.nets`), with a batch of two so that no batch-of-one shortcut is recorded. Heights and
widths must still be what the networks accept: latent sides multiples of the UNet's `size_multiple`, lq `2**num_downsamplings` times the
latent. The VQGAN decoder's codebook search holds a (positions x codes) distance matrix at once, so a
caller bounds the latent it decodes (the pipeline's tiles do).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..presets import ModelConfig

__all__ = ["OPSET", "Graph", "dynamic_axes", "example_inputs", "graphs_of", "trace_to_onnx"]

OPSET = 17
TRACE_BATCH = 2


@dataclass(frozen=True)
class Graph:
    """One exported network call: its name (and so its file), its input names and its output name."""

    name: str
    inputs: tuple[str, ...]
    output: str

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"


def graphs_of(config: ModelConfig) -> tuple[Graph, ...]:
    """The denoiser (with the conditioning inputs this model's UNet takes), the encoder and the decoder."""
    conditions = ("lq",) * config.unet.cond_lq + ("mask",) * config.unet.cond_mask
    return (Graph("denoiser", ("x_t", "t", *conditions), "prediction"),
            Graph("encoder", ("image",), "latent"),
            Graph("decoder", ("latent",), "image"))


# Each input's and output's dynamic axes: 0 the batch, 2 and 3 the height and width (named by grid).
DYNAMIC_AXES: dict[str, dict[int, str]] = {
    "x_t": {0: "batch", 2: "latent_height", 3: "latent_width"},
    "t": {0: "batch"},
    "lq": {0: "batch", 2: "lq_height", 3: "lq_width"},
    "mask": {0: "batch", 2: "lq_height", 3: "lq_width"},
    "prediction": {0: "batch", 2: "latent_height", 3: "latent_width"},
}
IMAGE_AXES = {0: "batch", 2: "image_height", 3: "image_width"}
LATENT_AXES = {0: "batch", 2: "latent_height", 3: "latent_width"}


class NetworkCall(nn.Module):
    """`method` of `network` as a module whose forward takes the graph's inputs positionally."""

    def __init__(self, network: nn.Module, method: str) -> None:
        super().__init__()
        self.network = network
        self.method = method

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return getattr(self.network, self.method)(*inputs)


def example_inputs(config: ModelConfig, graph: Graph) -> tuple[torch.Tensor, ...]:
    """Random inputs of the smallest size the networks accept, batch `TRACE_BATCH`, to trace `graph` with."""
    side = config.unet.size_multiple                                  # latent side
    lq_side = side * 2 ** config.unet.num_downsamplings
    generator = torch.Generator().manual_seed(0)

    def draw(channels: int, size: int) -> torch.Tensor:
        return torch.randn(TRACE_BATCH, channels, size, size, generator=generator)

    channels = config.autoencoder.embed_dim
    tensors: dict[str, Callable[[], torch.Tensor]] = {
        "x_t": lambda: draw(channels, side),
        "t": lambda: torch.zeros(TRACE_BATCH, dtype=torch.int64),
        "lq": lambda: draw(3, lq_side).clamp(-1, 1),
        "mask": lambda: draw(1, lq_side).sign(),
        "image": lambda: draw(3, side * config.autoencoder.downsample_factor).clamp(-1, 1),
        "latent": lambda: draw(channels, side),
    }
    return tuple(tensors[name]() for name in graph.inputs)


def dynamic_axes(graph: Graph) -> dict[str, dict[int, str]]:
    if graph.name == "denoiser":
        return {name: DYNAMIC_AXES[name] for name in (*graph.inputs, graph.output)}
    image, latent = (graph.inputs[0], graph.output) if graph.name == "encoder" else (graph.output, graph.inputs[0])
    return {image: IMAGE_AXES, latent: LATENT_AXES}


def trace_to_onnx(network: nn.Module, method: str, graph: Graph, inputs: tuple[torch.Tensor, ...]) -> bytes:
    """The ONNX model (serialised) of `network.method(*inputs)` with `graph`'s names and dynamic axes.

    The exporter's warnings are silenced: its deprecation notice, the tracer's notes about the
    networks' Python-side size checks (they raise for wrong sizes and record nothing in the graph), and
    constant folding passing over strided slices (which then run in the graph).
    """
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        torch.onnx.export(NetworkCall(network, method).eval(), inputs, buffer, dynamo=False, opset_version=OPSET,
                          input_names=list(graph.inputs), output_names=[graph.output],
                          dynamic_axes=dynamic_axes(graph), do_constant_folding=True)
    return buffer.getvalue()
