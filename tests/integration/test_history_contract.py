"""The ``HistoryStore`` contract, run against every adapter, then what only PostgreSQL has:
concurrent start-up, partition creation races, retention by partition, errors, the query plan."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pulseboard.adapters.base import StoreUnavailable, WindowRow
from pulseboard.adapters.ports import HistoryStore
from pulseboard.adapters.postgres import DAY_MS, WINDOWS_QUERY, PostgresHistory, migrate
from pulseboard.adapters.sqlite import Commit, SqliteHistory, SqliteState

from .conftest import free_port

MIN = 60_000
DAY0 = 20_000 * DAY_MS  # 2024-10-04T00:00Z, a partition boundary


def win(
    start: int,
    value: Any = 1,
    *,
    metric: str = "orders",
    labels: str = "{}",
    length: int = MIN,
    state: bytes | None = None,
) -> WindowRow:
    """A window row; its state defaults to bytes derived from the value, to tell rows apart."""
    blob = state if state is not None else repr(value).encode()
    return WindowRow(metric, labels, start, start + length, value, blob, "final")


def keyed(rows: list[WindowRow]) -> dict[tuple[str, int], tuple[Any, bytes, str]]:
    return {(r.labels, r.window_start_ms): (r.value, r.state, r.status) for r in rows}


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HistoryStore]:
    """Each adapter, empty."""
    opened: HistoryStore
    if request.param == "sqlite":
        opened = SqliteHistory(tmp_path / "state.db")
    else:
        opened = PostgresHistory(request.getfixturevalue("pg_url"))
    try:
        yield opened
    finally:
        opened.close()


# --- the contract ---------------------------------------------------------------------------


def test_final_writes_are_idempotent(store: HistoryStore) -> None:
    rows = [win(DAY0 + i * MIN, i) for i in range(5)]
    store.write_final(rows)
    store.write_final(rows)
    got = store.windows("orders", DAY0, DAY0 + DAY_MS, MIN)
    assert got == rows
    store.write_final([win(DAY0, 42)])  # a final window written again takes the new value
    assert store.windows("orders", DAY0, DAY0 + MIN, MIN) == [win(DAY0, 42)]


def test_a_revised_window_is_never_overwritten_by_a_final_write(store: HistoryStore) -> None:
    store.write_final([win(DAY0, 1), win(DAY0 + MIN, 2)])
    store.revise([win(DAY0, 10)])
    store.write_final([win(DAY0, 1), win(DAY0 + MIN, 3)])  # a restart replaying the log
    got = keyed(store.windows("orders", DAY0, DAY0 + DAY_MS, MIN))
    assert got == {("{}", DAY0): (10, b"10", "revised"), ("{}", DAY0 + MIN): (3, b"3", "final")}


def test_revise_replaces_final_and_revised_windows(store: HistoryStore) -> None:
    store.write_final([win(DAY0, 1)])
    store.revise([win(DAY0, 2), win(DAY0 + MIN, 5)])  # the second was never final
    store.revise([win(DAY0, 3.5)])
    got = keyed(store.windows("orders", DAY0, DAY0 + DAY_MS, MIN))
    assert got == {("{}", DAY0): (3.5, b"3.5", "revised"), ("{}", DAY0 + MIN): (5, b"5", "revised")}


def test_within_one_write_the_last_copy_of_a_window_wins(store: HistoryStore) -> None:
    store.write_final([win(DAY0 + MIN, 1), win(DAY0, 1), win(DAY0 + MIN, 2)])
    assert [r.value for r in store.windows("orders", DAY0, DAY0 + DAY_MS, MIN)] == [1, 2]


def test_windows_are_the_aligned_ones_of_the_length_asked_within_the_range(
    store: HistoryStore,
) -> None:
    start, end = DAY0 + 10 * MIN, DAY0 + 20 * MIN
    wanted = [
        win(start, 7),  # at the start: in
        win(start + MIN, 2**62),
        win(start + 2 * MIN, 0.1 + 0.2),  # a float that is not a short decimal
        win(start + 3 * MIN, 3.0),  # an integral float stays a float
        win(start + 4 * MIN, None),
        win(start + 6 * MIN, -1.5e300, state=b"\x00\xff\x00"),
        win(end - MIN, 0),
    ]
    others = [
        win(end, 1),  # at the end: out
        win(start - MIN, 1),  # before: out
        win(start + 7 * MIN + MIN // 2, 1),  # not aligned to the length
        win(start + 5 * MIN, 1, length=5 * MIN),  # another length (aligned to its own)
        win(start + 8 * MIN, 1, metric="revenue"),  # another metric
        win(start + 9 * MIN, 1, metric="orders2"),  # a metric sharing the prefix
    ]
    store.write_final(others + wanted)
    got = store.windows("orders", start, end, MIN)
    assert got == wanted
    assert [type(r.value) for r in got] == [int, int, float, float, type(None), float, int]
    assert all(type(r.state) is bytes for r in got)
    assert got[2].value == 0.1 + 0.2  # bit for bit
    assert store.windows("orders", start, end, 5 * MIN) == [win(start + 5 * MIN, 1, length=5 * MIN)]
    assert store.windows("orders", end, start, MIN) == []
    with pytest.raises(ValueError, match="positive"):
        store.windows("orders", start, end, 0)


def test_windows_spanning_day_boundaries_read_back(store: HistoryStore) -> None:
    rows = [win(DAY0 + d * DAY_MS + k * MIN, d * 100 + k) for d in range(4) for k in (-2, -1, 0, 1)]
    hourly = '{"hourly":true}'  # another label set: one length per metric and labels
    hours = [win(DAY0 + h * 3_600_000, h, length=3_600_000, labels=hourly) for h in range(-3, 30)]
    store.write_final(rows + hours)
    got = store.windows("orders", DAY0 - DAY_MS, DAY0 + 4 * DAY_MS, MIN)
    assert got == sorted(rows, key=lambda r: r.window_start_ms)
    across_midnight = store.windows("orders", DAY0 + DAY_MS - 2 * MIN, DAY0 + DAY_MS + 2 * MIN, MIN)
    assert [r.value for r in across_midnight] == [98, 99, 100, 101]
    assert store.windows("orders", DAY0 - DAY_MS, DAY0 + 2 * DAY_MS, 3_600_000) == hours


def test_trim_drops_what_ended_before_the_cutoff_and_keeps_the_rest(store: HistoryStore) -> None:
    minutes = [
        win(DAY0 + d * DAY_MS + k * 360 * MIN, d * 10 + k) for d in range(3) for k in range(4)
    ]
    long = win(DAY0, 2, labels='{"w":"2d"}', length=2 * DAY_MS)  # ends at DAY0 + 2 days
    store.write_final([*minutes, long])
    cutoff = DAY0 + DAY_MS + 360 * MIN + MIN  # right at the end of day 1's second window
    removed = store.trim(cutoff)
    kept = store.windows("orders", DAY0 - DAY_MS, DAY0 + 3 * DAY_MS, MIN)
    assert kept == [r for r in minutes if r.window_end_ms >= cutoff]
    assert removed == len(minutes) - len(kept) == 5
    assert store.windows("orders", DAY0, DAY0 + 1, 2 * DAY_MS) == [long]  # still running then
    assert store.trim(cutoff) == 0
    assert store.trim(DAY0 + 3 * DAY_MS) == len(kept) + 1
    assert store.windows("orders", 0, DAY0 + 3 * DAY_MS, MIN) == []


def test_labels_with_unicode_and_quotes(store: HistoryStore) -> None:
    label_sets = [
        {"city": "Zürich", "emoji": "🚀"},
        {"quote": 'say "hi"', "apostrophe": "it's", "backslash": "a\\b"},
        {"sql": "'); DROP TABLE history; --", "nul": "\x00", "newline": "a\nb"},
        {"right-to-left": "שלום", "cjk": "東京"},
        {},
    ]
    canonical = [json.dumps(s, sort_keys=True, separators=(",", ":")) for s in label_sets]
    rows = [win(DAY0, i, labels=labels) for i, labels in enumerate(canonical)]
    store.write_final(rows)
    got = store.windows("orders", DAY0, DAY0 + MIN, MIN)
    assert {r.labels: r.value for r in got} == {labels: i for i, labels in enumerate(canonical)}
    assert [json.loads(r.labels) for r in got] == [json.loads(c) for c in sorted(canonical)]


def test_empty_writes_change_nothing(store: HistoryStore) -> None:
    store.write_final([])
    store.revise([])
    assert store.windows("orders", 0, 2**62, MIN) == []
    assert store.trim(2**62) == 0


# --- SQLite: the same table as SqliteState --------------------------------------------------


def test_sqlite_history_and_state_read_what_the_other_wrote(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    state, history = SqliteState(path), SqliteHistory(path)
    try:
        state.commit(Commit(1, None, [win(DAY0, 1)], [], {}, {}))
        history.write_final([win(DAY0 + MIN, 2.5)])
        history.revise([win(DAY0, 3)])
        final, _ = state.windows("orders", DAY0, DAY0 + DAY_MS, MIN)
        assert final == history.windows("orders", DAY0, DAY0 + DAY_MS, MIN)
        assert [(r.value, r.status) for r in final] == [(3, "revised"), (2.5, "final")]
    finally:
        state.close()
        history.close()


# --- PostgreSQL only ------------------------------------------------------------------------


def run_together(count: int, work: Callable[[int], object]) -> list[object]:
    """Run ``work(i)`` on ``count`` threads released at once; raise the first failure."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(30)
            results[i] = work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results


