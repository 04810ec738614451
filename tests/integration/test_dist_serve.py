"""``pulseboard serve --role api|processor|all`` on a real Redis and PostgreSQL: processes
started as an operator would (``python -m pulseboard.cli serve``), driven over HTTP and
WebSocket.

Every wait polls a condition against a deadline (never a bare sleep), and every test stops
the processes it started and checks that they exit cleanly (code 0) on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from websockets.sync.client import connect

from pulseboard.adapters.redis_conn import RedisSettings
from pulseboard.adapters.redis_hot import RedisHotStore
from pulseboard.adapters.redis_reports import RedisProcessorReports
from pulseboard.config import load_config
from tests.unit.test_openapi import component, schema_errors

from .conftest import (
    PostgresCluster,
    RedisServer,
    free_port,
    stop_process,
)

T = TypeVar("T")
WAIT_S = 30.0
SERVE = (sys.executable, "-m", "pulseboard.cli", "serve")
WINDOW_MS = 1_000

CONFIG = """
storage:
  log: {redis}
  hot: {redis}
  history: {pg}
pipeline: {{tick: 200ms, lateness: 200ms, max_future: 5m, reconcile_every: 1h}}
events:
  order:
    fields:
      amount: {{type: float, required: true}}
      region: {{type: string}}
metrics:
  - {{name: orders, event: order, agg: count, window: 1s}}
  - {{name: revenue, event: order, agg: sum, field: amount, window: 1s, group_by: [region]}}
"""


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = WAIT_S) -> T:
    """Poll ``probe`` until it returns something other than None (or a false value)."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            got = probe()
        except (httpx.HTTPError, OSError) as exc:
            last, got = exc, None
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last error: {last})")


class Proc:
    """One ``pulseboard serve`` process (``extra``: more arguments); ``url`` when it serves
    HTTP."""

    def __init__(self, config: Path, role: str, log_dir: Path, extra: Sequence[str] = ()) -> None:
        self.role = role
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{role}-{self.port}.log"
        args = [*SERVE, "--config", str(config)]
        args += ["--role", role, "--port", str(self.port), *extra]
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_http(self) -> None:
        def up() -> bool:
            assert self.alive(), f"{self.role} exited early:\n{self.log()}"
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200

        wait_for(f"{self.role} to serve", up)

    def stop(self) -> int:
        stop_process(self.proc, signal.SIGTERM, 30)
        return int(self.proc.returncode)


Start = Callable[..., Proc]


@contextlib.contextmanager
def serving(log_dir: Path) -> Iterator[Start]:
    """``start(config, role, *extra)``: a serve process (waited for until it serves HTTP,
    unless a processor); every one is stopped at the end and must exit 0 on SIGTERM."""
    procs: list[Proc] = []

    def run(config: Path, role: str, *extra: str) -> Proc:
        proc = Proc(config, role, log_dir, extra)
        procs.append(proc)
        if role != "processor":
            proc.wait_http()
        return proc

    yield run
    codes = {p.role + str(p.port): p.stop() for p in procs}
    for p in procs:
        assert codes[p.role + str(p.port)] == 0, f"{p.role} exit code:\n{p.log()}"


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """``start(config, role, *extra)``: see ``serving``."""
    with serving(tmp_path) as run:
        yield run


def write_config(tmp_path: Path, redis_url: str, pg_url: str, template: str = CONFIG) -> Path:
    """``template`` with the stores filled in; ``{{``/``}}`` in it are literal braces."""
    # a prefix of its own: the session's Redis is shared with other tests
    redis = f"{redis_url}?prefix=t{uuid.uuid4().hex[:8]}:"
    path = tmp_path / "pulseboard.yaml"
    path.write_text(template.format(redis=f"'{redis}'", pg=f"'{pg_url}'"))
    return path


def order(i: int, time_ms: int, amount: float = 1.0, region: str = "eu") -> dict[str, Any]:
    data = {"amount": amount, "region": region}
    return {"id": f"o{i}-{uuid.uuid4().hex[:6]}", "type": "order", "time": time_ms, "data": data}


