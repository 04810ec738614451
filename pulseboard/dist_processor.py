"""The distributed processor: the log on Redis Streams, open windows in the Redis hot store,
history in PostgreSQL; any number of processors share the work (``serve --role processor``).

Each processor is a consumer (``consumer``, a name unique among the living processors) of the
log's consumer group:

- ``step`` reads up to ``max_read_events`` events of entries (its own pending entries first
  after a restart, then entries claimed from a dead processor, then new ones), decodes each
  with the clock of its ingest (as ``processor.py``), and commits them with
  ``RedisHotStore.commit_batch`` together with their XACK: an entry is acknowledged if and only
  if its effect is committed. A commit that finds some entries applied already (``partly``:
  another processor took them over and committed them) drops those and commits the rest. Every
  ``claim_every_ms`` it claims the entries pending for ``claim_idle_ms`` with any consumer (a
  dead processor's); ``claim_idle_ms`` must exceed the longest a living processor holds entries
  before committing them (a read plus its commit), else work is done twice (which the commit's
  applied marks absorb, so it costs time, not correctness).
- ``tick`` moves the shared stream time on with the clock when the log is drained (only then,
  as the embedded engine), finalises what stream time allows (once, whichever processor does
  it), stores the current values of the metrics that changed in ``RedisKeys.current`` and
  publishes ``{"tick": now, "metrics": [...]}`` on ``RedisKeys.ticks``; then writes the queued
  final windows to history (idempotent; a job is dropped only after it is written), every
  ``pipeline.reconcile_every`` reconciles late events and every minute applies retention.
- ``reconcile`` (one processor at a time, under a lease in Redis): each late event's final
  windows are recomputed from the log (entries by append time within ``retention.log``,
  filtered by their min/max event time; each event id counted once, nothing late, as
  ``reconcile.py``) and stored as revised; the late event is then removed, or kept while a
  sliding window holding it is still open. Running it again changes nothing.
- **Outages.** Every store error arrives as ``StoreUnavailable``. ``step`` and ``tick`` raise
  it (nothing half-done: the Lua commit is atomic, history writes are idempotent, a pending job
  stays until written, and the entries of a failed commit stay pending); ``run`` catches it,
  pauses, logs once per outage, retries with a capped exponential backoff and resumes by itself,
  re-reading its own pending entries. ``health()`` says whether it is up, since when it is
  paused and the last error. History (PostgreSQL) is the exception: when only it is down the
  processor goes on reading, committing and publishing live values, and the history work of
  its ticks is retried with its own backoff (``history_health()``); finalised windows wait in
  Redis meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, astuple, dataclass, field
from typing import Any, TypeVar

import msgspec

from pulseboard.adapters.base import StoreUnavailable, now_ms
from pulseboard.adapters.postgres import PostgresHistory
from pulseboard.adapters.redis_dlq import RedisDeadLetters
from pulseboard.adapters.redis_hot import RedisHotStore
from pulseboard.adapters.redis_log import RedisEventLog, StreamEntry
from pulseboard.adapters.redis_reports import RedisProcessorReports
from pulseboard.config import Config
from pulseboard.events import Batch, EventDecoder
from pulseboard.processor import current_payload
from pulseboard.reconcile import plan, recompute, span
from pulseboard.rollups import roll_up

log = logging.getLogger(__name__)
T = TypeVar("T")

CLAIM_COUNT = 1_000
"""Entries one claim takes over at most (the rest at the next claim)."""
LATE_BATCH = 10_000
"""Late events one reconciliation looks at at most (the rest at the next one)."""
RECONCILE_LEASE_MS = 300_000
"""How long a reconciler holds the lease: far above one reconciliation's time, so that two
never overlap (an older recomputation written last would undo a newer one)."""
FIRST_BACKOFF_S = 0.1
RETAIN_EVERY_MS = 60_000
"""How often retention runs (one processor at a time, under the reconcile lease)."""


@dataclass(frozen=True, slots=True)
class Retained:
    """What one ``retain`` removed."""

    log_entries: int
    dead_letters: int
    history_windows: int
    consumers: list[str]
    rollups: int = 0
    """Hours of history rolled up (``rollups.roll_up``)."""


@dataclass(slots=True)
class DistStats:
    """Counters of one processor (cumulative since it started), for the pipeline page."""

    events: int = 0
    """Events of the entries this processor committed."""
    batches: int = 0
    """Entries this processor committed."""
    invalid: int = 0
    """Logged events the config no longer accepts (skipped)."""
    late: int = 0
    """Late events found by this processor's commits (one per metric an event feeds)."""
    reconciled: int = 0
    """Late events this processor reconciled into history."""
    redelivered: int = 0
    """Entries found already applied by another commit (acknowledged, not counted again)."""
    claimed: int = 0
    """Entries taken over from other consumers."""
    backlog_entries: int = 0
    backlog_events: int = 0
    lag_s: float = 0.0
    """Age of the last entry this processor committed while the group has a backlog."""
    tick_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Health:
    """Whether the processor works (``up``), since when it is paused (epoch ms, None when up),
    the last store error (kept after recovery, with its time) and the failed attempts of the
    current outage."""

    up: bool = True
    paused_since_ms: int | None = None
    last_error: str | None = None
    last_error_ms: int | None = None
    attempts: int = 0


