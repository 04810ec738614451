"""The hot store on Redis: open windows shared by several processors, with an atomic, idempotent
commit (not yet wired into the processor).

- **State.** Per metric, one hash per bucket (a tumbling metric's window, a sliding metric's
  ``every``), holding each label set's part of the engine's aggregate state
  (``redis_hot_ops``); label sets are interned per metric. Reading rebuilds the engine's own
  state type, so results and ``dumps`` bytes are the embedded engine's.
- **Commit** (``commit``): one Lua script, one round trip, all or nothing. (1) Entries already
  applied: acknowledged, nothing else changes (a redelivered batch). (2) Event ids another
  commit counted, or (3) buckets already final: reported, nothing written; the caller drops the
  ids or, with the stream time the store returns, finds those events late, and commits again
  (``commit_batch`` does this). (4) Otherwise: ids marked counted, entries marked applied, the
  deltas applied, late events appended to the late stream, stream time raised, the metrics
  marked changed and the entries acknowledged (XACK) — together. A mark is therefore only ever
  made by a commit that happened: a processor that dies before or during its commit leaves
  nothing, and its entries are delivered again.
- **Finalisation once** (``finalize``): a script moves a metric's final-through time to stream
  time minus lateness and queues the windows that became final as one job in
  ``pending_history``; a second processor finalising the same metric finds nothing left. The
  commit's check (3) then refuses any delta for those windows' buckets, so what a job reads is
  frozen. ``flush_pending`` writes every queued job to a ``HistoryStore`` (an idempotent upsert)
  and only then removes it, deleting the buckets no window needs any more; a crash in between
  leaves the job queued, and the next ``flush_pending`` writes it again.
- **Stream time** is shared: commits raise it, ``advance`` moves it on with the clock while no
  input arrives (as ``Engine.advance``).
- **Errors**: every Redis error leaves as ``StoreUnavailable`` naming the URL, password masked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, overload

import msgspec
import redis
from redis.commands.core import Script

from pulseboard.adapters.base import LateRow, WindowRow
from pulseboard.adapters.ports import HistoryStore
from pulseboard.adapters.redis_conn import RedisSettings, RedisStore, text
from pulseboard.adapters.redis_hot_ops import (
    Buckets,
    HotDelta,
    aggregators,
    current_window,
    dedupe_geometry,
    final_windows,
    kind_code,
    labels_json,
    open_windows,
    prepare,
    state_from_fields,
    state_ops,
)
from pulseboard.aggregates import Aggregator
from pulseboard.config import Config
from pulseboard.engine import OTHER, WindowValue
from pulseboard.events import Batch

log = logging.getLogger(__name__)

DEDUPE_SAFETY_MS = 86_400_000
"""Wall-clock slack on the dedupe sets' expiry (they are dropped by stream time; the expiry
only bounds what a deployment that stops for good leaves behind)."""
MAX_ATTEMPTS = 8

# KEYS: the lease. ARGV: owner, ttl ms, "acquire" | "release". Compare-and-set in one step, so
# a lease that expired and was taken by another owner is never extended or released by the
# first.
LEASE_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if ARGV[3] == 'release' then
  if holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 1
end
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


def _script(name: str) -> str:
    return resources.files("pulseboard.adapters").joinpath(f"lua/{name}.lua").read_text()


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What a commit did. ``status``: ``committed``; ``applied`` (every entry was applied
    before: acknowledged, nothing else changed); ``partly`` (some were: ``applied`` lists them,
    nothing written); ``conflict`` (``duplicates``: ids another commit counted; ``final``:
    ``metric:bucket start`` pairs already final; nothing written). ``stream_time_ms`` is the
    shared stream time the script saw (after a commit: the new one)."""

    status: str
    stream_time_ms: int | None
    applied: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    final: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FinalJob:
    """Windows of ``metric`` ending in ``(low_ms, high_ms]`` became final and wait in
    ``pending_history``."""

    metric: str
    low_ms: int
    high_ms: int

    @property
    def member(self) -> str:
        return f"{self.metric}\t{self.low_ms}\t{self.high_ms}"