def post(url: str, events: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(f"{url}/v1/events", json=events, timeout=15)


def now_ms() -> int:
    return int(time.time() * 1000)


def current_count(url: str, *, at_least: int) -> dict[str, Any] | None:
    body: dict[str, Any] = httpx.get(f"{url}/v1/metrics/orders", timeout=5).json()
    total = sum(v["value"] or 0 for v in body["values"])
    return body if total >= at_least and not body["stale"] else None


# --- one API and one processor --------------------------------------------------------------


def test_api_and_processor_serve_current_values_live_and_series(
    tmp_path: Path, redis_url: str, pg_url: str, start: Start
) -> None:
    config = write_config(tmp_path, redis_url, pg_url)
    api = start(config, "api")
    start(config, "processor")
    wait_for("readiness", lambda: httpx.get(f"{api.url}/readyz").status_code == 200)

    # current value over HTTP: events in the current (open) window, far ahead of the clock
    # so that it stays open for the test
    ahead = now_ms() + 20_000
    ahead -= ahead % WINDOW_MS
    past = ahead - 5 * WINDOW_MS  # three windows, posted first: they close when `ahead` comes
    events = [order(100 + i, past + i * WINDOW_MS + 10, amount=i + 0.5) for i in range(3)]
    assert post(api.url, events).status_code == 202
    answer = post(api.url, [order(i, ahead + 100) for i in range(3)])
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == 3
    body = wait_for("the current value", lambda: current_count(api.url, at_least=3))
    assert [v["value"] for v in body["values"]] == [3]

    # over WebSocket: the current value on subscribing, then the change
    with connect(f"ws://127.0.0.1:{api.port}/v1/live", open_timeout=10) as ws:
        ws.send(json.dumps({"subscribe": ["orders"]}))
        first = json.loads(ws.recv(timeout=10))
        assert first["metric"] == "orders" and first["values"][0]["value"] == 3
        assert post(api.url, [order(10 + i, ahead + 200) for i in range(2)]).status_code == 202
        deadline = time.monotonic() + WAIT_S
        value = 3
        while value != 5 and time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=WAIT_S))
            value = message["values"][0]["value"] if message.get("metric") == "orders" else value
        assert value == 5

    # series: the windows before `ahead` are final (stream time passed them), in PostgreSQL;
    # the window at `ahead` is open, in Redis: one answer holds both

    def stitched() -> dict[str, Any] | None:
        params = {"from": str(past), "to": str(ahead + WINDOW_MS)}
        got: dict[str, Any] = httpx.get(
            f"{api.url}/v1/metrics/revenue/series", params=params
        ).json()
        points = [p for s in got["series"] for p in s["points"]]
        finals = [p for p in points if p["status"] == "final"]
        return got if len(finals) == 3 and any(p["status"] == "open" for p in points) else None

    got = wait_for("a series of history and open windows", stitched)
    (series,) = got["series"]
    assert series["labels"] == {"region": "eu"}
    assert [(p["t"], p["value"], p["status"]) for p in series["points"]] == [
        (past, 0.5, "final"),
        (past + WINDOW_MS, 1.5, "final"),
        (past + 2 * WINDOW_MS, 2.5, "final"),
        (ahead, 5.0, "open"),
    ]
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT window_start, value_float FROM history WHERE metric = 'revenue' "
            "ORDER BY window_start"
        ).fetchall()
    assert rows == [(past, 0.5), (past + WINDOW_MS, 1.5), (past + 2 * WINDOW_MS, 2.5)]

    # pipeline samples carry the processors' counters
    def processed() -> bool:
        sample = httpx.get(f"{api.url}/v1/pipeline").json()["current"]
        return sample is not None and sample["processor_up"] and api.alive()

    wait_for("a pipeline sample", processed)


# --- Redis down and back ----------------------------------------------------------------------


def test_redis_outage_marks_reads_stale_refuses_ingest_and_recovers(
    tmp_path: Path,
    redis_factory: Callable[..., RedisServer],
    pg_url: str,
    start: Start,
) -> None:
    server = redis_factory(appendonly=True)
    config = write_config(tmp_path, server.url, pg_url)
    api = start(config, "api")
    processor = start(config, "processor")
    wait_for("readiness", lambda: httpx.get(f"{api.url}/readyz").status_code == 200)
    ahead = now_ms() + 20_000
    assert post(api.url, [order(i, ahead) for i in range(2)]).status_code == 202
    wait_for("the current value", lambda: current_count(api.url, at_least=2))

    server.stop()
    try:

        def down() -> httpx.Response | None:
            ready = httpx.get(f"{api.url}/readyz", timeout=15)
            return ready if ready.status_code == 503 else None

        ready = wait_for("/readyz to say not ready", down)
        assert schema_errors(component("Ready"), ready.json()) == []  # as documented
        checks = ready.json()["checks"]
        assert checks["redis"].startswith("unreachable")
        assert checks["postgresql"] == "ok"
        metric = httpx.get(f"{api.url}/v1/metrics/orders").json()
        assert metric["stale"] is True
        assert [v["value"] for v in metric["values"]] == [2]  # the last value, still served
        refused = post(api.url, [order(9, ahead)])
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) > 0
        assert "redis" in refused.json()["error"].lower()
        assert api.alive() and processor.alive()
    finally:
        server.start()

    # back: ingest, live values and readiness recover by themselves. The new events are
    # further ahead: stream time moved on with the clock from `ahead`, so events at `ahead`
    # would now be late
    later = ahead + 60_000
    later -= later % WINDOW_MS

    def accepted() -> bool:
        return post(api.url, [order(20, later + 10)]).status_code == 202

    wait_for("ingest to accept again", accepted)
    body = wait_for("the new value", lambda: current_count(api.url, at_least=1))
    assert body["values"][0]["window_start"] == later
    wait_for("readiness again", lambda: httpx.get(f"{api.url}/readyz").status_code == 200)
    assert api.alive() and processor.alive()


