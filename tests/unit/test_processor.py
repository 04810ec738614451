"""The processor on real SQLite files: commits, crash recovery by replay, reconciliation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest

from pulseboard.adapters.sqlite import LOG_FILE, STATE_FILE, SqliteState
from pulseboard.adapters.sqlite_log import (
    Append,
    DeadLetter,
    SqliteDeadLetters,
    SqliteLogReader,
    SqliteLogWriter,
)
from pulseboard.config import Config
from pulseboard.engine import aggregator_for
from pulseboard.events import EventDecoder
from pulseboard.processor import Processor
from pulseboard.series import read_series, request
from pulseboard.service import append_item
from tests.conftest import make_config

CONFIG = """
pipeline: {lateness: 2s, tick: 1s, reconcile_every: 1h}
events:
  order:
    fields:
      amount: {type: float, required: true}
      region: {type: string, enum: [eu, us]}
metrics:
  - {name: orders, event: order, agg: count, window: 10s, group_by: [region]}
  - {name: revenue, event: order, agg: sum, field: amount, window: 10s}
  - {name: orders_20s, event: order, agg: count, window: 20s, every: 10s}
"""
T0 = 1_800_000_000_000  # a multiple of 10 s and of 20 s


def order(i: int, time_ms: int, amount: float = 1.0, region: str = "eu") -> dict[str, Any]:
    return {
        "id": f"o{i}",
        "type": "order",
        "time": time_ms,
        "data": {"amount": amount, "region": region},
    }


def append(data_dir: Path, config: Config, *bodies: list[dict[str, Any]]) -> None:
    """Append each body as one ingest request would (server clock far ahead: nothing is in
    the future)."""
    decoder = EventDecoder(config)

    async def run() -> None:
        writer = SqliteLogWriter(data_dir / LOG_FILE)
        try:
            for body in bodies:
                checked = decoder.check(msgspec.json.encode(body), T0 + 10**9)
                await writer.append(append_item(checked, T0 + 10**9))
        finally:
            writer.close()

    asyncio.run(run())


def series(data_dir: Path, config: Config, metric: str, step: str | None = None) -> list[Any]:
    state = SqliteState(data_dir / STATE_FILE, readonly=True)
    try:
        spec = config.metric(metric)
        assert spec is not None
        params = {"from": str(T0 - 60_000), "to": str(T0 + 120_000)}
        if step:
            params["step"] = step
        body = read_series(state, aggregator_for(config, spec), request(spec, params, T0))
    finally:
        state.close()
    return [
        (s["labels"], [(p["t"] - T0, p["value"], p["status"]) for p in s["points"]])
        for s in body["series"]
    ]


@pytest.fixture
def config() -> Config:
    return make_config(CONFIG)


def test_final_windows_reach_history_and_open_ones_read_as_open(
    tmp_path: Path, config: Config
) -> None:
    append(tmp_path, config, [order(i, T0 + i * 1_000) for i in range(15)])
    p = Processor(config, tmp_path)
    p.drain()
    p.tick(drained=False)
    assert series(tmp_path, config, "orders") == [
        ({"region": "eu"}, [(0, 10, "final"), (10_000, 5, "open")])
    ]
    assert series(tmp_path, config, "revenue", step="20s") == [
        ({}, [(0, 15.0, "open")])  # one open window in the point makes it open
    ]
    p.close()


def test_a_restart_replays_from_the_checkpoint_without_double_counting(
    tmp_path: Path, config: Config
) -> None:
    append(tmp_path, config, [order(i, T0 + i * 500) for i in range(10)])
    first = Processor(config, tmp_path, checkpoint_every_ms=10**9)
    first.drain()
    first.tick(drained=False, checkpoint=True)  # checkpoint at position 1
    append(
        tmp_path,
        config,
        [order(i, T0 + i * 500) for i in range(10, 30)],
        [order(5, T0 + 2_500)] + [order(i, T0 + i * 500) for i in range(30, 40)],
    )
    first.drain()
    first.tick(drained=False)  # history and position committed, no new checkpoint
    before = series(tmp_path, config, "orders")
    # a crash: the first processor is never closed; a new one restores the old checkpoint
    second = Processor(config, tmp_path)
    assert second.pos == 1
    second.drain()
    second.tick(drained=False)
    assert series(tmp_path, config, "orders") == before
    assert before == [({"region": "eu"}, [(0, 20, "final"), (10_000, 20, "open")])]
    second.close()


def test_reconciliation_revises_with_late_events_once_and_ignores_late_duplicates(
    tmp_path: Path, config: Config
) -> None:
    append(
        tmp_path,
        config,
        [order(1, T0 + 1_000, 10.0), order(2, T0 + 2_000, 20.0)],
        [order(3, T0 + 25_000, 5.0)],  # closes [0, 10 s) and [10 s, 20 s)
        [order(4, T0 + 3_000, 40.0), order(1, T0 + 1_000, 10.0)],  # one late, one duplicate
    )
    p = Processor(config, tmp_path)
    p.drain()
    p.tick(drained=False)
    assert series(tmp_path, config, "revenue")[0][1][0] == (0, 30.0, "final")
    p.reconcile()
    assert series(tmp_path, config, "revenue")[0][1][0] == (0, 70.0, "revised")
    assert series(tmp_path, config, "orders_20s") == [
        ({}, [(0, 3, "revised"), (20_000, 1, "open")])
    ]
    p.reconcile()  # nothing pending: nothing changes
    assert series(tmp_path, config, "revenue")[0][1][0] == (0, 70.0, "revised")
    p.close()
    # a restart replays and finalises [0, 10 s) again: the revision stays
    again = Processor(config, tmp_path)
    again.drain()
    again.tick(drained=False)
    assert series(tmp_path, config, "revenue")[0][1][0] == (0, 70.0, "revised")
    again.close()


def test_a_late_event_reaches_every_sliding_window_that_holds_it_as_each_becomes_final(
    tmp_path: Path, config: Config
) -> None:
    append(tmp_path, config, [order(1, T0 + 1_000), order(2, T0 + 2_000), order(3, T0 + 13_000)])
    p = Processor(config, tmp_path)
    p.drain()
    p.tick(drained=False)
    append(tmp_path, config, [order(4, T0 + 3_000)])  # late: [-10 s, 10 s) is final
    p.drain()
    p.tick(drained=False)
    p.reconcile()
    state = SqliteState(tmp_path / STATE_FILE, readonly=True)
    # late for all three metrics; for orders_20s, [0, 20 s) is still open: it stays pending
    assert state.late_counts() == (3, 1)
    append(tmp_path, config, [order(5, T0 + 25_000)])  # closes [0, 20 s) without the event
    p.drain()
    p.tick(drained=False)
    assert series(tmp_path, config, "orders_20s")[0][1][0] == (0, 3, "final")
    p.reconcile()
    assert series(tmp_path, config, "orders_20s")[0][1][0] == (0, 4, "revised")
    assert state.late_counts() == (3, 0)
    state.close()
    p.close()


def test_log_retention_trims_acknowledged_entries_and_old_dead_letters(tmp_path: Path) -> None:
    path = tmp_path / LOG_FILE

    def item(received_ms: int, *, batch: bool) -> Append:
        dead = DeadLetter(received_ms, 0, f"bad-{received_ms}", "events[0]: not an object", b"1")
        if not batch:
            return Append(received_ms, 0, 0, 0, None, (dead,))
        return Append(received_ms, 1, 0, 0, b'[{"id":"e"}]', (dead,))

    async def write() -> None:
        writer = SqliteLogWriter(path)
        try:
            for received in (1_000, 2_000, 3_000):
                await writer.append(item(received, batch=received != 2_000))
        finally:
            writer.close()

    asyncio.run(write())
    reader, letters = SqliteLogReader(path), SqliteDeadLetters(path)
    try:
        # entries before 2,500 ms and at or before position 1; dead letters before 2,500 ms
        assert reader.trim(2_500, 1) == 1
        assert [e.received_ms for e in reader.read(0, 100)] == [3_000]
        assert [d.received_ms for d in letters.list(limit=10)] == [3_000]
    finally:
        reader.close()
        letters.close()
