"""The HTTP API of `resshift serve` through FastAPI's test client, with tiny random-weight models:
each endpoint's success path, every error path (always one JSON sentence, never a 500 for bad input),
the job queue on its own, the web page, the OpenAPI schema, and the CLI's start-up errors.

Every test also checks that the temporary folder (tempfile's, pointed at a fresh one) is empty
afterwards: uploads never outlive their request."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import resshift.cli.serve as serve_cli
import resshift.web.app as web_app
from resshift.cli import main
from resshift.errors import ConfigError
from resshift.nets.swin_unet import SwinUNetConfig
from resshift.pipeline import ResShiftPipeline
from resshift.presets import ModelConfig
from resshift.schedule import ScheduleConfig
from resshift.web import ServeSettings, create_app
from resshift.web.app import download_stem
from resshift.web.jobs import JobQueue, QueueFull

from conftest import TINY_VQGAN, tiny_config

SIZE = 32                   # input side; the tiny face model takes 32x32 crops
MAX_PIXELS = 64 * 64          # the tiny inpainting model pads a 32x32 image to 64x64
MAX_UPLOAD_MB = 0.05        # 51 kB of files (plus the form's overhead): tiny PNGs pass, 200 kB does not


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny models of the three tasks, saved as folders (named like the served models)."""
    root = tmp_path_factory.mktemp("models")
    face_unet = SwinUNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1),
                               attention_resolutions=(8, 4), swin_embed_dim=32, num_head_channels=16,
                               image_size=SIZE // 4, lq_size=SIZE)
    configs = {"tiny-x4": tiny_config(),
               "tiny-inpaint": tiny_config(task="inpaint", scale=1, num_steps=2),
               "tiny-face": ModelConfig(task="face", scale=1, schedule=ScheduleConfig(num_steps=1),
                                        unet=face_unet, autoencoder=TINY_VQGAN)}
    torch.manual_seed(0)
    for name, config in configs.items():
        ResShiftPipeline.from_config(config).save_pretrained(root / name)
    return {name: root / name for name in configs}


@pytest.fixture(autouse=True)
def upload_tmp(tmp_path, monkeypatch, one_thread):
    """A fresh folder for tempfile in each test, where request folders (and Starlette's spooled
    uploads) go; it must be empty once the test's requests are answered."""
    folder = tmp_path / "tempfile"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    assert list(folder.iterdir()) == [], "a request left files in the temporary folder"


def settings(*dirs: Path, **overrides) -> ServeSettings:
    values = dict(models=tuple(map(str, dirs)), device="cpu", max_pixels=MAX_PIXELS,
                  max_upload_mb=MAX_UPLOAD_MB) | overrides
    return ServeSettings(**values)


@pytest.fixture(scope="module")
def app(model_dirs):
    return create_app(settings(*model_dirs.values(), static_dir=model_dirs["tiny-x4"] / "no-page"))


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as client:
        yield client


def encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)
    return buffer.getvalue()