@dataclass
class _Outage:
    """Pause, backoff and logging of store outages: logged when one starts and when it ends
    (``started`` and ``ended`` say what it means), not per attempt."""

    max_backoff_s: float
    started: str = "store unavailable, processing paused until it is back"
    ended: str = "stores reachable again"
    health: Health = field(default_factory=Health)
    retry_at: float = 0.0  # time.monotonic()

    def failed(self, exc: StoreUnavailable, now: int) -> float:
        """Record a failed attempt; returns the seconds to wait before the next one."""
        h = self.health
        attempts = h.attempts + 1
        if h.up:
            log.error("%s: %s", self.started, exc)
        else:
            log.debug("still unavailable (attempt %d): %s", attempts, exc)
        delay = min(self.max_backoff_s, FIRST_BACKOFF_S * 2.0 ** min(attempts - 1, 30))
        self.health = Health(False, h.paused_since_ms or now, str(exc), now, attempts)
        self.retry_at = time.monotonic() + delay
        return delay

    def recovered(self, now: int) -> None:
        h = self.health
        if not h.up:
            paused = (now - (h.paused_since_ms or now)) / 1000
            log.warning("%s after %.1f s (%d attempts)", self.ended, paused, h.attempts)
            self.health = Health(True, None, h.last_error, h.last_error_ms, 0)

    def wait_s(self) -> float:
        return 0.0 if self.health.up else max(0.0, self.retry_at - time.monotonic())


