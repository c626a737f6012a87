"""`resshift serve` under load: a real uvicorn server on the loopback interface, 8 clients sending 50
requests at once, twice. Every answer must be the image or a deliberate 503 with Retry-After, the
server must end idle with no files left, and its memory must not grow from one round to the next."""

from __future__ import annotations

import io
import itertools
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from resshift.pipeline import ResShiftPipeline
from resshift.web import ServeSettings, create_app

from conftest import tiny_config
from serving import STATM, resident_bytes, served

CLIENTS = 8
REQUESTS = 50
SIZE = 16
BACKOFF = 0.2


@pytest.fixture
def server(tmp_path, monkeypatch, one_thread):
    """A served tiny x4 model with one worker and two waiting places, so that 8 clients overflow it;
    yields (base URL, the app's service, tempfile's folder)."""
    torch.manual_seed(0)
    ResShiftPipeline.from_config(tiny_config()).save_pretrained(tmp_path / "tiny-x4")
    app = create_app(ServeSettings(models=(str(tmp_path / "tiny-x4"),), device="cpu", workers=1, queue_size=2))
    uploads = tmp_path / "tempfile"     # after loading: torch may keep a cache folder in tempfile's
    uploads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(uploads))
    with served(app) as port:
        yield f"http://127.0.0.1:{port}", app.state.service, uploads


def one_round(url: str, image: bytes) -> list[httpx.Response]:
    """REQUESTS uploads shared by CLIENTS clients, each sending its next one as soon as it has an answer,
    or BACKOFF seconds after a 503 (a shortened Retry-After, so that the queue keeps overflowing)."""
    numbers = itertools.count()
    lock = threading.Lock()

    def client() -> list[httpx.Response]:
        answers = []
        with httpx.Client(base_url=url, timeout=60) as http:
            while True:
                with lock:
                    if next(numbers) >= REQUESTS:
                        return answers
                answers.append(http.post("/v1/upscale", files={"image": ("a.png", image)}, data={"steps": "1"}))
                if answers[-1].status_code == 503:
                    time.sleep(BACKOFF)

    with ThreadPoolExecutor(CLIENTS) as pool:
        return [answer for answers in pool.map(lambda _: client(), range(CLIENTS)) for answer in answers]


def check(answers: list[httpx.Response]) -> int:
    """Every answer is a PNG of the upscaled size or a 503 with a whole Retry-After; returns the 503s."""
    assert len(answers) == REQUESTS
    refused = 0
    for answer in answers:
        if answer.status_code == 503:
            assert int(answer.headers["retry-after"]) >= 1
            assert "busy" in answer.json()["error"]
            refused += 1
        else:
            assert answer.status_code == 200, answer.text
            assert Image.open(io.BytesIO(answer.content)).size == (SIZE * 4, SIZE * 4)
    return refused



@pytest.mark.skipif(not STATM.exists(), reason="reads the resident memory from Linux's /proc")
def test_load_gets_images_or_503_and_memory_stays_flat(server):
    url, service, uploads = server
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(buffer, "PNG")
    image = buffer.getvalue()

    first = one_round(url, image)
    after_first = resident_bytes()
    second = one_round(url, image)
    after_second = resident_bytes()

    refused = check(first) + check(second)
    assert 0 < refused < 2 * REQUESTS, f"{refused} of {2 * REQUESTS} refused: the queue limit was not exercised"
    assert service.queue.admitted == 0
    assert list(uploads.iterdir()) == []
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok", "models": 1}
    assert after_second <= after_first * 1.15 + 50 * 2**20, (
        f"resident memory grew from {after_first / 2**20:.0f} MiB to {after_second / 2**20:.0f} MiB")
