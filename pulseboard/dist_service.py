"""The API role of the distributed mode: ``DistributedService``, the service behind ``api.py``
when the log and the hot store are on Redis and history, keys and dashboards on PostgreSQL.

Any number of API processes run side by side; they share nothing but the stores.

- **Ingest** validates as the embedded ``Service`` does (``EventDecoder.check``) and appends
  to the Redis log from one writer thread with group commit (``dist_parts.RedisLogWriter``);
  ``202`` is answered only once Redis answered the XADD. ``503`` with ``Retry-After`` when the
  append fails (Redis down: then refused at once for a second before the next attempt), or
  when the backlog (``RedisEventLog.backlog``, measured once per tick, plus what this process
  appended since) exceeds ``limits.max_backlog_events``.
- **Live values**: a thread subscribed to the ``ticks`` channel fetches, per message, the
  current values of the metrics it names (``RedisHotStore.current_payloads``, one round trip)
  and hands them to the event loop, which keeps them and publishes them to the live hub.
  After each (re)subscription it fetches every metric's value once, so nothing published
  while it was away is missed.
- **Staleness**: the values are stale while Redis is unreachable, or when no processor showed
  life (a tick message, or a processor report whose time changed: ``redis_reports``) for
  ``3 ticks + 2 s``. The last values keep being served, marked ``"stale": true``.
- **Series**: open windows from the hot store and history from PostgreSQL
  (``dist_parts.DistributedWindows``) through ``series.read_series``.
- **Keys and dashboards** live in PostgreSQL (``postgres_meta``), shared by every API process.
- **Readiness** (``/readyz``): ``redis``, ``postgresql`` (one round trip each) and
  ``processors`` (alive as above).
- **Pipeline samples**: this process's ingest counters and the processors' reports, summed.
- With ``spawn_processor`` (``serve --role all``) it also runs one processor as a child
  process (``dist_run.processor_child``) and restarts it when it dies.

No thread or task dies on an outage: each logs once, waits with a capped backoff and resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import threading
import time
from typing import Any

import msgspec
import redis

from pulseboard import pipeline_stats
from pulseboard.adapters.base import StoreUnavailable, now_ms
from pulseboard.adapters.postgres import PostgresHistory
from pulseboard.adapters.postgres_meta import PostgresDashboards, PostgresKeys, PostgresMeta
from pulseboard.adapters.redis_conn import RedisSettings
from pulseboard.adapters.redis_hot import RedisHotStore
from pulseboard.adapters.redis_log import RedisEventLog
from pulseboard.adapters.redis_reports import FORGET_MS, RedisProcessorReports
from pulseboard.adapters.sqlite import KeyRecord, StoredDashboard
from pulseboard.config import Config
from pulseboard.dist_parts import DistributedWindows, Lazy, RedisLogWriter
from pulseboard.events import EventDecoder
from pulseboard.live import Hub
from pulseboard.service import (
    HEARTBEAT_S,
    Counters,
    PipelineSource,
)

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0
FOOTPRINT_EVERY_S = 10.0
"""How often the pipeline page's per-metric label sets and state bytes are read from Redis (the
embedded processor measures them at its checkpoints, every 10 s)."""
_SUMMED = ("events", "batches", "invalid", "late", "reconciled", "redelivered", "claimed")
_MAXED = ("backlog_entries", "backlog_events", "lag_s", "tick_ms", "rss_bytes")


class DistributedService(PipelineSource):
    """Everything behind the HTTP API of one API process of the distributed mode (see the
    module docstring). Satisfies ``service_port.ApiService``."""

    behind = "the processors are"

    def __init__(self, config: Config, *, spawn_processor: bool = False, verbose: bool = False):
        self.config = config
        self.verbose = verbose
        self.spawn_processor = spawn_processor
        self.decoder = EventDecoder(config)
        settings = RedisSettings.from_url(config.storage.log)
        self.log_store = RedisEventLog(settings)
        self.hot = RedisHotStore(settings, config, client=self.log_store.client)
        self.reports = RedisProcessorReports(settings, client=self.log_store.client)
        self.writer: RedisLogWriter = RedisLogWriter(self.log_store)
        url = config.storage.history
        self.history: Lazy[PostgresHistory] = Lazy(lambda: PostgresHistory(url, pool_max=4))
        self.meta: Lazy[PostgresMeta] = Lazy(lambda: PostgresMeta(url))
        self.keys = _LazyKeys(self.meta)
        self.dashboards = _LazyDashboards(self.meta)
        self.state = DistributedWindows(self.hot, self.history)
        self.hub = Hub()
        self.counters = Counters()
        self.sampler = pipeline_stats.Sampler(self, config.pipeline.tick_ms)
        self.stats: dict[str, Any] = {}
        self.current: dict[str, bytes] = {}
        self._errors: dict[str, str] = {}  # who saw Redis down ("ticks", "poll") -> error
        self.last_tick_at = 0.0  # monotonic; 0 = no sign of a processor since start
        self._report_at: dict[str, int] = {}
        self._backlog_events = 0
        self._appended_at_poll = 0
        self._postgres_down = False
        self._footprint: dict[str, tuple[int, int]] = {}
        self._footprint_at = -FOOTPRINT_EVERY_S
        self._counted: dict[str, dict[str, Any]] = {}
        """The last report of each processor whose counters are summed now."""
        self._retired: dict[str, int] = {}
        """Summed counters of processors no longer reporting (as last seen)."""
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._child: Any = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._listener = threading.Thread(target=self._listen, name="pulseboard-ticks", daemon=True)
        self._listener.start()
        self._tasks.append(asyncio.create_task(self._poll()))
        self._tasks.append(asyncio.create_task(self._heartbeat()))
        if self.spawn_processor:
            self._start_processor()
            self._tasks.append(asyncio.create_task(self._supervise()))

    async def stop(self) -> None:
        """Stop listening, append what was accepted, stop the child processor, close."""
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        self.hub.close_all()
        await asyncio.to_thread(self.writer.close)
        await asyncio.to_thread(self._stop_processor)
        if self._listener is not None:
            await asyncio.to_thread(self._listener.join, 5.0)
        for lazy in (self.history, self.meta):
            store = lazy.peek()
            if store is not None:
                store.close()
        self.log_store.close()

    def _start_processor(self) -> None:
        from pulseboard.dist_run import processor_child

        ctx = multiprocessing.get_context("spawn")
        self._child = ctx.Process(
            target=processor_child,
            args=(self.config, self.verbose),
            name="pulseboard-processor",
            daemon=True,
        )
        self._child.start()

    def _stop_processor(self) -> None:
        child = self._child
        if child is None:
            return
        child.terminate()  # SIGTERM: it finishes its step and stops
        child.join(timeout=30)
        if child.is_alive():
            log.error("the processor did not stop within 30 s; killing it")
            child.kill()
            child.join()

    async def _supervise(self) -> None:
        """Restart the child processor when it dies (its pending entries are claimed or
        re-read)."""
        backoff = 1.0
        while not self._stop.is_set():
            await asyncio.sleep(0.5)
            child = self._child
            if child is not None and not child.is_alive() and not self._stop.is_set():
                log.error(
                    "the processor exited with code %s; restarting in %.0f s",
                    child.exitcode,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                self._start_processor()
            elif not self.stale():
                backoff = 1.0

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            self.hub.broadcast(msgspec.json.encode({"heartbeat": now_ms()}).decode())

    # --- live values (the ticks thread) -----------------------------------------------------

    def _listen(self) -> None:
        """Subscribe to the ticks channel and apply each message; on a Redis error, mark
        Redis down, wait (capped backoff) and subscribe again."""
        backoff = 0.1
        while not self._stop.is_set():
            pubsub = self.log_store.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self.log_store.keys.ticks)
                self._fetch([m.name for m in self.config.metrics], tick=False)
                self._redis_ok("ticks")
                backoff = 0.1
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._on_tick(message["data"])
            except (redis.RedisError, StoreUnavailable, OSError) as exc:
                self._redis_down("ticks", str(exc))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()

    def _on_tick(self, data: bytes) -> None:
        try:
            names = msgspec.json.decode(data)["metrics"]
        except (msgspec.DecodeError, KeyError, TypeError):
            log.warning("ignored a malformed tick message: %r", data[:200])
            return
        known = [n for n in names if isinstance(n, str) and self.config.metric(n) is not None]
        self._fetch(known, tick=True)

    def _fetch(self, names: list[str], *, tick: bool) -> None:
        payloads = self.hot.current_payloads(names)
        if tick:
            self.last_tick_at = time.monotonic()
        if payloads and self._loop is not None:
            self._loop.call_soon_threadsafe(self._apply, payloads)

    def _apply(self, payloads: dict[str, bytes]) -> None:
        """On the event loop: keep the new values and push those that changed to their
        subscribers. (Two processors' tick messages close together both find the later one's
        value: it is pushed once.)"""
        for name, body in payloads.items():
            if self.current.get(name) == body:
                continue
            self.current[name] = body
            self.hub.publish(name, body.decode())

    @property
    def redis_error(self) -> str | None:
        """Why Redis counts as down (the ticks subscription or the per-tick poll failed and
        has not succeeded since), None when it is up."""
        errors = list(self._errors.values())  # one call: safe against the other thread
        return errors[0] if errors else None

    def _redis_down(self, who: str, error: str) -> None:
        if not self._errors:
            log.error("Redis unreachable; live values are stale until it is back: %s", error)
        self._errors[who] = error

    def _redis_ok(self, who: str) -> None:
        if self._errors.pop(who, None) is not None and not self._errors:
            log.warning("Redis reachable again")

    # --- per tick: reports, backlog, the pipeline sample --------------------------------------

    async def _poll(self) -> None:
        tick_s = self.config.pipeline.tick_ms / 1000
        while True:
            try:
                await asyncio.to_thread(self._read_reports)
                self._redis_ok("poll")
            except StoreUnavailable as exc:
                self._redis_down("poll", str(exc))
            sample = self.sampler.sample(now_ms())
            body = pipeline_stats.message(sample, self.stats)
            self.hub.publish(pipeline_stats.CHANNEL, body.decode())
            await asyncio.sleep(tick_s)

    def _read_reports(self) -> None:
        """The processors' reports (alive when changed) and the log's backlog (blocking)."""
        reports = self.reports.all()
        backlog = self.log_store.backlog()
        self._backlog_events = backlog.events
        self._appended_at_poll = self.writer.appended_events
        wall, limit_ms = now_ms(), self._stale_limit_s() * 1000
        # counters: those of the processors reporting, plus the last ones seen of processors
        # that stopped or died, so that a summed counter never goes down
        stats: dict[str, Any] = dict(self._retired)
        counted: dict[str, dict[str, Any]] = {}
        for consumer, (at, report) in reports.items():
            if self._report_at.get(consumer, at) != at:
                self.last_tick_at = time.monotonic()
            self._report_at[consumer] = at
            if wall - at > FORGET_MS:
                self.reports.drop(consumer)
            if wall - at > limit_ms * 10:  # a dead processor's frozen counters
                continue
            counted[consumer] = report
            for key in _SUMMED:
                stats[key] = stats.get(key, 0) + report.get(key, 0)
            for key in _MAXED:
                stats[key] = max(stats.get(key, 0), report.get(key, 0))
        for consumer in self._counted.keys() - counted.keys():
            for key in _SUMMED:
                gone = self._counted[consumer].get(key, 0)
                self._retired[key] = self._retired.get(key, 0) + gone
                stats[key] = stats.get(key, 0) + gone
        self._counted = counted
        stats["backlog_events"] = backlog.events
        stats["backlog_entries"] = backlog.entries
        if time.monotonic() >= self._footprint_at + FOOTPRINT_EVERY_S:
            # the shared open windows, not one processor's; it reads every bucket: not per tick
            self._footprint = self.hot.footprint()
            self._footprint_at = time.monotonic()
        stats["label_sets"] = {name: labels for name, (labels, _) in self._footprint.items()}
        stats["state_bytes"] = {name: size for name, (_, size) in self._footprint.items()}
        self.stats = stats

    # --- state ---------------------------------------------------------------------------------

    def _stale_limit_s(self) -> float:
        return 3 * self.config.pipeline.tick_ms / 1000 + 2.0

    def stale(self) -> bool:
        """True while Redis is unreachable or no processor showed life for 3 ticks + 2 s."""
        if self.redis_error is not None or self.last_tick_at == 0.0:
            return True
        return time.monotonic() - self.last_tick_at > self._stale_limit_s()

    def readiness(self) -> dict[str, str]:
        """``redis``, ``postgresql`` (one round trip each) and ``processors`` (blocking)."""
        checks: dict[str, str] = {}
        try:
            self.reports.ping()
            checks["redis"] = "ok"
        except StoreUnavailable as exc:
            checks["redis"] = f"unreachable: {exc}"
        try:
            self.meta.get().ping()
            checks["postgresql"] = "ok"
            if self._postgres_down:
                log.warning("PostgreSQL reachable again")
            self._postgres_down = False
        except StoreUnavailable as exc:
            checks["postgresql"] = f"unreachable: {exc}"
            if not self._postgres_down:  # logged once an outage, as Redis's
                log.error("PostgreSQL unreachable (series, dashboards and new keys fail): %s", exc)
            self._postgres_down = True
        if self.last_tick_at == 0.0:
            checks["processors"] = "no processor has reported since this API process started"
        elif time.monotonic() - self.last_tick_at > self._stale_limit_s():
            ago = time.monotonic() - self.last_tick_at
            checks["processors"] = f"no processor has reported for {ago:.0f} s"
        else:
            checks["processors"] = "ok"
        return checks

    # --- pipeline_stats.Source ------------------------------------------------------------------

    def backlog_events(self) -> int:
        """The log's backlog at the last poll plus what this process appended since."""
        return self._backlog_events + self.writer.appended_events - self._appended_at_poll


class _LazyKeys:
    """``auth.KeyStore`` over PostgreSQL, opened on first use."""

    def __init__(self, meta: Lazy[PostgresMeta]) -> None:
        self._meta = meta

    def _store(self) -> PostgresKeys:
        return self._meta.get().keys

    def add(self, record: KeyRecord) -> None:
        self._store().add(record)

    def get(self, key_id: str) -> KeyRecord | None:
        return self._store().get(key_id)


class _LazyDashboards:
    """``service_port.DashboardStore`` over PostgreSQL, opened on first use."""

    def __init__(self, meta: Lazy[PostgresMeta]) -> None:
        self._meta = meta

    def _store(self) -> PostgresDashboards:
        return self._meta.get().dashboards

    def all(self) -> list[StoredDashboard]:
        return self._store().all()

    def get(self, ident: str) -> StoredDashboard | None:
        return self._store().get(ident)

    def put(self, dashboard: StoredDashboard, *, create_only: bool = False) -> bool | None:
        return self._store().put(dashboard, create_only=create_only)

    def delete(self, ident: str) -> bool:
        return self._store().delete(ident)
