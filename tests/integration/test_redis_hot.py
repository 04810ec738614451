"""The Redis hot store against the embedded engine as oracle, on a real ``redis-server``.

Processors here are ``RedisHotStore`` instances with their own connections, reading a real
``RedisEventLog`` through its consumer group: interleaved commits, redelivered entries,
duplicate ids across batches, a crash between computing and committing, concurrent
finalisation, and a crash between finalisation and history.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis

from pulseboard.adapters.base import WindowRow
from pulseboard.adapters.postgres import PostgresHistory
from pulseboard.adapters.redis_conn import RedisSettings
from pulseboard.adapters.redis_hot import RedisHotStore
from pulseboard.adapters.redis_hot_ops import prepare
from pulseboard.adapters.redis_log import RedisEventLog, StreamEntry
from pulseboard.adapters.sqlite import SqliteHistory
from pulseboard.adapters.sqlite_log import Append
from pulseboard.config import Config
from pulseboard.engine import Engine, WindowValue
from pulseboard.events import Batch, EventDecoder
from tests.conftest import make_config

T0 = 1_767_225_600_000  # a minute boundary
NOW_MS = T0 + 10**10  # so that max_future never rejects a test event
THRESHOLD = 20

CONFIG = f"""
pipeline: {{lateness: 30s, max_future: 5m, distinct_exact_threshold: {THRESHOLD}}}
events:
  order:
    fields:
      amount: {{type: float, required: true}}
      region: {{type: string}}
      user: {{type: string, required: true}}
      latency: {{type: float}}
  beat:
    fields:
      n: {{type: int}}
metrics:
  - {{name: orders, event: order, agg: count, window: 10s, group_by: [region]}}
  - {{name: orders_20s, event: order, agg: count, window: 20s, every: 5s}}
  - {{name: revenue, event: order, agg: sum, field: amount, window: 10s}}
  - {{name: revenue_20s, event: order, agg: sum, field: amount, window: 20s, every: 5s,
     group_by: [region]}}
  - {{name: avg_amount, event: order, agg: avg, field: amount, window: 10s}}
  - {{name: min_amount, event: order, agg: min, field: amount, window: 10s, group_by: [region]}}
  - {{name: max_amount, event: order, agg: max, field: amount, window: 20s, every: 5s}}
  - {{name: users, event: order, agg: distinct, field: user, window: 10s}}
  - {{name: users_20s, event: order, agg: distinct, field: user, window: 20s, every: 5s}}
  - {{name: latency_p95, event: order, agg: p95, field: latency, window: 10s,
     group_by: [region]}}
  - {{name: latency_p95_20s, event: order, agg: p95, field: latency, window: 20s, every: 5s}}
"""

AWKWARD = [0.1, 0.2, 0.3, 1e16, -1e16, 1.0, -7.25, 3e-5, 2.5e-300, 123456.789]
Key = tuple[str, str, int, int]


@pytest.fixture
def config() -> Config:
    return make_config(CONFIG)


@pytest.fixture
def settings(clean_redis_url: str) -> RedisSettings:
    return RedisSettings.from_url(clean_redis_url)


@pytest.fixture
def stores(settings: RedisSettings, config: Config) -> Iterator[list[RedisHotStore]]:
    """Three processors' stores, each with its own connections."""
    made = [RedisHotStore(settings, config) for _ in range(3)]
    yield made
    for store in made:
        store.close()


@pytest.fixture
def event_log(settings: RedisSettings) -> Iterator[RedisEventLog]:
    log = RedisEventLog(settings)
    log.ensure_group()
    yield log
    log.close()


def order(i: int | str, time_ms: int, rng: random.Random, users: int) -> dict[str, Any]:
    amount = rng.choice(AWKWARD) if rng.random() < 0.7 else rng.uniform(-1e3, 1e3)
    data: dict[str, Any] = {
        "amount": amount,
        "region": rng.choice(["eu", "us", "apac"]),
        "user": f"u{rng.randrange(users)}",
    }
    if rng.random() < 0.9:
        # 1e-250 and 1e250 span more DDSketch bins than the cap: the low bins get collapsed
        choices = [0.0, -rng.lognormvariate(0, 2), rng.lognormvariate(3, 1), 1e-250, 1e250]
        data["latency"] = rng.choice(choices) if rng.random() < 0.1 else choices[2]
    return {"id": str(i), "type": "order", "time": time_ms, "data": data}