def photo(width: int = SIZE, height: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def mask(box=(8, 8, 20, 20), width: int = SIZE, height: int = SIZE) -> np.ndarray:
    x0, y0, x1, y1 = box
    array = np.zeros((height, width), np.uint8)
    array[y0:y1, x0:x1] = 255
    return array


def decoded(response) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def error_of(response, status: int) -> str:
    """The one-sentence error of a JSON error answer with this status."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and body["error"]
    return body["error"]


# -------------------------------------------------------------------------------- success paths
def test_healthz_and_models(client):
    assert client.get("/healthz").json() == {"status": "ok", "models": 3}
    listing = client.get("/v1/models").json()
    assert listing["limits"] == {"max_upload_mb": MAX_UPLOAD_MB, "max_pixels": MAX_PIXELS}
    assert [(m["name"], m["task"], m["scale"], m["steps"], m["default"]) for m in listing["models"]] == [
        ("tiny-x4", "sr", 4, 4, True), ("tiny-inpaint", "inpaint", 1, 2, True), ("tiny-face", "face", 1, 1, True)]
    assert all(m["description"] for m in listing["models"])
    assert {m["licence"] for m in listing["models"]} == {"unknown (no LICENSE in the model folder)"}


def test_upscale_answers_the_image_with_a_safe_download_name(client):
    response = client.post("/v1/upscale", files={"image": ("../../secret dir/My Photo!.jpg", encode(photo()))},
                           data={"steps": "1"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"] == 'attachment; filename="My_Photo_x4.png"'
    assert float(response.headers["x-elapsed-seconds"]) > 0
    assert decoded(response).shape == (SIZE * 4, SIZE * 4, 3)


@pytest.mark.parametrize("fmt, media_type, scale, side", [("jpg", "image/jpeg", "2", 64),
                                                          ("webp", "image/webp", "1.5", 48),
                                                          ("png", "image/png", "0.5", 16)])
def test_upscale_scale_and_format(client, fmt, media_type, scale, side):
    response = client.post("/v1/upscale", files={"image": ("a.png", encode(photo()))},
                           data={"steps": "1", "scale": scale, "format": fmt})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    assert response.headers["content-disposition"] == f'attachment; filename="a_x{float(scale):g}.{fmt}"'
    assert decoded(response).shape == (side, side, 3)


def test_upscale_options_and_seed(client):
    def run(**options) -> bytes:
        data = {"steps": "1", "tile": "32", "color_fix": "wavelet", "model": "tiny-x4"} | options
        response = client.post("/v1/upscale", files={"image": ("a.png", encode(photo()))}, data=data)
        assert response.status_code == 200, response.text
        return response.content

    assert run(seed="7") == run(seed="7")
    assert run(seed="7") != run(seed="8")


def test_inpaint_fills_the_mask_and_keeps_the_rest(client):
    image = photo()
    files = {"image": ("room.png", encode(image)), "mask": ("m.png", encode(mask()))}
    response = client.post("/v1/inpaint", files=files, data={"mask_dilate": "1"})
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == 'attachment; filename="room_inpainted.png"'
    result = decoded(response)
    keep = mask((7, 7, 21, 21)) == 0          # the box grown by mask_dilate
    assert result.shape == image.shape
    assert np.array_equal(result[keep], image[keep])
    assert not np.array_equal(result[~keep], image[~keep])


def test_restore_face_takes_the_models_size_or_resizes(client):
    response = client.post("/v1/restore-face", files={"image": ("face.png", encode(photo()))})
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == 'attachment; filename="face_restored.png"'
    assert decoded(response).shape == (SIZE, SIZE, 3)
    other = encode(photo(40, 24))
    message = error_of(client.post("/v1/restore-face", files={"image": ("face.png", other)}), 400)
    assert "40x24" in message and "32x32" in message and "resize=true" in message
    response = client.post("/v1/restore-face", files={"image": ("face.png", other)}, data={"resize": "true"})
    assert response.status_code == 200, response.text
    assert decoded(response).shape == (24, 40, 3)


def test_no_model_for_the_task_is_409(model_dirs):
    with TestClient(create_app(settings(model_dirs["tiny-x4"]))) as client:
        for route, files in (("/v1/inpaint", {"image": ("a.png", encode(photo())), "mask": ("m.png", encode(mask()))}),
                             ("/v1/restore-face", {"image": ("a.png", encode(photo()))})):
            message = error_of(client.post(route, files=files), 409)
            assert "resshift serve --model" in message


# ---------------------------------------------------------------------------------- error paths
IMAGE = {"image": ("a.png", encode(photo()))}
TRUNCATED = encode(photo())[:300]


@pytest.mark.parametrize("route, files, data, status, words", [
    ("/v1/upscale", {"image": ("notes.txt", b"just some text")}, {}, 400, "not an image"),
    ("/v1/upscale", {"image": ("empty.png", b"")}, {}, 400, "not an image"),
    ("/v1/upscale", {"image": ("cut.png", TRUNCATED)}, {}, 400, "truncated"),
    ("/v1/upscale", {"image": ("big.png", encode(photo(65, 64)))}, {}, 413, "over this server's limit"),
    ("/v1/upscale", {"image": ("strip.png", encode(photo(4000, 1)))}, {}, 400, "padded to 4000x16 = 64000 pixels"),
    ("/v1/upscale", {}, {}, 422, "image is required"),
    ("/v1/upscale", {}, {"image": "not a file"}, 422, "image is required, as a file"),
    ("/v1/upscale", IMAGE, {"colour": "red"}, 422, "unknown option 'colour'"),
    ("/v1/upscale", IMAGE, {"mask_dilate": "2"}, 422, "unknown option 'mask_dilate'"),
    ("/v1/upscale", IMAGE, {"scale": "0"}, 422, "invalid scale"),
    ("/v1/upscale", IMAGE, {"scale": "17"}, 422, "invalid scale"),
    ("/v1/upscale", IMAGE, {"scale": "big"}, 422, "invalid scale"),
    ("/v1/upscale", IMAGE, {"steps": "0"}, 422, "invalid steps"),
    ("/v1/upscale", IMAGE, {"steps": "5"}, 422, "choose 1 to 4"),
    ("/v1/upscale", IMAGE, {"seed": "-1"}, 422, "invalid seed"),
    ("/v1/upscale", IMAGE, {"seed": str(2**63)}, 422, "invalid seed"),
    ("/v1/upscale", IMAGE, {"tile": "16"}, 422, "at least 32"),
    ("/v1/upscale", IMAGE, {"color_fix": "sepia"}, 422, "invalid color_fix"),
    ("/v1/upscale", IMAGE, {"format": "gif"}, 422, "invalid format"),
    ("/v1/upscale", IMAGE, {"model": "nope"}, 404, "unknown model 'nope'"),
    ("/v1/upscale", IMAGE, {"model": "tiny-inpaint"}, 422, "POST /v1/inpaint"),
    ("/v1/inpaint", IMAGE | {"mask": ("m.png", encode(mask(width=16)))}, {}, 400, "mask: is 16x32"),
    ("/v1/inpaint", IMAGE | {"mask": ("m.png", b"GIF89a broken")}, {}, 400, "mask: not an image"),
    ("/v1/inpaint", IMAGE, {}, 422, "mask is required"),
    ("/v1/inpaint", IMAGE | {"mask": ("m.png", encode(mask()))}, {"mask_dilate": "65"}, 422, "invalid mask_dilate"),
    ("/v1/restore-face", IMAGE, {"resize": "maybe"}, 422, "invalid resize"),
])
def test_bad_requests_get_one_json_sentence(client, route, files, data, status, words):
    assert words in error_of(client.post(route, files=files or None, data=data), status)
    assert client.get("/healthz").status_code == 200


def test_uploads_over_the_limit_are_refused_while_streaming(client):
    """With Content-Length the body is refused before it is read; without (chunked), once the bytes
    read pass the limit."""
    large = np.random.default_rng(0).bytes(200_000)
    assert "upload too large" in error_of(client.post("/v1/upscale", files={"image": ("a.png", large)}), 413)

    def chunked_body():
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        for _ in range(100):
            yield large[:10_000]

    response = client.post("/v1/upscale", content=chunked_body(),
                           headers={"content-type": "multipart/form-data; boundary=b"})
    assert "upload too large" in error_of(response, 413)
    assert client.get("/healthz").status_code == 200


def test_non_multipart_bodies_and_unknown_routes(client):
    assert "image is required" in error_of(client.post("/v1/upscale", json={"image": "x"}), 422)
    assert error_of(client.get("/v1/nothing"), 404) == "not found: GET /v1/nothing"
    assert error_of(client.get("/v1/upscale"), 405) == "GET is not allowed on /v1/upscale"
    assert "not installed" in error_of(client.get("/"), 404)
    error_of(client.get("/static/app.js"), 404)


def test_an_unexpected_error_is_a_logged_500(app, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the restorer")

    monkeypatch.setattr(web_app, "upscale_job", broken)
    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.ERROR):
        response = client.post("/v1/upscale", files={"image": ("a.png", encode(photo()))})
        assert error_of(response, 500) == "internal error"
        assert client.get("/healthz").status_code == 200
    assert any(record.exc_info and "a bug in the restorer" in str(record.exc_info[1]) for record in caplog.records)


def test_a_full_queue_is_503_with_retry_after(model_dirs, monkeypatch):
    """One worker, no waiting room: while a job runs, the loop still answers and the next job is refused."""
    started, release = threading.Event(), threading.Event()
    real_job = web_app.upscale_job

    def held_job(*args, **kwargs):
        started.set()
        release.wait(30)
        return real_job(*args, **kwargs)

    monkeypatch.setattr(web_app, "upscale_job", held_job)
    upload = {"image": ("a.png", encode(photo()))}
    with TestClient(create_app(settings(model_dirs["tiny-x4"], workers=1, queue_size=0))) as client, \
            ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/v1/upscale", files=upload, data={"steps": "1"})
        try:
            assert started.wait(30)
            assert client.get("/healthz").status_code == 200
            refused = client.post("/v1/upscale", files=upload, data={"steps": "1"})
        finally:
            release.set()
        assert first.result().status_code == 200
    assert "busy" in error_of(refused, 503)
    assert int(refused.headers["retry-after"]) >= 1


# ------------------------------------------------------------------------- page, schema, names
def test_the_page_and_its_files_are_served(model_dirs, tmp_path):
    (tmp_path / "index.html").write_text("<!doctype html><title>resshift</title>")
    (tmp_path / "app.js").write_text("console.log('hi')")
    with TestClient(create_app(settings(model_dirs["tiny-x4"], static_dir=tmp_path))) as client:
        page = client.get("/")
        assert page.status_code == 200 and "<title>resshift</title>" in page.text
        assert client.get("/static/app.js").text == "console.log('hi')"
        error_of(client.get("/static/../index.html"), 404)


def test_openapi_lists_the_routes_and_their_fields(client):
    schema = client.get("/openapi.json").json()
    assert {"/healthz", "/v1/models", "/v1/upscale", "/v1/inpaint", "/v1/restore-face"} <= set(schema["paths"])
    upscale = schema["paths"]["/v1/upscale"]["post"]
    form = upscale["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    fields = schema["components"]["schemas"][form]["properties"]
    assert {"image", "model", "scale", "steps", "seed", "tile", "color_fix", "format"} == set(fields)
    assert {"200", "400", "404", "408", "409", "413", "422", "503"} <= set(upscale["responses"])


@pytest.mark.parametrize("filename, stem", [("photo.jpg", "photo"), ("../../etc/passwd", "passwd"),
                                            ("C:\\Users\\me\\Holiday 2024.final.PNG", "Holiday_2024.final"),
                                            ("..", "image"), ("фото.png", "image"), (None, "image"),
                                            ("a" * 100 + ".png", "a" * 64), (".bashrc", "bashrc")])
def test_download_stem(filename, stem):
    assert download_stem(filename) == stem


# ------------------------------------------------------------------------------------ job queue
def test_job_queue_bounds_the_work_and_refuses_overflow():
    queue, release = JobQueue(workers=2, queue_size=3, first_estimate=4.0), threading.Event()
    running, peak, lock = [0], [0], threading.Lock()

    def job() -> str:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(30)
        with lock:
            running[0] -= 1
        return "done"

    async def scenario() -> list[str]:
        tasks = [asyncio.create_task(queue.run(job)) for _ in range(5)]
        while queue.running < 2:
            await asyncio.sleep(0.01)
        assert queue.admitted == 5
        with pytest.raises(QueueFull) as full:
            await queue.run(job)
        assert full.value.retry_after == 2 and full.value.waiting == 3      # 4 s over 2 workers
        release.set()
        return await asyncio.gather(*tasks)

    assert asyncio.run(scenario()) == ["done"] * 5
    assert peak[0] == 2 and queue.admitted == 0
    assert queue.retry_after() == 1        # the jobs' measured duration replaced the first estimate


def test_job_queue_waits_for_a_started_job_when_its_caller_is_cancelled():
    queue, finished = JobQueue(workers=1, queue_size=0), threading.Event()

    def job() -> None:
        time.sleep(0.3)
        finished.set()

    async def scenario() -> None:
        task = asyncio.create_task(queue.run(job))
        while queue.running < 1:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert finished.is_set()

    asyncio.run(scenario())


# ---------------------------------------------------------------------------------------- CLI
def test_serve_without_a_model_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(web_app, "BUNDLED", {})
    assert main(["serve"]) == 2
    assert "no --model given" in capsys.readouterr().err
    checkpoint = tmp_path / "unet.pth"
    checkpoint.write_bytes(b"not really")
    assert main(["serve", "--model", str(checkpoint)]) == 2
    assert "resshift convert" in capsys.readouterr().err


def test_serve_on_a_busy_port_is_a_one_line_error(model_dirs, capsys):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert main(["serve", "--model", str(model_dirs["tiny-x4"]), "--port", str(port), "--device", "cpu"]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


# ------------------------------------------------------------------------- API key and CORS
API_KEY = "k3y-for-tests_0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def keyed_client(model_dirs):
    """A server started with --api-key and one allowed cross-origin page."""
    app = create_app(settings(model_dirs["tiny-x4"], static_dir=model_dirs["tiny-x4"] / "no-page",
                              api_key=API_KEY, cors_origins=("https://photos.example",)))
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize("headers, words", [
    ({}, "needs an API key"),
    ({"Authorization": API_KEY}, "needs an API key"),                       # no scheme
    ({"Authorization": f"Basic {API_KEY}"}, "needs an API key"),
    ({"Authorization": "Bearer "}, "needs an API key"),
    ({"Authorization": "Bearer wrong"}, "wrong API key"),
    ({"Authorization": f"Bearer {API_KEY}x"}, "wrong API key"),
    ({"Authorization": f"Bearer {API_KEY[:-1]}"}, "wrong API key"),
])
def test_v1_without_the_key_is_401_with_a_bearer_challenge(keyed_client, headers, words):
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/upscale"), ("GET", "/v1/unknown"), ("GET", "/v1")):
        response = keyed_client.request(method, path, headers=headers, files=IMAGE if method == "POST" else None)
        assert words in error_of(response, 401), path
        assert response.headers["www-authenticate"].startswith('Bearer realm="resshift"')
        assert ('error="invalid_token"' in response.headers["www-authenticate"]) == (words == "wrong API key")


def test_the_right_key_opens_v1_and_the_rest_stays_open(keyed_client):
    assert keyed_client.get("/v1/models", headers=AUTH).status_code == 200
    lower_scheme = {"Authorization": f"bearer  {API_KEY} "}                # the scheme is case-insensitive
    assert keyed_client.get("/v1/models", headers=lower_scheme).status_code == 200
    response = keyed_client.post("/v1/upscale", headers=AUTH, files=IMAGE, data={"steps": "1"})
    assert response.status_code == 200, response.text
    assert decoded(response).shape == (SIZE * 4, SIZE * 4, 3)
    assert keyed_client.get("/healthz").json()["status"] == "ok"
    assert "not installed" in error_of(keyed_client.get("/"), 404)         # the page route is not guarded
    assert keyed_client.get("/openapi.json").status_code == 200


def test_a_request_without_the_key_is_refused_before_its_body_is_read(keyed_client):
    large = np.random.default_rng(0).bytes(200_000)                       # over the upload limit too
    assert "needs an API key" in error_of(keyed_client.post("/v1/upscale", files={"image": ("a.png", large)}), 401)


def test_the_key_is_compared_in_constant_time(keyed_client, monkeypatch):
    compared = []
    real = web_app.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(web_app.hmac, "compare_digest", spy)
    assert keyed_client.get("/v1/models", headers={"Authorization": "Bearer guess"}).status_code == 401
    assert keyed_client.get("/v1/models", headers=AUTH).status_code == 200
    assert compared == [(b"guess", API_KEY.encode()), (API_KEY.encode(), API_KEY.encode())]


def test_openapi_marks_the_bearer_scheme_on_v1_only(keyed_client, client):
    schema = keyed_client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "description": "the key given to resshift serve --api-key"}
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            assert (operation.get("security") == [{"apiKey": []}]) == path.startswith("/v1/"), path
            assert ("401" in operation["responses"]) == path.startswith("/v1/"), path
    assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})


def test_cors_answers_only_the_named_origins(keyed_client, client):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    allowed = keyed_client.options("/v1/upscale", headers={"Origin": "https://photos.example", **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://photos.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    other = keyed_client.options("/v1/upscale", headers={"Origin": "https://evil.example", **preflight})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers

    answer = keyed_client.get("/v1/models", headers={"Origin": "https://photos.example", **AUTH})
    assert answer.headers["access-control-allow-origin"] == "https://photos.example"
    assert "content-disposition" in answer.headers["access-control-expose-headers"].lower()
    refused = keyed_client.get("/v1/models", headers={"Origin": "https://photos.example"})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "https://photos.example"
    assert "access-control-allow-origin" not in keyed_client.get(
        "/v1/models", headers={"Origin": "https://evil.example", **AUTH}).headers
    # Without --cors-origin no CORS header is ever sent (the browser's same-origin rule applies).
    plain = client.get("/v1/models", headers={"Origin": "https://photos.example"})
    assert plain.status_code == 200 and not any(h.startswith("access-control-") for h in plain.headers)
    assert client.options("/v1/upscale", headers={"Origin": "https://photos.example", **preflight}).status_code == 405


@pytest.mark.parametrize("overrides, words", [
    ({"api_key": ""}, "printable ASCII"), ({"api_key": "two words"}, "printable ASCII"),
    ({"api_key": "line\n"}, "printable ASCII"), ({"api_key": "clé"}, "printable ASCII"),
    ({"cors_origins": ("*",)}, "--cors-origin *"), ({"cors_origins": ("photos.example",)}, "web origin"),
    ({"cors_origins": ("https://photos.example/",)}, "no path"),
])
def test_settings_refuse_unusable_keys_and_origins(overrides, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        ServeSettings(**overrides)


def test_serve_refuses_a_network_host_without_a_key(model_dirs, capsys, monkeypatch):
    monkeypatch.delenv("RESSHIFT_API_KEY", raising=False)
    for host in ("0.0.0.0", "192.168.1.20", "::", "photos.example"):
        assert main(["serve", "--host", host, "--model", str(model_dirs["tiny-x4"])]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"--host {host} opens the server" in err and "--insecure" in err
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert serve_cli.is_loopback(host), host


@pytest.fixture
def served(monkeypatch):
    """Run `resshift serve` in-process up to uvicorn: the listener stays on 127.0.0.1 whatever --host says,
    and the server object that would run is captured instead of run."""
    captured = []
    monkeypatch.setattr(serve_cli, "_listen", lambda host, port: socket.create_server(("127.0.0.1", 0)))
    monkeypatch.setattr(serve_cli, "_serve", lambda server, listener: captured.append(listener.close() or server))
    return captured


def test_serve_takes_the_key_from_the_environment_or_warns_when_insecure(model_dirs, capsys, monkeypatch, served):
    model = str(model_dirs["tiny-x4"])
    monkeypatch.setenv("RESSHIFT_API_KEY", API_KEY)
    assert main(["serve", "--host", "0.0.0.0", "--model", model, "--device", "cpu",
                 "--cors-origin", "https://photos.example"]) == 0
    out, err = capsys.readouterr()
    settings_used = served[-1].config.app.state.service.settings
    assert settings_used.api_key == API_KEY and settings_used.cors_origins == ("https://photos.example",)
    assert "/v1 needs the API key" in out and API_KEY not in out + err and "WARNING" not in err
    monkeypatch.delenv("RESSHIFT_API_KEY")
    assert main(["serve", "--host", "0.0.0.0", "--insecure", "--model", model, "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "WARNING: listening on 0.0.0.0 WITHOUT an API key" in err
    assert served[-1].config.app.state.service.settings.api_key is None
    assert main(["serve", "--api-key", "", "--model", model, "--device", "cpu"]) == 2
    assert "printable ASCII" in capsys.readouterr().err


def test_sigterm_finishes_the_request_in_flight_refuses_new_ones_and_exits_0(model_dirs, tmp_path):
    """`resshift serve` in a subprocess: a request whose upload is half sent when SIGTERM arrives still gets
    its image; meanwhile the port refuses new connections; then the process exits 0 with nothing left behind."""
    temporary = tmp_path / "server-tmp"
    temporary.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(temporary)}
    env.pop("RESSHIFT_API_KEY", None)
    process = subprocess.Popen([sys.executable, "-m", "resshift", "serve", "--model", str(model_dirs["tiny-x4"]),
                                "--port", "0", "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    try:
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", first_line(process, timeout=120)).group(1))
        body, head = multipart_upload(encode(photo()), steps="1")
        with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
            connection.sendall(head + body[: len(body) // 2])
            time.sleep(0.5)                                      # the server has the request's headers
            process.send_signal(signal.SIGTERM)
            wait_until_refused(port, timeout=30)
            connection.sendall(body[len(body) // 2:])
            answer = read_to_end(connection)
        assert process.wait(60) == 0
    finally:
        process.kill()
        _, err = process.communicate()
    status, _, payload = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200"), answer[:500]
    assert Image.open(io.BytesIO(payload)).size == (4 * SIZE, 4 * SIZE)
    assert "Traceback" not in err and list(temporary.iterdir()) == []


def first_line(process: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "the server printed nothing"
    line = process.stdout.readline()
    assert line, f"the server ended: {process.stderr.read()[-2000:]}"
    return line


def multipart_upload(png: bytes, **fields: str) -> tuple[bytes, bytes]:
    """(body, request head) of POST /v1/upscale with `png` as the image and `fields` as form fields."""
    boundary = "resshift-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
             "Content-Type: image/png\r\n\r\n".encode() + png + b"\r\n"]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
              for k, v in fields.items()]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    head = (f"POST /v1/upscale HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode()
    return body, head


def wait_until_refused(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return
        assert time.monotonic() < deadline, "the server still accepts connections"
        time.sleep(0.05)


def read_to_end(connection: socket.socket) -> bytes:
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


PALETTE_BMP = encode(np.asarray(Image.fromarray(photo()).convert("P")), "BMP")


@pytest.mark.parametrize("name, data", [
    ("cut.jpg", encode(photo(), "JPEG")[:200]),                                        # Pillow: Truncated File Read
    ("palette.bmp", PALETTE_BMP[:46] + b"\xff\xff\xff\x0f" + PALETTE_BMP[50:]),      # Unsupported BMP Palette size
    ("cut.webp", encode(photo(), "WEBP")[:40]),                                        # could not create decoder
])
def test_a_broken_header_is_400_not_500(client, name, data):
    """Found by benchmarks/fuzz_inputs.py: Pillow's plugins raise OSError for headers they recognise and
    cannot read, which the upload check let through as a 500."""
    assert "truncated or corrupt" in error_of(client.post("/v1/upscale", files={"image": (name, data)}), 400)
