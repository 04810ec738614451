"""The API process's side of the pipeline: ingest into the log, the processor child, live values.

``Service`` owns the log writer (group commit), supervises the processor process (restarting
it if it dies), receives its per-tick messages, keeps each metric's current value encoded once,
and fans changes out to live subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import time
import zlib
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import msgspec

from pulseboard import pipeline_stats, processor
from pulseboard.adapters.sqlite import (
    LOG_FILE,
    META_FILE,
    STATE_FILE,
    SqliteDashboards,
    SqliteKeys,
    SqliteState,
    StoreUnavailable,
    now_ms,
)
from pulseboard.adapters.sqlite_log import Append, DeadLetter, SqliteLogWriter
from pulseboard.config import Config
from pulseboard.errors import DecodeError, PulseboardError
from pulseboard.events import Checked, EventDecoder
from pulseboard.live import Hub

log = logging.getLogger(__name__)

MAX_ERRORS_LISTED = 100
HEARTBEAT_S = 15.0


class Overloaded(PulseboardError):
    """Ingest cannot take writes now (503); ``retry_after_s`` says when to try again."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooLarge(PulseboardError):
    """A request body over ``limits.max_request_bytes`` (413)."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    rejected: int
    errors: list[dict[str, Any]]


@dataclass(slots=True)
class Counters:
    """What ingest counted since the process started (for ``/metrics``)."""

    by_type: dict[tuple[str, str], int] = field(default_factory=dict)
    accepted: int = 0
    dead_letters: int = 0


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing to inflate beyond ``limit`` bytes."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise DecodeError(f"the body is not valid gzip: {exc}") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise TooLarge(f"the body inflates to more than {limit} bytes (limits.max_request_bytes)")
    return out


class LogWriter(Protocol):
    """What ingest needs of a service's log writer (``SqliteLogWriter``,
    ``dist_parts.RedisLogWriter``)."""

    error: str | None

    def refusing(self) -> bool:
        """True while appends are refused (``error`` says why)."""
        ...

    async def append(self, item: Append) -> object:
        """Append ``item`` durably; ``StoreUnavailable`` when it could not be."""
        ...


class PipelineSource:
    """What both services do alike: ingest into their log writer, and the part of
    ``pipeline_stats.Source`` answered from their ingest counters, the processors' last
    reported stats, their live hub and staleness."""

    config: Config
    decoder: EventDecoder
    writer: LogWriter
    counters: Counters
    stats: dict[str, Any]
    current: dict[str, bytes]
    hub: Hub
    behind = "the processor is"
    """How the backlog refusal names who is behind."""

    def backlog_events(self) -> int:
        raise NotImplementedError

    async def ingest(self, body: bytes, *, ndjson: bool) -> IngestResult:
        """Validate ``body`` and make its good events durable; raises ``DecodeError`` (400),
        ``Overloaded`` (503, nothing accepted)."""
        if self.writer.refusing():
            raise Overloaded(self.writer.error or "the event log cannot take writes", 5)
        backlog, limit = self.backlog_events(), self.config.limits.max_backlog_events
        if backlog > limit:
            raise Overloaded(
                f"{self.behind} {backlog} events behind (limits.max_backlog_events = {limit})", 2
            )
        received = now_ms()
        checked = self.decoder.check(body, received, lines=ndjson)
        try:
            await self.writer.append(append_item(checked, received))
        except StoreUnavailable as exc:
            raise Overloaded(str(exc), 5) from exc
        count_checked(self.counters, checked)
        errors = [
            {"index": e.index, "id": e.id, "error": e.error}
            for e in checked.errors[:MAX_ERRORS_LISTED]
        ]
        return IngestResult(checked.accepted, len(checked.errors), errors)

    def stale(self) -> bool:
        raise NotImplementedError

    def current_body(self, name: str) -> bytes | None:
        """The last current value of ``name`` (its encoded ``GET /v1/metrics/{name}`` body),
        marked stale when it is."""
        body = self.current.get(name)
        if body is None or not self.stale():
            return body
        payload = msgspec.json.decode(body)
        payload["stale"] = True
        return msgspec.json.encode(payload)

    def totals(self) -> tuple[int, int, int]:
        """This process's accepted and rejected events, the processors' processed events."""
        c = self.counters
        return c.accepted, c.dead_letters, int(self.stats.get("events", 0))

    def processor_stats(self) -> dict[str, Any]:
        return self.stats

    def live_clients(self) -> int:
        return len(self.hub.subscribers)

    def processor_up(self) -> bool:
        return not self.stale()


class Service(PipelineSource):
    """Everything behind the HTTP API of one process."""

    def __init__(self, config: Config, data_dir: Path, *, verbose: bool = False) -> None:
        self.config = config
        self.data_dir = data_dir
        self.verbose = verbose
        self.decoder = EventDecoder(config)
        self.writer: SqliteLogWriter = SqliteLogWriter(data_dir / LOG_FILE)
        self.state = SqliteState(data_dir / STATE_FILE, readonly=True)
        self.keys = SqliteKeys(data_dir / META_FILE)
        self.dashboards = SqliteDashboards(data_dir / META_FILE)
        self.hub = Hub()
        self.sampler = pipeline_stats.Sampler(self, config.pipeline.tick_ms)
        self.counters = Counters()
        self.current: dict[str, bytes] = self.state.current()
        self.stats: dict[str, Any] = {}
        self._appended_at_tick = 0
        self.last_tick_at = 0.0  # monotonic, 0 = none since start
        self._conn: Connection | None = None
        self._child: Any = None
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._start_processor()
        self._tasks.append(asyncio.create_task(self._supervise()))
        self._tasks.append(asyncio.create_task(self._heartbeat()))
        self._tasks.append(asyncio.create_task(self._sample()))

    async def stop(self) -> None:
        """Stop taking events, let the processor drain and checkpoint, close the files."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        self.hub.close_all()
        await asyncio.to_thread(self.writer.close)
        await asyncio.to_thread(self._stop_processor)
        self.state.close()
        self.keys.close()
        self.dashboards.close()

    def _start_processor(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._child = ctx.Process(
            target=processor.main,
            args=(self.config, str(self.data_dir), child, self.verbose),
            name="pulseboard-processor",
            daemon=True,
        )
        self._child.start()
        child.close()
        self._conn = parent
        self.writer.on_commit = self._wake
        asyncio.get_running_loop().add_reader(parent.fileno(), self._on_message)

    def _stop_processor(self) -> None:
        conn, child = self._conn, self._child
        if conn is None or child is None:
            return
        with contextlib.suppress(OSError):
            conn.send_bytes(processor.STOP)
        child.join(timeout=60)
        if child.is_alive():
            log.error("the processor did not stop within 60 s; killing it")
            child.kill()
            child.join()

    async def _supervise(self) -> None:
        """Restart the processor when it dies (it resumes from its checkpoint)."""
        backoff = 1.0
        while not self._stopping:
            await asyncio.sleep(0.5)
            if self._child is not None and not self._child.is_alive() and not self._stopping:
                log.error(
                    "the processor exited with code %s; restarting in %.0f s",
                    self._child.exitcode,
                    backoff,
                )
                self._detach()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                self._start_processor()
            elif self.processor_alive():
                backoff = 1.0

    def _detach(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._conn.fileno())
            self._conn.close()
        self._conn = None

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            self.hub.broadcast(msgspec.json.encode({"heartbeat": now_ms()}).decode())

    async def _sample(self) -> None:
        """Each tick, a pipeline sample for the UI, pushed to its live subscribers."""
        tick_ms = self.config.pipeline.tick_ms
        at_ms = now_ms() // tick_ms * tick_ms
        while True:
            at_ms += tick_ms
            delay_ms = at_ms - now_ms()
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)
            else:  # fell behind (a busy loop): skip the missed ticks
                at_ms = now_ms() // tick_ms * tick_ms
            sample = self.sampler.sample(at_ms)
            body = pipeline_stats.message(sample, self.stats)
            self.hub.publish(pipeline_stats.CHANNEL, body.decode())

    def _wake(self, _pos: int) -> None:
        """After a log commit (writer thread): nudge the processor."""
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send_bytes(processor.WAKE)

    def _on_message(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            self._detach()
            return
        message = msgspec.msgpack.decode(data)
        self.stats = message["stats"]
        self._appended_at_tick = self.writer.appended_events
        self.last_tick_at = time.monotonic()
        for name, payload in message["current"].items():
            body = msgspec.json.encode(payload)
            self.current[name] = body
            self.hub.publish(name, body.decode())

    # --- state ---------------------------------------------------------------------------------

    def processor_alive(self) -> bool:
        return self._child is not None and self._child.is_alive()

    def stale(self) -> bool:
        """True when the processor is not running or has not reported for several ticks."""
        limit = 3 * self.config.pipeline.tick_ms / 1000 + 2.0
        if not self.processor_alive() or self.last_tick_at == 0.0:
            return True
        return time.monotonic() - self.last_tick_at > limit

    def readiness(self) -> dict[str, str]:
        """``/readyz``: the log writer, the state file and the processor (blocking)."""
        checks: dict[str, str] = {}
        checks["log"] = self.writer.error or "ok"
        try:
            self.state.progress()
            checks["state"] = "ok"
        except Exception as exc:  # any failure to read means not ready
            checks["state"] = f"unreadable: {exc}"
        if not self.processor_alive():
            checks["processor"] = "not running"
        elif self.stale():
            checks["processor"] = "not reporting"
        else:
            checks["processor"] = "ok"
        return checks

    def backlog_events(self) -> int:
        """Accepted events not yet processed: the processor's count at its last tick plus what
        was appended since (an overestimate by at most one tick of appends)."""
        since = self.writer.appended_events - self._appended_at_tick
        return int(self.stats.get("backlog_events", 0)) + since


def count_checked(counters: Counters, checked: Checked) -> None:
    """Add one checked request's accepted and rejected events to ``counters``."""
    counts = counters.by_type
    for name, count in checked.counts.items():
        counts[name, "accepted"] = counts.get((name, "accepted"), 0) + count
    for error in checked.errors:
        key = (error.type or "(unknown)", "rejected")
        counts[key] = counts.get(key, 0) + 1
    counters.accepted += checked.accepted
    counters.dead_letters += len(checked.errors)


def append_item(checked: Checked, received_ms: int) -> Append:
    """What the log keeps of one checked request: the accepted events as JSON (the processor
    decodes them again with the same clock, ``received_ms``) and the rejected ones."""
    dead = [DeadLetter(received_ms, e.index, e.id, e.error, e.raw) for e in checked.errors]
    return Append(
        received_ms,
        checked.accepted,
        checked.min_time_ms,
        checked.max_time_ms,
        checked.payload,
        dead,
    )
