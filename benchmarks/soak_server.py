"""Soak `resshift serve`: thousands of mixed requests from many clients against a real server on 127.0.0.1.

The traffic, seeded, mixes uploads of five kinds:

| kind        | share | what the client does                                    | the answer it must get            |
|-------------|-------|---------------------------------------------------------|-----------------------------------|
| good        | 50 %  | a small PNG                                             | 200 and the image, or 503 + Retry-After |
| corrupt     | 15 %  | a truncated PNG                                         | 400 (or 503 + Retry-After)        |
| oversized   | 10 %  | a body over --max-upload-mb                             | 413                               |
| slow        | 10 %  | half the body, then nothing                             | 408 once --read-timeout passes    |
| disconnect  | 15 %  | half the body, then it hangs up                         | (none; the server must not leak)  |

Every request is plain HTTP/1.1 on its own connection (raw sockets, so that a client can stall or hang up
mid-body). The run passes when every answer is the one its kind allows (no 5xx other than 503 with
Retry-After), the server's resident memory at the end is within RSS_GROWTH of what it was after the
warm-up, its temporary folder is empty, and it still answers /healthz. It reports p50/p99 latencies.

    python benchmarks/soak_server.py [--requests 2000] [--clients 16] [--seed 0] [--results FILE.json]

The server is `resshift serve` in a subprocess with the tests' tiny model (tests/conftest.py), one worker
and a short queue (so that 503s happen), a 2 s read timeout and its TMPDIR in a fresh folder.
`tests/web/test_web_soak.py` runs 100 requests from 8 clients against an in-process server.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "soak_server.json"
KINDS = {"good": 0.50, "corrupt": 0.15, "oversized": 0.10, "slow": 0.10, "disconnect": 0.15}
ALLOWED = {"good": {200, 503}, "corrupt": {400, 503}, "oversized": {413}, "slow": {408}, "disconnect": {None}}
BOUNDARY = "resshift-soak"
RSS_GROWTH = 0.10
SIZE = 16


@dataclass(frozen=True)
class Request:
    kind: str
    head: bytes
    body: bytes


@dataclass
class Result:
    kind: str
    status: Optional[int]       # None: no answer (the client hung up, or the server closed without one)
    retry_after: Optional[str]
    seconds: float
    problem: Optional[str] = None


# ------------------------------------------------------------------------------------ the traffic
def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def upload(image: bytes, api_key: Optional[str] = None) -> tuple[bytes, bytes]:
    """(head, body) of POST /v1/upscale with `image` and steps=1, on a connection that closes after it."""
    body = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode() + image + (
        f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="steps"\r\n\r\n1\r\n--{BOUNDARY}--\r\n').encode()
    key = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
    head = (f"POST /v1/upscale HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{key}Content-Length: {len(body)}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n").encode()
    return head, body


def make_requests(count: int, seed: int, max_body_bytes: int) -> list[Request]:
    """`count` requests of the kinds in KINDS' proportions, in a seeded order; an oversized one is over
    `max_body_bytes`, the server's limit on a request's body."""
    rng = random.Random(seed)
    kinds = rng.choices(list(KINDS), weights=list(KINDS.values()), k=count)
    requests = []
    for index, kind in enumerate(kinds):
        image = png(index % 16)
        if kind == "corrupt":
            image = image[: len(image) // 2]
        elif kind == "oversized":
            image = np.random.default_rng(index).bytes(max_body_bytes + 1024)
        requests.append(Request(kind, *upload(image)))
    return requests


# ------------------------------------------------------------------------------------ one request
def send(port: int, request: Request, timeout: float) -> Result:
    """Send one request as its kind says (an oversized one: its head, whose Content-Length the server
    refuses at once) and read the answer."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        try:
            if request.kind == "oversized":
                connection.sendall(request.head)
            elif request.kind in ("slow", "disconnect"):
                connection.sendall(request.head + request.body[: len(request.body) // 2])
            else:
                connection.sendall(request.head + request.body)
            if request.kind == "disconnect":            # hang up with a reset, mid-body
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return Result(request.kind, None, None, time.perf_counter() - start)
            answer = read_answer(connection)
        except OSError as exc:
            answer = f"{type(exc).__name__}: {exc}".encode()
    return parse(request.kind, answer, time.perf_counter() - start)


def read_answer(connection: socket.socket) -> bytes:
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def parse(kind: str, answer: bytes, seconds: float) -> Result:
    """The status and Retry-After of a raw HTTP answer, and what is wrong with it for its kind."""
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    status = int(match.group(1)) if match else None
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    retry = re.search(r"(?im)^retry-after: *(\S+)", head)
    result = Result(kind, status, retry.group(1) if retry else None, seconds)
    if status not in ALLOWED[kind]:
        result.problem = f"{kind}: got {status or answer[:120]!r}, expected one of {sorted(map(str, ALLOWED[kind]))}"
    elif status == 503 and not (result.retry_after or "").isdigit():
        result.problem = f"{kind}: 503 without a Retry-After in whole seconds"
    return result


def run_clients(port: int, requests: list[Request], clients: int, timeout: float = 120.0) -> list[Result]:
    """The requests shared by `clients` threads, each sending its next one when it has its answer."""
    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(lambda request: send(port, request, timeout), requests))


def latencies(results: list[Result]) -> dict[str, float]:
    """p50 and p99 in seconds of the good requests answered 200 (the full restore, queueing included)."""
    seconds = sorted(r.seconds for r in results if r.kind == "good" and r.status == 200)
    if len(seconds) < 2:
        return {}
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return {"p50": round(cuts[49], 3), "p99": round(cuts[98], 3), "answered_200": len(seconds)}


def counts(results: list[Result]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for result in results:
        row = table.setdefault(result.kind, {})
        row[str(result.status)] = row.get(str(result.status), 0) + 1
    return table


# ------------------------------------------------------------------------------------ the server
def resident(pid: int) -> int:
    return int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1)) * 1024


