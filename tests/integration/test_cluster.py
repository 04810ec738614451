"""A cluster on loopback: two API processes and three processors (``pulseboard serve --role``)
on one Redis (``appendonly yes``) and one PostgreSQL, driven as production would be.

Two producers, one per API process, post a known stream: in-time events with duplicates (in a
request and across requests and processes) and malformed events, then late events into windows
already final. Meanwhile one processor is killed with SIGKILL and another started, and Redis is
killed and restarted once (producers send the same bytes again until a 202 comes, as a client
does through an outage). At the end every series point of every metric, read from either API
process, equals the brute-force oracle (``tests/e2e/oracle.py``) of the accepted events: each id
once, late ones included; and a live WebSocket client on each API process saw the final values
of the last window.
"""

from __future__ import annotations

import functools
import json
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from websockets.sync.client import ClientConnection, connect

from tests.e2e.oracle import LabelsKey, Metric, expected_series, first_arrivals, labels_key
from tests.e2e.test_exactly_once import (
    LATENESS_MS,
    MAX_SKEW_MS,
    METRICS,
    REVISED,
    SETTLED,
    SLIDING_MS,
    WINDOW_MS,
    Item,
    Reader,
    Traffic,
    config_text,
    late_round,
    late_statuses,
    mixed_request,
    poll,
    report,
    wait_until_aligned,
    wall_ms,
)

from .conftest import RedisServer
from .test_dist_serve import Proc, wait_for

TAKEOVER_AFTER = "2s"
LIVE_METRICS = ("orders", "revenue")
ROUND_S = 0.3


def cluster_config(tmp_path: Path, redis_url: str, pg_url: str) -> Path:
    """The exactly-once test's pipeline, events and metrics on Redis and PostgreSQL."""
    config = yaml.safe_load(config_text("1s"))
    redis = f"{redis_url}?prefix=cluster-{uuid.uuid4().hex[:8]}:"
    config["storage"] = {"log": redis, "hot": redis, "history": pg_url}
    config["pipeline"]["takeover_after"] = TAKEOVER_AFTER
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Cluster:
    """The processes of the test; ``stop`` ends the living ones with SIGTERM (exit code 0)."""

    def __init__(self, config: Path, log_dir: Path) -> None:
        self.config = config
        self.log_dir = log_dir
        self.apis: list[Proc] = []
        self.processors: list[Proc] = []
        self.killed: list[Proc] = []

    def start(self, role: str) -> Proc:
        proc = Proc(self.config, role, self.log_dir)
        (self.apis if role == "api" else self.processors).append(proc)
        if role == "api":
            proc.wait_http()
        return proc

    def kill_processor(self) -> Proc:
        """SIGKILL the oldest processor, as a crash would."""
        proc = self.processors.pop(0)
        proc.proc.send_signal(signal.SIGKILL)
        proc.proc.wait(30)
        self.killed.append(proc)
        return proc

    def logs(self) -> str:
        procs = self.apis + self.processors + self.killed
        return "\n".join(f"--- {p.role} {p.port} ---\n{p.log()[-6_000:]}" for p in procs)

    def stop(self) -> dict[str, int]:
        return {f"{p.role}-{p.port}": p.stop() for p in self.apis + self.processors}


class LiveClient(threading.Thread):
    """A WebSocket client of one API process, subscribed to ``LIVE_METRICS``, keeping every
    message it receives."""

    def __init__(self, port: int) -> None:
        super().__init__(name=f"live-{port}", daemon=True)
        self.url = f"ws://127.0.0.1:{port}/v1/live"
        self.ws: ClientConnection | None = None
        self.subscribed = threading.Event()
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with connect(self.url, open_timeout=10) as ws:
                self.ws = ws
                ws.send(json.dumps({"subscribe": list(LIVE_METRICS)}))
                self.subscribed.set()
                for raw in ws:
                    with self.lock:
                        self.messages.append(json.loads(raw))
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.subscribed.set()

    def last_values(self, metric: str, window_start: int) -> dict[LabelsKey, Any]:
        """The values of ``metric``'s window at ``window_start`` in the last message that had
        it (empty if none did)."""
        with self.lock:
            messages = [m for m in self.messages if m.get("metric") == metric]
        for message in reversed(messages):
            values = [v for v in message["values"] if v["window_start"] == window_start]
            if values:
                return {labels_key(v["labels"]): v["value"] for v in values}
        return {}

    def repeats(self) -> list[dict[str, Any]]:
        """Messages identical to the previous one of the same metric."""
        last: dict[str, dict[str, Any]] = {}
        out = []
        with self.lock:
            for message in self.messages:
                name = message.get("metric")
                if isinstance(name, str):
                    if last.get(name) == message:
                        out.append(message)
                    last[name] = message
        return out

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
        self.join(10)