def test_stores_opened_at_once_on_a_fresh_database_migrate_once(pg_url: str) -> None:
    stores = run_together(8, lambda _: PostgresHistory(pg_url, pool_max=1))
    try:
        with psycopg.connect(pg_url) as conn:
            applied = conn.execute("SELECT version, name FROM schema_migrations").fetchall()
            assert applied == [(1, "history"), (2, "meta"), (3, "rollups")]
            kind = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'history'")
            assert kind.fetchone() == ("p",)  # partitioned
            assert migrate(conn) == []
        for s in stores:
            assert isinstance(s, PostgresHistory)
            s.write_final([win(DAY0, 1)])
    finally:
        for s in stores:
            assert isinstance(s, PostgresHistory)
            s.close()


def test_writers_creating_the_same_partitions_at_once_all_succeed(pg_url: str) -> None:
    stores = [PostgresHistory(pg_url, pool_max=1) for _ in range(6)]
    try:
        days = range(10)  # none exists yet: every writer must create all ten

        def write(i: int) -> None:
            labels = json.dumps({"writer": i})
            stores[i].write_final([win(DAY0 + d * DAY_MS, d, labels=labels) for d in days])

        run_together(len(stores), write)
        got = stores[0].windows("orders", DAY0, DAY0 + 10 * DAY_MS, MIN)
        assert len(got) == len(stores) * len(days)
        assert len(stores[0].partitions()) == len(days)
    finally:
        for s in stores:
            s.close()


