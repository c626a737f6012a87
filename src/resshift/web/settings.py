"""What `resshift serve` was asked for: plain data, importable without the web stack installed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..models import BACKENDS

__all__ = ["ServeSettings"]

STATIC_DIR = Path(__file__).parent / "static"
FORM_OVERHEAD = 64 * 1024      # multipart boundaries, part headers and option fields beside the files


@dataclass(frozen=True)
class ServeSettings:
    """What `resshift serve` was asked for; `models` holds --model specs (folders or bundled names),
    empty for every installed bundled model."""

    models: tuple[str, ...] = ()
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "torch"          # one of resshift.models.BACKENDS
    max_upload_mb: float = 25.0     # the whole request body: image and mask together
    max_pixels: int = 4096 * 4096
    workers: int = 1                # model calls at once
    queue_size: int = 8             # requests that may wait for a worker
    static_dir: Path = STATIC_DIR

    def __post_init__(self) -> None:
        if not (self.max_upload_mb > 0 and self.max_pixels >= 1 and self.workers >= 1 and self.queue_size >= 0):
            raise ConfigError("need --max-upload-mb > 0, --max-pixels >= 1, --workers >= 1 and --queue-size >= 0")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20) + FORM_OVERHEAD
