"""The HTTP side of `resshift serve`: a FastAPI app over the library, with bounded work and JSON errors.

| route                    | what                                                                      |
|--------------------------|---------------------------------------------------------------------------|
| GET  /                   | the web page, `static/index.html` (404 when it is not installed)          |
| GET  /static/<file>      | the page's other files                                                    |
| GET  /healthz            | 200 `{"status": "ok", "models": n}`: the models are loaded                |
| GET  /v1/models          | the served models and the upload limits                                   |
| POST /v1/upscale         | multipart form, the photo in `image` -> the upscaled image                |
| POST /v1/inpaint         | `image` and `mask` (white = fill, same size) -> the inpainted image       |
| POST /v1/restore-face    | an aligned face crop in `image` -> the restored crop                      |

Options are further form fields (see the form classes or /openapi.json); the answer is the image
itself (PNG unless `format` says otherwise) with a download name and `X-Elapsed-Seconds`.

Every error is JSON `{"error": "<one sentence>"}`: 400 a bad image or mask, 401 a missing or wrong API
key, 404 an unknown model, 408 an upload that stalled, 409 no model of that task loaded, 413 an upload or
image too large, 422 an unknown option or a bad value, 503 with Retry-After when the job queue is full,
and 500 "internal error" (logged) for a bug.

Safety: with an API key (`--api-key`) every /v1 request must carry `Authorization: Bearer KEY`, else it
is answered 401 before its body is read; the page and /healthz stay open. Cross-origin pages may call
the API only from the origins named by `--cors-origin`. The request body is limited while it streams in;
each upload is copied into a temporary folder of its own request under a fixed name (never the client's
file name), checked from its header, decoded there, and the folder is removed when the request ends.
Model calls go through `jobs.JobQueue`, so at most `workers` run at once.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Optional

import torch
from fastapi import APIRouter, Depends, FastAPI, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..batch import Job, Restore, RestoreOptions, process_job
from ..color import COLOR_FIXES
from ..distributed import resolve_device
from ..errors import ConfigError, ResShiftError
from ..imageio import open_header     # reads the header only, with Pillow's own bomb limit lifted
from .. import hub
from ..hub import BUNDLED
from ..models import DEFAULT_MODELS, backend_device, load_model, resolve_dtype
from ..pipeline import ResShiftPipeline
from ..tasks import TASKS, inpaint_job, restore_face_job, upscale_job
from .jobs import JobQueue, QueueFull
from .settings import ServeSettings

__all__ = ["ServeSettings", "ServedModel", "create_app", "load_models"]

log = logging.getLogger(__name__)

MAX_SCALE = 16
MAX_SEED = 2**63 - 1
MIN_TILE = 32
MULTIPART = "multipart/form-data"
API_PREFIX = "/v1/"
BEARER_CHALLENGE = 'Bearer realm="resshift"'
OUTPUT_FORMATS = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}
HOW_TO_SERVE_A_MODEL = ("pass a model folder, e.g. `resshift serve --model models/realsr-v3` (repeat --model "
                        "to serve several; `resshift convert` makes a folder from the official checkpoints)")


@dataclass(frozen=True)
class ServedModel:
    name: str
    description: str
    pipe: ResShiftPipeline = field(repr=False)
    licence: str = "Apache-2.0"

    @property
    def task(self) -> str:
        return self.pipe.config.task

    @property
    def steps(self) -> int:
        return self.pipe.config.schedule.num_steps


def load_models(settings: ServeSettings) -> dict[str, ServedModel]:
    """Load every model once, in order (the first of each task is its default), named after the
    bundled name or the folder. Raises ConfigError when there is nothing to serve or a name repeats."""
    specs = settings.models or _installed_bundled_models()
    if not specs:
        raise ConfigError(f"no --model given and no bundled model is installed; {HOW_TO_SERVE_A_MODEL}")
    device = resolve_device(backend_device(settings.backend, settings.device))
    dtype = resolve_dtype(settings.dtype, device)
    served: dict[str, ServedModel] = {}
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_file():
            raise ConfigError(f"--model {spec}: serve takes model folders and bundled or official model names; convert an "
                              f"official checkpoint first: resshift convert --unet {spec} "
                              "--autoencoder autoencoder_vq_f4.pth -o models/NAME")
        bundled = None if path.is_dir() else BUNDLED.get(spec.strip().lower())
        name = bundled.name if bundled else path.resolve().name
        if name in served:
            raise ConfigError(f"--model {spec}: a model named {name!r} is already served; rename one folder")
        pipe = load_model(spec, device=device, dtype=dtype, backend=settings.backend)
        config = pipe.config
        description = bundled.description if bundled else (
            f"{TASKS[config.task].noun}, x{config.scale}, {config.schedule.num_steps} steps")
        served[name] = ServedModel(name, description, pipe, "Apache-2.0" if bundled else folder_licence(spec))
    return served


def folder_licence(spec: str) -> str:
    """The first line of a model folder's LICENSE (official models carry theirs), else 'unknown'."""
    folder = hub.model_folder(spec)
    notice = folder / hub.LICENCE_FILE_NAME if folder is not None else None
    if notice is None or not notice.is_file():
        return "unknown (no LICENSE in the model folder)"
    return notice.read_text().splitlines()[0].strip() or "unknown"


