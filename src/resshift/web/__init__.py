"""`resshift serve`: a web page and an HTTP API over the restoration models (see `app`).

`create_app` is imported on first use, so that `resshift` works without the `web` extra installed.
"""

from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app
        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