class Producers:
    """One producer thread per API process: a mixed request (``mixed_request``: fresh in-time
    events, duplicates, malformed events) every ``ROUND_S``, sent patiently through outages."""

    def __init__(self, traffic: Traffic, urls: list[str]) -> None:
        self.traffic = traffic
        self.clients = [httpx.Client(base_url=u, timeout=10) for u in urls]
        self.stopping = threading.Event()
        self.rounds = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="producers", daemon=True)

    def _run(self) -> None:
        recent: list[dict[str, Any]] = []
        try:
            with ThreadPoolExecutor(len(self.clients)) as pool:
                while not self.stopping.is_set():
                    started = time.monotonic()
                    requests = [mixed_request(self.traffic, recent) for _ in self.clients]
                    post = functools.partial(self.traffic.post, patient=True)
                    list(pool.map(post, self.clients, requests))
                    recent = [e for items in requests for e, ok in items if ok]
                    self.rounds += 1
                    self.stopping.wait(max(0.0, ROUND_S - (time.monotonic() - started)))
        except BaseException as exc:  # reported by the test
            self.error = exc

    def run_for(self, rounds: int) -> None:
        """Wait until ``rounds`` more rounds were posted."""
        target = self.rounds + rounds
        wait_for(f"{rounds} rounds of traffic", lambda: self.rounds >= target or self.error)
        assert self.error is None, self.error

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(90)
        for client in self.clients:
            client.close()
        assert self.error is None, self.error


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[[Path], Cluster]]:
    made: list[Cluster] = []

    def make(config: Path) -> Cluster:
        made.append(Cluster(config, tmp_path))
        return made[-1]

    yield make
    for c in made:
        codes = c.stop()
        assert all(code == 0 for code in codes.values()), f"exit codes {codes}\n{c.logs()}"


def test_a_cluster_through_a_processor_crash_and_a_redis_restart_equals_the_oracle(
    tmp_path: Path,
    redis_factory: Callable[..., RedisServer],
    pg_url: str,
    cluster: Callable[[Path], Cluster],
) -> None:
    server = redis_factory(appendonly=True)  # appendfsync always
    nodes = cluster(cluster_config(tmp_path, server.url, pg_url))
    apis = [nodes.start("api"), nodes.start("api")]
    for _ in range(3):
        nodes.start("processor")
    for api in apis:
        wait_for("readiness", lambda api=api: httpx.get(f"{api.url}/readyz").status_code == 200)
    live = [LiveClient(api.port) for api in apis]
    for client in live:
        client.start()
        client.subscribed.wait(10)
        assert client.error is None, client.error
    rng = random.Random(20261130)
    traffic = Traffic(rng)
    started = wall_ms()
    producers = Producers(traffic, [api.url for api in apis])
    producers.thread.start()
    try:
        # 1. traffic; a processor dies mid-stream (SIGKILL) and another starts
        producers.run_for(8)
        nodes.kill_processor()
        nodes.start("processor")
        producers.run_for(8)

        # 2. Redis dies (kill -9) and comes back on its append-only file; the API processes
        # refuse ingest meanwhile, and the producers send the same requests again
        server.kill()
        for api in apis:
            wait_for("/readyz to see Redis down", lambda api=api: not_ready(api.url))
        server.start()
        producers.run_for(8)
        producers.stop()

        # 3. late events: new ones and late copies, into windows final by now
        earliest, latest = started + 1_000, started + 3_000
        needed = latest + WINDOW_MS + SLIDING_MS + LATENESS_MS + MAX_SKEW_MS
        wait_for("stream time past the late events' windows", lambda: stream_ms(apis) >= needed)
        reader = Reader(apis[0].url, started - 60_000, nodes.logs)
        still_open = poll(lambda: open_points(reader, latest + SLIDING_MS), 30.0, 0.2)
        assert still_open == [], f"windows not final in history: {still_open}"
        known = list(traffic.acked)
        first, second, late = late_round(traffic, earliest, latest, known)
        with httpx.Client(base_url=apis[0].url, timeout=10) as one:
            with httpx.Client(base_url=apis[1].url, timeout=10) as two:
                traffic.post(one, first, patient=True)
                traffic.post(two, second, patient=True)
        late_ids = {e["id"] for e in late} - {e["id"] for e in known}

        # 4. a last round early in a window: its values reach every live client
        final_start = post_final_round(traffic, apis)
        counted = first_arrivals(traffic.acked)
        for client in live:
            check_live(client, counted, final_start, nodes)

        # 5. every point of every metric, from either API process, equals the oracle
        statuses = settled_statuses(late, late_ids)
        for api in apis:
            reader = Reader(api.url, started - 60_000, nodes.logs)
            problems = poll(lambda r=reader: r.differences(traffic.acked, statuses), 60.0, 0.5)
            sent = "\n".join(f"late: {e}" for e in late) + stored(pg_url, problems)
            assert problems == [], f"from {api.url}: {sent}\n" + report(problems, nodes.logs())
        assert all(client.error is None for client in live), [c.error for c in live]
        for client in live:  # three processors tick, but a value is pushed once
            assert client.repeats() == [], f"{client.name} got a value twice in a row"
        assert all(p.alive() for p in nodes.apis + nodes.processors), nodes.logs()
    finally:
        producers.stopping.set()
        for client in live:
            client.close()


