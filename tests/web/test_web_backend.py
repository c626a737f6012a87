"""`resshift serve --backend onnxruntime`: the served models run their networks in ONNX Runtime."""

from __future__ import annotations

import pytest
import torch

from resshift.cli import build_parser
from resshift.errors import ConfigError
from resshift.export.runtime import OnnxDenoiser

pytest.importorskip("fastapi", reason="the web extra is not installed")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install \"resshift[onnx]\"")
from resshift.web.app import ServeSettings, load_models  # noqa: E402


def test_serve_loads_its_models_on_the_chosen_backend(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("RESSHIFT_HOME", str(tmp_path))
    args = build_parser().parse_args(["serve", "--model", "realsr-x4", "--backend", "onnxruntime"])
    served = load_models(ServeSettings(models=tuple(args.models), backend=args.backend))
    pipe = served["realsr-x4"].pipe
    assert isinstance(pipe.unet, OnnxDenoiser) and pipe.device == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown backend 'tensorrt'"):
        ServeSettings(backend="tensorrt")