# --- PostgreSQL down and back -----------------------------------------------------------------


def serve_then_stop_postgres(
    tmp_path: Path, redis_url: str, cluster: PostgresCluster, start: Start
) -> tuple[Path, Proc, Proc, int]:
    """An API and a processor on ``cluster``, one event at the start of a window far ahead of
    the clock (``base``) counted, then PostgreSQL stopped (its data kept). Returns the config,
    the API, the processor and ``base``."""
    config = write_config(tmp_path, redis_url, cluster.url)
    api = start(config, "api")
    processor = start(config, "processor")
    wait_for("readiness", lambda: httpx.get(f"{api.url}/readyz").status_code == 200)
    # far ahead of the clock, so that only later events close these windows
    base = now_ms() + 20_000
    base -= base % WINDOW_MS
    assert post(api.url, [order(1, base + 10, amount=1.5)]).status_code == 202
    wait_for("the current value", lambda: current_count(api.url, at_least=1))
    assert cluster.proc is not None
    stop_process(cluster.proc, signal.SIGINT, 30)
    return config, api, processor, base


def revenue_points(url: str, start_ms: int, end_ms: int) -> list[tuple[int, Any, str]]:
    """(start, value, status) of the revenue series' points; [] while it cannot be read."""
    params = {"from": str(start_ms), "to": str(end_ms)}
    got = httpx.get(f"{url}/v1/metrics/revenue/series", params=params, timeout=15)
    if got.status_code != 200:
        return []
    return [(p["t"], p["value"], p["status"]) for s in got.json()["series"] for p in s["points"]]


def test_postgres_outage_keeps_ingest_and_history_catches_up(
    tmp_path: Path,
    redis_url: str,
    own_postgres: tuple[PostgresCluster, Callable[[], None]],
    start: Start,
) -> None:
    cluster, restart = own_postgres
    path, api, processor, base = serve_then_stop_postgres(tmp_path, redis_url, cluster, start)
    config = load_config(path)
    hot = RedisHotStore(RedisSettings.from_url(config.storage.log), config)
    try:
        # ingest goes on (the log is Redis), and stream time passes three windows: they are
        # final, and wait in Redis for history
        during = [order(2, base + WINDOW_MS + 10, amount=2.5)]
        during += [order(3, base + WINDOW_MS + 20, amount=2.5)]
        during += [order(4, base + 2 * WINDOW_MS + 10, amount=4.0)]
        assert post(api.url, during).status_code == 202
        assert post(api.url, [order(5, base + 5 * WINDOW_MS + 10)]).status_code == 202

        def down() -> httpx.Response | None:
            ready = httpx.get(f"{api.url}/readyz", timeout=20)
            return ready if ready.status_code == 503 else None

        ready = wait_for("/readyz to say PostgreSQL is down", down)
        assert schema_errors(component("Ready"), ready.json()) == []
        checks = ready.json()["checks"]
        assert checks["postgresql"].startswith("unreachable: cannot reach the PostgreSQL store")
        assert checks["redis"] == "ok"
        assert api.log().count("PostgreSQL unreachable") == 1  # logged once an outage
        wait_for("final windows waiting for history", lambda: hot.pending() != [])
        assert post(api.url, [order(6, now_ms() + 20_000)]).status_code == 202
        assert api.alive() and processor.alive()
    finally:
        restart()
        hot.close()

    expected = [(base, 1.5, "final"), (base + WINDOW_MS, 5.0, "final")]
    expected.append((base + 2 * WINDOW_MS, 4.0, "final"))

    def caught_up() -> bool:
        return revenue_points(api.url, base, base + 3 * WINDOW_MS) == expected

    wait_for("the windows finalised meanwhile to reach history", caught_up, 75)
    with psycopg.connect(cluster.url) as conn:
        rows = conn.execute(
            "SELECT window_start, value_float, status FROM history WHERE metric = 'revenue' "
            "AND window_start < %s ORDER BY window_start",
            (base + 3 * WINDOW_MS,),
        ).fetchall()
    assert rows == expected
    wait_for("readiness again", lambda: httpx.get(f"{api.url}/readyz").status_code == 200)
    assert api.alive() and processor.alive()


