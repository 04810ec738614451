"""The distributed processor on a real ``redis-server`` and PostgreSQL, against the embedded
engine as oracle.

The oracle of history is the batch recomputation the design promises once late events are
reconciled: an engine that finds nothing late (lateness of a day), fed every logged event in
log order, each id counted once. Windows holding late events must be ``revised``; a processor
alone finds exactly the late events the embedded engine finds over the same log.
"""

from __future__ import annotations

import dataclasses
import json
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import psycopg
import pytest
import redis

from pulseboard.adapters.base import StoreUnavailable
from pulseboard.adapters.postgres import PostgresHistory
from pulseboard.adapters.redis_conn import RedisSettings
from pulseboard.adapters.redis_hot import RedisHotStore
from pulseboard.adapters.redis_log import RedisEventLog
from pulseboard.adapters.sqlite_log import Append, DeadLetter
from pulseboard.config import Config
from pulseboard.dist_processor import DistributedProcessor
from pulseboard.engine import Engine
from pulseboard.events import EventDecoder
from pulseboard.processor import current_payload
from pulseboard.windows import windows_containing
from tests.conftest import make_config

from .conftest import PostgresCluster, RedisServer, stop_process

T0 = 1_767_225_600_000  # a minute boundary
BEAT_MS = T0 + 15 * 60_000  # far past every window: finalises everything
RECEIVED_MS = T0 + 20 * 60_000  # the ingest clock of every entry (max_future never rejects)
LATENESS_MS = 5_000
WAIT_S = 60.0

CONFIG = f"""
pipeline: {{lateness: {LATENESS_MS}ms, max_future: 5m, tick: 50ms, reconcile_every: 100ms,
           distinct_exact_threshold: 20}}
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
  - {{name: users, event: order, agg: distinct, field: user, window: 10s}}
  - {{name: latency_p95, event: order, agg: p95, field: latency, window: 10s}}
  - {{name: max_amount, event: order, agg: max, field: amount, window: 20s, every: 5s}}
"""

Key = tuple[str, str, int, int]  # metric, labels, start, end
Batches = list[list[dict[str, Any]]]


@pytest.fixture
def config() -> Config:
    return make_config(CONFIG)


class FakeClock:
    """Epoch ms that start near the events' times (so reconciliation finds their windows
    within log retention) and move with the real monotonic clock."""

    def __init__(self, start_ms: int = RECEIVED_MS) -> None:
        self.start_ms = start_ms
        self.origin = time.monotonic()

    def __call__(self) -> int:
        return self.start_ms + int((time.monotonic() - self.origin) * 1000)


# --- the stream and the oracle -------------------------------------------------------------


def order(i: int | str, time_ms: int, rng: random.Random) -> dict[str, Any]:
    data: dict[str, Any] = {
        "amount": rng.choice([0.1, 0.2, 0.3, 1e16, -1e16, 7.25, rng.uniform(-100, 100)]),
        "region": rng.choice(["eu", "us", "apac"]),
        "user": f"u{rng.randrange(30)}",
    }
    if rng.random() < 0.9:
        data["latency"] = rng.lognormvariate(3, 1)
    return {"id": str(i), "type": "order", "time": time_ms, "data": data}


def beat(time_ms: int) -> dict[str, Any]:
    """An event no metric reads: it moves stream time on."""
    return {"id": f"beat-{time_ms}", "type": "beat", "time": time_ms, "data": {"n": 1}}


def make_stream(seed: int, n: int = 1_200) -> Batches:
    """Orders over two minutes in batches, disorder within 1.5 s, exact duplicates of recent
    events, and in the last third events far behind stream time: new ones (``late-``) and
    copies of early events older than the dedupe horizon (late duplicates); a beat last."""
    rng = random.Random(seed)
    events = [order(i, T0 + i * 100 + rng.randrange(-1_500, 1_500), rng) for i in range(n)]
    batches: Batches = []
    at = 0
    while at < n:
        size = rng.randrange(20, 60)
        batch = events[at : at + size]
        if batches and rng.random() < 0.4:
            batch += rng.sample(batches[-1], 3)
        if at > 2 * n // 3 and rng.random() < 0.4:
            batch.append(order(f"late-{at}", T0 + 1_000 + rng.randrange(0, 20_000), rng))
        if at > 2 * n // 3 and rng.random() < 0.2:
            batch.append(dict(events[rng.randrange(0, 50)]))  # counted long ago
        rng.shuffle(batch)
        batches.append(batch)
        at += size
    batches.append([beat(BEAT_MS)])
    return batches


