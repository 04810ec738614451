"""The engine against hand-computed cases and against a brute-force oracle."""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pulseboard.aggregates import get_aggregator, make_distinct
from pulseboard.config import Config
from pulseboard.engine import OTHER, Engine, Tick
from pulseboard.events import Batch, EventDecoder
from pulseboard.windows import is_final, windows_containing
from tests.conftest import SHOP_YAML, make_config

T0 = 1_767_225_600_000  # a minute boundary
NOW_MS = T0 + 10**10  # far enough ahead that max_future never rejects a test event
Key = tuple[str, tuple[tuple[str, Any], ...], int]


def ev(i: int | str, time_ms: int, kind: str = "order", **data: Any) -> dict[str, Any]:
    if kind == "order":
        data.setdefault("amount", 1.0)
    return {"id": str(i), "type": kind, "time": time_ms, "data": data}


def decode(config: Config, events: Sequence[dict[str, Any]]) -> Batch:
    batch = EventDecoder(config).decode(json.dumps(list(events)).encode(), NOW_MS)
    assert batch.errors == []
    return batch


# events ingest rejects: one fails validation, one is beyond max_future
BAD_EVENTS = (ev("bad", T0, amount="x"), ev("future", NOW_MS + 10**9))


def check_then_decode(
    config: Config, events: Sequence[dict[str, Any]], bad_at: int | None = None
) -> Batch:
    """The events as the pipeline hands them on: checked at ingest, and the payload it logs
    decoded again by the processor. With ``bad_at``, the body also holds the bad events from
    that position on, so that ``check`` rebuilds the payload from the good events' JSON."""
    bad = list(BAD_EVENTS) if bad_at is not None else []
    at = len(events) if bad_at is None else bad_at
    body = json.dumps([*events[:at], *bad, *events[at:]]).encode()
    decoder = EventDecoder(config)
    checked = decoder.check(body, NOW_MS)
    assert [e.id for e in checked.errors] == [e["id"] for e in bad]
    assert checked.payload is not None and (checked.payload == body) == (not bad)
    batch = decoder.decode(checked.payload, NOW_MS)
    assert batch.errors == []
    return batch


def feed(engine: Engine, config: Config, events: Sequence[dict[str, Any]]) -> None:
    engine.process(decode(config, events))


def finals(ticks: Sequence[Tick]) -> dict[Key, Any]:
    out: dict[Key, Any] = {}
    for tick in ticks:
        for w in tick.final:
            key = (w.metric, tuple(sorted(w.labels.items())), w.window_start_ms)
            assert key not in out, f"window emitted final twice: {key}"
            out[key] = w.value
    return out


def flush(engine: Engine) -> Tick:
    """Idle the engine long enough for every window to become final."""
    engine.advance(now_ms=0)
    return engine.advance(now_ms=10**9)


def test_tumbling_count_sum_and_group_by(shop_config: Config) -> None:
    engine = Engine(shop_config)
    feed(
        engine,
        shop_config,
        [
            ev(1, T0 + 1, region="eu", amount=10.5),
            ev(2, T0 + 2, region="us", amount=0.25),
            ev(3, T0 + 59_999, region="eu", amount=100),
            ev(4, T0 + 60_000, region="eu", amount=1),
        ],
    )
    tick = engine.advance()
    assert tick.final == []  # stream time T0+60s: nothing is final before T0+90s
    assert set(tick.updates) == {"orders", "revenue", "orders_last_5m", "big_orders"}
    assert [(v.labels, v.window_start_ms, v.value, v.status) for v in tick.updates["orders"]] == [
        ({"region": "eu"}, T0 + 60_000, 1, "open")
    ]
    assert engine.advance().updates == {}
    got = finals([flush(engine)])
    assert got[("orders", (("region", "eu"),), T0)] == 2
    assert got[("orders", (("region", "us"),), T0)] == 1
    assert got[("orders", (("region", "eu"),), T0 + 60_000)] == 1
    assert got[("revenue", (), T0)] == 110.75
    assert got[("big_orders", (), T0)] == 1
    # a sliding 5m window every 1m: the window ending at T0+1m holds 3, every later one 4
    assert got[("orders_last_5m", (), T0 - 240_000)] == 3
    assert got[("orders_last_5m", (), T0 - 180_000)] == 4
    assert got[("orders_last_5m", (), T0 + 60_000)] == 1
    assert ("orders_last_5m", (), T0 + 120_000) not in got


