"""Training ResShift models: config (YAML + overrides), the loop, checkpoints, DDP helpers.

    from resshift.training import load_config, train
    train(load_config("tiny-cpu", ["optim.total_steps=200"]), "runs/tiny")
"""

from resshift.training.config import TrainConfig, load_config
from resshift.training.trainer import export_checkpoint, train

__all__ = ["TrainConfig", "export_checkpoint", "load_config", "train"]
