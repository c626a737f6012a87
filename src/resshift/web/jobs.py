"""A bounded job queue: at most `workers` model calls run at once, at most `queue_size` more wait.

Restoring an image holds a model's activations in memory for seconds, so the server admits only as
many jobs as it can hold: beyond the queue a request is refused at once (`QueueFull`, which the web
layer answers with 503 and Retry-After) instead of piling up until memory runs out.

Jobs run in a pool of `workers` threads, so the event loop keeps answering other requests meanwhile.
A started job cannot be stopped: when its caller is cancelled (e.g. the server shuts down), the
caller still waits for the thread to finish before passing the cancellation on, so that whatever
the job uses (its request's temporary folder) outlives it. A job still waiting is simply dropped.
Plain asyncio and threads: nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["JobQueue", "QueueFull"]

Result = TypeVar("Result")

# How much each finished job moves the running mean of job durations (an exponential moving average).
DURATION_SMOOTHING = 0.3


class QueueFull(Exception):
    """Every worker is busy and the queue is full; `retry_after` (whole seconds, >= 1) estimates when
    a place frees up."""

    def __init__(self, waiting: int, retry_after: int) -> None:
        super().__init__(f"the server is busy ({waiting} requests waiting); retry in {retry_after} s")
        self.waiting = waiting
        self.retry_after = retry_after


class JobQueue:
    """Runs blocking jobs in `workers` threads, with room for `queue_size` waiting ones.

    `first_estimate`: the job duration (seconds) assumed for Retry-After until a job has finished.
    """

    def __init__(self, workers: int, queue_size: int, *, first_estimate: float = 10.0) -> None:
        if workers < 1 or queue_size < 0:
            raise ValueError(f"need workers >= 1 and queue_size >= 0, got {workers} and {queue_size}")
        self.workers = workers
        self.queue_size = queue_size
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="resshift-job")
        self._admitted = 0      # running + waiting; changed only on the event loop's thread
        self._running = 0
        self._mean_seconds = first_estimate
        self._lock = threading.Lock()       # guards _running and _mean_seconds, which workers change

    @property
    def admitted(self) -> int:
        """Jobs running or waiting now."""
        return self._admitted

    @property
    def running(self) -> int:
        return self._running

    async def run(self, job: Callable[[], Result]) -> Result:
        """Run `job()` in a worker thread once one is free and return its result (or raise its error).

        Raises QueueFull at once when `workers + queue_size` jobs are already admitted.
        """
        if self._admitted >= self.workers + self.queue_size:
            raise QueueFull(self._admitted - self._running, self.retry_after())
        self._admitted += 1
        try:
            future = self._pool.submit(self._timed, job)
            done = asyncio.wrap_future(future)
            try:
                return await asyncio.shield(done)
            except asyncio.CancelledError:
                if not future.cancel():         # it has started: wait for it, see the module docstring
                    await _wait_through_cancellation(done)
                raise
        finally:
            self._admitted -= 1

    def retry_after(self) -> int:
        """Seconds until a place is likely to free up: about one job's duration spread over the workers."""
        return max(1, math.ceil(self._mean_seconds / self.workers))

    def _timed(self, job: Callable[[], Result]) -> Result:
        with self._lock:
            self._running += 1
        start = time.perf_counter()
        try:
            return job()
        finally:
            elapsed = time.perf_counter() - start
            with self._lock:
                self._running -= 1
                self._mean_seconds += DURATION_SMOOTHING * (elapsed - self._mean_seconds)


async def _wait_through_cancellation(done: asyncio.Future) -> None:
    """Wait until `done` is finished, however often the waiting task is cancelled meanwhile."""
    while not done.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({done})
    if not done.cancelled():
        done.exception()        # retrieved, so that asyncio does not report it as never retrieved