def test_window_becomes_final_exactly_at_end_plus_lateness(shop_config: Config) -> None:
    engine = Engine(shop_config)
    feed(engine, shop_config, [ev(1, T0 + 5)])
    feed(engine, shop_config, [ev(2, T0 + 60_000 + 29_999)])
    assert [w.metric for w in engine.advance().final] == []
    feed(engine, shop_config, [ev(3, T0 + 90_000)])
    tick = engine.advance()
    assert {(w.metric, w.window_start_ms, w.value) for w in tick.final if w.metric == "orders"} == {
        ("orders", T0, 1)
    }


def test_late_event_goes_to_late_channel_only(shop_config: Config) -> None:
    engine = Engine(shop_config)
    feed(engine, shop_config, [ev(1, T0 + 10, region="eu", amount=7)])
    feed(engine, shop_config, [ev(2, T0 + 90_000, region="eu")])
    first = finals([engine.advance()])
    feed(engine, shop_config, [ev("late", T0 + 20, region="eu", amount=5)])
    tick = engine.advance()
    late = {(e.metric, e.window_start_ms, e.event_id, e.value) for e in tick.late}
    assert ("orders", T0, "late", None) in late
    assert ("revenue", T0, "late", 5.0) in late
    # the sliding metric's first bucket is final too, so the event is late there as well
    assert ("orders_last_5m", T0, "late", None) in late
    assert first[("revenue", (), T0)] == 7.0
    rest = finals([flush(engine)])
    assert all(k[2] != T0 or k[0] == "orders_last_5m" for k in rest)
    assert not any(
        w.metric == "orders" and w.window_start_ms == T0 for w in engine.current("orders")
    )


def test_lateness_is_decided_event_by_event_within_a_batch(shop_config: Config) -> None:
    """An event behind a far newer one in the same batch is late, as it would be in two batches."""
    split = Engine(shop_config)
    feed(split, shop_config, [ev(1, T0 + 200_000)])
    feed(split, shop_config, [ev(2, T0 + 1)])
    whole = Engine(shop_config)
    feed(whole, shop_config, [ev(1, T0 + 200_000), ev(2, T0 + 1)])
    for engine in (split, whole):
        assert [e.event_id for e in engine.advance().late if e.metric == "orders"] == ["2"]


def test_duplicates_count_once_within_and_across_batches(shop_config: Config) -> None:
    engine = Engine(shop_config)
    feed(engine, shop_config, [ev(1, T0 + 1), ev(1, T0 + 1), ev(2, T0 + 2)])
    feed(engine, shop_config, [ev(2, T0 + 2), ev(3, T0 + 3)])
    assert engine.duplicates == 2
    got = finals([flush(engine)])
    assert got[("orders", (("region", None),), T0)] == 3


def test_idle_input_closes_windows_on_the_wall_clock(shop_config: Config) -> None:
    engine = Engine(shop_config)
    feed(engine, shop_config, [ev(1, T0 + 1)])
    wall = 5_000_000
    assert engine.advance(now_ms=wall).final == []  # anchors event time T0+1 at this wall time
    assert engine.advance(now_ms=wall + 89_000).final == []
    tick = engine.advance(now_ms=wall + 89_999)
    assert tick.stream_time_ms == T0 + 1 + 89_999
    assert [(w.metric, w.value) for w in tick.final if w.metric == "orders"] == [("orders", 1)]


def test_label_cap_sends_the_rest_to_other() -> None:
    config = make_config(
        """
        events: {order: {fields: {shop: {type: string}}}}
        metrics:
          - {name: orders, event: order, agg: count, window: 1m, group_by: [shop],
             max_label_sets: 2}
        """
    )
    engine = Engine(config)
    feed(engine, config, [ev(i, T0 + i, shop=s) for i, s in enumerate("aabcdc")])
    assert engine.overflow_events("orders") == 3
    got = finals([flush(engine)])
    assert got == {
        ("orders", (("shop", "a"),), T0): 2,
        ("orders", (("shop", "b"),), T0): 1,
        ("orders", (("shop", OTHER),), T0): 3,
    }


