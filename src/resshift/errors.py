"""Errors a user can act on. The CLI prints their message on one line and exits non-zero."""


class ResShiftError(Exception):
    """Base class of every error resshift raises on purpose."""


class InputError(ResShiftError):
    """An image, mask or tensor given by the user cannot be used as it is."""


class CheckpointError(ResShiftError):
    """A weights file is missing, corrupt, unsafe, or belongs to another network."""


class ConfigError(ResShiftError):
    """A configuration or preset name is unknown or has a wrong value."""


class DownloadError(ResShiftError):
    """An official model could not be fetched or stored: an HTTP error, a broken transfer, a full or
    unwritable cache."""


class OfflineError(DownloadError):
    """An official model is needed but cannot be downloaded here (RESSHIFT_OFFLINE=1, or no network)."""


class TrainingError(ResShiftError):
    """Training cannot go on as configured: the loss became NaN or infinite."""