def beat(time_ms: int) -> dict[str, Any]:
    """An event no metric reads: it moves stream time on (to finalise everything at the end)."""
    return {"id": f"beat-{time_ms}", "type": "beat", "time": time_ms, "data": {"n": 1}}


def decode(config: Config, events: list[dict[str, Any]]) -> Batch:
    batch = EventDecoder(config).decode(json.dumps(events).encode(), NOW_MS)
    assert batch.errors == []
    return batch


def make_stream(seed: int, n: int = 1_200) -> list[list[dict[str, Any]]]:
    """Batches of random orders over three minutes, disorder within 2 s (far inside the
    lateness, whatever order the processors commit in), duplicate ids across batches (exact
    copies, as a client's retry sends them), and, in the last third, events far behind stream
    time (late for every metric, for the oracle and the store alike)."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        t = T0 + i * 150 + rng.randrange(-2_000, 2_000)
        # 10 s stretches of few users (exact distinct), of a few more than the threshold (sets
        # that grow past it across commits) and of many (HyperLogLog from the first batch)
        users = (8, 26, 400)[(t - T0) // 10_000 % 3]
        events.append(order(i, t, rng, users))
    batches: list[list[dict[str, Any]]] = []
    at = 0
    while at < n:
        size = rng.randrange(20, 60)
        batch = events[at : at + size]
        if batches and rng.random() < 0.4:  # duplicates of recent events
            batch += rng.sample(batches[-1], 3)
        if at > 2 * n // 3 and rng.random() < 0.5:
            batch.append(order(f"late-{at}", T0 + rng.randrange(0, 20_000), rng, 8))
        rng.shuffle(batch)
        batches.append(batch)
        at += size
    return batches


def key(v: WindowValue) -> Key:
    return (v.metric, msgspec.json.encode(v.labels).decode(), v.window_start_ms, v.window_end_ms)


def oracle_finals(config: Config, batches: list[list[dict[str, Any]]]) -> dict[Key, Any]:
    engine = Engine(config)
    out: dict[Key, Any] = {}
    for events in batches:
        engine.process(decode(config, events))
        for v in engine.advance().final:
            out[key(v)] = v
    return out


class Recording:
    """A HistoryStore that records what it is asked to write and passes it on."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.rows: list[WindowRow] = []

    def write_final(self, rows: list[WindowRow]) -> None:
        self.rows.extend(rows)
        self.inner.write_final(rows)

    def revise(self, rows: list[WindowRow]) -> None:
        self.inner.revise(rows)

    def windows(self, metric: str, start_ms: int, end_ms: int, window_ms: int) -> list[WindowRow]:
        return list(self.inner.windows(metric, start_ms, end_ms, window_ms))

    def trim(self, before_ms: int) -> int:
        return int(self.inner.trim(before_ms))

    def close(self) -> None:
        self.inner.close()


def append_all(log: RedisEventLog, batches: list[list[dict[str, Any]]]) -> None:
    for events in batches:
        times = [e["time"] for e in events]
        payload = json.dumps(events).encode()
        log.append(Append(NOW_MS, len(events), min(times), max(times), payload, ()))


def entry_batch(config: Config, entries: list[StreamEntry]) -> Batch:
    return Batch.concat([EventDecoder(config).decode(e.payload, NOW_MS) for e in entries])


def compare(expected: dict[Key, Any], rows: list[WindowRow], config: Config) -> None:
    """Every final window the store wrote equals the oracle's, bit for bit, and none is
    missing or written with two values."""
    aggs = {m.name: Engine(config).aggregator(m.name) for m in config.metrics}
    got: dict[Key, WindowRow] = {}
    for row in rows:
        k = (row.metric, row.labels, row.window_start_ms, row.window_end_ms)
        assert k not in got or got[k].state == row.state, f"{k} written with two values"
        got[k] = row
    assert sorted(got) == sorted(expected)
    for k, v in expected.items():
        agg = aggs[k[0]]
        assert got[k].state == agg.dumps(v.state), k
        assert got[k].value == v.value or (got[k].value != got[k].value and v.value != v.value), k


