"""ONNX export and the onnxruntime backend: each graph and the whole chain against PyTorch, the
manifest, the export folder and its cache, and the error without onnxruntime."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from conftest import tiny_config
from resshift.errors import CheckpointError, InputError, ResShiftError
from resshift.export import MANIFEST_NAME, export_onnx, onnx_pipeline, read_manifest
from resshift.export import folder as export_folder
from resshift.export.runtime import INSTALL_HINT, OnnxGraph
from resshift.hub import BUNDLED
from resshift.models import load_model
from resshift.pipeline import ResShiftPipeline
from resshift.schedule import Schedule

onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install \"resshift[onnx]\"")
pytestmark = pytest.mark.usefixtures("one_thread")

TOLERANCE = 1e-4
# Two input sizes per model, one of them not square (the pipeline pads them to its multiple).
SIZES = ((32, 32), (24, 56))


def tiny_pipeline(task: str) -> ResShiftPipeline:
    """A tiny official-architecture model (VQGAN latent) with every weight at a visible scale."""
    torch.manual_seed(0)
    pipe = ResShiftPipeline.from_config(tiny_config(task, scale=4 if task == "sr" else 1))
    with torch.no_grad():
        for parameter in pipe.unet.parameters():
            parameter.normal_(0, 0.05)
    return pipe


@pytest.fixture(scope="module", params=["tiny-sr", "tiny-inpaint", *BUNDLED])
def exported(request, tmp_path_factory):
    """(torch pipeline, its export folder, the onnxruntime pipeline of that folder), once per model."""
    name = request.param
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                  # the sessions take PyTorch's thread count when created
    pipe = tiny_pipeline(name.removeprefix("tiny-")) if name.startswith("tiny-") else load_model(name)
    folder = export_onnx(pipe, tmp_path_factory.mktemp("onnx") / name)
    yield pipe, folder, onnx_pipeline(folder)
    torch.set_num_threads(threads)


def inputs_of(pipe: ResShiftPipeline, size: tuple[int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    generator = torch.Generator().manual_seed(seed)
    lq = torch.rand(1, 3, *size, generator=generator)
    if pipe.config.task != "inpaint":
        return lq, None
    mask = torch.zeros(1, 1, *size)
    mask[..., size[0] // 4: size[0] // 2, size[1] // 3:] = 1
    return lq, mask


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@pytest.mark.parametrize("size", SIZES)
def test_each_graph_matches_pytorch(exported, size):
    pipe, _, onnx = exported
    generator = torch.Generator().manual_seed(1)
    lq, mask = inputs_of(pipe, size, seed=2)
    y = pipe._pad(lq * 2 - 1)
    image = pipe.upsample(y)
    latent = pipe.autoencoder.encode(image)
    assert max_difference(onnx.autoencoder.encode(image), latent) < TOLERANCE
    x_t = torch.randn(latent.shape, generator=generator)
    t = torch.tensor([pipe.config.schedule.num_steps - 1])
    conditions = {"lq": y} if mask is None else {"lq": y, "mask": pipe._pad(mask) * 2 - 1}
    with torch.inference_mode():
        expected = pipe.unet(x_t, t, **conditions)
    assert max_difference(onnx.unet(x_t, t, **conditions), expected) < TOLERANCE
    with torch.inference_mode():
        decoded = pipe.autoencoder.decode(latent)
    assert max_difference(onnx.autoencoder.decode(latent), decoded) < TOLERANCE


@pytest.mark.parametrize("size", SIZES)
def test_the_whole_chain_matches_pytorch_with_the_same_seed(exported, size):
    pipe, _, onnx = exported
    lq, mask = inputs_of(pipe, size, seed=3)
    expected = pipe(lq, mask, generator=torch.Generator().manual_seed(4))
    assert max_difference(onnx(lq, mask, generator=torch.Generator().manual_seed(4)), expected) < TOLERANCE


def test_a_batch_runs_through_one_graph_call(exported):
    pipe, _, onnx = exported
    lq, mask = inputs_of(pipe, SIZES[1], seed=5)
    lq = torch.cat([lq, lq.flip(-1)])
    mask = None if mask is None else torch.cat([mask, mask])
    generators = [torch.Generator().manual_seed(s) for s in (6, 7)]
    expected = pipe(lq, mask, generator=generators)
    generators = [torch.Generator().manual_seed(s) for s in (6, 7)]
    assert max_difference(onnx(lq, mask, generator=generators), expected) < TOLERANCE


def test_the_manifest_describes_the_chain(exported):
    pipe, folder, _ = exported
    manifest = read_manifest(folder)
    schedule = Schedule.from_config(pipe.config.schedule)
    assert manifest["schedule"]["timesteps"] == list(schedule.timesteps)
    assert manifest["schedule"]["sqrt_etas"] == pytest.approx(schedule.sqrt_etas.tolist(), abs=0)
    assert manifest["schedule"]["kappa"] == pipe.config.schedule.kappa
    assert manifest["input_multiple"] == pipe.input_multiple and manifest["scale"] == pipe.config.scale
    assert manifest["autoencoder"]["factor"] == pipe.config.autoencoder.downsample_factor
    denoiser = manifest["graphs"]["denoiser"]
    expected_inputs = ["x_t", "t", "lq"] + ["mask"] * (pipe.config.task == "inpaint")
    assert [tensor["name"] for tensor in denoiser["inputs"]] == expected_inputs
    assert denoiser["output"]["shape"] == ["batch", pipe.config.autoencoder.embed_dim, "latent_height", "latent_width"]
    assert sorted(manifest["files"]) == ["decoder.onnx", "denoiser.onnx", "encoder.onnx"]
    assert sorted(p.name for p in folder.iterdir()) == ["decoder.onnx", "denoiser.onnx", "encoder.onnx", MANIFEST_NAME]


def test_an_export_replaces_a_full_folder_only_when_asked(tmp_path):
    pipe = tiny_pipeline("sr")
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty; pass --overwrite"):
        export_onnx(pipe, folder)
    assert [p.name for p in tmp_path.iterdir()] == ["export"]             # no staging folder left behind
    export_onnx(pipe, folder, overwrite=True)
    assert not (folder / "notes.txt").exists() and (folder / MANIFEST_NAME).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_a_failed_export_leaves_nothing(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("tracing failed")

    monkeypatch.setattr(export_folder, "trace_to_onnx", broken)
    with pytest.raises(RuntimeError, match="tracing failed"):
        export_onnx(tiny_pipeline("sr"), tmp_path / "export")
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_export_is_refused_naming_the_file(tmp_path):
    folder = export_onnx(tiny_pipeline("sr"), tmp_path / "export")
    with open(folder / "decoder.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(CheckpointError, match="decoder.onnx: missing or not the file exported"):
        onnx_pipeline(folder)
    (folder / MANIFEST_NAME).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(CheckpointError, match="not a resshift ONNX export manifest"):
        onnx_pipeline(folder)


def test_the_backend_exports_into_the_cache_once(tmp_path, monkeypatch):
    monkeypatch.setenv("RESSHIFT_HOME", str(tmp_path))
    pipe = tiny_pipeline("sr")
    first = export_folder.cached_export(pipe)
    assert first.parent == tmp_path / "onnx" and (first / MANIFEST_NAME).is_file()
    monkeypatch.setattr(export_folder, "trace_to_onnx", lambda *args: pytest.fail("exported twice"))
    assert export_folder.cached_export(pipe) == first
    with torch.no_grad():
        pipe.unet.out[2].bias.add_(1)                                  # other weights: another export
    assert export_folder.fingerprint(pipe) != first.name


def test_export_needs_the_cpu_in_float32(tmp_path):
    pipe = tiny_pipeline("sr").to(dtype=torch.bfloat16)
    with pytest.raises(InputError, match="on the CPU in float32, not cpu bfloat16"):
        export_onnx(pipe, tmp_path / "export")


def test_without_onnxruntime_the_backend_is_one_line_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)              # import onnxruntime now fails
    with pytest.raises(ResShiftError, match="not installed") as error:
        load_model("realsr-x4", backend="onnxruntime")
    assert INSTALL_HINT in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ResShiftError, match="not installed"):
        OnnxGraph(tmp_path / "denoiser.onnx", ["x_t"])
