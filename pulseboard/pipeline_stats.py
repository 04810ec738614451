"""The pipeline's own numbers as a series: one sample per tick, kept 15 minutes, pushed live.

``/metrics`` serves the same counters for Prometheus; this is what the web UI's pipeline page
and ``pipeline.<stat>`` panels draw: rates computed between consecutive samples, the backlog,
the processing lag, late events, dead letters, live clients and the processor's memory.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

HISTORY_MS = 15 * 60_000
"""How much sample history is kept (and served by ``GET /v1/pipeline``)."""

CHANNEL = "pipeline."
"""The live hub channel of samples: not a valid metric name, so it never collides with one."""


class Sample(msgspec.Struct, frozen=True):
    """The pipeline at one tick; counters are cumulative, ``*_per_second`` since the last one."""

    t: int
    events_per_second: float
    rejected_per_second: float
    processed_per_second: float
    backlog_events: int
    lag_ms: int
    late_events: int
    reconciled: int
    dead_letters: int
    live_clients: int
    processor_up: bool
    memory_bytes: int
    tick_ms: float


class Source(Protocol):
    """What a sample is read from (the service)."""

    def totals(self) -> tuple[int, int, int]:
        """Accepted and rejected events since start, events the processor aggregated."""
        ...

    def processor_stats(self) -> dict[str, Any]: ...

    def live_clients(self) -> int: ...

    def processor_up(self) -> bool: ...

    def backlog_events(self) -> int: ...


@dataclass(slots=True)
class _Totals:
    at_s: float
    accepted: int
    rejected: int
    processed: int


class Sampler:
    """Takes a sample per tick from a :class:`Source` and keeps the last ``HISTORY_MS``."""

    def __init__(self, source: Source, tick_ms: int) -> None:
        self._source = source
        self._history: collections.deque[Sample] = collections.deque(
            maxlen=max(1, HISTORY_MS // tick_ms)
        )
        self._last: _Totals | None = None

    def sample(self, now_ms: int) -> Sample:
        """Take the sample of this tick and keep it."""
        source = self._source
        accepted, rejected, processed = source.totals()
        now_s = time.monotonic()
        last = self._last
        self._last = _Totals(now_s, accepted, rejected, processed)

        def rate(new: int, old: int) -> float:
            # a restarted processor counts from zero again: no negative rates
            if last is None or now_s <= last.at_s or new < old:
                return 0.0
            return round((new - old) / (now_s - last.at_s), 1)

        stats = source.processor_stats()
        sample = Sample(
            t=now_ms,
            events_per_second=rate(accepted, last.accepted if last else 0),
            rejected_per_second=rate(rejected, last.rejected if last else 0),
            processed_per_second=rate(processed, last.processed if last else 0),
            backlog_events=source.backlog_events(),
            lag_ms=round(float(stats.get("lag_s", 0.0)) * 1000),
            late_events=int(stats.get("late", 0)),
            reconciled=int(stats.get("reconciled", 0)),
            dead_letters=rejected,
            live_clients=source.live_clients(),
            processor_up=source.processor_up(),
            memory_bytes=int(stats.get("rss_bytes", 0)),
            tick_ms=round(float(stats.get("tick_ms", 0.0)), 2),
        )
        self._history.append(sample)
        return sample

    def history(self, from_ms: int) -> list[Sample]:
        """The kept samples taken at or after ``from_ms``, oldest first."""
        return [s for s in self._history if s.t >= from_ms]

    def current(self) -> Sample | None:
        return self._history[-1] if self._history else None


def metric_stats(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Per metric: label sets held and the size of its open-window state (bytes: embedded, as
    of the processor's last checkpoint; distributed, what Redis uses for its open buckets)."""
    label_sets: dict[str, int] = stats.get("label_sets", {})
    state_bytes: dict[str, int] = stats.get("state_bytes", {})
    return [
        {"name": name, "label_sets": count, "state_bytes": state_bytes.get(name, 0)}
        for name, count in label_sets.items()
    ]


def message(sample: Sample, stats: dict[str, Any]) -> bytes:
    """The live message of one tick: ``{"pipeline": sample, "metrics": [...]}``."""
    return msgspec.json.encode({"pipeline": sample, "metrics": metric_stats(stats)})