def pending_count(client: redis.Redis, log: RedisEventLog) -> int:
    info: Any = client.xpending(log.keys.log, log.keys.log_group)
    return int(info["pending"])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_processors_match_the_engine(
    seed: int,
    config: Config,
    stores: list[RedisHotStore],
    event_log: RedisEventLog,
    tmp_path: Path,
) -> None:
    batches = make_stream(seed)
    final_beat = [beat(T0 + 10**6)]
    expected = oracle_finals(config, [*batches, final_beat])
    append_all(event_log, [*batches, final_beat])
    history = Recording(SqliteHistory(tmp_path / "state.db"))
    rng = random.Random(seed)
    names = [f"p{i}" for i in range(3)]
    crashed: list[tuple[int, Any]] = []
    stale: list[Any] = []
    while True:
        # each processor takes its next entries; they commit in a random order
        held = [(i, event_log.read(names[i], rng.randrange(20, 40))) for i in range(3)]
        held = [(i, entries) for i, entries in held if entries]
        if not held:
            break
        rng.shuffle(held)
        for i, entries in held:
            ids = [e.id for e in entries]
            batch = entry_batch(config, entries)
            if rng.random() < 0.1 and not crashed:
                # crash between computing and committing: nothing is written or acknowledged
                crashed.append((i, prepare(config, batch, ids, stores[i].stream_time())))
                continue
            result, _ = stores[i].commit_batch(batch, ids)
            assert result.status == "committed"
            if rng.random() < 0.2:  # the reply was lost: the entries come again
                again, _ = stores[(i + 1) % 3].commit_batch(batch, ids)
                assert again.status == "applied"
        # acknowledged exactly when committed: only the crashed processor's entries pend, and
        # those the log's reader read ahead and holds for the next read
        held_back = sum(len(delta.entry_ids) for _, delta in crashed)
        held_back += sum(len(r.buffer) for r in event_log._readers.values())
        assert pending_count(stores[0].client, event_log) == held_back
        for i, delta in crashed:  # a living processor takes the dead one's entries over
            taker = names[(i + 1) % 3]
            event_log.rewind(names[i])
            assert event_log.claim_idle(taker, 0, len(delta.entry_ids)) >= 1
            entries = event_log.read(taker, 10**6)
            ids = [e.id for e in entries]
            result, _ = stores[(i + 1) % 3].commit_batch(entry_batch(config, entries), ids)
            assert result.status == "committed"
            stale.append(delta)
        crashed.clear()
        stores[rng.randrange(3)].finalize_all()
        stores[rng.randrange(3)].flush_pending(history)
    stores[0].finalize_all()
    stores[1].flush_pending(history)
    assert pending_count(stores[0].client, event_log) == 0
    compare(expected, history.rows, config)
    # the crashed processor comes back with its deltas: already applied, nothing changes
    for delta in stale:
        assert stores[2].commit(delta).status == "applied"
    assert stale, "the seed should crash a processor at least once"
    # every bucket of a fully finalised stream is gone once history has it
    leftovers = [k for k in stores[0].client.scan_iter(match=b"*:hot:*:b:*")]
    assert leftovers == []
    # late rows: the late events, once per metric they feed
    late = stores[0].late_rows()
    late_ids = {row["event_id"] for row in late}
    assert late_ids == {e["id"] for b in batches for e in b if str(e["id"]).startswith("late-")}


def test_redelivery_duplicates_and_stale_deltas(
    config: Config, stores: list[RedisHotStore], event_log: RedisEventLog
) -> None:
    rng = random.Random(7)
    first = [order(i, T0 + i * 100, rng, 5) for i in range(50)]
    second = [*first[:10], *(order(i, T0 + i * 100, rng, 5) for i in range(50, 80))]
    append_all(event_log, [first, second])
    a = event_log.read("a", 50)
    b = event_log.read("b", 100)
    # a stale delta computed for the first entry, as a processor that crashed would hold it
    stale = prepare(config, entry_batch(config, a), [e.id for e in a], None)
    assert pending_count(stores[0].client, event_log) == 2
    # b commits first: its copies of the first 10 ids count there
    result, _ = stores[1].commit_batch(entry_batch(config, b), [e.id for e in b])
    assert result.status == "committed"
    assert pending_count(stores[0].client, event_log) == 1
    # a's stale delta holds those ids too: refused whole, nothing written, not acknowledged
    refused = stores[0].commit(stale)
    assert refused.status == "conflict"
    assert sorted(refused.duplicates) == sorted(e["id"] for e in first[:10])
    assert pending_count(stores[0].client, event_log) == 1
    done, _ = stores[0].commit_batch(entry_batch(config, a), [e.id for e in a])
    assert done.status == "committed"
    assert pending_count(stores[0].client, event_log) == 0
    # redelivered: acknowledged, changes nothing
    before = stores[2].current("orders_20s")
    assert stores[2].commit(stale).status == "applied"
    assert stores[2].current("orders_20s") == before
    assert sum(v.value for v in stores[2].open_windows("orders") if v.value) == 80
    # a batch whose entries were partly applied is refused with the applied ids
    mixed = prepare(config, entry_batch(config, a), [a[0].id, "1-1"], None)
    assert stores[0].commit(mixed).applied == (a[0].id,)