class DistributedProcessor:
    """One processor of the distributed mode (see the module docstring). ``step``, ``tick`` and
    ``reconcile`` are for one thread; ``health`` and ``stats_dict`` may be read from others."""

    def __init__(
        self,
        config: Config,
        log: RedisEventLog,
        hot: RedisHotStore,
        history: PostgresHistory,
        consumer: str,
        *,
        max_read_events: int = 20_000,
        claim_idle_ms: int = 60_000,
        claim_every_ms: int | None = None,
        max_backoff_s: float = 5.0,
        reconcile_lease_ms: int = RECONCILE_LEASE_MS,
        reports: RedisProcessorReports | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        """``clock`` (epoch ms) replaces the wall clock, for tests; without it the shared idle
        advance uses Redis's clock, one clock for every processor. ``reports`` tells retention
        which processors live (those that reported within ``claim_idle_ms``)."""
        if claim_idle_ms <= 0 or max_read_events < 1:
            raise ValueError("claim_idle_ms and max_read_events must be positive")
        self.config = config
        self.log = log
        self.hot = hot
        self.history = history
        self.consumer = consumer
        self.max_read_events = max_read_events
        self.claim_idle_ms = claim_idle_ms
        self.claim_every_ms = claim_every_ms or max(100, claim_idle_ms // 2)
        self.reconcile_lease_ms = reconcile_lease_ms
        self.reports = reports
        self.dead_letters = RedisDeadLetters(log.settings, client=log.client)
        self.decoder = EventDecoder(config)
        self.specs = {m.name: m for m in config.metrics}
        self.stats = DistStats()
        self._clock = clock
        self._outage = _Outage(max_backoff_s)
        self._history_outage = _Outage(
            max_backoff_s,
            "history unavailable; live values go on and final windows wait in Redis until it "
            "is back",
            "history reachable again",
        )
        now = self._now()
        self._next_claim_ms = now
        self._next_reconcile_ms = now + config.pipeline.reconcile_every_ms
        self._next_retain_ms = now
        self._last_read_events = 0
        self._last_received_ms: int | None = None
        self._current_step: dict[str, int] = {}
        self._unpublished: set[str] = set()

    # --- reading and committing ------------------------------------------------------------

    def step(self, block_ms: int = 0) -> int:
        """Claim idle entries when due, read the next entries (waiting up to ``block_ms`` when
        there are none) and commit them; returns the events read."""
        now = self._now()
        if now >= self._next_claim_ms:
            self._next_claim_ms = now + self.claim_every_ms
            claimed = self.log.claim_idle(self.consumer, self.claim_idle_ms, CLAIM_COUNT)
            if claimed:
                self.stats.claimed += claimed
                log.warning("%s took over %d idle log entries", self.consumer, claimed)
        entries = self.log.read(self.consumer, self.max_read_events, block_ms)
        self._last_read_events = sum(e.events for e in entries)
        if entries:
            self._commit([(entry, self._decode(entry)) for entry in entries])
        return self._last_read_events

    def _decode(self, entry: StreamEntry) -> Batch:
        # the clock of its ingest, so max_future judges every event as it did then
        batch = self.decoder.decode(entry.payload, entry.received_ms)
        if batch.errors:
            self.stats.invalid += len(batch.errors)
            log.warning(
                "log entry %s: %d events no longer pass the config and are skipped, e.g. %s",
                entry.id,
                len(batch.errors),
                batch.errors[0].error,
            )
        return batch

    def _commit(self, pending: list[tuple[StreamEntry, Batch]]) -> None:
        """Commit ``pending`` in one step with its acknowledgement; entries another commit
        applied already are acknowledged and dropped, and the rest committed."""
        while pending:
            ids = [entry.id for entry, _ in pending]
            batch = Batch.concat([b for _, b in pending])
            result, delta = self.hot.commit_batch(batch, ids, ack_command=self.log.ack_command(ids))
            if result.status == "committed":
                self.stats.events += sum(entry.events for entry, _ in pending)
                self.stats.batches += len(pending)
                self.stats.late += len(delta.late)
                self._last_received_ms = pending[-1][0].received_ms
                return
            if result.status == "applied":  # acknowledged by the script
                self.stats.redelivered += len(pending)
                return
            # partly: the applied ones were acknowledged by the commit that applied them;
            # acknowledging again is harmless and covers a commit made without the XACK
            applied = set(result.applied)
            self.log.ack(sorted(applied))
            self.stats.redelivered += len(applied)
            pending = [(entry, b) for entry, b in pending if entry.id not in applied]

    # --- the tick --------------------------------------------------------------------------

    def tick(self, now_ms: int | None = None) -> dict[str, Any]:
        """Advance (when drained), finalise, write history, publish current values and, when
        due, reconcile; returns the tick message with this processor's stats."""
        started = time.perf_counter()
        now = self._now() if now_ms is None else now_ms
        backlog = self.log.backlog()
        # the clock moves stream time only with no backlog: else the backlog's events would
        # be found late merely because they were read late
        if self._last_read_events < self.max_read_events and backlog.lag_entries == 0:
            explicit = now_ms is not None or self._clock is not None
            self.hot.advance(now if explicit else None)
        jobs = self.hot.finalize_all()
        # kept until published, so a failure below loses no change notice
        self._unpublished |= self.hot.take_changed() | {j.metric for j in jobs}
        self._unpublished |= self._moved_metrics(self.hot.stream_time())
        payloads: dict[str, bytes] = {}
        for name in sorted(self._unpublished & set(self.specs)):
            stream, values = self.hot.current(name)
            body = current_payload(self.specs[name], values, stream, now)
            payloads[name] = msgspec.json.encode(body)
        self.hot.publish_current(now, payloads)
        self._unpublished.clear()
        self._history_work(now)
        stats = self.stats
        stats.backlog_entries, stats.backlog_events = backlog.entries, backlog.events
        if backlog.entries and self._last_received_ms is not None:
            stats.lag_s = max(0.0, (now - self._last_received_ms) / 1000)
        else:
            stats.lag_s = 0.0
        stats.tick_ms = (time.perf_counter() - started) * 1000
        return {"tick": now, "metrics": sorted(payloads), "stats": self.stats_dict()}

    def _history_work(self, now: int) -> None:
        """Write the finalised windows to history and, when due, reconcile and apply
        retention. History being down does not pause the processor (the windows wait in
        Redis, live values go on): these are retried with backoff on later ticks. A Redis
        failure still raises, and pauses it."""
        if self._history_outage.wait_s() > 0:
            return
        try:
            self.hot.flush_pending(self.history)
            if now >= self._next_reconcile_ms:
                self.reconcile(now)
                self._next_reconcile_ms = now + self.config.pipeline.reconcile_every_ms
            if now >= self._next_retain_ms:
                self.retain(now)
                self._next_retain_ms = now + RETAIN_EVERY_MS
        except StoreUnavailable as exc:
            self.hot.stream_time()  # Redis down raises here: that pauses everything
            self._history_outage.failed(exc, now)
            return
        self._history_outage.recovered(now)

    def _moved_metrics(self, stream_time_ms: int | None) -> set[str]:
        """Metrics whose current window moved (a new tumbling window, or a sliding window one
        step on) since this processor last looked: their current value changed without a
        commit."""
        if stream_time_ms is None:
            return set()
        moved = set()
        for spec in self.config.metrics:
            step = stream_time_ms // spec.bucket_ms
            if self._current_step.get(spec.name) != step:
                self._current_step[spec.name] = step
                moved.add(spec.name)
        return moved

    # --- reconciliation ---------------------------------------------------------------------

    def reconcile(self, now_ms: int | None = None) -> int:
        """Revise the final windows holding late events from the log (see the module
        docstring); returns the late events applied (0 when another processor holds the
        lease)."""
        now = self._now() if now_ms is None else now_ms
        return self._leased(lambda: self._reconcile(now)) or 0

    def retain(self, now_ms: int | None = None) -> Retained | None:
        """Apply retention (under the lease; None when another processor holds it): log
        entries appended before ``retention.log`` (never one unacknowledged) and dead letters
        as old, history windows that ended before ``retention.history``, and consumers idle
        for ``takeover_after`` with nothing pending (stopped or dead processors whose entries
        were taken over); and roll up the hours of history that are final
        (``rollups.roll_up``)."""
        now = self._now() if now_ms is None else now_ms
        retention = self.config.pipeline.retention

        def run() -> Retained:
            living = {self.consumer}
            if self.reports is not None:
                wall = time.time_ns() // 1_000_000  # reports are stamped by the wall clock
                reported = self.reports.all().items()
                living |= {n for n, (at, _) in reported if wall - at < self.claim_idle_ms}
            stream = self.hot.stream_time()
            final_before = None if stream is None else stream - self.config.pipeline.lateness_ms
            done = Retained(
                log_entries=self.log.trim(now - retention.log_ms),
                dead_letters=self.dead_letters.trim(now - retention.log_ms),
                history_windows=self.history.trim(now - retention.history_ms),
                consumers=self.log.forget_idle_consumers(self.claim_idle_ms, living),
                rollups=0
                if final_before is None
                else roll_up(self.config, self.history, final_before),
            )
            if any(astuple(done)):
                log.info("retention: %s", done)
            return done

        return self._leased(run)

    def _leased(self, work: Callable[[], T]) -> T | None:
        """``work()`` while holding the lease, or None when another processor holds it."""
        if not self.hot.acquire_lease(self.consumer, self.reconcile_lease_ms):
            return None
        try:
            return work()
        finally:
            self.hot.release_lease(self.consumer)

    def _reconcile(self, now: int) -> int:
        rows = self.hot.late_entries(LATE_BATCH)
        if not rows:
            return 0
        # final by the store's own final-through time: later events for these windows are
        # refused by commits (they become late rows of their own)
        final_through = self.hot.final_through()
        todo = plan(self.config, [row for _, row in rows], now, final_through.get)
        windows = todo.windows
        done = [rows[i][0] for i in todo.done]
        expired = todo.expired
        if windows:
            low, high = span(windows)
            retention = self.config.pipeline.retention.log_ms
            entries = self.log.overlapping(low, high, now - retention)
            self.history.revise(recompute(self.config, entries, windows))
        # removed only once their windows are written: a crash in between reconciles again
        self.hot.late_done(done)
        if expired:
            log.warning("%d late events were too old to reconcile from the log", expired)
        applied = len(done) - expired
        self.stats.reconciled += applied
        if applied:
            log.info("reconciled %d late events into %d metrics", applied, len(windows))
        return applied

    # --- the loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set, ticking every ``pipeline.tick``. A store outage
        pauses it (see the module docstring); any other error ends it."""
        tick_ms = self.config.pipeline.tick_ms
        next_tick = self._now()
        resume = True  # ensure the group exists, as after an outage
        while not stop.is_set():
            wait = self._outage.wait_s()
            if wait > 0:
                stop.wait(wait)
                continue
            try:
                if resume:
                    self.log.ensure_group()
                    resume = False
                full = self._last_read_events >= self.max_read_events
                idle_ms = max(0, next_tick - self._now())
                self.step(0 if full else min(idle_ms, self.log.max_block_ms))
                now = self._now()
                if now >= next_tick:
                    self.tick()
                    # on a fixed cadence; a tick that overran is not made up for
                    next_tick = max(next_tick + tick_ms, self._now() - tick_ms // 2)
                self._outage.recovered(now)
            except StoreUnavailable as exc:
                self._outage.failed(exc, self._now())
                # its entries read and not committed are pending: read them again first
                self.log.rewind(self.consumer)
                self._last_read_events = 0
                resume = True

    def health(self) -> Health:
        """Up, or paused since when and why (Redis unreachable)."""
        return self._outage.health

    def history_health(self) -> Health:
        """History (PostgreSQL) writable, or failing since when and why; the processor goes on
        meanwhile."""
        return self._history_outage.health

    def stats_dict(self) -> dict[str, Any]:
        """The stats as a plain dict (for the tick message and the pipeline page)."""
        return asdict(self.stats)

    def _now(self) -> int:
        return now_ms() if self._clock is None else self._clock()
