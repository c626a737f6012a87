"""Checkpoint reading, key-based preset detection and the errors a user sees for bad files."""

from __future__ import annotations

import collections
import json
import os
import zipfile

import numpy as np
import pytest
import torch

from official_reference import read_key_list
from resshift.checkpoints import (detect_autoencoder, detect_presets, load_weights, read_official,
                                  read_safetensors, strip_wrappers)
from resshift.errors import CheckpointError, ConfigError
from resshift.nets.vqgan import VQGAN_F4, VQGAN_F8_FACE
from resshift.pipeline import ResShiftPipeline
from resshift.presets import get_preset


def fake_state_dict(key_file: str) -> dict[str, torch.Tensor]:
    """Tensors of the listed names and shapes (meta: no memory), as an official file would hold."""
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    return {name: torch.empty(shape, dtype=dtypes[dtype], device="meta")
            for name, (shape, dtype) in read_key_list(key_file).items()}


@pytest.mark.parametrize("key_file,expected", [
    ("unet_keys_realsr_v3.txt", {"realsr-v1", "realsr-v2", "realsr-v3", "bicsr"}),
    ("unet_keys_realsr_v1v2.txt", {"realsr-v1", "realsr-v2", "realsr-v3", "bicsr"}),
    ("unet_keys_bicsr.txt", {"realsr-v1", "realsr-v2", "realsr-v3", "bicsr"}),
    ("unet_keys_realsr_x2.txt", {"realsr-x2"}),
    ("unet_keys_inpaint_imagenet.txt", {"inpaint-imagenet", "inpaint-face"}),
    ("unet_keys_inpaint_face.txt", {"inpaint-imagenet", "inpaint-face"}),
    ("unet_keys_faceir.txt", {"faceir"}),
])
def test_presets_are_recognised_from_official_keys(key_file, expected):
    assert set(detect_presets(fake_state_dict(key_file))) == expected


def test_official_file_name_narrows_the_preset():
    state = fake_state_dict("unet_keys_realsr_v3.txt")
    assert detect_presets(state, filename="/x/resshift_realsrx4_s4_v3.pth") == ["realsr-v3"]
    assert detect_presets(state, filename="/x/resshift_bicsrx4_s4.pth") == ["bicsr"]
    inpainting = fake_state_dict("unet_keys_inpaint_face.txt")
    assert detect_presets(inpainting, filename="resshift_inpainting_face_s4.pth") == ["inpaint-face"]
    # the name the official inference script saves its download under
    assert detect_presets(inpainting, filename="resshift_inpaint_imagenet_s4.pth") == ["inpaint-imagenet"]


def test_autoencoders_are_recognised_from_official_keys():
    assert detect_autoencoder(fake_state_dict("vqgan_keys_autoencoder_vq_f4.txt")) == VQGAN_F4
    assert detect_autoencoder(fake_state_dict("vqgan_keys_ffhq512_vq_f8_dim8_face.txt")) == VQGAN_F8_FACE
    assert detect_autoencoder(fake_state_dict("unet_keys_faceir.txt")) is None


def test_wrapper_prefixes_are_stripped(tmp_path):
    state = collections.OrderedDict([("module._orig_mod.a.weight", torch.ones(2)),
                                     ("module.b", torch.zeros(1))])
    assert list(strip_wrappers(state)) == ["a.weight", "b"]
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    assert sorted(read_official(path)) == ["a.weight", "b"]


class NotATensor:
    pass


@pytest.mark.parametrize("content,message", [
    (b"", "not a readable PyTorch checkpoint"),
    (b"this is not a checkpoint", "not a readable PyTorch checkpoint"),
])
def test_corrupt_files_are_rejected(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        read_official(path)


def test_truncated_checkpoint_is_rejected(tmp_path):
    path = tmp_path / "truncated.pth"
    torch.save({"w": torch.randn(1000)}, path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        read_official(path)


def test_pickled_objects_are_never_executed(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.ones(1), "obj": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="could run code"):
        read_official(path)


class RunsCode:
    """What a malicious checkpoint holds: unpickling it would call os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_code_in_a_checkpoint_is_refused_and_never_run(tmp_path):
    path, marker = tmp_path / "payload.pth", tmp_path / "ran"
    torch.save({"w": torch.ones(1), "x": RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="not a plain weights file.*it asks for posix.system"):
        read_official(path)
    assert not marker.exists()
    torch.save({"w": torch.ones(1), "array": np.zeros(3)}, path)    # numpy arrays are not scalars
    with pytest.raises(CheckpointError, match="not a plain weights file.*_reconstruct"):
        read_official(path)


def with_numpy1_names(path):
    """Rewrite a checkpoint as numpy 1 would have pickled it (numpy.core instead of numpy._core)."""
    with zipfile.ZipFile(path) as source:
        entries = [(info.filename, source.read(info)) for info in source.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for name, data in entries:
            target.writestr(name, data.replace(b"numpy._core.", b"numpy.core.") if name.endswith(".pkl") else data)


def test_numpy_scalars_beside_the_weights_are_accepted(tmp_path):
    path = tmp_path / "trained.pth"
    torch.save({"params_ema": {"module.w": torch.ones(2)}, "iter": np.int64(300000), "loss": np.float32(0.02),
                "best": np.bool_(True), "meta": {"lr": 5e-5, "config": "realsr"}}, path)
    assert list(read_official(path)) == ["w"]
    with_numpy1_names(path)
    assert list(read_official(path)) == ["w"]


def test_non_tensor_entries_and_missing_files(tmp_path):
    path = tmp_path / "mixed.pth"
    torch.save({"w": torch.ones(1), "step": 5}, path)
    with pytest.raises(CheckpointError, match="not tensors: step"):
        read_official(path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_official(tmp_path / "missing.pth")
    (tmp_path / "x.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        read_safetensors(tmp_path / "x.safetensors")


def test_mismatch_lists_missing_unexpected_and_misshaped_keys():
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    state = module.state_dict()
    state.pop("1.bias")
    state["0.weight"] = torch.zeros(5, 3)
    state["extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        load_weights(module, state, "file.pth")
    text = str(info.value)
    assert "file.pth" in text and "missing: 1.bias" in text and "unexpected: extra" in text
    assert "0.weight (5, 3) vs (4, 3)" in text
    assert "\n" not in text


def test_unet_file_of_another_preset_is_refused(tmp_path):
    # A VQGAN file given as the UNet: no preset matches, and the error says so.
    path = tmp_path / "vq.pth"
    torch.save({"encoder.conv_in.weight": torch.zeros(4, 3, 3, 3)}, path)
    with pytest.raises(CheckpointError, match="no official UNet matches"):
        ResShiftPipeline.from_official(path, path)


def test_unknown_preset_and_bad_model_folder(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'realsr-v9'"):
        get_preset("realsr-v9")
    with pytest.raises(CheckpointError, match="not a resshift model folder"):
        ResShiftPipeline.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 2, "task": "sr", "colour": 1}))
    with pytest.raises(ConfigError, match=r"config\.json: unknown config key colour; keys of the ModelConfig: task"):
        ResShiftPipeline.from_pretrained(tmp_path)