def stored(pg_url: str, problems: list[str]) -> str:
    """History's rows at the windows named in ``problems``, for the failure report."""
    starts = sorted({int(p.split(" t=")[1].split(":")[0]) for p in problems if " t=" in p})
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT window_start, metric, labels, window_ms, value_int, value_float, status, "
            "updated_ms FROM history WHERE window_start = ANY(%s) ORDER BY 1, 2, 3",
            (starts[:10],),
        ).fetchall()
    return "".join(f"\nstored: {row}" for row in rows)


def not_ready(url: str) -> bool:
    response = httpx.get(f"{url}/readyz", timeout=15)
    return response.status_code == 503 and "redis" in response.text


def open_points(reader: Reader, through: int) -> list[str]:
    """The points of any metric starting before ``through`` that are still open."""
    return [
        f"{metric.name} t={p['t']}"
        for metric in METRICS
        for s in reader.series(metric.name)["series"]
        for p in s["points"]
        if p["t"] < through and p["status"] == "open"
    ]


def stream_ms(apis: list[Proc]) -> int:
    """Stream time as the first API process reports it (0 before any)."""
    body = httpx.get(f"{apis[0].url}/v1/metrics/orders_4s", timeout=5).json()
    return int(body["stream_time"] or 0)


def post_final_round(traffic: Traffic, apis: list[Proc]) -> int:
    """Post one request of in-time events per API process early in a window; returns the
    window's start."""
    wait_until_aligned(WINDOW_MS, MAX_SKEW_MS + 50, MAX_SKEW_MS + 400)
    now = wall_ms()
    start = now - now % WINDOW_MS
    requests: list[list[Item]] = [
        [(e, True) for e in traffic.in_time(orders=12, views=6)] for _ in apis
    ]
    for api, items in zip(apis, requests, strict=True):
        with httpx.Client(base_url=api.url, timeout=10) as client:
            traffic.post(client, items, patient=True)
    return start


def check_live(
    client: LiveClient, counted: list[dict[str, Any]], window_start: int, nodes: Cluster
) -> None:
    """The live client's last values of the window at ``window_start`` equal the oracle's."""
    by_name = {m.name: m for m in METRICS}
    for name in LIVE_METRICS:
        metric: Metric = by_name[name]
        want = {
            labels: points[window_start]
            for labels, points in expected_series(metric, counted).items()
            if window_start in points
        }
        assert want, f"no {name} event in the last window"

        def seen(metric: Metric = metric, want: dict[LabelsKey, Any] = want) -> bool:
            return client.last_values(metric.name, window_start) == want

        try:
            wait_for(f"live {name} values of the last window on {client.name}", seen)
        except AssertionError:
            got = client.last_values(name, window_start)
            raise AssertionError(f"{client.name} {name}: {got} != {want}\n{nodes.logs()}") from None


def settled_statuses(
    late: list[dict[str, Any]], late_ids: set[str]
) -> Callable[[Metric, LabelsKey, int], frozenset[str]]:
    """Every point settled: ``revised`` where a late event with a new id counts (as in the
    single-server test), else ``final`` or ``revised`` (requests delayed by the outage, or
    left by the killed processor until taken over, may arrive late as well)."""
    exact = late_statuses(late, late_ids)

    def allowed(metric: Metric, labels: LabelsKey, t: int) -> frozenset[str]:
        return REVISED if exact(metric, labels, t) == REVISED else SETTLED

    return allowed
