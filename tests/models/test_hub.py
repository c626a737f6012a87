"""Official models by name (resshift.hub): download, resume, convert, cache, and every way it can fail.

A local HTTP server on 127.0.0.1 stands in for the release page (Range requests, and faults injected
per file: cut connections, stalls, HTTP errors, HTML pages). It serves official-layout `.pth` files
built from the weight recipe of ../shared/reference/official_v3/README.md: small networks registered
as extra presets for most tests, and the full realsr-v3 files for one. Nothing touches the internet.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config
from official_reference import UNET_SEED, VQGAN_SEED, recipe_state_dict
from resshift import hub
from resshift.errors import CheckpointError, ConfigError, DownloadError, OfflineError
from resshift.models import load_model
from resshift.nets.swin_unet import SwinUNet
from resshift.nets.vqgan import VQGAN
from resshift.pipeline import ResShiftPipeline
from resshift.presets import PRESETS, Preset, get_preset

FAST = hub.RetryPolicy(attempts=3, first_delay_s=0.01, max_delay_s=0.05, timeout_s=2.0)
ONCE = dataclasses.replace(FAST, attempts=1)
# Extra presets with small networks: tiny-sr and tiny-sr2 share their autoencoder file, as the
# official x4 SR models do; tiny-inpaint has an autoencoder file of its own.
TINY_PRESETS = (
    Preset("tiny-sr", "small x4 SR for tests", tiny_config(), "tiny_sr_unet.pth", "tiny_vq.pth"),
    Preset("tiny-sr2", "second small x4 SR", tiny_config(), "tiny_sr2_unet.pth", "tiny_vq.pth"),
    Preset("tiny-inpaint", "small inpainting", tiny_config("inpaint", scale=1), "tiny_inpaint_unet.pth",
           "tiny_inpaint_vq.pth"),
)


# ---------------------------------------------------------------------------------- files and server

def pth_bytes(data: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(data, buffer)
    return buffer.getvalue()


def as_trained(state: dict[str, torch.Tensor]) -> dict:
    """How training scripts save: DDP prefixes inside a wrapper dict, numpy counters beside it."""
    return {"state_dict": {f"module.{k}": v for k, v in state.items()}, "step": np.int64(300000),
            "loss": np.float32(0.0213), "meta": {"lr": 5e-5, "config": "tiny"}}


@pytest.fixture(scope="session")
def tiny_release() -> dict[str, bytes]:
    files = {}
    for preset in TINY_PRESETS:
        unet = recipe_state_dict(SwinUNet(preset.config.unet), UNET_SEED + len(files))
        files[preset.unet_file] = pth_bytes(as_trained(unet))
        files[preset.autoencoder_file] = pth_bytes(recipe_state_dict(VQGAN(preset.config.autoencoder), VQGAN_SEED))
    return files


@dataclasses.dataclass
class Fault:
    """What the server does to one request for a file instead of answering it plainly."""

    status: int | None = None        # answer with this HTTP error
    html: bool = False               # answer 200 with an HTML page
    cut_after: int | None = None     # close the connection after this many body bytes
    stall_s: float = 0.0             # wait this long after the first body bytes
    ignore_range: bool = False       # answer 200 with the whole file to a Range request


class ReleaseServer:
    """Serves `files` by name with Range support; `faults[name]` is consumed one per request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list[Fault]] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.bytes_sent: Counter[str] = Counter()
        self.pace_s = 0.0                # pause between 64 KiB pieces, to make transfers overlap
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/releases/v2.0"

    def count(self, name: str) -> int:
        return sum(1 for requested, _ in self.requests if requested == name)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name, wanted = self.path.rsplit("/", 1)[-1], self.headers.get("Range")
                server.requests.append((name, wanted))
                queue = server.faults.get(name, [])
                fault = queue.pop(0) if queue else Fault()
                if fault.status or name not in server.files:
                    self.send_error(fault.status or 404)
                elif fault.html:
                    self.answer(200, b"<!DOCTYPE html><html><body>Sign in</body></html>", "text/html", {})
                else:
                    self.send_file(name, server.files[name], wanted, fault)

            def send_file(self, name, data, wanted, fault):
                start = int(wanted.removeprefix("bytes=").rstrip("-")) if wanted and not fault.ignore_range else 0
                if start >= len(data) > 0:
                    self.send_error(416)
                    return
                headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"} if start else {}
                body = data[start:]
                self.answer(206 if start else 200, body, "application/octet-stream", headers, name, fault)

            def answer(self, status, body, content_type, headers, name="", fault=Fault()):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if fault.cut_after is not None:
                    body = body[:fault.cut_after]
                for offset in range(0, len(body), 1 << 16):
                    piece = body[offset:offset + (1 << 16)]
                    try:
                        self.wfile.write(piece)
                    except OSError:              # the client gave up (a stall it timed out on)
                        return
                    server.bytes_sent[name] += len(piece)
                    time.sleep(fault.stall_s if offset == 0 else server.pace_s)

        return Handler


