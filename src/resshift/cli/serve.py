"""`resshift serve`: the argparse side; the app is `resshift.web.create_app`, run by uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import sys

from ..errors import ResShiftError
from ..web.settings import ServeSettings
from .arguments import add_runtime_arguments, int_in_range, non_negative_int, positive_float, positive_int

API_KEY_ENV = "RESSHIFT_API_KEY"

EPILOG = """\
API (every error is JSON {"error": "..."}; the full schema is at /openapi.json):
  POST /v1/upscale        multipart form: image, model, scale, steps, seed, tile, color_fix, format
  POST /v1/inpaint        image, mask (white = fill), model, steps, seed, mask_dilate, format
  POST /v1/restore-face   image, model, steps, seed, resize, format
  GET  /v1/models         the served models and the upload limits
  GET  /healthz           200 once the models are loaded
  The answer is the image itself (PNG unless format=jpg or webp).

  curl -F image=@photo.jpg -F scale=2 http://127.0.0.1:7860/v1/upscale -o photo_x2.png

access:
  The server listens on this machine only (127.0.0.1) unless --host says otherwise. With --api-key
  (or RESSHIFT_API_KEY, which other users cannot read in the process list) every /v1 request needs
  the header 'Authorization: Bearer KEY'; the page asks for the key once per browser session, and
  the page itself and /healthz stay open. Another --host needs a key, or --insecure to serve without
  one. The traffic is plain HTTP: across a network put a TLS proxy in front. Pages of other sites
  may call the API only from the origins given with --cors-origin.

  curl -H "Authorization: Bearer $RESSHIFT_API_KEY" -F image=@photo.jpg http://HOST:7860/v1/upscale -o out.png

load and safety:
  At most --workers images are restored at once and --queue-size more requests wait; others get
  503 with a Retry-After header. Uploads over --max-upload-mb or images over --max-pixels are
  refused before any decoding. SIGTERM (or Ctrl-C) stops taking new connections, lets the requests
  in flight finish, and exits 0 (130 for Ctrl-C).

models:
  --model takes a model folder (from `resshift convert`) or a bundled model name, and may be
  repeated; the first model of each task is its default. Without --model every installed bundled
  model is served.

examples:
  resshift serve --model models/realsr-v3
  resshift serve --model models/realsr-v3 --model models/inpaint-imagenet --port 8000 --workers 2
"""


def add_serve(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve the models over HTTP: a web page and a JSON API",
        description="Run a web server with a page to upscale, inpaint and restore images, and an HTTP API.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: every network, "
                             "which needs --api-key or --insecure)")
    parser.add_argument("--port", type=int_in_range(0, 65535), default=7860, help="port (default: 7860; 0: any free one)")
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_ENV) or None, metavar="KEY",
                        help=f"require 'Authorization: Bearer KEY' on every /v1 request (default: ${API_KEY_ENV}, "
                             "else none; the environment keeps the key out of the process list)")
    parser.add_argument("--insecure", action="store_true",
                        help="allow a --host other than this machine without an API key (anyone who reaches it "
                             "can use the server)")
    parser.add_argument("--cors-origin", action="append", dest="cors_origins", default=[], metavar="ORIGIN",
                        help="let pages of this web origin (e.g. https://photos.example.com) call the API; repeat "
                             "for several (default: none)")
    parser.add_argument("--model", action="append", dest="models", metavar="MODEL",
                        help="model folder or bundled model name; repeat to serve several "
                             "(default: every installed bundled model)")
    parser.add_argument("--max-upload-mb", type=positive_float, default=ServeSettings.max_upload_mb,
                        help=f"largest request, image and mask together (default: {ServeSettings.max_upload_mb:g})")
    parser.add_argument("--max-pixels", type=positive_int, default=ServeSettings.max_pixels,
                        help="largest image in pixels, as sent and as padded for the networks "
                             f"(default: {ServeSettings.max_pixels})")
    parser.add_argument("--workers", type=positive_int, default=ServeSettings.workers,
                        help="images restored at once; each holds a model's working memory (default: 1)")
    parser.add_argument("--queue-size", type=non_negative_int, default=ServeSettings.queue_size,
                        help=f"requests that may wait for a worker; more get 503 (default: {ServeSettings.queue_size})")
    parser.add_argument("--read-timeout", type=positive_float, default=ServeSettings.read_timeout, metavar="SECONDS",
                        help="an upload that sends nothing for this long is answered 408 and dropped "
                             f"(default: {ServeSettings.read_timeout:g})")
    add_runtime_arguments(parser, models="each model")
    parser.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """Load the models, bind the port (both fail as one-line errors), then serve until Ctrl-C."""
    try:
        import uvicorn

        from ..web.app import create_app
    except ImportError as exc:
        raise ResShiftError(f"`resshift serve` needs the web extra ({exc.name} is missing): "
                            "pip install \"resshift[web]\"") from exc
    check_exposure(args.host, args.api_key, args.insecure)
    settings = ServeSettings(models=tuple(args.models or ()), device=args.device, dtype=args.dtype, backend=args.backend,
                             max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels,
                             workers=args.workers, queue_size=args.queue_size, read_timeout=args.read_timeout,
                             api_key=args.api_key,
                             cors_origins=tuple(args.cors_origins))
    app = create_app(settings)
    listener = _listen(args.host, args.port)
    host, port = listener.getsockname()[:2]
    url = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
    key = "; /v1 needs the API key" if args.api_key else ""
    print(f"resshift serve: {', '.join(app.state.service.models)} at {url}{key} (Ctrl-C stops)", flush=True)
    if not is_loopback(args.host) and args.api_key is None:
        print(f"resshift serve: WARNING: listening on {args.host} WITHOUT an API key (--insecure): anyone who "
              "can reach this machine can use the server", file=sys.stderr, flush=True)
    _serve(uvicorn.Server(uvicorn.Config(app, log_level="info")), listener)
    return 0


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (localhost, 127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:          # a host name: it may resolve to any interface
        return False


def check_exposure(host: str, api_key: str | None, insecure: bool) -> None:
    """Refuse to open the API to a network without a key, unless --insecure says so."""
    if not is_loopback(host) and api_key is None and not insecure:
        raise ResShiftError(f"--host {host} opens the server to other machines: give an API key (--api-key or "
                            f"${API_KEY_ENV}), or --insecure to serve without one")


def _serve(server, listener: socket.socket) -> None:
    """Run the uvicorn server until Ctrl-C or SIGTERM. On either it stops listening, lets the requests in
    flight finish, then raises the signal again for the handler it found: SIGTERM's is made harmless here,
    so that a stop asked for by a service manager ends with exit code 0 (Ctrl-C still ends as
    KeyboardInterrupt, 130)."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run(sockets=[listener])
    finally:
        signal.signal(signal.SIGTERM, previous)


def _listen(host: str, port: int) -> socket.socket:
    """Bind here rather than in uvicorn, so that a busy port is a one-line error and port 0 can be printed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ResShiftError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                            "choose another --port or --host") from exc