def _installed_bundled_models() -> tuple[str, ...]:
    """Installed bundled models, the commands' defaults first (so that they are their tasks' defaults)."""
    installed = [name for name, model in BUNDLED.items() if model.installed]
    return tuple(sorted(installed, key=lambda name: name not in DEFAULT_MODELS.values()))


# ------------------------------------------------------------------------------------- the forms
class ErrorBody(BaseModel):
    error: str


class _TaskForm(BaseModel):
    """The fields every restoring endpoint takes; any other field is refused (422)."""

    model_config = ConfigDict(extra="forbid")

    image: UploadFile = Field(description="the photo: JPEG, PNG, WebP, TIFF or BMP")
    model: Optional[str] = Field(None, description="a name from GET /v1/models (default: the task's default)")
    steps: Optional[int] = Field(None, ge=1, description="sampling steps, 1 to the model's (default: all)")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="noise seed; the same seed gives the same result")
    # A tuple inside Literal[...] spreads into its values: the choices stay those of the table.
    format: Literal[tuple(OUTPUT_FORMATS)] = Field("png", description="format of the returned image")


class UpscaleForm(_TaskForm):
    scale: Optional[float] = Field(None, gt=0, le=MAX_SCALE,
                                   description="final scale, any number (default: the model's); the model's "
                                               "output is resized with Lanczos (larger) or area averaging")
    tile: int = Field(0, ge=0, description=f"tile side in input pixels: 0 automatic, else at least {MIN_TILE}")
    color_fix: Literal[tuple(COLOR_FIXES)] = Field("none", description="pull colours back to the input's")

    @field_validator("tile")
    @classmethod
    def _tile_is_automatic_or_large_enough(cls, tile: int) -> int:
        if 0 < tile < MIN_TILE:
            raise ValueError(f"must be 0 (automatic) or at least {MIN_TILE}")
        return tile


class InpaintForm(_TaskForm):
    mask: UploadFile = Field(description="white (over half grey) marks the pixels to fill; the image's size")
    mask_dilate: int = Field(0, ge=0, le=64, description="grow the white area by this many pixels")


class RestoreFaceForm(_TaskForm):
    resize: bool = Field(False, description="resize a crop of another size to the model's and back "
                                            "(the face must still be aligned)")


FORMS: dict[str, type[_TaskForm]] = {"/v1/upscale": UpscaleForm, "/v1/inpaint": InpaintForm,
                                     "/v1/restore-face": RestoreFaceForm}


