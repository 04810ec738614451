"""Simulated shop traffic: valid for the demo config, in session order, in the requested shares."""

from __future__ import annotations

import io
import random
from collections import Counter, defaultdict
from pathlib import Path

import msgspec
import pytest

import pulseboard
from pulseboard.config import load_config
from pulseboard.events import EventDecoder
from pulseboard.simulate import (
    LATE_MAX_MS,
    LATE_MIN_MS,
    Bursts,
    Schedule,
    SimEvent,
    TokenBucket,
    Traffic,
    daily_factor,
    run_simulate,
)
from tests.unit.test_client import Peer, Received, Reply

DEMO_YAML = Path(pulseboard.__file__).with_name("demo.yaml")
START_MS = 1_767_225_600_000
STEP_MS = 100


@pytest.fixture(scope="module")
def decoder() -> EventDecoder:
    return EventDecoder(load_config(DEMO_YAML))


def simulate(traffic: Traffic, steps: int, per_step: int) -> list[tuple[int, SimEvent]]:
    """Events with the time each was sent at, ``per_step`` every ``STEP_MS``."""
    return [
        (now_ms, event)
        for now_ms in range(START_MS, START_MS + steps * STEP_MS, STEP_MS)
        for event in traffic.events(now_ms, per_step)
    ]


@pytest.fixture(scope="module")
def sent() -> list[tuple[int, SimEvent]]:
    traffic = Traffic(late=0.03, duplicates=0.04, malformed=0.02, seed=11, sessions=300)
    return simulate(traffic, steps=2_000, per_step=100)


def body(events: list[SimEvent]) -> bytes:
    return msgspec.json.encode([e.envelope() for e in events])


def test_valid_kinds_validate_against_the_demo_config(
    decoder: EventDecoder, sent: list[tuple[int, SimEvent]]
) -> None:
    valid = [e for _, e in sent if e.kind != "malformed"]
    batch = decoder.decode(body(valid), sent[-1][0])
    assert batch.errors == []
    assert batch.accepted == len(valid)
    assert set(batch.types) == {"page_view", "add_to_cart", "order", "signup", "error"}


def test_malformed_events_are_each_rejected_with_a_message(
    decoder: EventDecoder, sent: list[tuple[int, SimEvent]]
) -> None:
    malformed = [e for _, e in sent if e.kind == "malformed"]
    batch = decoder.decode(body(malformed), sent[-1][0])
    assert batch.accepted == 0
    assert [e.id for e in batch.errors] == [e.id for e in malformed]
    messages = [e.error for e in batch.errors]
    for problem in ("missing required field", "expected float, got str", "unknown event type"):
        assert any(problem in m for m in messages), problem
    assert any("invalid enum value" in m for m in messages)


def test_shares_of_each_kind_are_close_to_the_requested(
    sent: list[tuple[int, SimEvent]],
) -> None:
    kinds = Counter(e.kind for _, e in sent)
    total = len(sent)
    assert kinds["late"] / total == pytest.approx(0.03, abs=0.003)
    assert kinds["duplicate"] / total == pytest.approx(0.04, abs=0.004)
    assert kinds["malformed"] / total == pytest.approx(0.02, abs=0.002)


def test_duplicates_repeat_an_earlier_event_within_seconds(
    sent: list[tuple[int, SimEvent]],
) -> None:
    first: dict[str, tuple[int, SimEvent]] = {}
    for sent_ms, event in sent:
        if event.kind != "duplicate":
            assert event.id not in first  # new events have new ids
            first[event.id] = (sent_ms, event)
            continue
        original_ms, original = first[event.id]
        assert original.envelope() == event.envelope()
        assert original.kind in ("normal", "late")
        assert 500 <= sent_ms - original_ms <= 5_000 + STEP_MS


def test_event_times(sent: list[tuple[int, SimEvent]]) -> None:
    for sent_ms, event in sent:
        if event.kind == "late":
            assert LATE_MIN_MS <= sent_ms - event.time_ms <= LATE_MAX_MS
        elif event.kind == "normal":
            assert 0 <= sent_ms - event.time_ms < 1_000


