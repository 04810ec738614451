"""Hourly rollups of PostgreSQL history (``rollups.roll_up``, ``PostgresHistory.series_windows``)
on a throwaway PostgreSQL: a series read through rollups equals the series read from the
windows, for every aggregation; a write to an hour (a late event's revision, a final write)
retires its rollup at once; a rollup made from windows that changed meanwhile is refused.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pulseboard.adapters.base import WindowRow
from pulseboard.adapters.postgres import (
    HOUR_MS,
    ROLLED_HOURS_QUERY,
    ROLLUP_QUERY,
    PostgresHistory,
    RollupHour,
)
from pulseboard.config import Config
from pulseboard.engine import aggregator_for
from pulseboard.rollups import roll_up
from pulseboard.series import SeriesRequest, read_series
from tests.conftest import make_config

from .test_history_contract import plan_nodes

MINUTE_MS = 60_000
H0 = 1_767_225_600_000  # 2026-01-01, an hour boundary
HOURS = 3

CONFIG = """
pipeline: {distinct_exact_threshold: 5}
events:
  order:
    fields:
      amount: {type: float, required: true}
      region: {type: string}
      user: {type: string}
metrics:
  - {name: orders, event: order, agg: count, window: 1m, group_by: [region]}
  - {name: revenue, event: order, agg: sum, field: amount, window: 1m}
  - {name: average, event: order, agg: avg, field: amount, window: 5m}
  - {name: smallest, event: order, agg: min, field: amount, window: 1m}
  - {name: users, event: order, agg: distinct, field: user, window: 1m}
  - {name: latency_p95, event: order, agg: p95, field: amount, window: 1m}
  - {name: orders_2m, event: order, agg: count, window: 2m, every: 1m}
  - {name: orders_7m, event: order, agg: count, window: 7m}
