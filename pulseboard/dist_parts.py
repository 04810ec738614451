"""Pieces of the distributed API process (``dist_service``): the log writer with group commit,
stores opened lazily (so a process starts while PostgreSQL is down), and series windows read
from the Redis hot store and PostgreSQL history.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import msgspec

from pulseboard.adapters.base import StoreUnavailable, WindowRow
from pulseboard.adapters.postgres import PostgresHistory
from pulseboard.adapters.redis_hot import RedisHotStore
from pulseboard.adapters.redis_log import RedisEventLog
from pulseboard.adapters.sqlite_log import Append

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_GROUP = 512
"""Most requests one group commit (``append_many``) carries."""
PROBE_EVERY_S = 1.0
"""After a failed append, requests are refused at once (503) for this long; then one tries."""

_Job = tuple[Append, "asyncio.Future[None]", asyncio.AbstractEventLoop]


class RedisLogWriter:
    """Appends ingest requests to the Redis log from one thread, in groups: every request
    waiting when the thread is free goes in one ``append_many`` (one round trip, one fsync).
    ``append`` returns once Redis answered the XADD of its request, or raises
    ``StoreUnavailable`` (nothing of it may be assumed appended; a retry is absorbed by the
    processors' dedupe). ``error`` is the last failure's message, None after a success."""

    def __init__(self, store: RedisEventLog) -> None:
        self.store = store
        self.error: str | None = None
        self.failed_at = 0.0  # time.monotonic() of the last failure
        self.appended_events = 0
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="pulseboard-log-writer", daemon=True)
        self._thread.start()

    def refusing(self) -> bool:
        """True while the last append failed less than ``PROBE_EVERY_S`` ago."""
        return self.error is not None and time.monotonic() - self.failed_at < PROBE_EVERY_S

    async def append(self, item: Append) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put((item, future, loop))
        await future

    def close(self) -> None:
        """Append what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            while len(jobs) < MAX_GROUP:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                jobs.append(job)
            self._write(jobs)

    def _write(self, jobs: list[_Job]) -> None:
        failure: StoreUnavailable | None = None
        try:
            self.store.append_many([item for item, _, _ in jobs])
        except StoreUnavailable as exc:
            if self.error is None:
                log.error("cannot append to the log; ingest answers 503 until it can: %s", exc)
            failure = exc
            self.error, self.failed_at = str(exc), time.monotonic()
        else:
            if self.error is not None:
                log.warning("the log takes appends again")
            self.error = None
            self.appended_events += sum(item.events for item, _, _ in jobs)
        for _, future, loop in jobs:
            loop.call_soon_threadsafe(_settle, future, failure)


def _settle(future: asyncio.Future[None], failure: BaseException | None) -> None:
    if future.done():  # the request went away
        return
    if failure is None:
        future.set_result(None)
    else:
        future.set_exception(failure)


class Lazy(Generic[T]):
    """A store opened on first use: ``get`` opens it (at most one attempt per ``retry_s``;
    between attempts it raises the last failure again) so that a process starts, and stays
    up, while the server is down. Thread-safe."""

    def __init__(self, opener: Callable[[], T], retry_s: float = 1.0) -> None:
        self._opener = opener
        self._retry_s = retry_s
        self._value: T | None = None
        self._failure: StoreUnavailable | None = None
        self._failed_at = 0.0
        self._lock = threading.Lock()

    def get(self) -> T:
        with self._lock:
            if self._value is not None:
                return self._value
            if self._failure is not None and time.monotonic() - self._failed_at < self._retry_s:
                raise self._failure
            try:
                self._value = self._opener()
            except StoreUnavailable as exc:
                self._failure, self._failed_at = exc, time.monotonic()
                raise
            self._failure = None
            return self._value

    def peek(self) -> T | None:
        """The store if it was opened, else None (never opens it)."""
        return self._value


class DistributedWindows:
    """``series.WindowSource`` over the Redis hot store (open windows) and PostgreSQL history.

    The open windows are read first: a window finalised between the two reads is then either
    still open in the first read (and maybe also in history, which wins) or in history, so it
    is never missing unless its history write is still pending, when it shows as open.
    """

    def __init__(self, hot: RedisHotStore, history: Lazy[PostgresHistory]) -> None:
        self.hot = hot
        self.history = history

    def windows(
        self, metric: str, start_ms: int, end_ms: int, window_ms: int, step_ms: int
    ) -> tuple[list[WindowRow], list[WindowRow]]:
        agg = self.hot.aggs[metric]
        open_rows = [
            WindowRow(
                metric,
                msgspec.json.encode(w.labels).decode(),
                w.window_start_ms,
                w.window_end_ms,
                w.value,
                agg.dumps(w.state),
                "open",
            )
            for w in self.hot.open_windows(metric)
            if start_ms <= w.window_start_ms < end_ms
            and w.window_end_ms - w.window_start_ms == window_ms
        ]
        history = self.history.get().series_windows(metric, start_ms, end_ms, window_ms, step_ms)
        return history, open_rows