def decode(config: Config, events: list[dict[str, Any]], received_ms: int = RECEIVED_MS) -> Any:
    return EventDecoder(config).decode(json.dumps(events).encode(), received_ms)


def oracle(config: Config, batches: Batches) -> dict[Key, tuple[Any, bytes]]:
    """Every window's (value, state) as the batch recomputation has it."""
    pipeline = dataclasses.replace(config.pipeline, lateness_ms=86_400_000)
    engine = Engine(dataclasses.replace(config, pipeline=pipeline))
    for events in batches:
        engine.process(decode(config, events))
    far = BEAT_MS + 2 * 86_400_000
    engine.process(decode(config, [beat(far)], far))
    out = {}
    for v in engine.advance().final:
        k = (v.metric, msgspec.json.encode(v.labels).decode(), v.window_start_ms, v.window_end_ms)
        out[k] = (v.value, engine.aggregator(v.metric).dumps(v.state))
    return out


def late_windows(config: Config, batches: Batches) -> set[tuple[str, int, int]]:
    """(metric, start, end) of every window holding an event the embedded engine finds late
    over this log."""
    engine = Engine(config)
    out = set()
    for events in batches:
        engine.process(decode(config, events))
        for late in engine.advance().late:
            spec = config.metric(late.metric)
            assert spec is not None
            for start, end in windows_containing(late.time_ms, spec.window_ms, spec.every_ms):
                out.add((late.metric, start, end))
    return out


def append_all(log: RedisEventLog, batches: Batches) -> None:
    for events in batches:
        times = [e["time"] for e in events]
        payload = json.dumps(events).encode()
        log.append(Append(RECEIVED_MS, len(events), min(times), max(times), payload, ()))


def stored_history(pg_url: str) -> dict[Key, tuple[Any, bytes, str]]:
    """Every window in PostgreSQL (sliding windows included, which ``windows`` leaves out
    unless aligned to the window length)."""
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT metric, labels, window_start, window_ms, value_int, value_float, state, "
            "status FROM history"
        ).fetchall()
    out = {}
    for metric, labels, start, length, vi, vf, state, status in rows:
        k = (metric, labels, start, start + length)
        assert k not in out, f"{k} stored twice"
        out[k] = (vi if vi is not None else vf, bytes(state), status)
    return out


def assert_history_matches(
    pg_url: str,
    expected: dict[Key, tuple[Any, bytes]],
    revised: set[tuple[str, int, int]],
    *,
    exact_status: bool,
) -> None:
    """History equals the oracle bit for bit; windows holding late events are revised (and,
    with ``exact_status``, every other window is final)."""
    got = stored_history(pg_url)
    assert sorted(got) == sorted(expected)
    for k, (value, state) in expected.items():
        got_value, got_state, status = got[k]
        assert got_state == state, (k, got_value, value, status)
        assert got_value == value, k
        must_revise = (k[0], k[2], k[3]) in revised
        if must_revise or exact_status:
            assert status == ("revised" if must_revise else "final"), k
        else:
            assert status in ("final", "revised"), k


def first_arrivals(batches: Batches) -> set[str]:
    return {e["id"] for b in batches for e in b if e["type"] == "order"}


def designated_late(config: Config, batches: Batches) -> set[tuple[str, int, int]]:
    """Windows holding the ``late-`` events: late whatever the processors' timing."""
    out = set()
    for e in (e for b in batches for e in b if str(e["id"]).startswith("late-")):
        for spec in config.metrics:
            if spec.field is not None and e["data"].get(spec.field) is None:
                continue
            for start, end in windows_containing(e["time"], spec.window_ms, spec.every_ms):
                out.add((spec.name, start, end))
    return out


# --- fixtures ------------------------------------------------------------------------------


class Stores:
    """One processor's own clients: log, hot store, history."""

    def __init__(self, settings: RedisSettings, config: Config, pg: PostgresHistory) -> None:
        self.log = RedisEventLog(settings)
        self.hot = RedisHotStore(settings, config)
        self.history = pg

    def close(self) -> None:
        self.log.close()
        self.hot.close()


@pytest.fixture
def settings(clean_redis_url: str) -> RedisSettings:
    return RedisSettings.from_url(clean_redis_url)


@pytest.fixture
def history(pg_url: str) -> Iterator[PostgresHistory]:
    store = PostgresHistory(pg_url)
    yield store
    store.close()


def make_processor(
    name: str, config: Config, settings: RedisSettings, history: PostgresHistory, **kw: Any
) -> tuple[DistributedProcessor, Stores]:
    stores = Stores(settings, config, history)
    kw.setdefault("max_read_events", 100)
    processor = DistributedProcessor(
        config, stores.log, stores.hot, history, name, clock=FakeClock(), **kw
    )
    return processor, stores


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll ``condition`` until it holds; fail saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for: {what}")
        time.sleep(0.05)