def test_postgres_outage_keeps_live_values_flowing(
    tmp_path: Path,
    redis_url: str,
    own_postgres: tuple[PostgresCluster, Callable[[], None]],
    start: Start,
) -> None:
    cluster, restart = own_postgres
    _, api, processor, base = serve_then_stop_postgres(tmp_path, redis_url, cluster, start)
    try:
        later = base + 5 * WINDOW_MS  # closes the window at base: its history write fails
        assert post(api.url, [order(i, later + 10) for i in range(2, 5)]).status_code == 202

        def live() -> dict[str, Any] | None:
            body = current_count(api.url, at_least=1)
            return body if body and body["values"][0]["window_start"] == later else None

        body = wait_for("live values of the new window", live, 20)
        assert [v["value"] for v in body["values"]] == [3]
        assert post(api.url, [order(5, later + 20)]).status_code == 202
        wait_for("the next live value", lambda: current_count(api.url, at_least=4), 20)
        assert api.alive() and processor.alive()
    finally:
        restart()


# --- two API processes ------------------------------------------------------------------------


def test_two_api_processes_share_dashboards(
    tmp_path: Path, redis_url: str, pg_url: str, start: Start
) -> None:
    config = write_config(tmp_path, redis_url, pg_url)
    one, two = start(config, "api"), start(config, "api")
    board = {"title": "Orders", "panels": [{"metric": "orders"}]}
    put = httpx.put(f"{one.url}/v1/dashboards/shared", json=board, timeout=10)
    assert put.status_code == 201, put.text
    got = httpx.get(f"{two.url}/v1/dashboards/shared", timeout=10)
    assert got.status_code == 200, got.text
    assert got.json()["title"] == "Orders"
    again = httpx.put(
        f"{two.url}/v1/dashboards/shared", json=board, headers={"If-None-Match": "*"}, timeout=10
    )
    assert again.status_code == 412
    assert httpx.delete(f"{two.url}/v1/dashboards/shared", timeout=10).status_code == 204
    assert httpx.get(f"{one.url}/v1/dashboards/shared", timeout=10).status_code == 404


def processed(url: str) -> int:
    """``pulseboard_events_processed_total`` of an API process's ``/metrics``."""
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith("pulseboard_events_processed_total "):
            return int(float(line.split()[1]))
    raise AssertionError("no pulseboard_events_processed_total in /metrics")


def test_summed_counters_never_go_down_when_a_processor_stops(
    tmp_path: Path, redis_url: str, pg_url: str, start: Start
) -> None:
    config = write_config(tmp_path, redis_url, pg_url)
    api = start(config, "api")
    processors = [start(config, "processor"), start(config, "processor")]
    ahead = now_ms() + 20_000
    for n in range(10):  # ten log entries, shared by the two processors
        assert post(api.url, [order(10 * n + i, ahead) for i in range(4)]).status_code == 202
    wait_for("40 events processed", lambda: processed(api.url) == 40)
    reports = RedisProcessorReports(RedisSettings.from_url(load_config(config).storage.log))
    try:

        def events_of(proc: Proc) -> int:
            _, stats = reports.all().get(f"{socket.gethostname()}:{proc.proc.pid}", (0, {}))
            return int(stats.get("events", 0))

        busy = wait_for("a processor that committed", lambda: max(processors, key=events_of))
        assert events_of(busy) > 0
        assert busy.stop() == 0  # a clean stop removes its report
        assert events_of(busy) == 0
    finally:
        reports.close()
    assert post(api.url, [order(100 + i, ahead) for i in range(10)]).status_code == 202
    wait_for("50 events processed", lambda: processed(api.url) == 50)


def test_role_all_runs_an_api_and_its_processor(
    tmp_path: Path, redis_url: str, pg_url: str, start: Start
) -> None:
    config = write_config(tmp_path, redis_url, pg_url)
    server = start(config, "all")
    wait_for("readiness", lambda: httpx.get(f"{server.url}/readyz").status_code == 200)
    assert post(server.url, [order(1, now_ms() + 20_000)]).status_code == 202
    wait_for("the current value", lambda: current_count(server.url, at_least=1))


def test_api_and_processor_roles_are_refused_in_embedded_mode(tmp_path: Path) -> None:
    config = tmp_path / "embedded.yaml"
    embedded = "pipeline:" + CONFIG.split("pipeline:", 1)[1]
    config.write_text(embedded.replace("{{", "{").replace("}}", "}"))
    for role in ("api", "processor"):
        done = subprocess.run(
            [*SERVE, "--config", str(config), "--role", role, "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 1
        assert f"--role {role} needs the distributed stores" in done.stderr
