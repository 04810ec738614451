"""Hourly rollups of history: each hour of a metric's windows merged into one window per label
set, so that a series over weeks or months reads one row per hour and label set.

The store keeps them consistent (``PostgresHistory``: every write to history moves its hours'
version; a rollup counts only at the version it was made from, and a series reads an hour's
windows whenever its rollup is missing or older). This module makes them: ``roll_up`` merges
the windows of hours whose rollup is missing or stale with the metric's own aggregator, as a
series step of an hour would, so a point read from a rollup equals the point read from the
windows. The distributed processor runs it with retention, under the same lease.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Protocol

from pulseboard.adapters.base import WindowRow
from pulseboard.adapters.postgres import HOUR_MS, RollupHour, rollable
from pulseboard.config import Config
from pulseboard.engine import aggregator_for

ROLLUP_BATCH = 200
"""Hours one ``roll_up`` makes at most (the rest the next time)."""


class RollupStore(Protocol):
    """What ``roll_up`` needs of a history store (``PostgresHistory``)."""

    def hours_to_roll(
        self, windows: list[tuple[str, int]], before_ms: int, limit: int
    ) -> list[RollupHour]: ...

    def windows(
        self, metric: str, start_ms: int, end_ms: int, window_ms: int
    ) -> list[WindowRow]: ...

    def write_rollup(self, hour: RollupHour, rows: list[WindowRow]) -> bool: ...


def roll_up(config: Config, store: RollupStore, before_ms: int, limit: int = ROLLUP_BATCH) -> int:
    """Roll up to ``limit`` hours ending at or before ``before_ms`` (all their windows final)
    of the config's metrics whose windows divide an hour; returns how many were written (an
    hour whose windows changed meanwhile is left for the next time)."""
    specs = {(m.name, m.window_ms): m for m in config.metrics if rollable(m.window_ms)}
    made = 0
    for hour in store.hours_to_roll(sorted(specs), before_ms, limit):
        agg = aggregator_for(config, specs[hour.metric, hour.window_ms])
        end = hour.start_ms + HOUR_MS
        by_labels: dict[str, list[WindowRow]] = defaultdict(list)
        for row in store.windows(hour.metric, hour.start_ms, end, hour.window_ms):
            by_labels[row.labels].append(row)
        merged = []
        for labels, rows in by_labels.items():
            state = agg.loads(rows[0].state)
            for row in rows[1:]:
                state = agg.merge(state, agg.loads(row.state))
            status = "revised" if any(r.status == "revised" for r in rows) else "final"
            merged.append(
                WindowRow(
                    hour.metric,
                    labels,
                    hour.start_ms,
                    end,
                    agg.result(state),
                    agg.dumps(state),
                    status,
                )
            )
        made += store.write_rollup(hour, merged)
    return made
