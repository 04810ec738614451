"""Pipeline samples: rates between ticks, no negative rate after a processor restart, history
bounded to 15 minutes and filtered by time."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from pulseboard import pipeline_stats
from pulseboard.pipeline_stats import Sampler


class Counters:
    """A pipeline whose counters the test sets (the service implements the same protocol)."""

    def __init__(self) -> None:
        self.accepted = self.rejected = self.processed = 0
        self.stats: dict[str, Any] = {}

    def totals(self) -> tuple[int, int, int]:
        return self.accepted, self.rejected, self.processed

    def processor_stats(self) -> dict[str, Any]:
        return self.stats

    def live_clients(self) -> int:
        return 3

    def processor_up(self) -> bool:
        return True

    def backlog_events(self) -> int:
        return 42


def test_rates_are_the_counts_between_samples_over_the_time_between() -> None:
    source = Counters()
    sampler = Sampler(source, tick_ms=1000)
    first = sampler.sample(1_000)
    assert (first.events_per_second, first.processed_per_second) == (0.0, 0.0)

    source.accepted, source.rejected, source.processed = 1_000, 10, 500
    source.stats = {"lag_s": 0.25, "late": 7, "reconciled": 5, "rss_bytes": 2**20, "tick_ms": 1.5}
    started = time.monotonic()
    time.sleep(0.2)
    second = sampler.sample(2_000)
    elapsed = time.monotonic() - started
    # the rate divides by the monotonic time between samples, at least the sleep
    assert 1_000 / elapsed * 0.9 <= second.events_per_second <= 1_000 / 0.2
    assert second.rejected_per_second <= 10 / 0.2
    assert abs(second.processed_per_second - second.events_per_second / 2) <= 0.1
    assert (second.lag_ms, second.late_events, second.reconciled) == (250, 7, 5)
    assert (second.dead_letters, second.live_clients, second.backlog_events) == (10, 3, 42)
    assert (second.memory_bytes, second.tick_ms, second.processor_up) == (2**20, 1.5, True)


def test_a_restarted_processor_counting_from_zero_gives_no_negative_rate() -> None:
    source = Counters()
    sampler = Sampler(source, tick_ms=1000)
    source.processed = 5_000
    sampler.sample(1_000)
    source.processed = 10
    assert sampler.sample(2_000).processed_per_second == 0.0


def test_history_keeps_fifteen_minutes_and_filters_by_time() -> None:
    sampler = Sampler(Counters(), tick_ms=1000)
    for second in range(1_000):
        sampler.sample(second * 1000)
    kept = sampler.history(0)
    assert len(kept) == 900 and kept[0].t == 100_000 and kept[-1].t == 999_000
    assert [s.t for s in sampler.history(998_000)] == [998_000, 999_000]
    assert sampler.current() == kept[-1]


def test_the_live_message_carries_the_sample_and_each_metrics_footprint() -> None:
    sample = Sampler(Counters(), tick_ms=1000).sample(5_000)
    stats = {"label_sets": {"orders": 3, "revenue": 1}, "state_bytes": {"orders": 900}}
    body = msgspec.json.decode(pipeline_stats.message(sample, stats))
    assert body["pipeline"]["t"] == 5_000
    assert body["metrics"] == [
        {"name": "orders", "label_sets": 3, "state_bytes": 900},
        {"name": "revenue", "label_sets": 1, "state_bytes": 0},
    ]