@pytest.fixture(autouse=True)
def no_internet(tmp_path, monkeypatch):
    """Whatever a test forgets to set, it never reaches the real release page nor the user's cache."""
    monkeypatch.setenv("RESSHIFT_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("RESSHIFT_OFFLINE", "1")
    monkeypatch.setenv("RESSHIFT_MODEL_URL", "http://127.0.0.1:9")      # the discard port: refused


@pytest.fixture
def release(tiny_release, tmp_path, monkeypatch):
    """The local release server holding the tiny presets' files, and an empty cache for this test."""
    server = ReleaseServer()
    server.files.update(tiny_release)
    thread = threading.Thread(target=server.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("RESSHIFT_MODEL_URL", server.url)
    monkeypatch.delenv("RESSHIFT_OFFLINE")
    for preset in TINY_PRESETS:
        monkeypatch.setitem(PRESETS, preset.name, preset)
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def leftovers(cache: Path) -> list[str]:
    """Everything in the cache besides lock files."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() and p.parent.name != "locks")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------- registry and cache

def test_registry_names_every_official_file_and_its_release_url(monkeypatch):
    monkeypatch.delenv("RESSHIFT_MODEL_URL", raising=False)
    for preset in PRESETS.values():
        if preset.unet_file is None:
            continue
        unet, autoencoder = hub.release_files(preset.name)
        assert (unet.name, autoencoder.name) == (preset.unet_file, preset.autoencoder_file)
        assert unet.url == f"https://github.com/zsyOAOA/ResShift/releases/download/v2.0/{preset.unet_file}"
    assert hub.release_files("inpaint-imagenet")[0].name == "resshift_inpainting_imagenet_s4.pth"
    assert hub.release_files("inpaint_face")[0].name == "resshift_inpainting_face_s4.pth"
    assert hub.is_official_name("realsr-x2") and hub.is_official_name("Realsr_V3")
    assert not hub.is_official_name("realsr-x4")          # a bundled model, not an official one
    with pytest.raises(ConfigError, match="realsr-x2: no official weights were released"):
        hub.ensure_model("realsr-x2")
    with pytest.raises(ConfigError, match="unknown preset 'realsr-v9'"):
        hub.ensure_model("realsr-v9")
    rows = {row.name: row for row in hub.list_official()}
    assert "realsr-x2" not in rows and rows["faceir"].task == "face"
    assert rows["realsr-v3"].licence == "S-Lab License 1.0"


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("RESSHIFT_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert hub.cache_dir() == Path.home() / ".cache" / "resshift"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "resshift"
    monkeypatch.setenv("RESSHIFT_HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home"


# ---------------------------------------------------------------------------------- downloading and converting

def test_official_model_by_name_equals_from_official(release, tmp_path, capsys, one_thread):
    folder = hub.ensure_model("tiny-sr", retry=FAST)
    assert release.count("tiny_sr_unet.pth") == release.count("tiny_vq.pth") == 1
    err = capsys.readouterr().err
    assert "S-Lab License 1.0" in err and "non-commercial" in err
    assert "tiny_sr_unet.pth" in err and "B/s" in err                 # the progress bar: name, size, speed

    manifest = json.loads((folder / "manifest.json").read_text())
    assert [(s["file"], s["url"], s["size"], s["sha256"]) for s in manifest["sources"]] == [
        (name, f"{release.url}/{name}", len(release.files[name]), sha256(release.files[name]))
        for name in ("tiny_sr_unet.pth", "tiny_vq.pth")]
    assert sorted(manifest["files"]) == ["LICENSE", "config.json", "model.safetensors"]
    notice = (folder / "LICENSE").read_text()
    assert notice.startswith("S-Lab License 1.0") and "non-commercial" in notice
    assert hub.LICENCE_URL in notice and f"{release.url}/tiny_sr_unet.pth" in notice

    for name in ("tiny_sr_unet.pth", "tiny_vq.pth"):
        (tmp_path / name).write_bytes(release.files[name])
    official = ResShiftPipeline.from_official(tmp_path / "tiny_sr_unet.pth", tmp_path / "tiny_vq.pth", task="tiny-sr")
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    outputs = [pipe(image, generator=torch.Generator().manual_seed(7), steps=2)
               for pipe in (official, ResShiftPipeline.from_pretrained("tiny-sr"), load_model("tiny-sr"))]
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])

    requests = len(release.requests)
    assert hub.ensure_model("tiny-sr") == folder == hub.cached_model("tiny-sr")
    assert len(release.requests) == requests                          # served from the cache
    row = next(row for row in hub.list_official() if row.name == "tiny-sr")
    assert row.cached and row.download_bytes == sum(s["size"] for s in manifest["sources"])
    # the UNet file is dropped after conversion; the autoencoder stays for tiny-sr2, which shares it
    assert leftovers(hub.cache_dir()) == ["downloads/tiny_vq.pth", *(f"models/tiny-sr/{name}" for name in
                                          ("LICENSE", "config.json", "manifest.json", "model.safetensors"))]


def test_shared_autoencoder_is_downloaded_once(release):
    hub.ensure_model("tiny-sr", retry=FAST, progress=False)
    hub.ensure_model("tiny-sr2", retry=FAST, progress=False)
    assert release.count("tiny_vq.pth") == 1
    hub.ensure_model("tiny-inpaint", keep_pth=True, retry=FAST, progress=False)
    assert sorted(p.name for p in (hub.cache_dir() / "downloads").iterdir()) == [
        "tiny_inpaint_unet.pth", "tiny_inpaint_vq.pth", "tiny_vq.pth"]


def test_interrupted_transfer_resumes_where_it_stopped(release):
    name = "tiny_sr_unet.pth"
    size = len(release.files[name])
    release.faults[name] = [Fault(cut_after=size // 2)]
    with pytest.raises(DownloadError, match=f"{name}: download failed after 1 tries .*next run resumes"):
        hub.ensure_model("tiny-sr", retry=ONCE, progress=False)
    part = hub.cache_dir() / "downloads" / f"{name}.part"
    kept = part.stat().st_size
    assert 0 < kept <= size // 2 and leftovers(hub.cache_dir()) == [f"downloads/{name}.part"]

    hub.ensure_model("tiny-sr", retry=ONCE, progress=False)
    assert release.requests[-2:] == [(name, f"bytes={kept}-"), ("tiny_vq.pth", None)]
    assert release.bytes_sent[name] <= size + hub.CHUNK_BYTES
    recorded = json.loads((hub.cache_dir() / "models/tiny-sr/manifest.json").read_text())["sources"][0]
    assert recorded["sha256"] == sha256(release.files[name])


@pytest.mark.parametrize("fault", [Fault(status=503), Fault(cut_after=100_000), Fault(stall_s=1.0),
                                   Fault(status=429)], ids=["503", "cut", "stall", "429"])
def test_passing_failures_are_retried(release, fault):
    name = "tiny_sr_unet.pth"
    release.faults[name] = [fault]
    hub.ensure_model("tiny-sr", retry=dataclasses.replace(FAST, timeout_s=0.3), progress=False)
    assert release.count(name) == 2
    recorded = json.loads((hub.cache_dir() / "models/tiny-sr/manifest.json").read_text())["sources"][0]
    assert recorded["sha256"] == sha256(release.files[name])


def test_server_ignoring_range_restarts_cleanly(release):
    name = "tiny_sr_unet.pth"
    release.faults[name] = [Fault(cut_after=300_000), Fault(ignore_range=True)]
    hub.ensure_model("tiny-sr", retry=FAST, progress=False)
    assert [wanted for requested, wanted in release.requests if requested == name] == [None, "bytes=300000-"]
    recorded = json.loads((hub.cache_dir() / "models/tiny-sr/manifest.json").read_text())["sources"][0]
    assert recorded["size"] == len(release.files[name]) and recorded["sha256"] == sha256(release.files[name])


def test_stale_partial_files_are_discarded(release):
    name = "tiny_sr_unet.pth"
    part = hub.cache_dir() / "downloads" / f"{name}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * (len(release.files[name]) + 1))     # longer than the file: HTTP 416, start over
    hub.ensure_model("tiny-sr", retry=FAST, progress=False)
    assert [wanted for requested, wanted in release.requests if requested == name] == [
        f"bytes={len(release.files[name]) + 1}-", None]

    name = "tiny_sr2_unet.pth"
    part = part.with_name(f"{name}.part")
    part.write_bytes(b"\0" * 1000)          # the start of some other file: the whole is not a checkpoint
    with pytest.raises(CheckpointError, match=f"{name}: downloaded file rejected: .*not a readable PyTorch"):
        hub.ensure_model("tiny-sr2", retry=FAST, progress=False)
    assert not part.exists()
    hub.ensure_model("tiny-sr2", retry=FAST, progress=False)


def test_concurrent_requests_for_one_model_download_it_once(release):
    """Two callers at once (threads here: flock locks each open file, so they exclude each other as
    processes would): one downloads and converts, the other waits and gets the same folder."""
    release.pace_s = 0.002
    results, errors = [], []

    def fetch():
        try:
            results.append(hub.ensure_model("tiny-sr", retry=FAST, progress=False))
        except Exception as exc:   # reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 2 and results[0] == results[1]
    assert release.count("tiny_sr_unet.pth") == release.count("tiny_vq.pth") == 1
    hub.verify("tiny-sr")


def test_two_processes_fetching_one_model_download_it_once(release):
    release.pace_s = 0.003           # a download long enough for the second process to find it locked
    script = ("import sys; from test_hub import TINY_PRESETS; from resshift import hub; "
              "from resshift.presets import PRESETS; PRESETS.update((p.name, p) for p in TINY_PRESETS); "
              "print(hub.ensure_model('tiny-sr', retry=hub.RetryPolicy(attempts=2), progress=False))")
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parents[1] / "src"), str(here), str(here.parent)])}
    processes = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err for _, err in results]
    folders = {out.strip() for out, _ in results}
    assert folders == {str(hub.cache_dir() / "models" / "tiny-sr")}
    assert release.count("tiny_sr_unet.pth") == release.count("tiny_vq.pth") == 1
    hub.verify("tiny-sr")


# ---------------------------------------------------------------------------------- offline

def test_offline_mode_never_connects_and_uses_files_already_there(release, monkeypatch):
    monkeypatch.setenv("RESSHIFT_OFFLINE", "1")
    with pytest.raises(OfflineError) as info:
        hub.ensure_model("tiny-sr", retry=FAST)
    message = str(info.value)
    assert "RESSHIFT_OFFLINE" in message and f"{release.url}/tiny_sr_unet.pth" in message
    assert f"{release.url}/tiny_vq.pth" in message and "resshift convert --unet tiny_sr_unet.pth" in message
    assert release.requests == [] and leftovers(hub.cache_dir()) == []

    downloads = hub.cache_dir() / "downloads"          # the files, fetched some other way
    downloads.mkdir(parents=True)
    for file in hub.release_files("tiny-sr"):
        (downloads / file.name).write_bytes(release.files[file.name])
    assert hub.ensure_model("tiny-sr", progress=False) == hub.verify("tiny-sr") and release.requests == []


def test_no_network_gives_one_offline_error(tmp_path, monkeypatch):
    with socket.socket() as probe:      # a port nobody listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("RESSHIFT_MODEL_URL", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("RESSHIFT_OFFLINE")
    with pytest.raises(OfflineError) as info:
        hub.ensure_model("realsr-v3", retry=FAST, progress=False)
    message = str(info.value)
    assert "cannot be reached" in message and "refused" in message and "\n" not in message
    for name in ("resshift_realsrx4_s4_v3.pth", "autoencoder_vq_f4.pth"):
        assert f"http://127.0.0.1:{port}/{name}" in message
    assert "resshift convert" in message and leftovers(tmp_path / "cache") == []


# ---------------------------------------------------------------------------------- bad cases

class RunsCode:
    """A pickle payload: unpickling it would call os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def serve_missing(server, tmp_path):
    del server.files["tiny_sr_unet.pth"]


def serve_html(server, tmp_path):
    server.faults["tiny_sr_unet.pth"] = [Fault(html=True)] * 5


def serve_cut_short(server, tmp_path):
    server.faults["tiny_sr_unet.pth"] = [Fault(cut_after=200_000)] * 5


def serve_another_network(server, tmp_path):
    server.files["tiny_sr_unet.pth"] = server.files["tiny_vq.pth"]


def serve_pickle_payload(server, tmp_path):
    server.files["tiny_sr_unet.pth"] = pth_bytes({"w": torch.ones(1), "x": RunsCode(tmp_path / "ran")})


@pytest.mark.parametrize("serve, error, message, part_kept", [
    (serve_missing, DownloadError, "tiny_sr_unet.pth: HTTP 404", False),
    (serve_html, DownloadError, "tiny_sr_unet.pth: the server answered with an HTML page", False),
    (serve_cut_short, DownloadError, "tiny_sr_unet.pth: download failed after 3 tries .*cut short", True),
    (serve_another_network, CheckpointError, "tiny_sr_unet.pth: downloaded file rejected: .*does not fit SwinUNet",
     False),
    (serve_pickle_payload, CheckpointError, "tiny_sr_unet.pth: downloaded file rejected: .*not a plain weights file",
     False),
], ids=["404", "html", "cut-short", "another-network", "pickle-payload"])
def test_bad_downloads_fail_in_one_line_and_leave_nothing_partial(release, tmp_path, serve, error, message,
                                                                  part_kept):
    serve(release, tmp_path)
    with pytest.raises(error, match=message) as info:
        hub.ensure_model("tiny-sr", retry=FAST, progress=False)
    assert "\n" not in str(info.value) and f"{release.url}/tiny_sr_unet.pth" in str(info.value)
    assert leftovers(hub.cache_dir()) == (["downloads/tiny_sr_unet.pth.part"] if part_kept else [])
    assert hub.cached_model("tiny-sr") is None and not (tmp_path / "ran").exists()
    if serve in (serve_missing, serve_html):
        assert release.count("tiny_sr_unet.pth") == 1            # not worth retrying


def test_full_disk_while_downloading(release, monkeypatch):
    real_open = open

    def open_on_a_full_disk(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if str(path).endswith(".part"):
            def write(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            handle.write = write
        return handle

    monkeypatch.setattr(hub, "open", open_on_a_full_disk, raising=False)
    with pytest.raises(DownloadError, match="cannot write to the model cache .*No space left on device") as info:
        hub.ensure_model("tiny-sr", retry=FAST, progress=False)
    assert "\n" not in str(info.value) and release.count("tiny_sr_unet.pth") == 1    # a full disk is not retried
    assert hub.cached_model("tiny-sr") is None
    assert leftovers(hub.cache_dir()) in ([], ["downloads/tiny_sr_unet.pth.part"])


def test_full_disk_while_converting_leaves_no_half_model(release, monkeypatch):
    def write_half_then_fail(path, data):
        Path(path).write_bytes(data[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("resshift.checkpoints.atomic_write_bytes", write_half_then_fail)
    with pytest.raises(DownloadError, match="No space left on device: .*model.safetensors"):
        hub.ensure_model("tiny-sr", retry=FAST, progress=False)
    assert leftovers(hub.cache_dir()) == ["downloads/tiny_sr_unet.pth", "downloads/tiny_vq.pth"]
    assert list((hub.cache_dir() / "models").iterdir()) == []


@pytest.mark.parametrize("cause", ["read-only folder", "path through a file"])
def test_unwritable_cache_is_one_clear_error(release, tmp_path, monkeypatch, cause):
    if cause == "read-only folder":
        if os.geteuid() == 0:
            pytest.skip("running as root, which writes through chmod; 'path through a file' covers the case")
        cache = tmp_path / "readonly"
        cache.mkdir(mode=0o555)
    else:
        (tmp_path / "a-file").write_text("")
        cache = tmp_path / "a-file" / "cache"
    monkeypatch.setenv("RESSHIFT_HOME", str(cache))
    with pytest.raises(DownloadError, match=f"cannot write to the model cache {cache} ") as info:
        hub.ensure_model("tiny-sr", retry=FAST, progress=False)
    assert "RESSHIFT_HOME" in str(info.value) and release.requests == []


def test_damaged_cached_model_is_reported(release):
    folder = hub.ensure_model("tiny-sr", retry=FAST, progress=False)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{weights}: differs from the file converted.*delete {folder}"):
        hub.ensure_model("tiny-sr")
    (folder / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="manifest.json: missing or unreadable"):
        hub.verify("tiny-sr")
    assert hub.cached_model("tiny-sr") is None


# ---------------------------------------------------------------------------------- the real file layout

@pytest.fixture(scope="session")
def realsr_v3_release() -> tuple[dict[str, bytes], dict[str, torch.Tensor]]:
    """The full realsr-v3 release files (every official key and shape; 475 + 221 MB) from the recipe,
    and the state_dict of the pipeline that `ResShiftPipeline.from_official` would build from them."""
    config = get_preset("realsr-v3").config
    unet = recipe_state_dict(SwinUNet(config.unet), UNET_SEED)
    autoencoder = recipe_state_dict(VQGAN(config.autoencoder), VQGAN_SEED)
    files = {"resshift_realsrx4_s4_v3.pth": pth_bytes(unet), "autoencoder_vq_f4.pth": pth_bytes(autoencoder)}
    return files, {**{f"unet.{k}": v for k, v in unet.items()}, **{f"autoencoder.{k}": v for k, v in autoencoder.items()}}


def test_full_size_realsr_v3_by_name_in_fp16(release, realsr_v3_release):
    files, expected = realsr_v3_release
    release.files.update(files)
    folder = hub.ensure_model("realsr-v3", dtype=torch.float16, retry=FAST, progress=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["dtype"] == "float16"
    assert {s["file"]: s["sha256"] for s in manifest["sources"]} == {name: sha256(data) for name, data in files.items()}
    converted = ResShiftPipeline.from_pretrained("realsr-v3", dtype=torch.float16)
    assert converted.config == get_preset("realsr-v3").config
    state = converted.networks().state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value.half() if value.is_floating_point() else value), key


# ---------------------------------------------------------------------------------- the commands

def test_upscale_by_official_name_downloads_once_and_matches_from_official(release, tmp_path, one_thread):
    from PIL import Image

    from resshift.batch import RestoreOptions
    from resshift.cli import main
    from resshift.imageio import read_image, write_image
    from resshift.tasks import restore_image

    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(photo)
    assert main(["upscale", "-i", str(photo), "-o", str(tmp_path / "out"), "--model", "tiny-sr", "-q"]) == 0
    assert release.count("tiny_sr_unet.pth") == release.count("tiny_vq.pth") == 1
    for name in ("tiny_sr_unet.pth", "tiny_vq.pth"):
        (tmp_path / name).write_bytes(release.files[name])
    official = ResShiftPipeline.from_official(tmp_path / "tiny_sr_unet.pth", tmp_path / "tiny_vq.pth", task="tiny-sr")
    write_image(tmp_path / "expected.png", restore_image(official, read_image(photo), RestoreOptions()))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "photo_out.png")),
                                  np.asarray(Image.open(tmp_path / "expected.png")))
    requests = len(release.requests)
    assert main(["upscale", "-i", str(photo), "-o", str(tmp_path / "again"), "--model", "tiny-sr", "-q"]) == 0
    assert len(release.requests) == requests                          # the second run makes no request
    assert read_image(tmp_path / "again" / "photo_out.png").pixels.shape == (64, 64, 3)


def test_download_command_and_models_listing(release, capsys):
    from resshift.cli import main

    assert main(["download", "tiny-sr", "tiny-inpaint", "--dtype", "fp16"]) == 0
    out = capsys.readouterr().out
    assert f"tiny-sr: {hub.cache_dir() / 'models' / 'tiny-sr'}" in out and "tiny-inpaint: " in out
    assert ResShiftPipeline.from_pretrained("tiny-sr").unet.out[-1].weight.dtype == torch.float32   # loads as asked
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert f"cache: {hub.cache_dir()}" in listing
    line = next(line for line in listing.splitlines() if line.strip().startswith("tiny-sr2 "))
    assert " - " in line and "download" in line and "S-Lab License 1.0" in line          # not cached yet
    line = next(line for line in listing.splitlines() if line.strip().startswith("tiny-sr "))
    assert "cached" in line and "realsr-x2" in listing.splitlines()[-1]
    from resshift.web.app import folder_licence           # what GET /v1/models shows for a served model
    assert folder_licence("tiny-sr") == "S-Lab License 1.0"
    release.faults["tiny_sr2_unet.pth"] = [Fault(status=404)] * 5
    assert main(["download", "tiny-sr2", "realsr-x2"]) == 1                # each failure reported, exit 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 2 and "404" in errors[0] and "no official weights were released" in errors[1]
    assert not (hub.cache_dir() / "models" / "tiny-sr2").exists()


def test_a_failed_download_fails_the_command_with_exit_code_1(release, tmp_path, capsys):
    from resshift.cli import main

    release.faults["tiny_sr_unet.pth"] = [Fault(status=404)] * 5
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"")
    assert main(["upscale", "-i", str(photo), "-o", str(tmp_path / "out"), "--model", "tiny-sr"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if "error:" in line]) == 1 and "404" in err[-1]