def test_late_events_beyond_the_label_cap_carry_other() -> None:
    config = make_config(
        """
        pipeline: {lateness: 1s}
        events: {order: {fields: {shop: {type: string}}}}
        metrics:
          - {name: orders, event: order, agg: count, window: 1m, group_by: [shop],
             max_label_sets: 1}
        """
    )
    engine = Engine(config)
    feed(engine, config, [ev(1, T0 + 1, shop="a"), ev(2, T0 + 120_000, shop="a")])
    feed(engine, config, [ev(3, T0 + 2, shop="a"), ev(4, T0 + 3, shop="b")])
    late = {e.event_id: e.labels for e in engine.advance().late}
    assert late == {"3": {"shop": "a"}, "4": {"shop": OTHER}}


def test_windows_far_apart_emit_only_windows_with_data() -> None:
    """A sliding window walks only the ends whose windows hold buckets, not every step between."""
    config = make_config(
        """
        pipeline: {lateness: 1s}
        events: {order: {fields: {}}}
        metrics: [{name: recent, event: order, agg: count, window: 5m, every: 1s}]
        """
    )
    engine = Engine(config)
    two_days = 2 * 86_400_000
    feed(engine, config, [ev(1, T0), ev(2, T0 + two_days)])
    first = engine.advance().final
    assert len(first) == 300  # the first event's windows; the second event's are still open
    final = first + flush(engine).final
    assert len(final) == 2 * 300
    assert {w.value for w in final} == {1}
    assert min(w.window_start_ms for w in final) == T0 - 299_000
    assert max(w.window_start_ms for w in final) == T0 + two_days


def test_restore_with_another_dedupe_width_keeps_ids(shop_config: Config) -> None:
    hourly = make_config(SHOP_YAML_WITH_HOURLY)
    engine = Engine(hourly)
    feed(engine, hourly, [ev("x", T0 + 1)])
    engine.advance()
    restored = Engine.restore(shop_config, engine.snapshot())
    restored.advance()
    feed(restored, shop_config, [ev("x", T0 + 1), ev("y", T0 + 2)])
    assert restored.duplicates == 1
    got = finals([flush(restored)])
    assert got[("orders", (("region", None),), T0)] == 2


def test_current_values(shop_config: Config) -> None:
    engine = Engine(shop_config)
    assert engine.current("orders") == []
    feed(engine, shop_config, [ev(1, T0 + 1, region="eu"), ev(2, T0 + 61_000, region="eu")])
    (value,) = engine.current("orders")
    assert (value.window_start_ms, value.value, value.status) == (T0 + 60_000, 1, "open")
    (sliding,) = engine.current("orders_last_5m")
    assert (sliding.window_start_ms, sliding.window_end_ms, sliding.value) == (
        T0 - 180_000,
        T0 + 120_000,
        2,
    )


def test_restore_rejects_garbage(shop_config: Config) -> None:
    from pulseboard.errors import StateError

    with pytest.raises(StateError):
        Engine.restore(shop_config, b"not a snapshot")


SHOP_YAML_WITH_HOURLY = SHOP_YAML.replace(
    "metrics:\n",
    "metrics:\n  - {name: hourly, event: order, agg: count, window: 1h}\n",
).replace("pipeline: {", "pipeline: {retention: {hot: 2h}, ")

# --- the oracle ---------------------------------------------------------------------------