class RedisHotStore(RedisStore):
    """Open windows of every metric of ``config`` in Redis, shared by the processors."""

    what = "Redis hot store"

    def __init__(
        self, settings: RedisSettings, config: Config, *, client: redis.Redis | None = None
    ) -> None:
        super().__init__(settings, client=client)
        self.config = config
        self.specs = {m.name: m for m in config.metrics}
        self.aggs: dict[str, Aggregator] = aggregators(config)
        self._horizon_ms, self._dedupe_width_ms = dedupe_geometry(config)
        self._scripts: dict[str, Script] = {
            name: self.client.register_script(_script(name))
            for name in (
                "hot_commit",
                "hot_finalize",
                "hot_complete",
                "hot_advance",
                "hot_read",
                "hot_footprint",
            )
        }
        self._scripts["lease"] = self.client.register_script(LEASE_SCRIPT)

    # --- commit ----------------------------------------------------------------------------

    def commit(self, delta: HotDelta, *, ack_command: Sequence[str] | None = None) -> CommitResult:
        """Apply ``delta`` atomically (see the module docstring), acknowledging its entries in
        the log's consumer group in the same step. ``ack_command`` is
        ``RedisEventLog.ack_command(ids)`` (its stream and group are used; by default the log
        and group of this store's prefix)."""
        stream, group = self.keys.log, self.keys.log_group
        if ack_command is not None:
            stream, group = ack_command[1], ack_command[2]
        keys = [
            self.keys.stream_time,
            self.keys.applied,
            self.keys.changed,
            self.keys.late,
            self.keys.final_through,
            stream,
            self.keys.dedupe_index,
        ]
        argv = self._commit_args(delta, group)
        with self._translate("cannot commit to"):
            reply: Any = self._scripts["hot_commit"](keys=keys, args=argv)
        status = text(reply[0])
        now = None if not reply[1] else int(reply[1])
        if status == "partly":
            return CommitResult(status, now, applied=tuple(text(i) for i in reply[2]))
        if status == "conflict":
            return CommitResult(
                status,
                now,
                duplicates=tuple(text(i) for i in reply[2]),
                final=tuple(text(i) for i in reply[3]),
            )
        return CommitResult(status, now)

    def _commit_args(self, delta: HotDelta, group: str) -> list[Any]:
        argv: list[Any] = [
            self.keys.hot_base(),
            self.keys.dedupe_base(),
            group,
            # applied marks are kept as long as the log keeps entries (by the entry id's
            # time), so any entry that can be delivered again is recognised
            self.config.pipeline.retention.log_ms,
            self._horizon_ms,
            self._dedupe_width_ms,
            DEDUPE_SAFETY_MS,
            "" if delta.max_event_ms is None else delta.max_event_ms,
            len(delta.entry_ids),
            *delta.entry_ids,
            len(delta.ids),
        ]
        for start, ids in sorted(delta.ids.items()):
            argv += [start, len(ids), *ids]
        argv.append(len(delta.states))
        for name, buckets in delta.states.items():
            spec = self.specs[name]
            other = labels_json(spec.group_by, (OTHER,) * len(spec.group_by))
            threshold = self.config.pipeline.distinct_exact_threshold
            argv += [name, kind_code(spec.agg), spec.bucket_ms, spec.window_ms]
            argv += [spec.max_label_sets, other, threshold, len(buckets)]
            for start, labels in sorted(buckets.items()):
                argv += [start, len(labels)]
                for label, state in labels.items():
                    argv += [label, *state_ops(spec.agg, state)]
        argv.append(len(delta.late))
        for r in delta.late:
            value = msgspec.json.encode(r.value).decode()
            argv += [r.metric, r.event_id, r.window_start_ms, r.window_end_ms, r.labels]
            argv += [r.time_ms, value]
        return argv

    def commit_batch(
        self,
        batch: Batch,
        entry_ids: list[str],
        *,
        stream_time_ms: int | None = None,
        ack_command: Sequence[str] | None = None,
    ) -> tuple[CommitResult, HotDelta]:
        """Compute ``batch``'s deltas (``redis_hot_ops.prepare``) at the shared stream time
        and commit them, recomputing after a conflict: ids counted elsewhere are dropped, and
        events whose buckets turned final are found late at the stream time the store returned.
        ``partly`` is returned as it is (the caller removes the applied entries and calls
        again). Returns the last result and the delta it committed (or tried)."""
        seen: set[str] = set()
        now = self.stream_time() if stream_time_ms is None else stream_time_ms
        for _ in range(MAX_ATTEMPTS):
            delta = prepare(self.config, batch, entry_ids, now, seen)
            result = self.commit(delta, ack_command=ack_command)
            if result.status != "conflict":
                return result, delta
            seen.update(result.duplicates)
            if result.stream_time_ms is not None:
                now = result.stream_time_ms if now is None else max(now, result.stream_time_ms)
        raise RuntimeError(f"commit of {entry_ids[:3]} still conflicting after {MAX_ATTEMPTS}")

    # --- clock -----------------------------------------------------------------------------

    def stream_time(self) -> int | None:
        """The shared stream time (epoch ms), None before the first event."""
        with self._translate("cannot read from"):
            value: Any = self.client.hget(self.keys.stream_time, "stream")
        return None if value is None else int(value)

    def advance(self, now_ms: int | None = None) -> int | None:
        """``Engine.advance``'s idle clock, shared: with no commit since the previous advance
        (by any processor), stream time moves on to the anchored event time plus the wall
        time elapsed since the anchor; otherwise the anchor is set to (now, largest event
        time). ``now_ms`` None uses Redis's clock, one clock for every processor. Returns
        the stream time."""
        with self._translate("cannot advance the clock of"):
            reply: Any = self._scripts["hot_advance"](
                keys=[self.keys.stream_time], args=["" if now_ms is None else now_ms]
            )
        return None if not reply else int(reply)

    def take_changed(self) -> set[str]:
        """The metrics whose open windows changed since the last call (for the tick
        notifier), emptying the set."""
        with self._translate("cannot read from"):
            pipe = self.client.pipeline(transaction=True)
            pipe.smembers(self.keys.changed)
            pipe.delete(self.keys.changed)
            members, _ = pipe.execute()
        return {text(m) for m in members}

    # --- finalisation --------------------------------------------------------------------

    def finalize(self, metric: str) -> FinalJob | None:
        """Make final what the shared stream time allows for ``metric``, once: returns the job
        queued in ``pending_history`` (None when nothing with buckets became final)."""
        spec = self.specs[metric]
        keys = [
            self.keys.stream_time,
            self.keys.final_through,
            self.keys.pending_history,
            self.keys.hot_index(metric),
        ]
        args: list[str | int] = [
            metric,
            spec.bucket_ms,
            spec.window_ms,
            self.config.pipeline.lateness_ms,
        ]
        with self._translate("cannot finalise windows in"):
            reply: Any = self._scripts["hot_finalize"](keys=keys, args=args)
        if not reply or int(reply[2]) == 0:
            return None
        return FinalJob(metric, int(reply[0]), int(reply[1]))

    def finalize_all(self) -> list[FinalJob]:
        """``finalize`` every metric."""
        jobs = [self.finalize(m.name) for m in self.config.metrics]
        return [j for j in jobs if j is not None]

    def pending(self) -> list[FinalJob]:
        """The jobs in ``pending_history``, oldest first."""
        with self._translate("cannot read from"):
            members: Any = self.client.lrange(self.keys.pending_history, 0, -1)
        jobs = []
        for member in members:
            metric, low, high = text(member).split("\t")
            jobs.append(FinalJob(metric, int(low), int(high)))
        return jobs

    def job_windows(self, job: FinalJob) -> list[WindowValue] | None:
        """The final windows of ``job``, as the engine emits them; None when the job is no
        longer pending. Checked in the same step as the read: another processor that completed
        the job may have deleted some of its buckets, and windows read from what is left would
        be wrong."""
        spec = self.specs[job.metric]
        # a window ending after low holds buckets starting after low - window
        after = f"({job.low_ms - spec.window_ms}"
        read = self._read(job.metric, after, job.high_ms - spec.bucket_ms, pending=job.member)
        if read is None:
            return None
        return final_windows(spec, self.aggs[job.metric], read[2], job.low_ms, job.high_ms)

    def flush_pending(self, history: HistoryStore) -> int:
        """Write every pending job's windows to ``history`` (``write_final``: idempotent), then
        complete the job; returns how many windows were written. Run at start too: it writes
        again what a crash left between finalisation and history."""
        written = 0
        for job in self.pending():
            if job.metric not in self.specs:
                log.warning("dropping pending windows of unknown metric %s", job.metric)
                self._complete(job)
                continue
            windows = self.job_windows(job)
            if windows is None:  # written and completed by another processor meanwhile
                continue
            rows = [self._row(v) for v in windows]
            if rows:
                history.write_final(rows)
            self._complete(job)
            written += len(rows)
        return written

    def _complete(self, job: FinalJob) -> int:
        spec = self.specs.get(job.metric)
        window = spec.window_ms if spec is not None else 0
        distinct = "1" if spec is not None and spec.agg == "distinct" else "0"
        keys = [self.keys.pending_history, self.keys.final_through, self.keys.hot_index(job.metric)]
        args: list[str | int] = [
            job.member,
            job.metric,
            window,
            self.keys.hot_bucket_base(job.metric),
            distinct,
        ]
        with self._translate("cannot complete pending windows in"):
            return int(self._scripts["hot_complete"](keys=keys, args=args))

    def _row(self, value: WindowValue) -> WindowRow:
        labels = msgspec.json.encode(value.labels).decode()
        state = self.aggs[value.metric].dumps(value.state)
        return WindowRow(
            value.metric,
            labels,
            value.window_start_ms,
            value.window_end_ms,
            value.value,
            state,
            "final",
        )

    # --- reads ---------------------------------------------------------------------------

    def open_windows(self, metric: str) -> list[WindowValue]:
        """``Engine.open_windows``: the not yet final windows aligned to the window length
        that hold buckets, for series (one consistent read)."""
        _, final, buckets = self._read(metric)
        return open_windows(self.specs[metric], self.aggs[metric], buckets, final)

    def footprint(self) -> dict[str, tuple[int, int]]:
        """Per metric: (label sets interned, bytes Redis uses for its open buckets), for the
        pipeline page; one round trip."""
        script = self._scripts["hot_footprint"]
        names = [m.name for m in self.config.metrics]
        with self._translate("cannot read from"):
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                keys = [self.keys.hot_labels(name), self.keys.hot_index(name)]
                script(keys=keys, args=[self.keys.hot_bucket_base(name)], client=pipe)
            replies: list[Any] = pipe.execute()
        return {n: (int(r[0]), int(r[1])) for n, r in zip(names, replies, strict=True)}

    def current(self, metric: str) -> tuple[int | None, list[WindowValue]]:
        """(stream time, ``Engine.current``): what ``processor.current_payload`` needs, from
        one consistent read."""
        now, _, buckets = self._read(metric, "current")
        return now, current_window(self.specs[metric], self.aggs[metric], buckets, now)

    @overload
    def _read(
        self, metric: str, low: int | str | None = None, high: int | None = None
    ) -> tuple[int | None, int | None, Buckets]: ...

    @overload
    def _read(
        self, metric: str, low: int | str | None, high: int | None, *, pending: str
    ) -> tuple[int | None, int | None, Buckets] | None: ...

    def _read(
        self,
        metric: str,
        low: int | str | None = None,
        high: int | None = None,
        *,
        pending: str | None = None,
    ) -> tuple[int | None, int | None, Buckets] | None:
        """(stream time, final-through, buckets starting in [low, high]) in one script
        (``low="current"``: those of the current window, found from stream time there). With
        ``pending`` (a job's member), None unless that job is in ``pending_history`` at the
        moment of the read (MULTI/EXEC: both in one step)."""
        spec = self.specs[metric]
        keys = [
            self.keys.stream_time,
            self.keys.final_through,
            self.keys.hot_labels(metric),
            self.keys.hot_index(metric),
        ]
        args: list[str | int] = [
            metric,
            self.keys.hot_bucket_base(metric),
            "-inf" if low is None else low,
            "+inf" if high is None else high,
            "1" if spec.agg == "distinct" else "0",
            spec.bucket_ms,
            spec.window_ms,
        ]
        with self._translate("cannot read from"):
            if pending is None:
                reply: Any = self._scripts["hot_read"](keys=keys, args=args)
            else:
                pipe = self.client.pipeline(transaction=True)
                pipe.lpos(self.keys.pending_history, pending)
                self._scripts["hot_read"](keys=keys, args=args, client=pipe)
                position, reply = pipe.execute()
                if position is None:
                    return None
        stream = None if not reply[0] else int(reply[0])
        final = None if not reply[1] else int(reply[1])
        return stream, final, self._buckets(metric, reply[2], reply[3])

    def _buckets(self, metric: str, label_fields: list[bytes], rows: list[Any]) -> Buckets:
        names = {}
        for name, value in _pairs(label_fields):
            if name.startswith("i:"):
                names[name[2:]] = value.decode()
        agg = self.aggs[metric]
        out: Buckets = {}
        for start, fields, extras in rows:
            by_label: dict[str, dict[str, bytes]] = {}
            for name, value in _pairs(fields):
                lid, _, component = name.partition(":")
                by_label.setdefault(lid, {})[component] = value
            extra = {text(lid): _extra(mode, members) for lid, mode, members in extras}
            out[int(start)] = {
                names[lid]: state_from_fields(agg, comps, extra.get(lid))
                for lid, comps in by_label.items()
            }
        return out

    def final_through(self) -> dict[str, int]:
        """Each finalised metric's final-through time: every window of it ending at or before
        that time is final, and commits refuse events for it (they become late)."""
        with self._translate("cannot read from"):
            found: Any = self.client.hgetall(self.keys.final_through)
        return {text(k): int(v) for k, v in found.items()}

    # --- late events and reconciliation --------------------------------------------------

    def late_entries(self, count: int) -> list[tuple[str, LateRow]]:
        """The oldest ``count`` late events awaiting reconciliation, with their ids in the late
        stream (for ``late_done``)."""
        with self._translate("cannot read from"):
            rows: Any = self.client.xrange(self.keys.late, count=count)
        out = []
        for stream_id, raw in rows:
            f = {text(k): text(v) for k, v in raw.items()}
            record = LateRow(
                f["metric"],
                f["event_id"],
                int(f["window_start"]),
                int(f["window_end"]),
                f["labels"],
                int(f["time_ms"]),
                msgspec.json.decode(f["value"]),
            )
            out.append((text(stream_id), record))
        return out

    def late_done(self, ids: Sequence[str]) -> int:
        """Remove reconciled late events (by their ids in the late stream); returns how many
        were there. Removing one twice is harmless."""
        if not ids:
            return 0
        with self._translate("cannot write to"):
            return int(self.client.xdel(self.keys.late, *ids))

    def acquire_lease(self, owner: str, ttl_ms: int) -> bool:
        """Take (or extend, if ``owner`` holds it) the reconciliation lease for ``ttl_ms``;
        False while another owner holds it. One reconciler at a time, so that an older
        recomputation never overwrites a newer one."""
        with self._translate("cannot take the lease in"):
            reply: Any = self._scripts["lease"](
                keys=[self.keys.reconcile_lease], args=[owner, ttl_ms, "acquire"]
            )
        return bool(reply)

    def release_lease(self, owner: str) -> None:
        """Give the reconciliation lease back if ``owner`` still holds it."""
        with self._translate("cannot release the lease in"):
            self._scripts["lease"](keys=[self.keys.reconcile_lease], args=[owner, 0, "release"])

    # --- current values for the API processes ---------------------------------------------

    def publish_current(self, tick_ms: int, payloads: dict[str, bytes]) -> int:
        """Store the encoded current values of the metrics in ``payloads`` (``RedisKeys.current``)
        and publish ``{"tick": tick_ms, "metrics": [names]}`` on ``RedisKeys.ticks``, in one
        MULTI/EXEC: a subscriber told of a metric finds its new value. Nothing is published
        without payloads. Returns how many subscribers received the message."""
        if not payloads:
            return 0
        message = msgspec.json.encode({"tick": tick_ms, "metrics": sorted(payloads)})
        with self._translate("cannot publish current values to"):
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(self.keys.current, mapping=dict(payloads))  # type: ignore[arg-type]
            pipe.publish(self.keys.ticks, message)
            _, received = pipe.execute()
        return int(received)

    def current_payloads(self, metrics: Sequence[str]) -> dict[str, bytes]:
        """The stored current values of ``metrics`` (those never published are left out)."""
        if not metrics:
            return {}
        with self._translate("cannot read from"):
            values: Any = self.client.hmget(self.keys.current, list(metrics))
        return {m: bytes(v) for m, v in zip(metrics, values, strict=True) if v is not None}

    def late_rows(self) -> list[dict[str, str]]:
        """Every late event in the late stream (for reconciliation and tests)."""
        with self._translate("cannot read from"):
            rows: Any = self.client.xrange(self.keys.late)
        return [{text(k): text(v) for k, v in fields.items()} for _, fields in rows]


def _pairs(flat: Iterable[bytes]) -> Iterable[tuple[str, bytes]]:
    it = iter(flat)
    return ((text(k), v) for k, v in zip(it, it, strict=True))


def _extra(mode: bytes, members: list[bytes]) -> Any:
    if mode == b"s":
        return [text(m) for m in members]
    return {name: int(value) for name, value in _pairs(members)}