# ----------------------------------------------------------------------------------- the service
class ApiError(Exception):
    """An answer other than 2xx that the client caused: a status and one sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Service:
    """What the routes share: the settings, the loaded models and the job queue."""

    def __init__(self, settings: ServeSettings, models: dict[str, ServedModel]) -> None:
        self.settings = settings
        self.models = models
        self.queue = JobQueue(settings.workers, settings.queue_size)

    def pick(self, name: Optional[str], task: str, steps: Optional[int]) -> ServedModel:
        """The model a request asks for (or the task's default), checked against its task and steps."""
        if name is None:
            served = next((m for m in self.models.values() if m.task == task), None)
            if served is None:
                raise ApiError(409, f"the server was started without {TASKS[task].noun}; restart it with one, "
                                    "e.g. `resshift serve --model MODEL_FOLDER` (repeat --model to serve several)")
        elif name in self.models:
            served = self.models[name]
        else:
            raise ApiError(404, f"unknown model {name!r}; this server has {', '.join(self.models)} "
                                "(GET /v1/models lists them)")
        if served.task != task:     # the routes are named after the CLI commands of TASKS
            raise ApiError(422, f"model {served.name!r} is {TASKS[served.task].noun}; send it to "
                                f"POST /v1/{TASKS[served.task].command}")
        if steps is not None and steps > served.steps:
            raise ApiError(422, f"invalid steps: model {served.name!r} has {served.steps} steps; "
                                f"choose 1 to {served.steps}")
        return served

    async def restore(self, served: ServedModel, form: _TaskForm, options: RestoreOptions, restore: Restore, *,
                      suffix: str, mask: Optional[UploadFile] = None,
                      required_size: Optional[tuple[int, int]] = None) -> Response:
        """Store the uploads in a fresh temporary folder, check them, run `restore` in the queue, and
        answer with the encoded result; the folder is gone when this returns."""
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="resshift-serve-") as tmp:
            folder = Path(tmp)
            job = Job(source=folder / "image", target=folder / f"result.{form.format}",
                      mask=None if mask is None else folder / "mask")
            try:
                await run_in_threadpool(self._store_uploads, job, form.image, mask, required_size)
                data = await self.queue.run(functools.partial(_encode_result, served.pipe, job, options, restore))
            except ResShiftError as exc:
                # Library messages name files by path: keep the field name, not the server's folder.
                raise ApiError(400, str(exc).replace(f"{folder}{os.sep}", "")) from exc
            except (torch.OutOfMemoryError, MemoryError) as exc:
                if served.pipe.device.type == "cuda":
                    torch.cuda.empty_cache()
                raise ApiError(413, "not enough free memory for this image; send a smaller one, or a "
                                    "tile such as 128") from exc
        name = f"{download_stem(form.image.filename)}{suffix}.{form.format}"
        return Response(data, media_type=OUTPUT_FORMATS[form.format],
                        headers={"Content-Disposition": f'attachment; filename="{name}"',
                                 "X-Elapsed-Seconds": f"{time.perf_counter() - start:.3f}"})

    def _store_uploads(self, job: Job, image: UploadFile, mask: Optional[UploadFile],
                       required_size: Optional[tuple[int, int]]) -> None:
        """Copy the uploads to the job's files and check their sizes from the headers, before any
        pixel is decoded and before the job takes a place in the queue."""
        width, height = self._store(image, job.source, "image")
        if required_size is not None and (width, height) != required_size:
            raise ApiError(400, f"image: is {width}x{height}, but the face model takes aligned "
                                f"{required_size[0]}x{required_size[1]} face crops (FFHQ-style); crop and "
                                "align it, or send resize=true")
        if mask is not None:
            assert job.mask is not None, "a job with a mask upload has a mask file"
            mask_size = self._store(mask, job.mask, "mask")
            if mask_size != (width, height):
                raise ApiError(400, f"mask: is {mask_size[0]}x{mask_size[1]} but the image is {width}x{height}; "
                                    "the mask must have the image's size")

    def _store(self, upload: UploadFile, path: Path, what: str) -> tuple[int, int]:
        upload.file.seek(0)
        with path.open("wb") as out:
            shutil.copyfileobj(upload.file, out)
        with open_header(path) as header:       # header only; InputError for a file that is no image
            width, height = header.size
        if width * height > self.settings.max_pixels:
            raise ApiError(413, f"{what}: {width}x{height} is {width * height} pixels, over this server's limit "
                                f"of {self.settings.max_pixels} (see GET /v1/models)")
        return width, height


def _encode_result(pipe: ResShiftPipeline, job: Job, options: RestoreOptions, restore: Restore) -> bytes:
    """Run in a worker: decode, pick a tile, restore and encode as the CLI does (`process_job`), then
    hand back the encoded bytes."""
    process_job(pipe, job, options, None, restore)
    return job.target.read_bytes()


def download_stem(filename: Optional[str]) -> str:
    """The uploaded file's name without folders and extension, in [A-Za-z0-9._-], at most 64 characters."""
    base = re.split(r"[\\/]", filename or "")[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base     # ".bashrc" has no extension
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:64].strip("._-")
    return safe or "image"