def test_an_order_follows_its_sessions_cart_and_checkout(
    sent: list[tuple[int, SimEvent]],
) -> None:
    by_user: dict[str, list[SimEvent]] = defaultdict(list)
    for _, event in sent:
        if event.kind in ("normal", "late") and "user" in event.data:
            by_user[event.data["user"]].append(event)
    orders = 0
    for events in by_user.values():  # in the order they were sent
        session, cart, checkout, last_ms = None, [], False, 0
        for event in events:
            if event.data.get("session", session) != session:
                session, cart, checkout, last_ms = event.data["session"], [], False, 0
            if event.kind == "normal":  # late ones are stamped in the past on purpose
                assert event.time_ms >= last_ms
                last_ms = event.time_ms
            if event.type == "add_to_cart":
                cart.append(event.data["price"])
            elif event.type == "page_view":
                checkout = event.data["path"] == "/checkout"
            elif event.type == "order":
                orders += 1
                assert checkout  # the page before an order is the checkout
                assert event.data["items"] == len(cart) > 0
                assert event.data["amount"] == pytest.approx(sum(cart), abs=0.01)
                cart, checkout = [], False
    assert orders > 1_000


def test_traffic_is_mostly_page_views_with_some_orders(sent: list[tuple[int, SimEvent]]) -> None:
    types = Counter(e.type for _, e in sent if e.kind == "normal")
    total = sum(types.values())
    assert 0.7 < types["page_view"] / total < 0.9
    assert types["add_to_cart"] > types["order"] > types["signup"] > 0
    assert types["error"] / total == pytest.approx(0.01, abs=0.003)


def test_a_seed_fixes_the_traffic_but_not_the_ids() -> None:
    def run() -> list[SimEvent]:
        return [e for _, e in simulate(Traffic(seed=5), steps=20, per_step=50)]

    first, second = run(), run()
    assert [(e.kind, e.type, e.data.get("path")) for e in first] == [
        (e.kind, e.type, e.data.get("path")) for e in second
    ]
    assert first[0].id != second[0].id


@pytest.mark.parametrize(
    "shares",
    [{"late": -0.1}, {"malformed": 1.0}, {"late": 0.5, "duplicates": 0.3, "malformed": 0.2}],
)
def test_impossible_shares_are_refused(shares: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"share|below 1"):
        Traffic(**shares)


def test_the_daily_curve_averages_one_and_is_quiet_at_night() -> None:
    hours = [i * 24 / 10_007 for i in range(10_007)]
    assert sum(map(daily_factor, hours)) / len(hours) == pytest.approx(1.0, abs=1e-3)
    assert daily_factor(4.0) < 0.5
    assert daily_factor(12.5) > 1.4 and daily_factor(20.5) > 1.4
    assert daily_factor(0.0) == pytest.approx(daily_factor(24.0))


def test_bursts_are_short_and_average_to_their_mean() -> None:
    bursts = Bursts(random.Random(3), mean_gap_s=30.0)
    factors = [bursts.factor(t / 10) for t in range(10 * 86_400)]
    assert set(factors) != {1.0}
    assert all(f == 1.0 or 2.0 <= f <= 3.0 for f in factors)
    assert sum(factors) / len(factors) == pytest.approx(bursts.mean, rel=0.02)


def test_schedule_without_shaping_is_the_rate() -> None:
    schedule = Schedule(250.0, random.Random(1), daily=False, bursts=False)
    assert schedule.rate_at(0.0) == schedule.rate_at(43_200.0) == 250.0


