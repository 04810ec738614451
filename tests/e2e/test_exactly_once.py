"""Exactly-once, end to end, against real ``pulseboard serve`` processes.

1. Events with duplicates, out-of-order and late arrivals and malformed ones go through the
   HTTP API; every series point of every metric must equal a brute-force oracle computed from
   the accepted events (each id once, late ones included once reconciled), with the statuses
   open / final / revised where they belong, also after a restart and ``pulseboard reconcile``.
2. A producer keeps posting while the server is killed with SIGKILL at random moments and
   restarted; in the end every acknowledged event is counted exactly once.

Event times follow the wall clock (the server rejects times more than 5 minutes ahead, and
stream time follows the wall clock when input is idle).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import yaml

from pulseboard.adapters.sqlite import CHECKPOINT_FILE
from tests.e2e.conftest import Server
from tests.e2e.oracle import (
    LabelsKey,
    Metric,
    compare,
    expected_series,
    first_arrivals,
    time_ms,
)

Item = tuple[dict[str, Any], bool]
"""An event as sent, and whether it is valid (the server must accept it)."""
Statuses = Callable[[Metric, LabelsKey, int], frozenset[str]]

OPEN, FINAL, REVISED = frozenset({"open"}), frozenset({"final"}), frozenset({"revised"})
SETTLED = frozenset({"final", "revised"})

REGIONS = ("eu", "us", "apac")
WINDOW_MS = 2_000
SLIDING_MS = 4_000
LATENESS_MS = 1_000
MAX_SKEW_MS = 500
"""In-time events are at most this much older than the wall clock when posted, so they are
out of order by up to that much; it stays well inside the lateness."""

METRICS = (
    Metric("orders", "order", "count", WINDOW_MS, group_by=("region",)),
    Metric("revenue", "order", "sum", WINDOW_MS, field="amount"),
    Metric("avg_amount", "order", "avg", WINDOW_MS, field="amount"),
    Metric("max_amount", "order", "max", WINDOW_MS, field="amount"),
    Metric("min_latency", "view", "min", WINDOW_MS, field="latency"),
    Metric("users", "view", "distinct", WINDOW_MS, field="user"),
    Metric("latency_p95", "view", "p95", WINDOW_MS, field="latency"),
    Metric("orders_4s", "order", "count", SLIDING_MS, every_ms=1_000),
    Metric(
        "big_orders",
        "order",
        "count",
        WINDOW_MS,
        where="amount >= 100 and region in ('eu', 'us')",
        where_fn=lambda d: d["amount"] >= 100 and d.get("region") in ("eu", "us"),
    ),
)


def config_text(reconcile_every: str) -> str:
    return yaml.safe_dump(
        {
            "pipeline": {
                "tick": "200ms",
                "lateness": f"{LATENESS_MS}ms",
                "reconcile_every": reconcile_every,
            },
            "events": {
                "order": {
                    "fields": {
                        "amount": {"type": "float", "required": True},
                        "region": {"type": "string", "enum": list(REGIONS)},
                    }
                },
                "view": {
                    "fields": {
                        "user": {"type": "string", "required": True},
                        "latency": {"type": "float"},
                    }
                },
            },
            "metrics": [m.config() for m in METRICS],
        },
        sort_keys=False,
    )


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def rfc3339(t: int, offset_h: int) -> str:
    """Epoch ms ``t`` as RFC 3339 with milliseconds, in UTC (``Z``) or at an hour offset."""
    zone = timezone(timedelta(hours=offset_h))
    moment = datetime.fromtimestamp(t // 1000, zone) + timedelta(milliseconds=t % 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def poll(check: Callable[[], list[str]], timeout_s: float, interval_s: float = 0.1) -> list[str]:
    """Run ``check`` until it reports no problem or the deadline passes; its last report."""
    deadline = time.monotonic() + timeout_s
    while True:
        problems = check()
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(interval_s)


def report(problems: list[str], logs: str) -> str:
    shown = "\n".join(problems[:40])
    return f"{len(problems)} differences:\n{shown}\n--- server log ---\n{logs}"


# --- traffic -------------------------------------------------------------------------------


class Traffic:
    """Makes events and remembers every valid one the server acknowledged, in post order."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self.acked: list[dict[str, Any]] = []
        """Valid events of acknowledged requests, every copy, in post order."""

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    def when(self, t: int) -> int | str:
        """``t`` as epoch ms, or now and then as RFC 3339 (UTC or with an offset)."""
        roll = self.rng.random()
        if roll < 0.1:
            return rfc3339(t, 0)
        if roll < 0.2:
            return rfc3339(t, self.rng.choice((-5, 2, 9)))
        return t

    def order(self, t: int, **data: Any) -> dict[str, Any]:
        rng = self.rng
        body: dict[str, Any] = {"amount": round(rng.lognormvariate(3.6, 0.9), 2)}
        if rng.random() < 0.9:
            body["region"] = rng.choice(REGIONS)
        body.update(data)
        return {"id": self.new_id("o"), "type": "order", "time": self.when(t), "data": body}

    def view(self, t: int, **data: Any) -> dict[str, Any]:
        rng = self.rng
        body: dict[str, Any] = {"user": f"user-{rng.randrange(60)}"}
        if rng.random() < 0.85:
            body["latency"] = round(rng.lognormvariate(4.0, 0.8), 3)
        body.update(data)
        return {"id": self.new_id("v"), "type": "view", "time": self.when(t), "data": body}

    def in_time(self, orders: int, views: int) -> list[dict[str, Any]]:
        """Events up to ``MAX_SKEW_MS`` older than now, in no particular order."""
        now = wall_ms()
        events = [self.order(now - self.rng.randrange(MAX_SKEW_MS)) for _ in range(orders)]
        events += [self.view(now - self.rng.randrange(MAX_SKEW_MS)) for _ in range(views)]
        self.rng.shuffle(events)
        return events

    def malformed(self, t: int) -> dict[str, Any]:
        """An event the server must reject (the request itself stays valid JSON)."""
        i = self.new_id("bad")
        good = {"amount": 5.0, "region": "eu"}
        return self.rng.choice(
            [
                {"id": i, "type": "order", "time": t, "data": {"region": "eu"}},
                {"id": i, "type": "order", "time": t, "data": {"amount": 5.0, "region": "mars"}},
                {"id": i, "type": "order", "time": t, "data": {"amount": "12.50"}},
                {"id": i, "type": "refund", "time": t, "data": good},
                {"id": i, "type": "order", "time": t + 600_000, "data": good},
                {"id": i, "type": "order", "time": "yesterday", "data": good},
                {"id": i, "type": "view", "time": t, "data": {"latency": 3.0}},
                {"type": "order", "time": t, "data": good},
                {"id": i, "type": "order", "time": t, "data": [1, 2]},
            ]
        )

    def post(self, client: httpx.Client, items: list[Item], *, patient: bool = False) -> None:
        """Send one request; check the 202 names exactly the malformed events. ``patient``:
        while the server answers 503 or the connection fails, send the same bytes again (as
        a client does through an outage), for up to a minute."""
        content = json.dumps([event for event, _ in items])
        deadline = time.monotonic() + (60.0 if patient else 0.0)
        while True:
            try:
                response = client.post(
                    "/v1/events", content=content, headers={"content-type": "application/json"}
                )
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
                continue
            if response.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert response.status_code == 202, response.text
        body = response.json()
        bad = [i for i, (_, ok) in enumerate(items) if not ok]
        assert body["accepted"] == len(items) - len(bad), body
        assert body["rejected"] == len(bad), body
        assert [e["index"] for e in body["errors"]] == bad, body
        for error in body["errors"]:
            sent_id = items[error["index"]][0].get("id")
            assert error["id"] == sent_id, error
            assert error["error"].startswith(f"events[{error['index']}]"), error
        with self._lock:
            self.acked.extend(event for event, ok in items if ok)