# ------------------------------------------------------------------------------------ the routes
def _service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(_service)]
router = APIRouter()
IMAGE_ROUTE = {
    "response_class": Response,
    "responses": {200: {"description": "the restored image", "content": {t: {} for t in OUTPUT_FORMATS.values()}},
                  **{status: {"model": ErrorBody, "description": description} for status, description in (
                      (400, "bad image or mask"), (404, "unknown model"), (408, "the upload stalled"),
                      (409, "no model for this task loaded"), (413, "upload or image too large"),
                      (422, "unknown option or bad value"), (503, "queue full; see Retry-After"))}},
}


@router.get("/", include_in_schema=False)
def page(service: ServiceDep) -> FileResponse:
    index = service.settings.static_dir / "index.html"
    if not index.is_file():
        raise ApiError(404, "the web page is not installed (no index.html); the API under /v1 works")
    return FileResponse(index)


@router.get("/healthz")
async def healthz(service: ServiceDep) -> dict:
    return {"status": "ok", "models": len(service.models)}


@router.get("/v1/models")
async def list_models(service: ServiceDep) -> dict:
    defaults = {}
    for served in service.models.values():
        defaults.setdefault(served.task, served.name)
    models = [{"name": m.name, "task": m.task, "scale": m.pipe.config.scale, "steps": m.steps,
               "description": m.description, "licence": m.licence, "default": defaults[m.task] == m.name}
              for m in service.models.values()]
    limits = {"max_upload_mb": service.settings.max_upload_mb, "max_pixels": service.settings.max_pixels}
    return {"models": models, "limits": limits}


@router.post("/v1/upscale", **IMAGE_ROUTE)
async def upscale(form: Annotated[UpscaleForm, Form(media_type=MULTIPART)], service: ServiceDep) -> Response:
    """Super-resolve a photo with an SR model, to the model's scale or any `scale` up to 16."""
    served = service.pick(form.model, "sr", form.steps)
    scale = form.scale or served.pipe.config.scale
    options = RestoreOptions(outscale=scale, steps=form.steps, seed=form.seed, tile=form.tile or None,
                             color_fix=form.color_fix, max_pixels=service.settings.max_pixels)
    return await service.restore(served, form, options, upscale_job, suffix=f"_x{scale:g}")


@router.post("/v1/inpaint", **IMAGE_ROUTE)
async def inpaint(form: Annotated[InpaintForm, Form(media_type=MULTIPART)], service: ServiceDep) -> Response:
    """Fill the white pixels of `mask` in `image`; the other pixels are kept exactly."""
    served = service.pick(form.model, "inpaint", form.steps)
    options = RestoreOptions(steps=form.steps, seed=form.seed, max_pixels=service.settings.max_pixels)
    restore = functools.partial(inpaint_job, dilate=form.mask_dilate)
    return await service.restore(served, form, options, restore, suffix="_inpainted", mask=form.mask)


@router.post("/v1/restore-face", **IMAGE_ROUTE)
async def restore_face(form: Annotated[RestoreFaceForm, Form(media_type=MULTIPART)], service: ServiceDep) -> Response:
    """Restore an aligned face crop of the model's size (512x512 for faceir), or any size with `resize`."""
    served = service.pick(form.model, "face", form.steps)
    side = served.pipe.config.unet.lq_size
    options = RestoreOptions(steps=form.steps, seed=form.seed, max_pixels=service.settings.max_pixels)
    restore = functools.partial(restore_face_job, resize_input=form.resize)
    return await service.restore(served, form, options, restore, suffix="_restored",
                                 required_size=None if form.resize else (side, side))


# ------------------------------------------------------------------------------- the upload limit
def _upload_too_large(settings: ServeSettings) -> str:
    return (f"upload too large: this server takes at most {settings.max_upload_mb:g} MB per request "
            "(image and mask together)")


class UploadLimit:
    """Refuse request bodies over the limit with a JSON 413 before they are read in full: at once when
    Content-Length is over it, else as soon as the bytes received pass it (a chunked body). A body that
    stalls, no bytes for `read_timeout` seconds, is answered 408 and its connection closed, so that a
    slow or stuck client cannot hold a connection and its spooled upload for ever.

    (FastAPI's own `max_body_size` answers plain text whenever Content-Length is over the limit.)
    """

    def __init__(self, app: ASGIApp, settings: ServeSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.settings.max_body_bytes
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _error(413, _upload_too_large(self.settings))(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), self.settings.read_timeout)
            except asyncio.TimeoutError:
                raise HTTPException(408, f"the upload stalled: no data for {self.settings.read_timeout:g} s") from None
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413)     # inside the form parsing: the handlers answer it
            return message

        await self.app(scope, counted_receive, send)


