"""The bounded executor that runs codec work off the event loop.

One per process, sized to the cores this process may use. PyAV releases
the GIL inside libavcodec/libswscale/libswresample and ctypes releases it
around libopus, so long codec calls on two threads do run on two cores.
Measured (``bench media_codecs``, two streams, 2 shared cores): VP8 -> H.264
640x480 frames 1.7-2.0x faster with 2 workers than with 1, PCMU -> Opus
payloads 1.5x; Opus -> PCMU payloads (~35 µs, mostly Python) gain nothing
and each job costs ~10-40 µs of hand-over, so cheap audio is better batched
or kept on one worker.

Overload degrades quality, never latency or memory: at most ``per_key``
jobs of one stream wait (a job is one frame: one audio packet, or a whole
video frame however many RTP payloads it came in); a new job beyond that
evicts the oldest waiting job *of the same stream* (counted in
``gatewayd_media_queue_drops_total``), whose future fails with
``JobDropped`` and whose ``on_drop`` runs so its stream can treat the lost
work as a lost packet (conceal, ask for a keyframe). The bound thus grows
with the streams being transcoded, and a stream that falls behind loses its
own oldest work, not the other streams'. ``max_queued`` optionally caps all
waiting jobs together (then the oldest of all goes).

An earlier version had only a global bound of 4 jobs per worker with a job
per RTP payload: a 640x480 keyframe (17-31 payloads) overflowed it on its
own and the video never recovered (9-11 % of video jobs dropped).

Jobs with the same ``key`` (one per stream) run one at a time and in
submission order: a codec context is stateful and not thread-safe, and
frames must come out in order.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from gateway.errors import Unavailable
from gateway.log import get_logger
from gateway.metrics import MEDIA_QUEUE_DROPS

T = TypeVar("T")

_log = get_logger("mediacodecs.executor")
_LOG_EVERY = 1000  # drops: a full queue drops thousands a minute, the log says so once a while


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class JobDropped(Unavailable):
    """A queued media job was evicted because the media queue was full."""


@dataclass(eq=False)
class _Job(Generic[T]):
    fn: Callable[[], T]
    key: Hashable | None
    on_drop: Callable[[], None] | None
    future: Future[T] = field(default_factory=Future)


class MediaExecutor:
    """A thread pool with a bounded, drop-oldest queue and per-key ordering."""

    def __init__(
        self,
        workers: int | None = None,
        *,
        per_key: int = 4,
        max_queued: int | None = None,
        name: str = "media",
    ) -> None:
        if per_key < 1 or (max_queued is not None and max_queued < 1):
            raise ValueError("queue bounds must be at least 1")
        self.workers = workers or usable_cores()
        # Four frames per stream: 80 ms of audio, 270 ms of 15 fps video;
        # enough to ride out a burst, too few to build seconds of latency.
        self.per_key = per_key
        self.max_queued = max_queued
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._pending: deque[_Job[Any]] = deque()
        self._waiting: dict[Hashable, int] = {}  # per key: jobs in _pending
        self._busy_keys: set[Hashable] = set()
        self._running = 0
        self._closed = False
        self.dropped = 0
        self.completed = 0

    @property
    def queued(self) -> int:
        """Jobs waiting for a worker."""
        return len(self._pending)

    def submit(
        self,
        fn: Callable[[], T],
        *,
        key: Hashable | None = None,
        on_drop: Callable[[], None] | None = None,
    ) -> Future[T]:
        """Queue ``fn``; jobs of one ``key`` run in order, one at a time.

        Jobs without a key are bounded together, as if they shared one."""
        job: _Job[T] = _Job(fn, key, on_drop)
        evicted: _Job[Any] | None = None
        with self._lock:
            if self._closed:
                raise RuntimeError("the media executor is shut down")
            if self._waiting.get(key, 0) >= self.per_key:
                evicted = next(j for j in self._pending if j.key == key)
            elif self.max_queued is not None and len(self._pending) >= self.max_queued:
                evicted = self._pending[0]
            if evicted is not None:
                self._remove_locked(evicted)
                self.dropped += 1
            self._pending.append(job)
            self._waiting[key] = self._waiting.get(key, 0) + 1
            self._dispatch_locked()
        if evicted is not None:
            self._drop(evicted)
        return job.future

    async def run(self, fn: Callable[[], T], *, key: Hashable | None = None) -> T:
        """``submit`` for coroutines: the result, or JobDropped."""
        return await asyncio.wrap_future(self.submit(fn, key=key))

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop: waiting jobs are dropped, running ones finish (``wait``: joined)."""
        with self._lock:
            self._closed = True
            waiting = list(self._pending)
            self._pending.clear()
            self._waiting.clear()
        for job in waiting:
            job.future.cancel()
        self._pool.shutdown(wait=wait)

    def __enter__(self) -> MediaExecutor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.shutdown()

    def _drop(self, job: _Job[Any]) -> None:
        MEDIA_QUEUE_DROPS.inc()
        if self.dropped % _LOG_EVERY == 1:
            _log.warning("media queue full, dropping oldest jobs", dropped=self.dropped)
        job.future.set_exception(JobDropped("media queue full"))
        if job.on_drop is not None:
            job.on_drop()

    def _next_job_locked(self) -> _Job[Any] | None:
        """The oldest waiting job whose stream is not running, now marked running."""
        if self._closed:
            return None
        job = next((j for j in self._pending if j.key not in self._busy_keys), None)
        if job is not None:
            self._remove_locked(job)
            if job.key is not None:
                self._busy_keys.add(job.key)
        return job

    def _remove_locked(self, job: _Job[Any]) -> None:
        if self._pending[0] is job:
            self._pending.popleft()
        else:
            self._pending.remove(job)
        left = self._waiting[job.key] - 1
        if left:
            self._waiting[job.key] = left
        else:
            del self._waiting[job.key]

    def _dispatch_locked(self) -> None:
        while self._running < self.workers:
            job = self._next_job_locked()
            if job is None:
                return  # nothing waiting, or only streams already running
            self._running += 1
            self._pool.submit(self._drain, job)

    def _drain(self, job: _Job[Any] | None) -> None:
        # A worker keeps taking jobs until none is eligible: handing each job
        # to the pool separately cost ~50 µs of wake-up per job (measured),
        # more than a G.711 or Opus decode.
        while job is not None:
            self._run(job)
            with self._lock:
                self.completed += 1
                if job.key is not None:
                    self._busy_keys.discard(job.key)
                job = self._next_job_locked()
                if job is None:
                    self._running -= 1

    @staticmethod
    def _run(job: _Job[Any]) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            job.future.set_result(job.fn())
        except BaseException as error:  # handed to the future's owner
            _log.error("media job failed", error=repr(error))
            job.future.set_exception(error)
