"""What the web tests share: the app served by a real uvicorn server on a free loopback port, in a thread,
and the process's resident memory."""

from __future__ import annotations

import contextlib
import gc
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn

STATM = Path("/proc/self/statm")


@contextlib.contextmanager
def served(app, log_level: str = "warning") -> Iterator[int]:
    """Serve `app` for the block; yields its port. The socket is bound before uvicorn starts: no race."""
    listener = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()


def resident_bytes() -> int:
    """This process's resident memory, after a garbage collection (Linux: /proc; pages of 4 KiB)."""
    gc.collect()
    return int(STATM.read_text().split()[1]) * 4096
