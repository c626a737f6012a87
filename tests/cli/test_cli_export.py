"""`resshift export` and `--backend onnxruntime` end to end on the bundled realsr-x4."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from resshift.cli import main
from resshift.export import MANIFEST_NAME

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install \"resshift[onnx]\"")
pytestmark = pytest.mark.usefixtures("one_thread")


def test_export_writes_the_graphs_and_refuses_a_full_folder(tmp_path, capsys):
    output = tmp_path / "realsr-x4"
    assert main(["export", "realsr-x4", "--format", "onnx", "-o", str(output)]) == 0
    assert "resshift export: wrote" in capsys.readouterr().out
    manifest = json.loads((output / MANIFEST_NAME).read_text())
    assert manifest["task"] == "sr" and manifest["autoencoder"] == {
        "kind": "unshuffle", "factor": 4, "latent_channels": 48, "decoder_quantises": False}
    assert main(["export", "realsr-x4", "-o", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty; pass --overwrite" in err
    assert main(["export", "realsr-x4", "-o", str(output), "--overwrite"]) == 0


def test_upscale_with_onnxruntime_equals_torch_within_one_level(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESSHIFT_HOME", str(tmp_path / "cache"))
    source = tmp_path / "photo.png"
    pixels = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(source)
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        target = tmp_path / f"{backend}.png"
        assert main(["upscale", "-i", str(source), "-o", str(target), "--backend", backend, "-q"]) == 0
        outputs[backend] = np.asarray(Image.open(target), dtype=np.int16)
    assert outputs["torch"].shape == (160, 224, 3)
    assert np.abs(outputs["torch"] - outputs["onnxruntime"]).max() <= 1
    assert any((tmp_path / "cache" / "onnx").iterdir())


def test_onnxruntime_backend_refuses_a_gpu_or_half_precision(tmp_path, capsys):
    source = tmp_path / "photo.png"
    Image.new("RGB", (16, 16)).save(source)
    code = main(["upscale", "-i", str(source), "-o", str(tmp_path / "out"), "--backend", "onnxruntime", "--dtype", "bf16"])
    assert code == 2 and "runs on the CPU in fp32, not cpu bfloat16" in capsys.readouterr().err