PROPERTY_YAML = """
pipeline: {lateness: 10s, distinct_exact_threshold: 4}
events:
  order:
    fields:
      amount: {type: float, required: true}
      region: {type: string, enum: [eu, us, apac]}
      user: {type: string}
  view:
    fields:
      user: {type: string, required: true}
      latency_ms: {type: float}
metrics:
  - {name: orders, event: order, agg: count, window: 20s, group_by: [region], max_label_sets: 2}
  - {name: revenue, event: order, agg: sum, field: amount, window: 20s}
  - {name: avg_amount, event: order, agg: avg, field: amount, window: 20s, group_by: [user]}
  - {name: max_amount, event: order, agg: max, field: amount, window: 20s}
  - {name: min_amount, event: order, agg: min, field: amount, window: 20s}
  - {name: recent, event: order, agg: count, window: 30s, every: 10s}
  - {name: recent_big, event: order, agg: sum, field: amount, window: 20s, every: 5s,
     where: "amount >= 50 and region != 'us'"}
  - {name: visitors, event: view, agg: distinct, field: user, window: 20s}
  - {name: latency_p95, event: view, agg: p95, field: latency_ms, window: 40s, every: 20s}
"""
PROPERTY_CONFIG = make_config(PROPERTY_YAML)


def oracle(
    config: Config, arrivals: Sequence[dict[str, Any]]
) -> tuple[dict[Key, Any], set[tuple[str, str]]]:
    """Final window values and late (metric, id) pairs, computed one event at a time."""
    seen: set[str] = set()
    stream = -math.inf
    lateness = config.pipeline.lateness_ms
    values: dict[str, dict[tuple[int, Any], list[Any]]] = {m.name: {} for m in config.metrics}
    labels: dict[str, list[Any]] = {m.name: [] for m in config.metrics}
    late: set[tuple[str, str]] = set()
    for event in arrivals:
        if event["id"] in seen:
            continue
        seen.add(event["id"])
        before, stream = stream, max(stream, event["time"])
        for m in config.metrics:
            if m.event != event["type"]:
                continue
            data = event["data"]
            if m.where is not None and not m.where.evaluate(data):
                continue
            value = data.get(m.field) if m.field else None
            if m.field and value is None:
                continue
            bucket = event["time"] // m.bucket_ms
            if is_final((bucket + 1) * m.bucket_ms, lateness, before):
                late.add((m.name, event["id"]))
                continue
            key = tuple(data.get(g) for g in m.group_by)
            if key not in labels[m.name]:
                labels[m.name].append(key)
            label = key if labels[m.name].index(key) < m.max_label_sets else (OTHER,) * len(key)
            values[m.name].setdefault((bucket, label), []).append(value)
    return _windows(config, values), late


