"""Reconciliation: late events applied to history by recomputing their windows from the log.

A window that received late events is recomputed from every logged event whose time falls in
it, in log order, each event id counted once (its first arrival) and nothing treated as late.
That is exactly the batch recomputation the design promises, so a late duplicate of an event
already counted changes nothing, and running reconciliation twice changes nothing more.

Limits: the log keeps ``pipeline.retention.log`` (24 h by default) of events; a window whose
events may have left the log is not recomputed, and its late events are marked applied without
a revision (``Reconciled.expired`` counts them). A sliding metric's late event is left out of the
windows still open when it arrives (see the engine's docs); it stays pending, and each run
revises the windows holding it that have become final since, until all of them are.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import msgspec

from pulseboard.adapters.sqlite import LateRow, SqliteState, WindowRow
from pulseboard.adapters.sqlite_log import SqliteLogReader
from pulseboard.config import Config
from pulseboard.engine import Engine, WindowValue
from pulseboard.events import EventDecoder
from pulseboard.windows import windows_containing

log = logging.getLogger(__name__)

# lateness of the recomputing engine: nothing is late for it
_NEVER_LATE_MS = 100 * 365 * 86_400_000


class LogEntryLike(Protocol):
    """What recomputation reads of a log entry (``sqlite_log.LogEntry``,
    ``redis_log.StreamEntry``)."""

    @property
    def payload(self) -> bytes: ...

    @property
    def received_ms(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What one reconciliation did."""

    events: int
    """Late events applied."""
    windows: int
    """Windows (label sets included) written as revised."""
    expired: int
    """Late events whose windows were too old to recompute from the log."""
    waiting: int
    """Late events kept pending because a sliding window holding them is still open."""


@dataclass(slots=True)
class Plan:
    """What reconciling some late events takes: the final windows to recompute (metric ->
    {(start, end)}, only metrics with some), which late events are done once those are
    written (by their index in the events given), and how many of them expired."""

    windows: dict[str, set[tuple[int, int]]]
    done: list[int]
    expired: int


def plan(
    config: Config,
    late: Iterable[LateRow],
    now_ms: int,
    final_through: Callable[[str], int | None],
) -> Plan:
    """Sort late events: one whose metric left the config is done; one whose windows may have
    left the log (the log keeps ``retention.log``) is done and expired; otherwise its windows
    that are final (ending at or before ``final_through(metric)``, None: none is) are to be
    recomputed, and it is done once all its windows are (a sliding window holding it and still
    open gets it at a later run)."""
    # events of a window starting at s arrived at s - max_future or later, and the log keeps
    # what arrived within retention.log: windows starting before this may have lost events
    complete_from = now_ms - config.pipeline.retention.log_ms + config.pipeline.max_future_ms
    windows: dict[str, set[tuple[int, int]]] = defaultdict(set)
    done: list[int] = []
    expired = 0
    for i, row in enumerate(late):
        spec = config.metric(row.metric)
        if spec is None:
            done.append(i)
            continue
        holding = windows_containing(row.time_ms, spec.window_ms, spec.every_ms)
        if holding[0][0] < complete_from:
            expired += 1
            done.append(i)
            continue
        through = final_through(spec.name)
        final = [w for w in holding if through is not None and w[1] <= through]
        windows[spec.name].update(final)
        if len(final) == len(holding):
            done.append(i)
    return Plan({name: spans for name, spans in windows.items() if spans}, done, expired)


def reconcile(
    config: Config,
    log_reader: SqliteLogReader,
    state: SqliteState,
    *,
    through_pos: int,
    stream_time_ms: int | None,
    now_ms: int,
    pending: list[LateRow] | None = None,
) -> Reconciled:
    """Recompute every final window that has pending late events, from log entries up to
    ``through_pos``, and store the results as revised. ``pending`` (the store's pending late
    events when None) must have been read when the state was at ``through_pos``."""
    if pending is None:
        pending = state.pending_late()
    if not pending or stream_time_ms is None:
        return Reconciled(0, 0, 0, 0)
    final_through = stream_time_ms - config.pipeline.lateness_ms
    todo = plan(config, pending, now_ms, lambda _: final_through)
    applied = [pending[i] for i in todo.done]
    rows = _recompute(config, log_reader, todo.windows, through_pos) if todo.windows else []
    state.revise(rows, applied)
    expired = todo.expired
    if expired:
        log.warning("%d late events were too old to reconcile from the log", expired)
    return Reconciled(len(applied) - expired, len(rows), expired, len(pending) - len(applied))


def _recompute(
    config: Config,
    log_reader: SqliteLogReader,
    windows: dict[str, set[tuple[int, int]]],
    through_pos: int,
) -> list[WindowRow]:
    low, high = span(windows)
    return recompute(config, log_reader.overlapping(low, high, through_pos), windows)


def span(windows: dict[str, set[tuple[int, int]]]) -> tuple[int, int]:
    """The earliest start and the latest end of ``windows`` (metric -> {(start, end)})."""
    low = min(start for spans in windows.values() for start, _ in spans)
    high = max(end for spans in windows.values() for _, end in spans)
    return low, high


def recompute(
    config: Config,
    entries: Iterable[LogEntryLike],
    windows: dict[str, set[tuple[int, int]]],
) -> list[WindowRow]:
    """``windows`` (metric -> {(start, end)}) recomputed from ``entries`` (in log order, each
    decoded with the clock of its ingest), each event id counted once and nothing late, as
    rows with status ``revised``. ``entries`` must hold every logged event of those windows;
    others are ignored."""
    specs = tuple(m for m in config.metrics if m.name in windows)
    pipeline = dataclasses.replace(config.pipeline, lateness_ms=_NEVER_LATE_MS)
    engine = Engine(dataclasses.replace(config, metrics=specs, pipeline=pipeline))
    decoder = EventDecoder(config)
    for entry in entries:
        engine.process(decoder.decode(entry.payload, entry.received_ms))
    rows: list[WindowRow] = []
    for name, spans in windows.items():
        dumps = engine.aggregator(name).dumps
        for start, end in sorted(spans):
            rows.extend(
                window_row(v, dumps(v.state), "revised") for v in engine.window(name, start, end)
            )
    return rows


def window_row(value: WindowValue, state: bytes, status: str) -> WindowRow:
    """A window value as a stored row (labels as canonical JSON)."""
    return WindowRow(
        value.metric,
        labels_key(value.labels),
        value.window_start_ms,
        value.window_end_ms,
        value.value,
        state,
        status,
    )


def labels_key(labels: dict[str, object]) -> str:
    """Labels as the JSON text stored with a window (keys in ``group_by`` order)."""
    return msgspec.json.encode(labels).decode()