def mixed_request(traffic: Traffic, recent: list[dict[str, Any]]) -> list[Item]:
    """Fresh in-time events with duplicates (of this request and of ``recent`` ones, the
    previous round's) and malformed events, shuffled. Two malformed events carry the id of a
    valid one: a broken copy of an event sent before it, and a broken event sent before a
    valid one with its id (which must count: a rejected event reserves no id)."""
    rng = traffic.rng
    fresh = traffic.in_time(orders=18, views=12)
    items: list[Item] = [(e, True) for e in fresh]
    items += [(dict(e), True) for e in rng.sample(recent, min(3, len(recent)))]
    items += [(traffic.malformed(wall_ms()), False) for _ in range(rng.randint(1, 2))]
    rng.shuffle(items)
    # copies of events of this very request, sent after the original
    for event in rng.sample(fresh, 2):
        items.insert(rng.randint(_index(items, event) + 1, len(items)), (dict(event), True))
    original, successor = rng.sample(fresh, 2)
    broken_copy = {**original, "data": {**original["data"], "amount": "n/a", "user": 7}}
    items.insert(_index(items, original) + 1, (broken_copy, False))
    items.insert(_index(items, successor), ({**successor, "time": "soon"}, False))
    return items


def _index(items: list[Item], event: dict[str, Any]) -> int:
    return next(i for i, (e, _) in enumerate(items) if e is event)