def _windows(config: Config, values: dict[str, dict[tuple[int, Any], list[Any]]]) -> dict[Key, Any]:
    """Fold each window's values, bucket by bucket, with the aggregator's scalar ``add``."""
    out: dict[Key, Any] = {}
    for m in config.metrics:
        agg = (
            make_distinct(config.pipeline.distinct_exact_threshold)
            if m.agg == "distinct"
            else get_aggregator(m.agg)
        )
        per_window: dict[tuple[int, Any], Any] = {}
        for (bucket, label), vals in values[m.name].items():
            for start, _ in windows_containing(bucket * m.bucket_ms, m.window_ms, m.every_ms):
                state = per_window.get((start, label), agg.initial())
                for v in vals:
                    state = agg.add(state, float(v) if agg.numeric else v)
                per_window[(start, label)] = state
        for (start, label), state in per_window.items():
            out[(m.name, tuple(zip(m.group_by, label, strict=True)), start)] = agg.result(state)
    return out


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[int], int]:
    """Events in arrival order (shuffled within the lateness, some delayed far beyond it, some
    duplicated), cut points splitting them into batches, and a batch after which to snapshot."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    n = draw(st.integers(1, 120))
    events = []
    for i in range(n):
        time_ms = T0 + i * 700 + rng.randrange(-3_000, 3_000)
        if rng.random() < 0.7:
            data: dict[str, Any] = {"amount": rng.choice([0.1, 1.25, 49.99, 50.0, 120.0, 1e6 / 7])}
            if rng.random() < 0.9:
                data["region"] = rng.choice(["eu", "us", "apac"])
            if rng.random() < 0.8:
                data["user"] = f"u{rng.randrange(8)}"
            events.append({"id": f"e{i}", "type": "order", "time": time_ms, "data": data})
        else:
            data = {"user": f"u{rng.randrange(12)}"}
            if rng.random() < 0.9:
                data["latency_ms"] = rng.lognormvariate(3, 1)
            events.append({"id": f"e{i}", "type": "view", "time": time_ms, "data": data})
    # shuffle within a little less than the lateness: arrival order = time + small noise
    arrivals = sorted(events, key=lambda e: e["time"] + rng.randrange(0, 6_000))
    for _ in range(draw(st.integers(0, 6))):  # delay some by 28-84 s: often beyond the lateness
        i = rng.randrange(len(arrivals))
        arrivals.insert(min(len(arrivals), i + rng.randrange(40, 120)), arrivals.pop(i))
    for _ in range(draw(st.integers(0, 10))):  # resend some, soon after the original
        i = rng.randrange(len(arrivals))
        arrivals.insert(min(len(arrivals), i + rng.randrange(1, 8)), dict(arrivals[i]))
    cuts = sorted(draw(st.lists(st.integers(1, max(1, len(arrivals) - 1)), max_size=8)))
    snapshot_after = draw(st.integers(-1, len(cuts)))
    return arrivals, cuts, snapshot_after


def run_engine(
    config: Config, arrivals: list[dict[str, Any]], cuts: list[int], snapshot_after: int
) -> tuple[dict[Key, Any], set[tuple[str, str]]]:
    engine = Engine(config)
    ticks = []
    bounds = [0, *cuts, len(arrivals)]
    for number, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        if lo < hi:
            # alternate the three ways a batch reaches the engine: decoded, checked and decoded
            # again from the payload ingest logs (with rejected events dropped from it), and
            # joined from two logged requests as the processor joins the entries of one read
            batch = decode(config, arrivals[lo:hi])
            if number % 3 == 1:
                batch = check_then_decode(config, arrivals[lo:hi], bad_at=number % (hi - lo + 1))
            elif number % 3 == 2 and hi - lo > 1:
                middle = (lo + hi) // 2
                batch = Batch.concat(
                    [
                        check_then_decode(config, arrivals[lo:middle]),
                        check_then_decode(config, arrivals[middle:hi]),
                    ]
                )
            engine.process(batch)
        ticks.append(engine.advance())
        if number == snapshot_after:
            engine = Engine.restore(config, engine.snapshot())
    ticks.append(flush(engine))
    late = {(e.metric, e.event_id) for t in ticks for e in t.late}
    return finals(ticks), late


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_engine_equals_oracle(stream: tuple[list[dict[str, Any]], list[int], int]) -> None:
    arrivals, cuts, snapshot_after = stream
    expected, expected_late = oracle(PROPERTY_CONFIG, arrivals)
    got, got_late = run_engine(PROPERTY_CONFIG, arrivals, cuts, snapshot_after)
    assert got == expected
    assert expected_late <= got_late
    # a copy of a counted event arriving after the dedupe horizon can only be late, never counted
    sent = [e["id"] for e in arrivals]
    assert all(sent.count(event_id) > 1 for _, event_id in got_late - expected_late)


def test_oracle_sees_late_events() -> None:
    """The generator and oracle really do produce late events and label overflow."""
    arrivals = [ev(1, T0 + 100_000, region="eu"), ev(2, T0 + 1, region="us")]
    expected, late = oracle(PROPERTY_CONFIG, arrivals)
    assert ("orders", "2") in late
    assert expected[("orders", (("region", "eu"),), T0 + 100_000 - 100_000 % 20_000)] == 1


def test_first_arrivals_survive_hash_collisions() -> None:
    from pulseboard.engine import _first_arrivals

    ids = ["a", "b", "a", "c"]
    positions = np.array([3, 0, 1, 2])  # arrival order: b, a(2nd in list), c, a(1st in list)
    honest = np.array([hash(i) for i in ids], dtype=np.int64)
    assert _first_arrivals(ids, honest, positions, 3).tolist() == [False, True, True, True]
    colliding = np.array([7, 7, 7, 9], dtype=np.int64)  # "a" and "b" share a hash
    assert _first_arrivals(ids, colliding, positions, 3).tolist() == [False, True, True, True]