@pytest.mark.parametrize(
    ("steps", "due"),
    [
        ([(0.0, 100.0)], [0]),  # the first call starts the clock
        ([(0.0, 100.0), (0.05, 100.0)], [0, 5]),
        ([(0.0, 100.0), (0.015, 100.0), (0.03, 100.0)], [0, 1, 2]),  # fractions carry over
        ([(0.0, 100.0), (10.0, 100.0)], [0, 25]),  # a stall is capped at 0.25 s worth
        ([(0.0, 1.0), (10.0, 1.0)], [0, 1]),  # ...but at least one event
        ([(0.0, 10.0), (0.1, 1000.0)], [0, 100]),  # the rate in force at the end applies
    ],
)
def test_token_bucket(steps: list[tuple[float, float]], due: list[int]) -> None:
    bucket = TokenBucket()
    assert [bucket.take(now_s, rate) for now_s, rate in steps] == due


def test_token_bucket_says_how_long_to_wait() -> None:
    bucket = TokenBucket()
    bucket.take(0.0, 4.0)
    bucket.take(0.125, 4.0)
    assert bucket.wait_s(4.0) == pytest.approx(0.125)


def validating_peer(decoder: EventDecoder) -> tuple[Peer, Counter[str]]:
    """A peer that answers like the server: it validates every event against the demo config
    and counts what it accepted and rejected."""
    counts: Counter[str] = Counter()

    def answer(request: Received) -> Reply:
        batch = decoder.decode(msgspec.json.encode(request.events), 2**62)
        errors = [{"index": e.index, "id": e.id, "error": e.error} for e in batch.errors]
        counts.update(accepted=batch.accepted, rejected=len(errors))
        return Reply(202, {"accepted": batch.accepted, "rejected": len(errors), "errors": errors})

    return Peer(answer), counts


def report_numbers(text: str) -> dict[str, float]:
    """The ``name: number ...`` lines of a report."""
    numbers: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        first = value.split(" ", 1)[0]
        if first.replace(".", "", 1).isdigit():
            numbers[name] = float(first)
    return numbers


def test_run_simulate_reports_what_the_server_received(decoder: EventDecoder) -> None:
    peer, counts = validating_peer(decoder)
    out = io.StringIO()
    try:
        code = run_simulate(
            url=peer.url, rate=200, duration_s=1.0, malformed=0.05, duplicates=0.05, seed=1, out=out
        )
    finally:
        peer.stop()
    report = report_numbers(out.getvalue())
    received = peer.events()
    kinds = Counter(e["id"] for e in received)
    assert code == 0
    assert report["sent"] == len(received) > 20
    assert report["sent"] == sum(report[k] for k in ("normal", "late", "duplicate", "malformed"))
    assert report["duplicate"] == sum(n - 1 for n in kinds.values())
    assert report["accepted"] == counts["accepted"]
    assert report["rejected"] == counts["rejected"] == report["malformed"]
    assert counts["accepted"] + counts["rejected"] == len(received)
    assert report["failed"] == 0
    assert report["rate"] == pytest.approx(report["sent"] / 1.0, rel=0.2)


def test_run_simulate_stops_cleanly_on_ctrl_c(
    decoder: EventDecoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    events = Traffic.events

    def interrupted(self: Traffic, now_ms: int, count: int) -> list[SimEvent]:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise KeyboardInterrupt
        return events(self, now_ms, count)

    monkeypatch.setattr(Traffic, "events", interrupted)
    peer, _ = validating_peer(decoder)
    out = io.StringIO()
    try:
        code = run_simulate(url=peer.url, rate=500, duration_s=60.0, seed=2, out=out)
    finally:
        peer.stop()
    report = report_numbers(out.getvalue())
    assert code == 130
    assert "interrupted: sending stopped early" in out.getvalue()
    assert report["sent"] == len(peer.events()) > 0
    assert report["accepted"] + report["rejected"] == report["sent"]
    assert report["elapsed"] < 30


def test_run_simulate_refuses_bad_arguments() -> None:
    out = io.StringIO()
    assert run_simulate(url="http://127.0.0.1:9", rate=10, duration_s=1, late=2.0, out=out) == 2
    assert "late must be a share from 0 up to 1, got 2.0" in out.getvalue()
