"""ST-LPIPS, the shift-tolerant LPIPS of Ghildyal & Liu, "Shift-tolerant Perceptual Similarity Metric"
(ECCV 2022), re-implemented in plain torch.nn so that the official weights load strictly.

Contract: `STLPIPS()(a, b)` takes two (N, 3, H, W) RGB batches in [0, 1] and returns (N,) distances
(0 for identical images). It is differentiable in both inputs, its parameters are frozen, and it follows
`.to(device, dtype)`. Images of at least 32x32 pixels are expected (the backbone halves them 4-5 times).

Weights: the PyPI package `stlpips-pytorch` ships full state dicts, the anti-aliased backbone as well as
the linear heads and the input scaling: `stlpips_pytorch/weights/vST0.0/{vgg,alex}_shift_tolerant.pth`.
We read that file without importing the package (its modules import torchvision).

Notation (LPIPS, Zhang et al. 2018, Eq. 1):
    scaling_layer  x ↦ (x - shift) / scale, applied to inputs mapped to [-1, 1]
    net.slice{k}   backbone stage k; its output is the feature map y^k, (N, C_k, H_k, W_k)
    lin{k}         1x1 convolution w_k, the learned per-channel weights of layer k
    distance       d(a, b) = Σ_k mean_hw Σ_c w_kc (ŷ^k_a - ŷ^k_b)_c², ŷ = y / (‖y‖_channels + 1e-10)
                   (Eq. 1 with the learned weights applied to squares, as the official code does)
"""

from __future__ import annotations

import importlib.util
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from resshift.errors import CheckpointError, InputError

INSTALL_HINT = "pip install 'resshift[metrics]' (or: pip install --no-deps stlpips-pytorch)"
FEATURE_EPS = 1e-10


class BlurPool(nn.Module):
    """Anti-aliased downsampling by 2: reflection pad, then a depthwise 3x3 binomial blur with stride 2
    (Zhang, "Making Convolutional Networks Shift-Invariant Again", ICML 2019; ST-LPIPS pads 2 per side)."""

    def __init__(self, channels: int, pad: int = 2) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(taps, taps) / 16
        self.pad = pad
        self.register_buffer("filt", kernel.expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad,) * 4, mode="reflect")
        return F.conv2d(x, self.filt, stride=2, groups=x.shape[1])


def vgg16_layers() -> list[nn.Module]:
    """VGG16 features up to relu5_3, each max-pool replaced by max-pool(2, stride 1) + BlurPool."""
    layers: list[nn.Module] = []
    in_ch = 3
    for stage, (out_ch, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        if stage:
            layers += [nn.MaxPool2d(kernel_size=2, stride=1), BlurPool(in_ch)]
        for _ in range(convs):
            layers += [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1), nn.ReLU()]
            in_ch = out_ch
    return layers


def alexnet_layers() -> list[nn.Module]:
    """AlexNet features up to relu5, shift-tolerant: stride-1 conv1 and blur-pooled strides."""
    return [
        nn.Conv2d(3, 64, kernel_size=11, stride=1, padding=2),
        BlurPool(64),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=1),
        BlurPool(64),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=1),
        BlurPool(192),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(),
    ]


@dataclass(frozen=True)
class Backbone:
    """A backbone: its layers, where each of the 5 stages ends, and the channels of the stage outputs."""

    layers: Callable[[], list[nn.Module]]
    stage_ends: tuple[int, ...]
    channels: tuple[int, ...]


BACKBONES = {
    "vgg": Backbone(vgg16_layers, (4, 10, 18, 26, 34), (64, 128, 256, 512, 512)),
    "alex": Backbone(alexnet_layers, (3, 7, 11, 13, 15), (64, 192, 384, 256, 256)),
}