"""


@pytest.fixture
def config() -> Config:
    return make_config(CONFIG)


@pytest.fixture
def store(pg_url: str) -> Iterator[PostgresHistory]:
    history = PostgresHistory(pg_url)
    yield history
    history.close()


def windows_of(config: Config, name: str, rng: random.Random, hours: int) -> list[WindowRow]:
    """Final windows of metric ``name`` over ``hours`` hours from ``H0``: random values (with
    floats that do not add up exactly, and an empty minute now and then), by label set."""
    spec = next(m for m in config.metrics if m.name == name)
    agg = aggregator_for(config, spec)
    step = spec.every_ms or spec.window_ms
    rows = []
    for start in range(H0, H0 + hours * HOUR_MS, step):
        for labels in ('{"region":"eu"}', '{"region":"us"}') if spec.group_by else ("{}",):
            if rng.random() < 0.1:
                continue
            state = agg.initial()
            for _ in range(rng.randint(1, 12)):
                value: Any = rng.choice([0.1, 0.2, 0.3, 1e16, -1e16, rng.uniform(-50, 50)])
                if spec.agg == "distinct":
                    value = f"u{rng.randrange(9)}"
                state = agg.add(state, None if spec.agg == "count" else value)
            end = start + spec.window_ms
            value, data = agg.result(state), agg.dumps(state)
            rows.append(WindowRow(name, labels, start, end, value, data, "final"))
    return rows


class Source:
    """``series.WindowSource`` over the store alone: through rollups or from the windows."""

    def __init__(self, store: PostgresHistory, *, rollups: bool) -> None:
        self.store = store
        self.rollups = rollups

    def windows(
        self, metric: str, start_ms: int, end_ms: int, window_ms: int, step_ms: int
    ) -> tuple[list[WindowRow], list[WindowRow]]:
        if self.rollups:
            return self.store.series_windows(metric, start_ms, end_ms, window_ms, step_ms), []
        return self.store.windows(metric, start_ms, end_ms, window_ms), []


def series(config: Config, store: PostgresHistory, name: str, step_ms: int, **kw: bool) -> Any:
    spec = next(m for m in config.metrics if m.name == name)
    request = SeriesRequest(spec, H0, H0 + HOURS * HOUR_MS, step_ms)
    return read_series(Source(store, **kw), aggregator_for(config, spec), request)["series"]


def rollup_rows(pg_url: str) -> int:
    with psycopg.connect(pg_url) as conn:
        found = conn.execute("SELECT count(*) FROM history_rollup").fetchone()
    return int(found[0]) if found else 0


def test_series_through_rollups_equal_series_from_the_windows(
    config: Config, store: PostgresHistory, pg_url: str
) -> None:
    rng = random.Random(5)
    names = [m.name for m in config.metrics]
    for name in names:
        store.write_final(windows_of(config, name, rng, HOURS))
    steps = (HOUR_MS, 2 * HOUR_MS, 5 * MINUTE_MS)
    before = {(n, s): series(config, store, n, s, rollups=False) for n in names for s in steps}

    # the first two hours are final: rolled up, the third is not yet
    made = roll_up(config, store, before_ms=H0 + 2 * HOUR_MS)
    rollable = [m for m in config.metrics if m.name != "orders_7m"]  # 7 minutes: not in an hour
    assert made == 2 * len(rollable)
    assert roll_up(config, store, before_ms=H0 + 2 * HOUR_MS) == 0  # nothing left to do
    for (name, step), want in before.items():
        assert series(config, store, name, step, rollups=True) == want, (name, step)

    # an hourly read reads one row per hour and label set where rolled up
    rows = store.series_windows("orders", H0, H0 + HOURS * HOUR_MS, MINUTE_MS, HOUR_MS)
    starts = sorted({r.window_start_ms for r in rows})
    assert starts[:2] == [H0, H0 + HOUR_MS]  # the rollups, then the third hour's minutes
    third = store.windows("orders", H0 + 2 * HOUR_MS, H0 + 3 * HOUR_MS, MINUTE_MS)
    assert starts[2:] == sorted({r.window_start_ms for r in third})
    rolled = [r for r in rows if r.window_start_ms < H0 + 2 * HOUR_MS]
    assert {r.window_end_ms - r.window_start_ms for r in rolled} == {HOUR_MS}
    # a step that is not whole hours never reads rollups
    fine = store.series_windows("orders", H0, H0 + HOUR_MS, MINUTE_MS, 5 * MINUTE_MS)
    assert fine == store.windows("orders", H0, H0 + HOUR_MS, MINUTE_MS)


def test_a_write_to_an_hour_retires_its_rollup_until_rolled_up_again(
    config: Config, store: PostgresHistory
) -> None:
    rng = random.Random(6)
    store.write_final(windows_of(config, "revenue", rng, 2))
    assert roll_up(config, store, before_ms=H0 + 2 * HOUR_MS) == 2
    # a late event revises one minute of the first hour: its rollup is retired at once
    agg = aggregator_for(config, config.metrics[1])
    state = agg.dumps(agg.add(agg.initial(), 1e6))
    start = H0 + 7 * MINUTE_MS
    store.revise([WindowRow("revenue", "{}", start, start + MINUTE_MS, 1e6, state, "revised")])
    want = series(config, store, "revenue", HOUR_MS, rollups=False)
    assert series(config, store, "revenue", HOUR_MS, rollups=True) == want
    assert want[0]["points"][0]["status"] == "revised"
    hours = store.series_windows("revenue", H0, H0 + 2 * HOUR_MS, MINUTE_MS, HOUR_MS)
    assert len([r for r in hours if r.window_start_ms < H0 + HOUR_MS]) > 1  # minutes again
    # rolled up again: one row, revised, the same answer
    assert roll_up(config, store, before_ms=H0 + 2 * HOUR_MS) == 1
    hours = store.series_windows("revenue", H0, H0 + 2 * HOUR_MS, MINUTE_MS, HOUR_MS)
    assert [(r.window_start_ms, r.status) for r in hours] == [
        (H0, "revised"),
        (H0 + HOUR_MS, "final"),
    ]
    assert series(config, store, "revenue", HOUR_MS, rollups=True) == want


def test_a_rollup_of_windows_that_changed_meanwhile_is_refused(
    config: Config, store: PostgresHistory, pg_url: str
) -> None:
    store.write_final(windows_of(config, "orders", random.Random(7), 1))
    (hour,) = store.hours_to_roll([("orders", MINUTE_MS)], H0 + HOUR_MS, 10)
    assert hour == RollupHour("orders", MINUTE_MS, H0, hour.version)
    store.write_final(windows_of(config, "orders", random.Random(8), 1))  # meanwhile
    fake = WindowRow("orders", "{}", H0, H0 + HOUR_MS, 1, b"x", "final")
    assert store.write_rollup(hour, [fake]) is False
    assert rollup_rows(pg_url) == 0
    assert roll_up(config, store, before_ms=H0 + HOUR_MS) == 1
    assert rollup_rows(pg_url) == 2  # eu and us


def test_trim_removes_the_rollups_of_hours_it_reaches(
    config: Config, store: PostgresHistory, pg_url: str
) -> None:
    store.write_final(windows_of(config, "orders", random.Random(9), 2))
    assert roll_up(config, store, before_ms=H0 + 2 * HOUR_MS) == 2
    store.trim(H0 + HOUR_MS + 30 * MINUTE_MS)
    assert rollup_rows(pg_url) == 0
    want = series(config, store, "orders", HOUR_MS, rollups=False)
    assert series(config, store, "orders", HOUR_MS, rollups=True) == want


def test_hourly_reads_are_index_scans(config: Config, store: PostgresHistory, pg_url: str) -> None:
    store.write_final(windows_of(config, "orders", random.Random(1), 12))
    assert roll_up(config, store, before_ms=H0 + 12 * HOUR_MS) == 12
    hours = [H0 + h * HOUR_MS for h in range(3, 9)]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        # the tables of a deployment: 90 days of hours of 50 other metrics, 2 label sets each
        conn.execute(
            "INSERT INTO history_rollup_hours (metric, window_ms, hour_start, rolled) "
            "SELECT 'm' || m, 60000, %s + h::bigint * 3600000, 1 "
            "FROM generate_series(1, 50) m, generate_series(0, 2159) h",
            (H0,),
        )
        conn.execute(
            "INSERT INTO history_rollup (metric, window_ms, hour_start, labels, value_int, "
            "state, status) SELECT metric, window_ms, hour_start, l, 1, '\\x00', 'final' "
            "FROM history_rollup_hours, unnest(ARRAY['a', 'b']) l WHERE metric LIKE 'm%%'"
        )
        conn.execute("ANALYZE history_rollup")
        conn.execute("ANALYZE history_rollup_hours")
        for query, params, rows in (
            (ROLLED_HOURS_QUERY, ("orders", MINUTE_MS, hours[0], hours[-1]), 6),
            (ROLLUP_QUERY, ("orders", MINUTE_MS, hours), 12),
        ):
            explained = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query, params).fetchone()
            assert explained is not None
            plan = explained[0][0]["Plan"]
            scans = {n["Node Type"] for n in plan_nodes(plan) if "Relation Name" in n}
            assert scans <= {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}, plan
            assert plan["Actual Rows"] == rows
