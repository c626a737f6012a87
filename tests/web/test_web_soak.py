"""A short soak of `resshift serve`: 100 mixed requests (good, corrupt, oversized, stalled and abandoned
uploads) from 8 clients against a real uvicorn server on 127.0.0.1, with the traffic and checks of
benchmarks/soak_server.py (which runs 2,000 from 16 against `resshift serve` in a subprocess)."""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import soak_server  # noqa: E402

from resshift.pipeline import ResShiftPipeline  # noqa: E402
from resshift.web import ServeSettings, create_app  # noqa: E402

from conftest import tiny_config  # noqa: E402
from serving import STATM, resident_bytes, served  # noqa: E402

READ_TIMEOUT = 1.0
MAX_UPLOAD_MB = 0.05


@pytest.fixture
def server(tmp_path, monkeypatch, one_thread):
    """A served tiny x4 model with one worker and two waiting places; yields (port, service, tempfile's folder)."""
    torch.manual_seed(0)
    ResShiftPipeline.from_config(tiny_config()).save_pretrained(tmp_path / "tiny-x4")
    app = create_app(ServeSettings(models=(str(tmp_path / "tiny-x4"),), device="cpu", workers=1, queue_size=2,
                                   read_timeout=READ_TIMEOUT, max_upload_mb=MAX_UPLOAD_MB))
    uploads = tmp_path / "tempfile"
    uploads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(uploads))
    with served(app, log_level="critical") as port:
        yield port, app.state.service, uploads



def test_a_stalled_upload_is_408_and_holds_no_worker(server):
    port, service, uploads = server
    head, body = soak_server.upload(soak_server.png(0))
    start = time.perf_counter()
    stalled = soak_server.send(port, soak_server.Request("slow", head, body), timeout=30)
    assert stalled.status == 408 and stalled.problem is None
    assert READ_TIMEOUT <= time.perf_counter() - start < READ_TIMEOUT + 5
    assert service.queue.admitted == 0 and list(uploads.iterdir()) == []


@pytest.mark.skipif(not STATM.exists(), reason="reads the resident memory from Linux's /proc")
def test_mixed_traffic_gets_the_right_answers_and_leaves_nothing_behind(server, caplog):
    port, service, uploads = server
    caplog.set_level(logging.WARNING)
    traffic = soak_server.make_requests(100, seed=0, max_body_bytes=service.settings.max_body_bytes)
    start = time.perf_counter()
    results = soak_server.run_clients(port, traffic[:10], clients=8, timeout=60)
    after_warm_up = resident_bytes()
    results += soak_server.run_clients(port, traffic[10:], clients=8, timeout=60)
    assert time.perf_counter() - start < 90
    assert [r.problem for r in results if r.problem] == []
    answers = soak_server.counts(results)
    assert set(answers) == set(soak_server.KINDS) and answers["good"].get("200", 0) > 0
    time.sleep(0.5)                                         # the server sees the last hang-ups
    assert service.queue.admitted == 0 and list(uploads.iterdir()) == []
    assert soak_server.healthy(port)
    assert resident_bytes() <= after_warm_up * 1.15 + 50 * 2**20
    assert [r.getMessage() for r in caplog.records if r.name.startswith("resshift")] == []     # no 500 was logged