# ------------------------------------------------------------------------------------ the API key
class ApiKeyGuard:
    """Answer 401 to any request under /v1 that lacks `Authorization: Bearer KEY`, before its body is read.

    The key is compared in constant time (hmac.compare_digest); the answer says whether the key was
    missing or wrong, and carries the WWW-Authenticate challenge of RFC 6750.
    """

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == API_PREFIX.rstrip("/") or path.startswith(API_PREFIX)):
            refusal = self.refusal(Headers(scope=scope).get("authorization"))
            if refusal is not None:
                message, challenge = refusal
                await _error(401, message, {"WWW-Authenticate": challenge})(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, header: Optional[str]) -> Optional[tuple[str, str]]:
        """(message, challenge) when `header` does not carry the key, else None."""
        scheme, _, token = (header or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return ("this server needs an API key: send the header 'Authorization: Bearer KEY' "
                    "(the key given to resshift serve --api-key)", BEARER_CHALLENGE)
        # Starlette decodes header bytes as latin-1: encoding back gives the bytes that were sent.
        if not hmac.compare_digest(token.encode("latin-1"), self.key):
            return "wrong API key", f'{BEARER_CHALLENGE}, error="invalid_token"'
        return None


def document_api_key(app: FastAPI) -> None:
    """Mark the /v1 routes in /openapi.json as needing the Bearer key (ApiKeyGuard enforces it)."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {})["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "the key given to resshift serve --api-key"}}
        for path, operations in schema["paths"].items():
            if path.startswith(API_PREFIX):
                for operation in operations.values():
                    operation["security"] = [{"apiKey": []}]
                    operation.setdefault("responses", {})["401"] = {
                        "description": "missing or wrong API key",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
        return schema

    app.openapi = openapi


# ------------------------------------------------------------------------------------ the errors
def _error(status: int, message: str, headers: Optional[dict[str, str]] = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return _error(exc.status, exc.message)


async def _queue_full(request: Request, exc: QueueFull) -> JSONResponse:
    return _error(503, str(exc), {"Retry-After": str(exc.retry_after)})


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own errors (no route, body too large, unreadable form) in the same JSON shape."""
    if exc.status_code == 404:
        message = f"not found: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    elif exc.status_code == 413:
        message = _upload_too_large(request.app.state.service.settings)
    else:
        message = str(exc.detail)
    return _error(exc.status_code, message, getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's list of validation errors -> one sentence naming each bad field."""
    form = FORMS.get(request.url.path)
    files = [name for name, info in form.model_fields.items() if info.annotation is UploadFile] if form else []
    parts = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"][1:]) or "the form"
        if error["type"] == "extra_forbidden":
            takes = f" (this endpoint takes {', '.join(form.model_fields)})" if form else ""
            parts.append(f"unknown option {name!r}{takes}")
        elif name in files:
            parts.append(f"{name} is required, as a file in a multipart/form-data request")
        elif error["type"] == "missing":
            parts.append(f"{name} is required")
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            parts.append(f"invalid {name}: {message[:1].lower()}{message[1:]}")
    return _error(422, "; ".join(parts) or "invalid request")


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return _error(500, "internal error")


# ------------------------------------------------------------------------------------ the app
def create_app(settings: ServeSettings) -> FastAPI:
    """Load the models (ConfigError or CheckpointError when one cannot be) and build the app."""
    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN; the schema is /openapi.json.
    app = FastAPI(title="resshift", summary="ResShift image restoration: super-resolution, inpainting, faces",
                  docs_url=None, redoc_url=None)
    app.state.service = Service(settings, load_models(settings))
    app.include_router(router)
    if settings.static_dir.is_dir():    # StaticFiles would fail every request for a missing folder
        app.mount("/static", StaticFiles(directory=settings.static_dir), name="static")
    app.add_middleware(UploadLimit, settings=settings)
    if settings.api_key is not None:       # outside the upload limit: a refused request is never read
        app.add_middleware(ApiKeyGuard, key=settings.api_key)
        document_api_key(app)
    if settings.cors_origins:              # outermost: preflight requests carry no key
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization"],
                           expose_headers=["Content-Disposition", "X-Elapsed-Seconds", "Retry-After"])
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(QueueFull, _queue_full)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
    return app