def test_a_partition_dropped_by_another_process_is_created_again(pg_url: str) -> None:
    writer, trimmer = PostgresHistory(pg_url), PostgresHistory(pg_url)
    try:
        writer.write_final([win(DAY0, 1)])
        assert trimmer.trim(DAY0 + DAY_MS) == 1
        assert trimmer.partitions() == []
        writer.write_final([win(DAY0, 2)])  # the writer still believes the day exists
        assert [r.value for r in trimmer.windows("orders", DAY0, DAY0 + MIN, MIN)] == [2]
    finally:
        writer.close()
        trimmer.close()


def test_trim_drops_whole_partitions(pg_url: str) -> None:
    store = PostgresHistory(pg_url)
    try:
        store.write_final([win(DAY0 + d * DAY_MS + k * MIN, k) for d in range(5) for k in range(3)])
        assert store.trim(DAY0 + 2 * DAY_MS + 2 * MIN) == 7  # days 0 and 1 whole, one of day 2
        assert store.partitions() == ["history_p20241006", "history_p20241007", "history_p20241008"]
    finally:
        store.close()


def test_bulk_load_is_all_or_nothing(pg_url: str) -> None:
    store = PostgresHistory(pg_url)
    try:
        assert store.bulk_load([win(DAY0, 1), win(DAY0 + DAY_MS, 2.0)]) == 2
        with pytest.raises(StoreUnavailable, match="duplicate key"):
            store.bulk_load([win(DAY0 + MIN, 3), win(DAY0, 4)])
        got = store.windows("orders", DAY0, DAY0 + 2 * DAY_MS, MIN)
        assert [(r.value, r.status) for r in got] == [(1, "final"), (2.0, "final")]
    finally:
        store.close()