def test_delta_for_a_final_window_is_refused_and_ends_late(
    config: Config, stores: list[RedisHotStore], tmp_path: Path
) -> None:
    rng = random.Random(3)
    late_event = order("x", T0 + 5_000, rng, 5)
    late_event["data"]["latency"] = 1.5  # so that every metric takes it
    early = decode(config, [late_event])
    stale = prepare(config, early, ["5-0"], None)  # computed before the stream moved on
    ahead = decode(config, [order("y", T0 + 60_000, rng, 5)])
    assert stores[0].commit_batch(ahead, ["6-0"])[0].status == "committed"
    jobs = {j.metric for j in stores[1].finalize_all()}
    assert "orders" in jobs or jobs == set()
    history = Recording(SqliteHistory(tmp_path / "state.db"))
    stores[1].flush_pending(history)
    refused = stores[0].commit(stale)
    assert refused.status == "conflict"
    assert f"orders:{T0}" in refused.final and refused.duplicates == ()
    result, delta = stores[0].commit_batch(early, ["5-0"])
    assert result.status == "committed"
    assert {r.metric for r in delta.late} == {m.name for m in config.metrics}
    assert {r["event_id"] for r in stores[0].late_rows()} == {"x"}
    # and the window it would have changed stays as the oracle has it: empty
    engine = Engine(config)
    engine.process(ahead)
    engine.process(early)
    assert engine.advance().late and not [v for v in history.rows if v.window_start_ms <= T0]


def test_concurrent_finalize_finalises_each_window_once(
    config: Config, settings: RedisSettings, stores: list[RedisHotStore]
) -> None:
    rng = random.Random(5)
    events = [order(i, T0 + i * 200, rng, 30) for i in range(300)]
    assert stores[0].commit_batch(decode(config, events), ["1-0"])[0].status == "committed"
    assert stores[0].commit_batch(decode(config, [beat(T0 + 10**6)]), ["2-0"])[0].status == (
        "committed"
    )
    many = [RedisHotStore(settings, config) for _ in range(8)]
    barrier = threading.Barrier(len(many))
    found: list[Any] = []

    def run(store: RedisHotStore) -> None:
        barrier.wait()
        found.extend(store.finalize_all())

    threads = [threading.Thread(target=run, args=(s,)) for s in many]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in many:
        s.close()
    assert sorted(j.metric for j in found) == sorted(m.name for m in config.metrics)
    assert sorted(stores[0].pending(), key=lambda j: j.metric) == sorted(
        found, key=lambda j: j.metric
    )


def test_pending_history_survives_a_crash(
    config: Config, settings: RedisSettings, stores: list[RedisHotStore], pg_url: str
) -> None:
    rng = random.Random(11)
    events = [order(i, T0 + i * 300, rng, 50) for i in range(200)]
    expected = oracle_finals(config, [events, [beat(T0 + 10**6)]])
    stores[0].commit_batch(decode(config, events), ["1-0"])
    stores[0].commit_batch(decode(config, [beat(T0 + 10**6)]), ["2-0"])
    jobs = stores[0].finalize_all()
    assert jobs
    history = Recording(PostgresHistory(pg_url))
    try:
        # crash after writing one job to history but before completing it
        first = jobs[0]
        history.write_final([stores[0]._row(v) for v in stores[0].job_windows(first)])
        restarted = RedisHotStore(settings, config)
        try:
            assert first in restarted.pending()
            restarted.flush_pending(history)
            assert restarted.pending() == []
            assert restarted.flush_pending(history) == 0
        finally:
            restarted.close()
        compare(expected, history.rows, config)
        stored = history.windows("orders", T0, T0 + 10**6, 10_000)
        assert sum(r.value for r in stored) == 200
    finally:
        history.close()