class Stages(nn.Module):
    """The backbone cut into `slice1..slice5`; children keep their index in the flat layer list,
    which is how the official state_dict names them (e.g. `net.slice2.5.filt`)."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        layers, start = backbone.layers(), 0
        for k, end in enumerate(backbone.stage_ends, start=1):
            stage = nn.Sequential()
            for i in range(start, end):
                stage.add_module(str(i), layers[i])
            self.add_module(f"slice{k}", stage)
            start = end

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.children():
            x = stage(x)
            feats.append(x)
        return feats


class ScalingLayer(nn.Module):
    """(x - shift) / scale on inputs in [-1, 1], the ImageNet statistics in that range (LPIPS v0.1)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class LinearHead(nn.Module):
    """w_k: a bias-free 1x1 convolution to one channel. Index 0 held dropout during training; an Identity
    keeps the official key `model.1.weight` without making the metric random in train mode."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def normalize_channels(y: torch.Tensor) -> torch.Tensor:
    """ŷ = y / (‖y‖₂ over channels + 1e-10), per pixel (LPIPS Eq. 1)."""
    return y / (y.square().sum(dim=1, keepdim=True).sqrt() + FEATURE_EPS)


def backbone(net: str) -> Backbone:
    """The backbone named `net`, 'vgg' or 'alex'."""
    if net not in BACKBONES:
        raise InputError(f"unknown ST-LPIPS backbone {net!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[net]


def package_weights(net: str) -> Path:
    """The `{net}_shift_tolerant.pth` file inside the installed stlpips-pytorch package, not imported."""
    spec = importlib.util.find_spec("stlpips_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"ST-LPIPS weights need the stlpips-pytorch package: {INSTALL_HINT}")
    for root in spec.submodule_search_locations:
        path = Path(root) / "weights" / "vST0.0" / f"{net}_shift_tolerant.pth"
        if path.is_file():
            return path
    raise CheckpointError(f"stlpips-pytorch has no {net}_shift_tolerant.pth; reinstall it: {INSTALL_HINT}")


class STLPIPS(nn.Module):
    """Shift-tolerant LPIPS distance with a VGG16 ('vgg') or AlexNet ('alex') backbone.

    `STLPIPS(net)` builds the network with untrained weights; `from_package` / `from_file` load the official ones.
    """

    def __init__(self, net: str = "vgg") -> None:
        super().__init__()
        spec = backbone(net)
        self.scaling_layer = ScalingLayer()
        self.net = Stages(spec)
        for k, channels in enumerate(spec.channels):
            self.add_module(f"lin{k}", LinearHead(channels))
        self.requires_grad_(False)

    @classmethod
    def from_file(cls, path: str | Path, net: str = "vgg") -> STLPIPS:
        """Load an official ST-LPIPS state_dict (weights_only, strict)."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as err:
            raise CheckpointError(f"cannot read ST-LPIPS weights {path}: {err}") from err
        model = cls(net)
        load_strict(model, state, str(path))
        return model.eval()

    @classmethod
    def from_package(cls, net: str = "vgg") -> STLPIPS:
        """Load the weights that the stlpips-pytorch package ships (`pip install resshift[metrics]`)."""
        backbone(net)  # an unknown name is an InputError, not a missing file
        return cls.from_file(package_weights(net), net)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """d(a, b) for (N, 3, H, W) RGB batches in [0, 1]; returns (N,)."""
        if a.ndim != 4 or a.shape[1] != 3 or a.shape != b.shape:
            shapes = f"{tuple(a.shape)} and {tuple(b.shape)}"
            raise InputError(f"expected two RGB batches (N, 3, H, W) of one shape, got {shapes}")
        n = a.shape[0]
        if torch.is_grad_enabled() and a.requires_grad and not b.requires_grad:
            # As a training loss: the target's features need no graph, which halves the backward pass.
            with torch.no_grad():
                target = self.features(b)
            pairs = zip(self.features(a), target)
        else:
            both = self.features(torch.cat([a, b]))  # one backbone pass for both
            pairs = ((feat[:n], feat[n:]) for feat in both)
        dist = a.new_zeros(n)
        for k, (fa, fb) in enumerate(pairs):
            dist = dist + getattr(self, f"lin{k}")((fa - fb).square()).mean(dim=(1, 2, 3))
        return dist

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The channel-normalised feature maps of each stage for an RGB batch in [0, 1]."""
        return [normalize_channels(feat) for feat in self.net(self.scaling_layer(x * 2 - 1))]


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict(strict=True), but reporting missing, unexpected and mis-shaped keys as CheckpointError."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{source} is not a state_dict (got {type(state).__name__})")
    own = model.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    misshaped = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or unexpected or misshaped:
        raise CheckpointError(
            f"{source} does not match {type(model).__name__}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, mis-shaped {misshaped[:5]}"
        )
    model.load_state_dict(state, strict=True)