def test_values_other_than_int_float_none_are_refused(pg_url: str) -> None:
    store = PostgresHistory(pg_url)
    try:
        with pytest.raises(TypeError, match="not str"):
            store.write_final([win(DAY0, "12")])
        with pytest.raises(ValueError, match="64 bits"):
            store.write_final([win(DAY0, 2**64)])
        with pytest.raises(ValueError, match="ends before it starts"):
            store.write_final([win(DAY0, 1, length=0)])
    finally:
        store.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://pulse:s3cr%40t@127.0.0.1:{port}/history?connect_timeout=3",
        "postgresql://pulse@127.0.0.1:{port}/history?password=s3cr%40t&connect_timeout=3",
    ],
)
def test_an_unreachable_server_is_store_unavailable_with_the_password_masked(url: str) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(StoreUnavailable) as caught:
        PostgresHistory(url.format(port=port))
    message = str(caught.value)
    assert "s3cr" not in message and "***" in message
    assert f"127.0.0.1:{port}/history" in message
    assert "running" in message  # says what to do


def positional(query: str) -> str:
    """``query`` with psycopg's placeholders turned into PostgreSQL's ($1, $2 …)."""
    parts = query.split("%s")
    text = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))
    return text.replace("%%", "%")


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def test_the_series_query_uses_the_index_and_only_the_partitions_of_its_range(
    pg_url: str,
) -> None:
    store = PostgresHistory(pg_url)
    try:
        for d in range(6):  # 20 metrics x 2 label sets x 1,440 minutes a day
            store.bulk_load(
                win(DAY0 + d * DAY_MS + k * MIN, k, metric=f"m{m}", labels=f'{{"l":{j}}}')
                for m in range(20)
                for j in range(2)
                for k in range(1440)
            )
        # an hour across the midnight between day 2 and day 3
        params = ("m7", MIN, DAY0 + 3 * DAY_MS - 30 * MIN, DAY0 + 3 * DAY_MS + 30 * MIN)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("ANALYZE history")
            # As psycopg first runs it: planned with the values (pruning at plan time) ...
            custom = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + WINDOWS_QUERY, params)
            # ... and as a prepared statement may end up: one generic plan for any values,
            # which must prune at executor start-up.
            conn.execute("SET plan_cache_mode = force_generic_plan")
            conn.execute(f"PREPARE series AS {positional(WINDOWS_QUERY)}")
            generic = conn.execute(
                sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE series ({}, {}, {}, {})").format(
                    *map(sql.Literal, params)
                )
            )
            for explained in (custom.fetchone(), generic.fetchone()):
                assert explained is not None
                plan = explained[0][0]["Plan"]
                nodes = list(plan_nodes(plan))
                scans = {n["Node Type"] for n in nodes if "Relation Name" in n}
                tables = {n["Relation Name"] for n in nodes if "Relation Name" in n}
                assert tables == {"history_p20241006", "history_p20241007"}, nodes
                assert scans <= {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}, nodes
                assert plan["Actual Rows"] == 120
        assert len(store.windows("m7", params[2], params[3], MIN)) == 120
    finally:
        store.close()


def test_a_malformed_url_is_store_unavailable_without_the_password() -> None:
    with pytest.raises(StoreUnavailable, match="invalid URL") as caught:
        PostgresHistory("postgresql://pulse:s3cr%40t@[::1/history")
    assert "s3cr" not in str(caught.value)
