"""resshift: efficient diffusion-based image restoration by residual shifting."""

__version__ = "0.1.0"

from .errors import CheckpointError, ConfigError, InputError, ResShiftError
from .pipeline import ResShiftPipeline
from .presets import PRESETS, ModelConfig
from .schedule import Schedule, ScheduleConfig

__all__ = ["CheckpointError", "ConfigError", "InputError", "ModelConfig", "PRESETS", "ResShiftError",
           "ResShiftPipeline", "Schedule", "ScheduleConfig", "__version__"]