def quiescent(config: Config, log: RedisEventLog, hot: RedisHotStore) -> bool:
    """Everything read, committed, finalised, written to history and reconciled."""
    try:
        through = hot.final_through()
        return (
            log.backlog().entries == 0
            and all(through.get(m.name, 0) >= BEAT_MS - LATENESS_MS for m in config.metrics)
            and hot.pending() == []
            and hot.late_entries(1) == []
        )
    except StoreUnavailable:
        return False


class Runner:
    """Processors running in threads; ``crashed`` holds the names of those that died."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.crashed: list[str] = []

    def start(self, processor: DistributedProcessor) -> None:
        def target() -> None:
            try:
                processor.run(self.stop)
            except Crash:
                self.crashed.append(processor.consumer)

        thread = threading.Thread(target=target, name=processor.consumer)
        self.threads.append(thread)
        thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
            assert not thread.is_alive()


class Crash(Exception):
    """A processor dying abruptly."""


class CrashingHot(RedisHotStore):
    """A hot store whose processor dies before its ``crash_at``-th commit: its read entries
    stay pending, unacknowledged, with its consumer."""

    crash_at = 3
    commits = 0

    def commit_batch(self, *args: Any, **kwargs: Any) -> Any:
        self.commits += 1
        if self.commits >= self.crash_at:
            raise Crash
        return super().commit_batch(*args, **kwargs)


# --- (1) one processor over a known stream -------------------------------------------------


def test_one_processor_matches_the_oracle(
    config: Config, settings: RedisSettings, history: PostgresHistory, pg_url: str
) -> None:
    batches = make_stream(1)
    expected = oracle(config, batches)
    revised = late_windows(config, batches)
    assert designated_late(config, batches) <= revised
    processor, stores = make_processor("p0", config, settings, history)
    try:
        stores.log.ensure_group()
        append_all(stores.log, batches)
        now = RECEIVED_MS  # a fixed clock: idle advances never move stream time
        while processor.step():
            processor.tick(now)  # finalises and writes history as it goes
            processor.reconcile(now)
        for _ in range(3):
            processor.tick(now)
            processor.reconcile(now)
        assert processor.reconcile(now) == 0  # nothing left
        assert quiescent(config, stores.log, stores.hot)
        assert_history_matches(pg_url, expected, revised, exact_status=True)
        stats = processor.stats
        assert stats.events == sum(len(b) for b in batches)
        assert stats.late > 0 and stats.reconciled > 0
        assert stats.backlog_entries == 0 and stats.lag_s == 0.0
        # reconciling the same late events again changes nothing
        before = stored_history(pg_url)
        stores.hot.client.xadd(
            stores.hot.keys.late,
            {
                "metric": "orders",
                "event_id": "late-x",
                "window_start": T0,
                "window_end": T0 + 10_000,
                "labels": "{}",
                "time_ms": T0 + 5,
                "value": "null",
            },
        )
        assert processor.reconcile(now) == 1
        after = stored_history(pg_url)
        assert {k: v[:2] for k, v in after.items()} == {k: v[:2] for k, v in before.items()}
        assert stores.hot.late_entries(10) == []
    finally:
        stores.close()


def test_retention_trims_the_log_history_and_idle_consumers_under_the_lease(
    config: Config, settings: RedisSettings, history: PostgresHistory, pg_url: str
) -> None:
    batches = make_stream(3, n=300)
    processor, stores = make_processor("p0", config, settings, history, claim_idle_ms=50)
    try:
        stores.log.ensure_group()
        assert stores.log.read("gone", 10) == []  # a processor that stopped, holding nothing
        append_all(stores.log, batches)
        rejected = DeadLetter(RECEIVED_MS, 0, "x", "events[0]: not an object", b"1")
        stores.log.append(Append(RECEIVED_MS, 0, 0, 0, None, (rejected,)))  # a dead letter only
        while processor.step():
            processor.tick(RECEIVED_MS)
        for _ in range(2):
            processor.tick(RECEIVED_MS)
            processor.reconcile(RECEIVED_MS)
        assert quiescent(config, stores.log, stores.hot)
        windows = len(stored_history(pg_url))
        assert windows > 0
        assert stores.log.length() == len(batches)  # appended just now: all within retention

        # another processor holds the lease: nothing happens
        assert stores.hot.acquire_lease("someone-else", 10_000)
        assert processor.retain(RECEIVED_MS) is None
        stores.hot.release_lease("someone-else")

        # the events are from 2026-01-01: a clock a day and a second past the appends drops
        # every log entry (all acknowledged) and every window (older than 90 days)
        wait_for(lambda: min(i for _, i in stores.log.consumers().values()) >= 50, "idleness")
        later = int(time.time() * 1000) + config.pipeline.retention.log_ms + 1_000
        done = processor.retain(later)
        assert done is not None
        assert (done.log_entries, done.history_windows) == (len(batches), windows)
        assert done.dead_letters == 1 and processor.dead_letters.count() == 0
        assert done.consumers == ["gone"]  # itself it keeps, though idle
        assert processor.log.forget_idle_consumers(0) == ["p0"]
        assert stores.log.length() == 0 and stored_history(pg_url) == {}
        assert stores.log.consumers() == {}
        assert processor.retain(later) == type(done)(0, 0, 0, [])  # nothing left: idempotent
    finally:
        stores.close()


# --- (2) three processors, one crashing ------------------------------------------------------


def test_three_processors_one_crashing_match_the_oracle(
    config: Config, settings: RedisSettings, history: PostgresHistory, pg_url: str
) -> None:
    batches = make_stream(2)
    expected = oracle(config, batches)
    made = [make_processor(f"p{i}", config, settings, history, claim_idle_ms=1_000) for i in (0, 1)]
    crashing = Stores(settings, config, history)
    crashing.hot.close()
    crashing.hot = CrashingHot(settings, config)
    doomed = DistributedProcessor(
        config,
        crashing.log,
        crashing.hot,
        history,
        "doomed",
        max_read_events=100,
        clock=FakeClock(),
    )
    made.append((doomed, crashing))
    runner = Runner()
    try:
        made[0][1].log.ensure_group()
        append_all(made[0][1].log, batches)
        runner.start(doomed)  # first, so that it surely reads entries before it dies
        wait_for(lambda: runner.crashed == ["doomed"], "the doomed processor to crash")
        held = made[0][1].log.consumers()["doomed"][0]
        assert held > 0, "the crashed processor should hold unacknowledged entries"
        for processor, _ in made[:2]:
            runner.start(processor)
        wait_for(lambda: quiescent(config, made[0][1].log, made[0][1].hot), "quiescence")
        runner.join()
        assert made[0][1].log.consumers()["doomed"][0] == 0
        assert sum(p.stats.claimed for p, _ in made[:2]) >= held
        revised = designated_late(config, batches)
        assert_history_matches(pg_url, expected, revised, exact_status=False)
        stored = stored_history(pg_url)
        counted = sum(v for k, (v, _, _) in stored.items() if k[0] == "orders")
        assert counted == len(first_arrivals(batches))  # each id once, none twice
    finally:
        runner.join()
        for _, stores in made:
            stores.close()


# --- (3) Redis restarted mid-stream ---------------------------------------------------------


def test_redis_restart_pauses_and_resumes(
    config: Config,
    redis_factory: Callable[..., RedisServer],
    history: PostgresHistory,
    pg_url: str,
) -> None:
    server = redis_factory(appendonly=True)  # appendfsync always
    settings = RedisSettings.from_url(server.url)
    batches = make_stream(3)
    expected = oracle(config, batches)
    made = [
        make_processor(f"p{i}", config, settings, history, max_backoff_s=0.3, max_read_events=40)
        for i in range(2)
    ]
    log, hot = made[0][1].log, made[0][1].hot
    runner = Runner()
    try:
        log.ensure_group()
        append_all(log, batches)
        for processor, _ in made:
            runner.start(processor)
        total = sum(len(b) for b in batches)
        wait_for(lambda: sum(p.stats.events for p, _ in made) > total // 4, "some progress")
        server.kill()
        wait_for(lambda: all(not p.health().up for p, _ in made), "every processor paused")
        paused = made[0][0].health()
        assert paused.paused_since_ms is not None and "Redis" in (paused.last_error or "")
        with pytest.raises(StoreUnavailable):
            log.backlog()
        server.start()
        wait_for(lambda: quiescent(config, log, hot), "quiescence after the restart")
        runner.join()
        for processor, _ in made:
            health = processor.health()
            assert health.up and health.paused_since_ms is None and health.last_error
        assert_history_matches(
            pg_url, expected, designated_late(config, batches), exact_status=False
        )
    finally:
        runner.join()
        for _, stores in made:
            stores.close()


# --- (4) PostgreSQL unreachable for a while -------------------------------------------------


def test_postgres_outage_keeps_windows_pending_until_it_is_back(
    config: Config,
    settings: RedisSettings,
    own_postgres: tuple[PostgresCluster, Callable[[], None]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster, restart = own_postgres
    url = cluster.url
    batches = make_stream(4, 600)
    expected = oracle(config, batches)
    history = PostgresHistory(url, wait_s=2.0)  # an outage is found sooner than the default 30 s
    processor, stores = make_processor("p0", config, settings, history, max_backoff_s=0.3)
    runner = Runner()
    try:
        stores.log.ensure_group()
        append_all(stores.log, batches)
        assert cluster.proc is not None
        stop_process(cluster.proc, signal.SIGINT, 30)  # down, its data kept
        runner.start(processor)
        wait_for(lambda: not processor.history_health().up, "history writes to fail")
        assert "PostgreSQL" in (processor.history_health().last_error or "")
        # the rest goes on: the log is read and committed, current values published
        wait_for(lambda: stores.log.backlog().entries == 0, "the log read while history is down")
        wait_for(lambda: stores.hot.pending() != [], "finalised windows queued in Redis")
        assert processor.health().up
        assert stores.hot.current_payloads(["orders"])  # live values go on
        pending = stores.hot.pending()
        restart()
        wait_for(lambda: quiescent(config, stores.log, stores.hot), "quiescence")
        runner.join()
        assert processor.health().up and processor.history_health().up
        assert pending and stores.hot.pending() == []
        # one outage: logged when it started and when it ended, not at every attempt
        failed = [r for r in caplog.records if "history unavailable" in r.getMessage()]
        resumed = [r for r in caplog.records if "history reachable again" in r.getMessage()]
        assert len(failed) == 1 and len(resumed) == 1
        assert not [r for r in caplog.records if "processing paused" in r.getMessage()]
        assert_history_matches(url, expected, designated_late(config, batches), exact_status=False)
    finally:
        runner.join()
        stores.close()
        history.close()


# --- (5) current values published -----------------------------------------------------------


def test_current_values_are_stored_and_published(
    config: Config, settings: RedisSettings, history: PostgresHistory
) -> None:
    batches = make_stream(5, 400)[:5]
    engine = Engine(config)
    for events in batches:
        engine.process(decode(config, events))
    processor, stores = make_processor("p0", config, settings, history)
    subscriber = redis.Redis.from_url(settings.url)
    pubsub = subscriber.pubsub()
    try:
        pubsub.subscribe(settings.keys.ticks)
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        stores.log.ensure_group()
        append_all(stores.log, batches)
        while processor.step():
            pass
        now = RECEIVED_MS
        message = processor.tick(now)
        got = pubsub.get_message(timeout=5)
        assert got is not None and got["type"] == "message"
        published = json.loads(got["data"])
        names = sorted(m.name for m in config.metrics)
        assert published == {"tick": now, "metrics": names}
        assert message["metrics"] == names
        stored = stores.hot.current_payloads(names)
        assert sorted(stored) == names
        for name in names:
            spec = config.metric(name)
            assert spec is not None
            want = current_payload(spec, engine.current(name), engine.stream_time_ms, now)
            body = msgspec.json.decode(stored[name])
            assert by_labels(body) == by_labels(msgspec.json.decode(msgspec.json.encode(want)))
            assert {k: v for k, v in body.items() if k != "values"} == {
                k: v for k, v in want.items() if k != "values"
            }
            assert body["values"], name
        # nothing changed: the next tick publishes nothing
        processor.tick(now)
        assert pubsub.get_message(timeout=0.5) is None
        # a new event changes one metric only; the others' current windows did not move
        late_batch = [order("extra", engine.stream_time_ms or T0, random.Random(1))]
        late_batch[0]["data"].pop("latency", None)
        append_all(stores.log, [late_batch])
        assert processor.step() == 1
        processor.tick(now)
        got = pubsub.get_message(timeout=5)
        assert got is not None
        changed = set(json.loads(got["data"])["metrics"])
        assert changed == names_fed_by(config, late_batch[0])
        # idle: stream time follows the clock; every current window moves on, without events
        processor.tick(now + 10_000)
        got = pubsub.get_message(timeout=5)
        assert got is not None and json.loads(got["data"])["metrics"] == names
        assert stores.hot.stream_time() == (engine.stream_time_ms or 0) + 10_000
    finally:
        pubsub.close()
        subscriber.close()
        stores.close()


def by_labels(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A current payload's values in label order (the engine orders them by label id)."""
    return sorted(body["values"], key=lambda v: json.dumps(v["labels"]))


def names_fed_by(config: Config, event: dict[str, Any]) -> set[str]:
    return {
        m.name
        for m in config.metrics
        if m.event == event["type"] and (m.field is None or event["data"].get(m.field) is not None)
    }