# --- reading the server --------------------------------------------------------------------


class Reader:
    """Series and current values of one server at ``url``, bypassing the one-tick read cache;
    ``logs`` gives the server's log for reports."""

    def __init__(self, url: str, from_ms: int, logs: Callable[[], str]) -> None:
        self.url = url
        self.from_ms = from_ms
        self.logs = logs
        self._nonce = itertools.count()

    def series(self, name: str) -> dict[str, Any]:
        params = {"from": self.from_ms, "to": wall_ms() + 60_000, "nocache": next(self._nonce)}
        response = httpx.get(f"{self.url}/v1/metrics/{name}/series", params=params)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def stream_time(self, name: str) -> int:
        response = httpx.get(f"{self.url}/v1/metrics/{name}")
        assert response.status_code == 200, response.text
        return int(response.json()["stream_time"] or 0)

    def counter(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics").text
        for line in text.splitlines():
            if line.startswith(f"{name}_total ") or line.startswith(f"{name} "):
                return float(line.split()[1])
        raise AssertionError(f"{name} is not in /metrics:\n{text}")

    def differences(self, events: Iterable[dict[str, Any]], statuses: Statuses) -> list[str]:
        counted = first_arrivals(events)
        problems: list[str] = []
        for metric in METRICS:
            want = expected_series(metric, counted)
            body = self.series(metric.name)
            problems += compare(metric, want, body, functools.partial(statuses, metric))
        return problems


def late_statuses(late: list[dict[str, Any]], late_ids: set[str]) -> Statuses:
    """Settled statuses once ``late`` events (every copy) were reconciled: ``revised`` where a
    late event with a new id counts for that metric and label set, ``final`` where no late
    event of the metric's type falls at all, either where only late copies of known events,
    or late events of another label set, fall."""

    def allowed(metric: Metric, labels: LabelsKey, t: int) -> frozenset[str]:
        near = [e for e in late if e["type"] == metric.event and metric.point(e) == t]
        if not near:
            return FINAL
        if any(
            e["id"] in late_ids and metric.counts(e) and metric.labels(e) == labels for e in near
        ):
            return REVISED
        return SETTLED

    return allowed


def wait_until_aligned(period_ms: int, low_ms: int, high_ms: int) -> None:
    """Traffic pacing: wait for the wall clock to be in ``[low, high)`` modulo ``period``."""
    while not low_ms <= wall_ms() % period_ms < high_ms:
        time.sleep(0.01)


# --- test 1 --------------------------------------------------------------------------------


def run_in_time_rounds(traffic: Traffic, clients: list[httpx.Client], rounds: int) -> None:
    """``rounds`` rounds 300 ms apart; in each, every producer posts one mixed request."""
    recent: list[dict[str, Any]] = []
    with ThreadPoolExecutor(len(clients)) as pool:
        for _ in range(rounds):
            started = time.monotonic()
            requests = [mixed_request(traffic, recent) for _ in clients]
            list(pool.map(traffic.post, clients, requests))
            recent = [e for items in requests for e, ok in items if ok]
            time.sleep(max(0.0, 0.3 - (time.monotonic() - started)))


def check_open_windows(reader: Reader, traffic: Traffic, client: httpx.Client) -> None:
    """Post a round early in a 4 s window: its points must read as open with the oracle's
    values (every earlier point open or final), before lateness closes them."""
    wait_until_aligned(SLIDING_MS, 100, 500)
    now = wall_ms()
    items: list[Item] = [(traffic.order(now - i, region=r), True) for i, r in enumerate(REGIONS)]
    items += [(traffic.order(now - 5, amount=150.0, region="us"), True)]
    items += [(e, True) for e in traffic.in_time(orders=10, views=10)]
    traffic.post(client, items)

    def statuses(metric: Metric, labels: LabelsKey, t: int) -> frozenset[str]:
        return OPEN if t == now - now % metric.window_ms else frozenset({"open", "final"})

    problems = poll(lambda: reader.differences(traffic.acked, statuses), 2.0, 0.05)
    assert problems == [], "open windows: " + report(problems, reader.logs())


def late_round(
    traffic: Traffic, earliest: int, latest: int, known: list[dict[str, Any]]
) -> tuple[list[Item], list[Item], list[dict[str, Any]]]:
    """Two requests holding late events with times in ``[earliest, latest]`` (and one 4 s
    before, in a window nothing else holds), late copies of known events of that span,
    in-time events and malformed ones; and every late event sent, copies included."""
    rng = traffic.rng

    def at() -> int:
        return rng.randint(earliest, latest)

    late = [
        traffic.order(at(), amount=5000.25, region="eu"),  # a new max, a big order
        traffic.order(at(), amount=0.01, region="apac"),
        traffic.order(at(), amount=120.0),  # no region: not a big order
        traffic.order(at(), amount=333.33, region="us"),
        traffic.order(earliest - 4_000, amount=42.0, region="eu"),
        traffic.view(at(), user="late-user", latency=0.25),  # a new user, a new min
        traffic.view(at(), latency=9999.0),  # a known user, a high latency
        traffic.view(at(), user="late-user-2"),  # no latency
        *(traffic.order(at()) for _ in range(4)),
        *(traffic.view(at()) for _ in range(4)),
    ]
    span = [e for e in known if earliest <= time_ms(e) <= latest]
    copies = [dict(e) for e in rng.sample([e for e in span if e["type"] == "order"], 2)]
    copies += [dict(e) for e in rng.sample([e for e in span if e["type"] == "view"], 2)]
    copies += [dict(late[0]), dict(late[5])]  # copies within the first request
    first = [*late[:10], *copies]
    second = [*late[10:], dict(late[1]), dict(late[6])]  # and across requests
    requests: list[list[Item]] = []
    for events, in_time in ((first, (6, 4)), (second, (4, 4))):
        items: list[Item] = [(e, True) for e in events + traffic.in_time(*in_time)]
        items += [(traffic.malformed(wall_ms()), False) for _ in range(2)]
        rng.shuffle(items)
        requests.append(items)
    return requests[0], requests[1], first + second


def reconcile_cli(server: Server) -> None:
    """Run `pulseboard reconcile --config FILE --data-dir DIR` against a stopped server."""
    args = ["reconcile", "--config", str(server.config_path), "--data-dir", str(server.data_dir)]
    done = subprocess.run(
        [sys.executable, "-m", "pulseboard.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    missing = done.returncode != 0 and (
        "invalid choice" in done.stderr or "No module named 'pulseboard.admin'" in done.stderr
    )
    assert not missing, f"the `pulseboard reconcile` command is missing:\n{done.stderr}"
    assert done.returncode == 0, f"pulseboard reconcile failed:\n{done.stdout}\n{done.stderr}"


def test_series_equal_the_oracle_through_duplicates_late_events_and_restarts(
    serve: Callable[..., Server],
) -> None:
    """Two producers post in-time events with duplicates (same and later requests),
    out-of-order ones and malformed ones; then late events into windows seen final. Every
    series point must equal the oracle: open while open, final after, revised where a late
    event landed; also after a clean restart, and after `pulseboard reconcile` run by hand."""
    rng = random.Random(20261127)
    traffic = Traffic(rng)
    server = serve(config_text("1s"))
    reader = Reader(server.url, wall_ms() - 60_000, server.logs)
    clients = [httpx.Client(base_url=server.url, timeout=10) for _ in range(2)]
    try:
        started = wall_ms()
        # 1. in-time traffic from two producers, with duplicates and malformed events
        run_in_time_rounds(traffic, clients, rounds=14)
        check_open_windows(reader, traffic, clients[0])

        # 2. everything final, nothing revised, values exact
        problems = poll(lambda: reader.differences(traffic.acked, lambda *_: FINAL), 10.0)
        late_seen = reader.counter("pulseboard_late_events")
        seen = f"late events so far: {late_seen}; "
        assert problems == [], seen + report(problems, server.logs())
        assert late_seen == 0, "in-time events were handled as late"

        # 3. late events: their windows (all sliding ones holding them too) are final
        earliest, latest = started - MAX_SKEW_MS, started + 1_500
        needed = latest + 1_000 + SLIDING_MS + LATENESS_MS
        stuck = poll(lambda: [] if reader.stream_time("orders_4s") >= needed else ["wait"], 10.0)
        assert stuck == [], f"stream time did not reach {needed}"
        known = list(traffic.acked)
        first, second, late = late_round(traffic, earliest, latest, known)
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(traffic.post, clients, [first, second]))
        known_ids = {e["id"] for e in known}
        late_ids = {e["id"] for e in late} - known_ids
        assert len(late_ids) == 16 and len(late) == 24
        statuses = late_statuses(late, late_ids)
        problems = poll(lambda: reader.differences(traffic.acked, statuses), 15.0)
        assert problems == [], "after reconciliation: " + report(problems, server.logs())

        # 4. a clean restart replays nothing twice
        server.config_path.write_text(config_text("1h"))  # from now on only the CLI reconciles
        assert server.stop() == 0
        server.start()
        problems = poll(lambda: reader.differences(traffic.acked, statuses), 10.0)
        assert problems == [], "after a restart: " + report(problems, server.logs())

        # 5. late events that only `pulseboard reconcile` applies
        check_reconcile_cli(server, reader, traffic, late, late_ids, (earliest, latest))
    finally:
        for client in clients:
            client.close()


def check_reconcile_cli(
    server: Server,
    reader: Reader,
    traffic: Traffic,
    late: list[dict[str, Any]],
    late_ids: set[str],
    span: tuple[int, int],
) -> None:
    rng = traffic.rng
    more = [traffic.order(rng.randint(*span), amount=777.0, region="us") for _ in range(3)]
    more += [traffic.view(rng.randint(*span), user="cli-user", latency=1.5) for _ in range(2)]
    before = list(traffic.acked)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        traffic.post(client, [(e, True) for e in more])
    emitted = sum(m.counts(e) for m in METRICS for e in more)
    noted = poll(
        lambda: [] if reader.counter("pulseboard_late_events") >= emitted else ["wait"], 10.0
    )
    assert noted == [], f"the processor did not note {emitted} late events"
    assert reader.counter("pulseboard_late_events") == emitted
    # noted, not applied: the series still read as before the new late events
    problems = reader.differences(before, late_statuses(late, late_ids))
    assert problems == [], "before pulseboard reconcile: " + report(problems, server.logs())

    assert server.stop() == 0
    reconcile_cli(server)
    server.start()
    all_late = late + more
    statuses = late_statuses(all_late, late_ids | {e["id"] for e in more})
    problems = poll(lambda: reader.differences(traffic.acked, statuses), 10.0)
    assert problems == [], "after pulseboard reconcile: " + report(problems, server.logs())


# --- test 2 --------------------------------------------------------------------------------

CRASH_WINDOW_MS = 5_000
BATCH = 25
CRASH_METRICS = (
    Metric("orders", "order", "count", CRASH_WINDOW_MS),
    Metric("revenue", "order", "sum", CRASH_WINDOW_MS, field="amount"),
)
CRASH_CONFIG = yaml.safe_dump(
    {
        "pipeline": {"tick": "200ms", "lateness": "3s", "reconcile_every": "1s"},
        "events": {"order": {"fields": {"amount": {"type": "float", "required": True}}}},
        "metrics": [m.config() for m in CRASH_METRICS],
    }
)


class Producer(threading.Thread):
    """Posts batches of new events back to back. A batch that got no 202 is sent again, the
    same bytes (same ids), until one comes: what a real client does across a server crash."""

    def __init__(self, url: str, rng: random.Random) -> None:
        super().__init__(name="crash-producer", daemon=True)
        self.url = url
        self.rng = rng
        self.sent: dict[str, float] = {}
        self.acked: set[str] = set()
        self.posting = False
        self.lost_in_flight = 0
        """Requests sent whose connection broke before an answer came."""
        self.refused = 0
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._ids = itertools.count()

    def run(self) -> None:
        try:
            with httpx.Client(timeout=10) as client:
                self._produce(client)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _batch(self) -> tuple[list[str], bytes]:
        now = wall_ms()
        events: list[dict[str, Any]] = []
        for _ in range(BATCH):
            event_id = f"c-{next(self._ids)}"
            amount = float(self.rng.randint(1, 100))  # integers: every sum is exact
            self.sent[event_id] = amount
            events.append(
                {
                    "id": event_id,
                    "type": "order",
                    "time": now - self.rng.randrange(200),
                    "data": {"amount": amount},
                }
            )
        return [e["id"] for e in events], json.dumps(events).encode()

    def _produce(self, client: httpx.Client) -> None:
        batch: tuple[list[str], bytes] | None = None
        while True:
            if batch is None:
                if self.stopping.is_set():
                    return
                batch = self._batch()
            self.posting = True
            try:
                response = client.post(
                    f"{self.url}/v1/events",
                    content=batch[1],
                    headers={"content-type": "application/json"},
                )
            except httpx.ConnectError:
                self.refused += 1
                time.sleep(0.05)
                continue
            except httpx.TransportError:
                self.lost_in_flight += 1
                time.sleep(0.05)
                continue
            finally:
                self.posting = False
            if response.status_code == 503:
                time.sleep(0.1)
                continue
            assert response.status_code == 202, response.text
            assert response.json()["accepted"] == len(batch[0]), response.text
            self.acked.update(batch[0])
            batch = None


def crash_totals(server: Server, from_ms: int) -> tuple[int, float, list[str]]:
    """The count and the sum over every window, and the points still open."""
    totals: list[float] = []
    still_open: list[str] = []
    for metric in CRASH_METRICS:
        params = {"from": from_ms, "to": wall_ms() + 60_000, "nocache": time.monotonic_ns()}
        response = httpx.get(f"{server.url}/v1/metrics/{metric.name}/series", params=params)
        assert response.status_code == 200, response.text
        points = [p for s in response.json()["series"] for p in s["points"]]
        totals.append(math.fsum(p["value"] for p in points))
        still_open += [f"{metric.name} t={p['t']}" for p in points if p["status"] == "open"]
    return int(totals[0]), totals[1], still_open


def checkpoint_pos(server: Server) -> int:
    """The log position of the processor's last checkpoint (0 when there is none)."""
    path = server.data_dir / CHECKPOINT_FILE
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute("SELECT pos FROM checkpoint").fetchone()
    except sqlite3.OperationalError:  # the processor has not created the table yet
        return 0
    finally:
        conn.close()
    return int(row[0]) if row else 0


def test_sigkill_at_random_moments_loses_and_doubles_nothing(
    serve: Callable[..., Server],
) -> None:
    """SIGKILL to the whole server, 5 times at random moments, while a producer posts; in the
    end the count and the sum over all windows equal those of the distinct events sent (all
    acknowledged by then), whether they arrived in time or late and were reconciled."""
    rng = random.Random(4242)
    server = serve(CRASH_CONFIG)
    from_ms = wall_ms() - 60_000
    producer = Producer(server.url, random.Random(rng.random()))
    producer.start()
    kills_in_flight = 0
    try:
        # the processor checkpoints every 10 s: from the first kill on, restarts restore a
        # checkpoint and replay the log after it
        saved = poll(lambda: [] if checkpoint_pos(server) else ["no checkpoint yet"], 20.0)
        assert saved == [], "the processor wrote no checkpoint"
        for _ in range(5):
            time.sleep(rng.uniform(0.3, 2.0))  # a random moment to crash at
            kills_in_flight += producer.posting
            server.kill()
            server.start()
        # some traffic after the last restart, then the producer finishes its last batch
        target = len(producer.acked) + 20 * BATCH
        waited = poll(lambda: [] if len(producer.acked) >= target else ["wait"], 20.0)
        assert waited == [], "the producer made no progress after the last restart"
    finally:
        producer.stopping.set()
        producer.join(30)
    assert producer.error is None, f"producer failed: {producer.error!r}"
    assert not producer.is_alive()
    assert kills_in_flight >= 1 and producer.lost_in_flight >= 1, (
        f"no kill hit a request in flight ({kills_in_flight} kills while posting, "
        f"{producer.lost_in_flight} requests lost in flight): the test tested nothing"
    )
    assert set(producer.sent) == producer.acked
    want_count = len(producer.sent)
    want_sum = math.fsum(producer.sent.values())

    def wrong() -> list[str]:
        count, total, still_open = crash_totals(server, from_ms)
        problems = still_open[:5]
        if count != want_count:
            problems.append(f"count {count}, expected {want_count}")
        if total != want_sum:
            problems.append(f"sum {total}, expected {want_sum}")
        return problems

    problems = poll(wrong, 40.0, 0.25)
    assert problems == [], report(problems, server.logs())
    # and it stays right for two more reconciliation periods (a late double count would show)
    for _ in range(8):
        time.sleep(0.25)
        assert wrong() == [], report(wrong(), server)
