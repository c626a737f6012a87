"""The one strict config loader (resshift.configs): model config.json and training YAML alike."""

from __future__ import annotations

import json

import pytest

from resshift.configs import from_mapping, to_plain
from resshift.errors import ConfigError
from resshift.nets.unshuffle import UnshuffleConfig
from resshift.nets.vqgan import VQGANConfig
from resshift.presets import PRESETS, ModelConfig
from resshift.training.config import TrainConfig, load_config


def realsr_v3_dict() -> dict:
    return json.loads(json.dumps(PRESETS["realsr-v3"].config.to_dict()))      # what config.json holds


def test_every_preset_round_trips_through_json():
    for preset in PRESETS.values():
        data = json.loads(json.dumps(preset.config.to_dict()))
        assert ModelConfig.from_dict(data) == preset.config
        assert data["autoencoder"]["type"] == "vqgan"


def test_the_autoencoder_is_chosen_by_its_type_key():
    data = realsr_v3_dict()
    data["autoencoder"] = {"type": "unshuffle", "factor": 2}
    data["unet"]["in_channels"] = data["unet"]["out_channels"] = 12
    config = ModelConfig.from_dict(data)
    assert config.autoencoder == UnshuffleConfig(factor=2)
    assert to_plain(config)["autoencoder"] == {"type": "unshuffle", "factor": 2}
    data["autoencoder"] = {"factor": 2}                   # no type: the first config class that fits
    assert ModelConfig.from_dict(data).autoencoder == UnshuffleConfig(factor=2)
    data["autoencoder"] = {"type": "kl", "factor": 2}
    with pytest.raises(ConfigError, match=r"autoencoder\.type: expected one of 'vqgan', 'unshuffle', got 'kl'"):
        ModelConfig.from_dict(data)


@pytest.mark.parametrize("path, value, message", [
    (("unet", "window_size"), "8", r"unet\.window_size: expected an integer, got '8'"),
    (("unet", "channel_mult"), 2, r"unet\.channel_mult: expected a list, got 2"),
    (("schedule", "kind"), "cosine", r"schedule\.kind: expected one of 'official', 'paper', got 'cosine'"),
    (("autoencoder", "ch_mult"), [1, "2"], r"autoencoder\.ch_mult\[1\]: expected an integer"),
    (("unet", "windowsize"), 8, r"unknown config key unet\.windowsize; keys of unet: in_channels"),
])
def test_model_config_errors_name_the_key(path, value, message):
    data = realsr_v3_dict()
    data[path[0]][path[1]] = value
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict(data)


def test_a_class_check_names_its_section():
    data = realsr_v3_dict()
    data["autoencoder"]["ch"] = 100                    # not a multiple of GroupNorm's 32 groups
    with pytest.raises(ConfigError, match=r"^autoencoder: VQGAN config: channel width 200 is not a multiple of 32"):
        ModelConfig.from_dict(data)


def test_missing_keys_are_named():
    data = realsr_v3_dict()
    del data["schedule"]
    with pytest.raises(ConfigError, match="schedule"):
        ModelConfig.from_dict(data)


def test_lists_become_tuples_and_yaml_strings_numbers():
    config = from_mapping(VQGANConfig, {"ch_mult": [1, 2], "num_res_blocks": [1, 2], "dropout": "1e-1"})
    assert config.ch_mult == (1, 2) and config.num_res_blocks == (1, 2) and config.dropout == 0.1


def test_training_config_uses_the_same_loader_down_to_the_model():
    cfg = load_config("compact-x4", ["optim.lr=5e-5", "model.config.schedule.num_steps=1"])
    assert cfg.optim.lr == 5e-5 and cfg.model.config.schedule.num_steps == 1
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"model\.config\.unet\.window_size: expected an integer"):
        load_config("compact-x4", ["model.config.unet.window_size=big"])
    with pytest.raises(ConfigError, match=r"unknown config key optim\.learning_rate"):
        load_config("compact-x4", ["optim.learning_rate=1"])