def start_server(folder: Path, read_timeout: float, max_upload_mb: float) -> tuple[subprocess.Popen, int]:
    """`resshift serve` with the tests' tiny model, its TMPDIR in `folder`/tmp; (process, port)."""
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import tiny_config
    from resshift.pipeline import ResShiftPipeline

    torch.manual_seed(0)
    ResShiftPipeline.from_config(tiny_config()).save_pretrained(folder / "tiny-x4")
    (folder / "tmp").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(folder / "tmp")}
    env.pop("RESSHIFT_API_KEY", None)
    log = folder / "server.log"         # a file, not a pipe: uvicorn's access log would fill a pipe and block
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "resshift", "serve", "--model", str(folder / "tiny-x4"), "--port", "0", "--device",
             "cpu", "--workers", "1", "--queue-size", "4", "--read-timeout", str(read_timeout), "--max-upload-mb",
             str(max_upload_mb)], stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while not (match := re.search(r"http://127\.0\.0\.1:(\d+)/", log.read_text())):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"the server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    return process, int(match.group(1))


def healthy(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return read_answer(connection).startswith(b"HTTP/1.1 200")


def soak(requests: int, clients: int, seed: int, read_timeout: float = 2.0, max_upload_mb: float = 0.05) -> dict:
    """Warm up with a tenth of the traffic, then run the rest; the figures and the problems found."""
    from resshift.web.settings import ServeSettings

    traffic = make_requests(requests, seed, ServeSettings(max_upload_mb=max_upload_mb).max_body_bytes)
    warm = max(clients, requests // 10)
    with tempfile.TemporaryDirectory(prefix="resshift-soak-") as tmp:
        process, port = start_server(Path(tmp), read_timeout, max_upload_mb)
        uploads = Path(tmp) / "tmp"
        own = set(uploads.iterdir())            # the server's own (torch's compile cache): not left by requests
        try:
            start = time.perf_counter()
            results = run_clients(port, traffic[:warm], clients)
            after_warm_up = resident(process.pid)
            results += run_clients(port, traffic[warm:], clients)
            seconds = time.perf_counter() - start
            time.sleep(read_timeout + 1)        # the last stalled or dropped uploads are let go
            at_end, left = resident(process.pid), sorted(p.name for p in set(uploads.iterdir()) - own)
            alive = healthy(port)
        finally:
            process.terminate()
            code = process.wait(60)
    problems = [r.problem for r in results if r.problem]
    growth = at_end / after_warm_up - 1
    if growth > RSS_GROWTH:
        problems.append(f"resident memory grew {100 * growth:.1f} % after the warm-up")
    if left:
        problems.append(f"the server left {left} in its temporary folder")
    if not alive or code != 0:
        problems.append(f"healthz after the run: {alive}; exit code after SIGTERM: {code}")
    return {"requests": requests, "clients": clients, "seed": seed, "read_timeout": read_timeout,
            "max_upload_mb": max_upload_mb, "seconds": round(seconds, 1), "answers": counts(results),
            "latency_good_200": latencies(results), "rss_after_warm_up_mib": after_warm_up >> 20,
            "rss_at_end_mib": at_end >> 20, "rss_growth_percent": round(100 * growth, 2),
            "temporary_files_left": left, "problems": problems[:50], "problem_count": len(problems)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    from resshift.fileio import atomic_write_json

    report = soak(args.requests, args.clients, args.seed)
    print(json.dumps({k: v for k, v in report.items() if k != "problems"}, indent=2))
    for problem in report["problems"]:
        print("PROBLEM", problem)
    atomic_write_json(args.results, report)
    print(f"wrote {args.results}")
    return 1 if report["problem_count"] else 0


if __name__ == "__main__":
    sys.exit(main())
