"""History on PostgreSQL: how long a bulk load of months of windows takes, and series reads.

``run_history_bench(url)`` fills an empty database with ``days`` days of 1-minute windows
(``metrics`` metrics x ``label_sets`` label sets, ending at the current UTC midnight) through
``PostgresHistory.bulk_load`` (COPY), one day per COPY, then reads series of the last hour, day,
week and the whole span through ``PostgresHistory.windows`` (every window, Python objects
included) and reports the median of several reads of each. Then it rolls every hour up
(``rollups.roll_up``, as the processors do) and times the same spans read as an hourly series
(``PostgresHistory.series_windows`` with a step of 1 h, what ``GET …/series?step=1h`` reads).
The data is left in place: point it at a throwaway database.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import psycopg

from pulseboard.adapters.base import WindowRow
from pulseboard.adapters.postgres import DAY_MS, HOUR_MS, PostgresHistory
from pulseboard.aggregates import get_aggregator
from pulseboard.benchmarks.harness import BenchError
from pulseboard.config import Config, parse_config
from pulseboard.rollups import roll_up

MINUTE_MS = 60_000


def _bench_config(metrics: int) -> Config:
    """The metrics the rows belong to: even ones count, odd ones sum, 1-minute windows."""
    return parse_config(
        {
            "events": {"e": {"fields": {"x": {"type": "float"}, "region": {"type": "string"}}}},
            "metrics": [
                {"name": f"bench_{m}", "event": "e", "window": "1m", "group_by": ["region"]}
                | ({"agg": "count"} if m % 2 == 0 else {"agg": "sum", "field": "x"})
                for m in range(metrics)
            ],
        },
        "<bench history>",
    )


def _day_rows(day_start: int, metrics: int, label_sets: int) -> Iterator[WindowRow]:
    """One day of 1-minute windows with the aggregators' own states (so they can be rolled
    up); even metrics count (int values), odd ones sum (floats)."""
    labels = [f'{{"region":"r{j}"}}' for j in range(label_sets)]
    count, total = get_aggregator("count"), get_aggregator("sum")
    for m in range(metrics):
        metric = f"bench_{m}"
        for k in range(1440):
            start = day_start + k * MINUTE_MS
            for j, label in enumerate(labels):
                if m % 2 == 0:
                    value: int | float = k + j
                    state = count.dumps(value)
                else:
                    value = (k + j) * 1.25
                    state = total.dumps(total.add(total.initial(), value))
                yield WindowRow(metric, label, start, start + MINUTE_MS, value, state, "final")


def _time_reads(
    store: PostgresHistory, metric: str, start: int, end: int, repeat: int, step_ms: int | None
) -> dict[str, Any]:
    """Median and best of ``repeat`` reads: every window, or with ``step_ms`` a series's."""
    seconds, rows = [], 0
    for _ in range(repeat):
        began = time.perf_counter()
        if step_ms is None:
            rows = len(store.windows(metric, start, end, MINUTE_MS))
        else:
            rows = len(store.series_windows(metric, start, end, MINUTE_MS, step_ms))
        seconds.append(time.perf_counter() - began)
    return {
        "rows": rows,
        "runs": repeat,
        "median_ms": round(statistics.median(seconds) * 1000, 2),
        "min_ms": round(min(seconds) * 1000, 2),
    }


def run_history_bench(
    url: str, days: int = 90, metrics: int = 3, label_sets: int = 4
) -> dict[str, Any]:
    """Load ``days`` days of 1-minute windows into the empty history at ``url`` and time
    series reads of 1 hour, 1 day, 7 days and 90 days (each capped at ``days``).

    Returns ``{"rows", "days", "partitions", "load_s", "load_rows_per_s", "size_mb",
    "reads": {"1h": {"rows", "runs", "median_ms", "min_ms"}, …}, "rollup_hours", "rollup_s",
    "hourly_reads": {…}}``. Raises ``BenchError``
    when the history there is not empty (the benchmark would mix its rows with real ones).
    """
    if days < 1 or metrics < 1 or label_sets < 1:
        raise BenchError("days, metrics and label_sets must each be at least 1")
    store = PostgresHistory(url, pool_min=1, pool_max=2)
    try:
        if store.partitions():
            raise BenchError(
                "the history at that URL is not empty; run the benchmark on a throwaway database"
            )
        end = time.time_ns() // 1_000_000 // DAY_MS * DAY_MS
        first = end - days * DAY_MS
        began = time.perf_counter()
        rows = sum(
            store.bulk_load(_day_rows(first + d * DAY_MS, metrics, label_sets)) for d in range(days)
        )
        load_s = time.perf_counter() - began
        with psycopg.connect(url, autocommit=True) as conn:
            # Fresh planner statistics, as autovacuum would gather soon after such a load.
            conn.execute("ANALYZE history")
            size = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
                "WHERE inhparent = to_regclass('history')"
            ).fetchone()
        spans = {"1h": HOUR_MS, "1d": DAY_MS, "7d": 7 * DAY_MS, "90d": 90 * DAY_MS}

        def reads(step_ms: int | None) -> dict[str, Any]:
            return {
                name: _time_reads(
                    store,
                    "bench_0",
                    end - min(span, days * DAY_MS),
                    end,
                    3 if span > DAY_MS else 9,
                    step_ms,
                )
                for name, span in spans.items()
            }

        windows = reads(None)
        began = time.perf_counter()
        hours = 0
        while made := roll_up(_bench_config(metrics), store, end, limit=1_000):
            hours += made
        rollup_s = time.perf_counter() - began
        return {
            "rows": rows,
            "days": days,
            "metrics": metrics,
            "label_sets": label_sets,
            "partitions": len(store.partitions()),
            "load_s": round(load_s, 2),
            "load_rows_per_s": round(rows / load_s),
            "size_mb": round(int(size[0] if size else 0) / 1e6, 1),
            "reads": windows,
            "rollup_hours": hours,
            "rollup_s": round(rollup_s, 2),
            "hourly_reads": reads(HOUR_MS),
        }
    finally:
        store.close()
