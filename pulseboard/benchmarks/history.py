"""History on PostgreSQL: how long a bulk load of months of windows takes, and series reads.

``run_history_bench(url)`` fills an empty database with ``days`` days of 1-minute windows
(``metrics`` metrics x ``label_sets`` label sets, ending at the current UTC midnight) through
``PostgresHistory.bulk_load`` (COPY), one day per COPY, then reads series of the last hour, day,
week and the whole span through ``PostgresHistory.windows`` (what the series API calls, Python
objects included) and reports the median of several reads of each. The data is left in place:
point it at a throwaway database.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import psycopg

from pulseboard.adapters.base import WindowRow
from pulseboard.adapters.postgres import DAY_MS, PostgresHistory
from pulseboard.benchmarks.harness import BenchError

MINUTE_MS = 60_000
STATE_BYTES = 32
"""Size of each stored state: a count's or a sum's is about this; sketches are larger."""


def _day_rows(day_start: int, metrics: int, label_sets: int) -> Iterator[WindowRow]:
    """One day of 1-minute windows; even metrics count (int values), odd ones sum (floats)."""
    labels = [f'{{"region":"r{j}"}}' for j in range(label_sets)]
    for m in range(metrics):
        metric = f"bench_{m}"
        for k in range(1440):
            start = day_start + k * MINUTE_MS
            for j, label in enumerate(labels):
                value: int | float = k + j if m % 2 == 0 else (k + j) * 1.25
                state = start.to_bytes(8, "big") * (STATE_BYTES // 8)
                yield WindowRow(metric, label, start, start + MINUTE_MS, value, state, "final")


def _time_reads(
    store: PostgresHistory, metric: str, start: int, end: int, repeat: int
) -> dict[str, Any]:
    seconds, rows = [], 0
    for _ in range(repeat):
        began = time.perf_counter()
        rows = len(store.windows(metric, start, end, MINUTE_MS))
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
    "reads": {"1h": {"rows", "runs", "median_ms", "min_ms"}, …}}``. Raises ``BenchError``
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
        spans = {"1h": 3_600_000, "1d": DAY_MS, "7d": 7 * DAY_MS, "90d": 90 * DAY_MS}
        reads = {
            name: _time_reads(
                store, "bench_0", end - min(span, days * DAY_MS), end, 3 if span > DAY_MS else 9
            )
            for name, span in spans.items()
        }
        return {
            "rows": rows,
            "days": days,
            "metrics": metrics,
            "label_sets": label_sets,
            "partitions": len(store.partitions()),
            "load_s": round(load_s, 2),
            "load_rows_per_s": round(rows / load_s),
            "size_mb": round(int(size[0] if size else 0) / 1e6, 1),
            "reads": reads,
        }
    finally:
        store.close()
