"""resshift: efficient diffusion-based image restoration by residual shifting."""

__version__ = "0.1.0"

from .errors import CheckpointError, ConfigError, DownloadError, InputError, OfflineError, ResShiftError
from .pipeline import ResShiftPipeline
from .presets import PRESETS, ModelConfig
from .schedule import Schedule, ScheduleConfig

__all__ = ["CheckpointError", "ConfigError", "DownloadError", "InputError", "ModelConfig", "OfflineError", "PRESETS",
           "ResShiftError", "ResShiftPipeline", "Schedule", "ScheduleConfig", "__version__"]
