"""The processor: reads the log in order, aggregates with the engine, commits atomically.

Each tick (``pipeline.tick``) it commits, in one transaction of ``state.db``: its log
position, the windows that became final (into history), the late events, the open windows of
the metrics that changed and their current values. Every ``checkpoint_every_ms`` it also takes
an engine snapshot, which a thread writes to ``checkpoint.db`` with the log position it
belongs to. After a crash it restores the last snapshot and
replays the log from that snapshot's position: the engine's result does not depend on how the
log is cut into reads, final windows are written idempotently, and late events are keyed by
(metric, event id, bucket), so a replay neither loses nor double counts anything. A window
revised by reconciliation is never overwritten by a replayed final value.

The engine is CPU work, so the processor runs in a process of its own (``serve`` starts it),
talking to the API process over a pipe: the API sends wake-ups after appends, the processor
sends one message per tick with the changed metrics' current values and its statistics.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec

from pulseboard.adapters.sqlite import (
    CHECKPOINT_FILE,
    LOG_FILE,
    STATE_FILE,
    Commit,
    LateRow,
    SqliteCheckpoints,
    SqliteState,
    StoreUnavailable,
    WindowRow,
    now_ms,
)
from pulseboard.adapters.sqlite_log import SqliteLogReader
from pulseboard.config import Config, MetricSpec
from pulseboard.engine import Engine, Tick, WindowValue
from pulseboard.events import Batch, EventDecoder, EventError
from pulseboard.reconcile import labels_key, reconcile, window_row

log = logging.getLogger(__name__)

WAKE = b"w"
STOP = b"s"
TRIM_EVERY_MS = 600_000


class Checkpointer:
    """Writes engine snapshots on a thread of its own, so a large one (the dedupe ids) never
    delays a tick. At most one waits; a newer one replaces it."""

    def __init__(self, store: SqliteCheckpoints) -> None:
        self._store = store
        self._lock = threading.Condition()
        self._pending: tuple[int, bytes] | None = None
        self._busy = False
        self._closed = False
        self.saved_pos: int | None = None
        self._thread = threading.Thread(target=self._run, name="checkpoint", daemon=True)
        self._thread.start()

    def load(self) -> tuple[int, bytes] | None:
        saved = self._store.load()
        self.saved_pos = None if saved is None else saved[0]
        return saved

    def submit(self, pos: int, snapshot: bytes, *, wait: bool = False) -> None:
        """Queue a snapshot at log position ``pos``; with ``wait``, return once it is on disk."""
        with self._lock:
            self._pending = (pos, snapshot)
            self._lock.notify_all()
            if wait:
                self._lock.wait_for(lambda: self._pending is None and not self._busy)

    def close(self) -> None:
        with self._lock:
            self._lock.wait_for(lambda: self._pending is None and not self._busy)
            self._closed = True
            self._lock.notify_all()
        self._thread.join()
        self._store.close()

    def _run(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._pending is not None or self._closed)
                if self._pending is None:
                    return
                (pos, snapshot), self._pending = self._pending, None
                self._busy = True
            try:
                self._store.save(pos, snapshot)
                self.saved_pos = pos
            except StoreUnavailable as exc:
                log.error("checkpoint at log position %d not written: %s", pos, exc)
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()


def current_payload(
    spec: MetricSpec, values: list[WindowValue], stream_time_ms: int | None, as_of_ms: int | None
) -> dict[str, Any]:
    """The body of ``GET /v1/metrics/{name}`` (``stale`` is decided by whoever serves it)."""
    return {
        "metric": spec.name,
        "agg": spec.agg,
        "window_ms": spec.window_ms,
        "every_ms": spec.every_ms,
        "as_of": as_of_ms,
        "stream_time": stream_time_ms,
        "stale": False,
        "values": [
            {
                "labels": v.labels,
                "value": v.value,
                "window_start": v.window_start_ms,
                "window_end": v.window_end_ms,
                "status": v.status,
            }
            for v in values
        ],
    }


@dataclass(slots=True)
class Stats:
    """Counters the processor reports with every tick (cumulative since it started)."""

    events: int = 0
    batches: int = 0
    invalid: int = 0
    late: int = 0
    reconciled: int = 0
    backlog_entries: int = 0
    backlog_events: int = 0
    lag_s: float = 0.0
    tick_ms: float = 0.0
    label_sets: dict[str, int] = field(default_factory=dict)
    state_bytes: dict[str, int] = field(default_factory=dict)


class Processor:
    """The processing loop over one data directory, usable in-process (tests) or in a child."""

    def __init__(
        self,
        config: Config,
        data_dir: Path,
        *,
        publish: Callable[[bytes], None] | None = None,
        checkpoint_every_ms: int = 10_000,
        max_read_events: int = 20_000,
    ) -> None:
        self.config = config
        self.decoder = EventDecoder(config)
        self._data_dir = data_dir
        self.log = SqliteLogReader(data_dir / LOG_FILE)
        self.state = SqliteState(data_dir / STATE_FILE)
        self._reconciler: threading.Thread | None = None
        self._checkpoints = Checkpointer(SqliteCheckpoints(data_dir / CHECKPOINT_FILE))
        self._publish = publish
        self._checkpoint_every_ms = checkpoint_every_ms
        self.max_read_events = max_read_events
        saved = self._checkpoints.load()
        if saved is None:
            self.pos, self.engine = 0, Engine(config)
        else:
            self.pos, self.engine = saved[0], Engine.restore(config, saved[1])
            log.info("restored the checkpoint at log position %d", self.pos)
        self.stats = Stats()
        now = now_ms()
        self._checkpoint_ms = now
        self._dirty = saved is None
        self._last_received_ms: int | None = None
        self._current_step: dict[str, int] = {}
        self._next_reconcile_ms = now + config.pipeline.reconcile_every_ms
        self._next_trim_ms = now

    def read(self) -> int:
        """Process the next entries of the log; returns how many events they held."""
        entries = self.log.read(self.pos, self.max_read_events)
        if not entries:
            return 0
        batches = []
        for entry in entries:
            # the clock of its ingest, so max_future judges every event as it did then
            batch = self.decoder.decode(entry.payload, entry.received_ms)
            if batch.errors:
                self._invalid(entry.pos, batch.errors)
            batches.append(batch)
        # one engine call per read: per-call overheads are paid once for many requests
        self.engine.process(Batch.concat(batches))
        last = entries[-1]
        self.pos, self._last_received_ms = last.pos, last.received_ms
        events = sum(e.events for e in entries)
        self.stats.events += events
        self.stats.batches += len(entries)
        self._dirty = True
        return events

    def _invalid(self, pos: int, errors: list[EventError]) -> None:
        """Logged events the config no longer accepts (it changed since they were ingested)."""
        self.stats.invalid += len(errors)
        log.warning(
            "log entry %d: %d events no longer pass the config and are skipped, e.g. %s",
            pos,
            len(errors),
            errors[0].error,
        )

    def drain(self) -> None:
        """Read until the log is exhausted (tests and shutdown)."""
        while self.read():
            pass

    def tick(self, *, drained: bool, checkpoint: bool = False) -> dict[str, Any]:
        """Advance the engine and commit; returns the message published to the API."""
        started = time.perf_counter()
        now = now_ms()
        tick = self.engine.advance(now if drained else None)
        self.stats.late += len(tick.late)
        changed = self._changed_metrics(tick)
        current = {
            name: current_payload(spec, self.engine.current(name), self.engine.stream_time_ms, now)
            for name, spec in changed.items()
        }
        self.state.commit(
            Commit(
                pos=self.pos,
                stream_time_ms=self.engine.stream_time_ms,
                final=[self._row(v, "final") for v in tick.final],
                late=[
                    LateRow(
                        e.metric,
                        e.event_id,
                        e.window_start_ms,
                        e.window_end_ms,
                        labels_key(e.labels),
                        e.time_ms,
                        e.value,
                    )
                    for e in tick.late
                ],
                hot={
                    name: [self._row(v, "open") for v in self.engine.open_windows(name)]
                    for name in changed
                },
                current={name: msgspec.json.encode(p) for name, p in current.items()},
            )
        )
        self._update_stats(now, started)
        message = {
            "pos": self.pos,
            "stream_time_ms": self.engine.stream_time_ms,
            "as_of": now,
            "current": current,
            "stats": _stats_dict(self.stats),
        }
        if self._publish is not None:
            self._publish(msgspec.msgpack.encode(message))
        # slower chores after the push, so they never delay this tick's values
        if checkpoint or (self._dirty and now - self._checkpoint_ms >= self._checkpoint_every_ms):
            # taken between reads, it belongs exactly to the position just committed
            self._checkpoints.submit(self.pos, self.engine.snapshot(), wait=checkpoint)
            self._checkpoint_ms, self._dirty = now, False
        if now >= self._next_trim_ms:
            self._next_trim_ms = now + TRIM_EVERY_MS
            self._trim(now)
        if now >= self._next_reconcile_ms and not self._reconciling():
            self._next_reconcile_ms = now + self.config.pipeline.reconcile_every_ms
            self._reconcile_in_background(now)
        return message

    def reconcile(self, now: int | None = None) -> None:
        """Apply pending late events to history now (waiting for a background run first)."""
        if self._reconciler is not None:
            self._reconciler.join()
        stream = self.engine.stream_time_ms
        self._reconcile(self.log, self.state, (self.pos, stream), None, now or now_ms())

    def _reconcile(
        self,
        reader: SqliteLogReader,
        state: SqliteState,
        at: tuple[int, int | None],
        pending: list[LateRow] | None,
        now: int,
    ) -> None:
        """Reconcile with the log up to position ``at[0]``, where stream time was ``at[1]``."""
        result = reconcile(
            self.config,
            reader,
            state,
            through_pos=at[0],
            stream_time_ms=at[1],
            now_ms=now,
            pending=pending,
        )
        self.stats.reconciled += result.events
        if result.events:
            log.info("reconciled %d late events into %d windows", result.events, result.windows)

    def _reconciling(self) -> bool:
        return self._reconciler is not None and self._reconciler.is_alive()

    def _reconcile_in_background(self, now: int) -> None:
        """Reconcile on a thread with connections of its own: recomputing windows from the log
        can take seconds, and ticks must go on meanwhile (a processor silent for 3 ticks + 2 s
        reads as down, and live values would stop). The pending late events are read here,
        with the state at ``self.pos``, so the log up to that position holds all their events."""
        pending = self.state.pending_late()
        if not pending:
            return
        at = (self.pos, self.engine.stream_time_ms)

        def run() -> None:
            reader = SqliteLogReader(self._data_dir / LOG_FILE)
            state = SqliteState(self._data_dir / STATE_FILE)
            try:
                self._reconcile(reader, state, at, pending, now)
            except Exception:
                log.exception("reconciliation failed; it is tried again at the next interval")
            finally:
                reader.close()
                state.close()

        self._reconciler = threading.Thread(target=run, name="pulseboard-reconcile", daemon=True)
        self._reconciler.start()

    def close(self) -> None:
        """Drain the log, commit with a checkpoint, and close the files."""
        if self._reconciler is not None:
            self._reconciler.join()
        self.drain()
        self.tick(drained=True, checkpoint=True)
        self._checkpoints.close()
        self.log.close()
        self.state.close()

    def _row(self, value: WindowValue, status: str) -> WindowRow:
        return window_row(value, self.engine.aggregator(value.metric).dumps(value.state), status)

    def _changed_metrics(self, tick: Tick) -> dict[str, MetricSpec]:
        """Metrics whose stored open windows or current value may differ from the last tick:
        those that took events, that closed windows, and those whose current window moved
        (a new tumbling window, or a sliding window one step on)."""
        names = set(tick.updates) | {v.metric for v in tick.final}
        if self.engine.stream_time_ms is not None:
            for spec in self.config.metrics:
                step = tick.stream_time_ms // spec.bucket_ms
                if self._current_step.get(spec.name) != step:
                    self._current_step[spec.name] = step
                    names.add(spec.name)
        return {m.name: m for m in self.config.metrics if m.name in names}

    def _trim(self, now: int) -> None:
        """Apply retention: log entries behind the last written checkpoint and older than
        ``retention.log``, history older than ``retention.history``."""
        retention = self.config.pipeline.retention
        saved = self._checkpoints.saved_pos
        if saved is not None:
            self.log.trim(now - retention.log_ms, saved)
        self.state.trim(now - retention.history_ms, now - retention.log_ms)

    def _update_stats(self, now: int, started: float) -> None:
        stats = self.stats
        stats.backlog_entries, stats.backlog_events = self.log.backlog(self.pos)
        if stats.backlog_entries and self._last_received_ms is not None:
            stats.lag_s = max(0.0, (now - self._last_received_ms) / 1000)
        else:
            stats.lag_s = 0.0
        stats.tick_ms = (time.perf_counter() - started) * 1000
        stats.label_sets = {m.name: self.engine.label_sets(m.name) for m in self.config.metrics}
        stats.state_bytes = self.engine.state_bytes


def _stats_dict(stats: Stats) -> dict[str, Any]:
    out = dataclasses.asdict(stats)
    out["rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def run(processor: Processor, conn: Connection) -> None:
    """Process until the API says stop or goes away, ticking every ``pipeline.tick``."""
    tick_ms = processor.config.pipeline.tick_ms
    next_tick = now_ms()
    running = True
    while running:
        events = processor.read()
        drained = events < processor.max_read_events
        now = now_ms()
        if now >= next_tick:
            processor.tick(drained=drained)
            # on a fixed cadence; a tick that overran is not made up for
            next_tick = max(next_tick + tick_ms, now_ms() - tick_ms // 2)
        if drained:
            running = _wait(conn, max(0.0, (next_tick - now_ms()) / 1000))
        else:
            running = _wait(conn, 0.0)
    processor.close()


def _wait(conn: Connection, timeout_s: float) -> bool:
    """Wait for a wake-up or the timeout; False when the API asked to stop or is gone."""
    try:
        if not conn.poll(timeout_s):
            return True
        while conn.poll(0):
            if conn.recv_bytes() == STOP:
                return False
    except (EOFError, OSError):
        log.warning("the API process is gone; stopping")
        return False
    return True


def main(config: Config, data_dir: str, conn: Connection, verbose: bool = False) -> None:
    """Entry point of the processor process."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s processor: %(message)s",
    )
    # Ctrl-C reaches the whole process group; the API process decides when this one stops
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # the engine allocates many short-lived containers per read while holding millions of
    # long-lived ids: collecting less often saves ~15% of the processor's CPU (measured)
    gc.set_threshold(100_000, 50, 1000)
    processor = Processor(config, Path(data_dir), publish=conn.send_bytes)
    log.info("processing %s from log position %d (pid %d)", data_dir, processor.pos, os.getpid())
    run(processor, conn)