def test_a_job_completed_by_another_processor_is_not_read_again(
    config: Config, stores: list[RedisHotStore], tmp_path: Path
) -> None:
    # two processors flushing at once: the second listed the job before the first completed
    # it (deleting its buckets); reading the windows from what is left would write wrong values
    rng = random.Random(12)
    events = [order(i, T0 + i * 300, rng, 50) for i in range(200)]
    stores[0].commit_batch(decode(config, events), ["1-0"])
    stores[0].commit_batch(decode(config, [beat(T0 + 10**6)]), ["2-0"])
    stores[0].finalize_all()
    listed = stores[1].pending()
    assert listed and all(stores[1].job_windows(job) for job in listed)
    history = Recording(SqliteHistory(tmp_path / "state.db"))
    try:
        stores[0].flush_pending(history)
        written = len(history.rows)
        assert [stores[1].job_windows(job) for job in listed] == [None] * len(listed)
        assert stores[1].flush_pending(history) == 0 and len(history.rows) == written
    finally:
        history.close()


def test_advance_moves_shared_stream_time_when_idle(
    config: Config, stores: list[RedisHotStore]
) -> None:
    rng = random.Random(2)
    assert stores[0].advance(1_000) is None
    stores[0].commit_batch(decode(config, [order(1, T0, rng, 3)]), ["1-0"])
    wall = 5_000_000
    assert stores[1].advance(wall) == T0  # busy: anchors (wall, T0)
    assert stores[2].advance(wall + 7_000) == T0 + 7_000  # idle: moves with the clock
    engine = Engine(config)
    engine.process(decode(config, [order(1, T0, rng, 3)]))
    engine.advance(wall)
    assert engine.advance(wall + 7_000).stream_time_ms == T0 + 7_000
    assert stores[0].advance(wall + 3_000) == T0 + 7_000  # never backwards


def test_current_and_open_windows_match_the_engine(
    config: Config, stores: list[RedisHotStore]
) -> None:
    batches = make_stream(9, 400)[:6]
    engine = Engine(config)
    for n, events in enumerate(batches):
        engine.process(decode(config, events))
        stores[n % 3].commit_batch(decode(config, events), [f"{n + 1}-0"])
    for m in config.metrics:
        agg = engine.aggregator(m.name)
        stream, values = stores[1].current(m.name)
        assert stream == engine.stream_time_ms
        want = {key(v): agg.dumps(v.state) for v in engine.current(m.name)}
        assert {key(v): agg.dumps(v.state) for v in values} == want
        want = {key(v): agg.dumps(v.state) for v in engine.open_windows(m.name)}
        got = {key(v): agg.dumps(v.state) for v in stores[2].open_windows(m.name)}
        assert got == want
    assert stores[0].take_changed() == {m.name for m in config.metrics}
    assert stores[0].take_changed() == set()
    footprint = stores[0].footprint()
    assert {n: labels for n, (labels, _) in footprint.items()} == {
        m.name: engine.label_sets(m.name) for m in config.metrics
    }
    assert all(size > 0 for _, size in footprint.values())
    # a distinct metric's sets or registers count: the 20 s one holds more than the 10 s one
    assert footprint["users_20s"][1] > footprint["users"][1] > footprint["revenue"][1]


def test_commands_per_thousand_events(
    config: Config, stores: list[RedisHotStore], capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(4)
    warm = [order(f"w{i}", T0 + i, rng, 500) for i in range(100)]
    stores[0].commit_batch(decode(config, warm), ["1-0"])
    events = [order(i, T0 + 1_000 + i * 10, rng, 500) for i in range(1_000)]
    delta = prepare(config, decode(config, events), ["2-0"], stores[0].stream_time())

    def calls() -> int:
        stats: Any = stores[0].client.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")

    before = calls()
    assert stores[0].commit(delta).status == "committed"
    used = calls() - before
    with capsys.disabled():
        print(f"\nRedis commands for one commit of 1,000 events: {used} (1 round trip)")
    assert used < 3_000
