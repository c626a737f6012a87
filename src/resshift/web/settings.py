"""What `resshift serve` was asked for: plain data, importable without the web stack installed."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import ConfigError
from ..models import BACKENDS

__all__ = ["ServeSettings"]

STATIC_DIR = Path(__file__).parent / "static"
FORM_OVERHEAD = 64 * 1024      # multipart boundaries, part headers and option fields beside the files
ORIGIN = re.compile(r"^https?://[^/\s?#]+$")     # scheme://host[:port], as a browser sends it in Origin


@dataclass(frozen=True)
class ServeSettings:
    """What `resshift serve` was asked for; `models` holds --model specs (folders or bundled names),
    empty for every installed bundled model. `api_key`: None for an open API, else the key every /v1
    request must carry as `Authorization: Bearer KEY`; `cors_origins`: the web origins whose pages may
    call the API (none: the browser's same-origin rule applies)."""

    models: tuple[str, ...] = ()
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "torch"          # one of resshift.models.BACKENDS
    max_upload_mb: float = 25.0     # the whole request body: image and mask together
    max_pixels: int = 4096 * 4096
    workers: int = 1                # model calls at once
    queue_size: int = 8             # requests that may wait for a worker
    read_timeout: float = 30.0      # seconds an upload may go without sending a byte
    static_dir: Path = STATIC_DIR
    api_key: Optional[str] = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (self.max_upload_mb > 0 and self.max_pixels >= 1 and self.workers >= 1 and self.queue_size >= 0
                and self.read_timeout > 0):
            raise ConfigError("need --max-upload-mb > 0, --max-pixels >= 1, --workers >= 1, --queue-size >= 0 and "
                              "--read-timeout > 0")
        key = self.api_key
        if key is not None and not (key and key.isascii() and key.isprintable() and " " not in key):
            raise ConfigError("--api-key (or RESSHIFT_API_KEY) must be printable ASCII without spaces, e.g. "
                              "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
        for origin in self.cors_origins:
            if not ORIGIN.match(origin):
                raise ConfigError(f"--cors-origin {origin}: give a web origin such as https://photos.example.com "
                                  "or http://localhost:8000 (scheme, host and port; no path, no '*')")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20) + FORM_OVERHEAD
