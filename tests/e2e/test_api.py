"""The HTTP API against real ``pulseboard serve`` processes: every error status with its message,
the good paths of ingest, reads, series and live push, and the bodies held against the OpenAPI
document (docs/API.md describes the same behaviour for people).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from pulseboard.adapters.sqlite import META_FILE, SqliteKeys
from pulseboard.auth import create_key
from pulseboard.openapi import OPENAPI
from tests.e2e.conftest import Server
from tests.unit.test_openapi import component, schema_errors

CONFIG = """
pipeline: {tick: 200ms, lateness: 1s, reconcile_every: 1s}
limits: {max_request_bytes: 65536}
events:
  order:
    fields:
      amount: {type: float, required: true}
      region: {type: string, enum: [eu, us, apac]}
metrics:
  - {name: orders, event: order, agg: count, window: 2s, group_by: [region]}
  - {name: revenue, event: order, agg: sum, field: amount, window: 2s}
  - {name: orders_slide, event: order, agg: count, window: 4s, every: 1s}
  - {name: big_orders, event: order, agg: count, window: 2s, where: "amount >= 100"}
  - {name: revenue_1m, event: order, agg: sum, field: amount, window: 1m}
dashboards:
  - id: ops
    title: Operations
    panels:
      - {metric: orders, kind: bars}
      - {metric: revenue_1m, kind: stat}
"""
METRICS = ["orders", "revenue", "orders_slide", "big_orders", "revenue_1m"]
LIMIT = 65536
ACCEPTED = 'pulseboard_events_ingested_total{status="accepted",type="order"}'
REJECTED = 'pulseboard_events_ingested_total{status="rejected",type="order"}'
Serve = Callable[..., Server]
T = TypeVar("T")


# --- helpers ----------------------------------------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_ids = iter(range(10**9))


def order(amount: float, region: str | None = "eu", *, at: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"amount": amount}
    if region is not None:
        data["region"] = region
    return {"id": f"o{next(_ids)}", "type": "order", "time": at or now_ms(), "data": data}


def post(server: Server, body: Any, **kwargs: Any) -> httpx.Response:
    if not isinstance(body, bytes):
        kwargs.setdefault("headers", {}).setdefault("content-type", "application/json")
        body = json.dumps(body).encode()
    return httpx.post(f"{server.url}/v1/events", content=body, timeout=10, **kwargs)


def get(server: Server, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", timeout=10, **kwargs)


def poll(check: Callable[[], T | None], what: str, timeout_s: float = 15.0) -> T:
    """The first non-None result of ``check``, retried until the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result is not None:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_for_window_start(window_ms: int, room_ms: int) -> None:
    """Return at once if at least ``room_ms`` of the current window is left, else when the next
    window starts: the events a test posts then share one window of the wall clock."""
    left = window_ms - now_ms() % window_ms
    if left < room_ms:
        time.sleep(left / 1000 + 0.01)


def conforms(schema_name: str, body: Any) -> None:
    errors = schema_errors(component(schema_name), body)
    assert errors == [], f"{schema_name}: {errors}"


def error_of(response: httpx.Response, status: int) -> str:
    """The message of an error response, checking its status and ``{"error": str}`` shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    conforms("Error", body)
    message: str = body["error"]
    return message


def window_value(server: Server, name: str) -> dict[str, Any]:
    response = get(server, f"/v1/metrics/{name}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def current_of(server: Server, name: str, labels: dict[str, Any] | None = None) -> Any:
    """The current value of ``name`` for ``labels`` (None when it has none)."""
    for value in window_value(server, name)["values"]:
        if value["labels"] == (labels or {}):
            return value["value"]
    return None


def series(server: Server, name: str, **params: Any) -> dict[str, Any]:
    response = get(server, f"/v1/metrics/{name}/series", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    conforms("Series", body)
    return body


def points(body: dict[str, Any], labels: dict[str, Any] | None = None) -> dict[int, Any]:
    """``{t: (value, status)}`` of the series with ``labels``."""
    for s in body["series"]:
        if s["labels"] == (labels or {}):
            return {p["t"]: (p["value"], p["status"]) for p in s["points"]}
    return {}


def total(server: Server, name: str, since_ms: int) -> float:
    """The sum of every point of every series of ``name`` from ``since_ms`` to a minute on."""
    body = series(server, name, **{"from": since_ms - 4000, "to": now_ms() + 60_000})
    return float(sum(p["value"] for s in body["series"] for p in s["points"]))


def prometheus(server: Server) -> dict[str, float]:
    """``{'name{label="v",...}': value}`` with labels sorted by name."""
    response = get(server, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for line in response.text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        assert match, line
        labels = ",".join(sorted(re.findall(r'\w+="[^"]*"', match.group(2) or "")))
        out[match.group(1) + (f"{{{labels}}}" if labels else "")] = float(match.group(3))
    return out


def processor_pid(server: Server) -> int:
    """The processor child of the server process (not multiprocessing's resource tracker)."""
    assert server.proc is not None
    for task in Path(f"/proc/{server.proc.pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                return int(child)
    raise AssertionError("the server has no processor child")


def ws_url(server: Server, query: str = "") -> str:
    return server.url.replace("http://", "ws://") + "/v1/live" + query


def recv_json(ws: ClientConnection, timeout_s: float = 10.0) -> dict[str, Any]:
    message = ws.recv(timeout=timeout_s)
    assert isinstance(message, str)
    body: dict[str, Any] = json.loads(message)
    conforms("LiveMessage", body)
    return body


def recv_until(
    ws: ClientConnection, match: Callable[[dict[str, Any]], bool], timeout_s: float = 10.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "timed out waiting for a live message"
        message = recv_json(ws, left)
        if match(message):
            return message


def value_is(name: str, value: float) -> Callable[[dict[str, Any]], bool]:
    def match(message: dict[str, Any]) -> bool:
        return message.get("metric") == name and [v["value"] for v in message["values"]] == [value]

    return match


def running(root: Path, *extra: str) -> Iterator[Server]:
    config = root / "config.yaml"
    config.write_text(CONFIG)
    server = Server(config, root / "data", *extra)
    try:
        server.start()
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()


@pytest.fixture
def server(serve: Serve) -> Server:
    """A fresh server, for tests that count what they posted."""
    return serve(CONFIG)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the tests that check refusals and shapes, not counts."""
    yield from running(tmp_path_factory.mktemp("shared"))


# --- ingest: 202 ----------------------------------------------------------------------------


def test_a_batch_answers_202_with_each_bad_event_and_its_good_events_count(server: Server) -> None:
    start = now_ms()
    body = [
        order(10.0, "eu"),
        {"id": "no-amount", "type": "order", "time": start, "data": {"region": "eu"}},
        order(2.5, "us"),
        {"id": "refund-1", "type": "refund", "time": start, "data": {}},
        {"id": "mars", "type": "order", "time": start, "data": {"amount": 1, "region": "mars"}},
        {"id": "future", "type": "order", "time": start + 3_600_000, "data": {"amount": 1}},
        {"type": "order", "time": start, "data": {"amount": 1}},
        {"id": "bad-time", "type": "order", "time": "yesterday", "data": {"amount": 1}},
        7,
        order(100.0, "eu"),
    ]
    response = post(server, body)
    assert response.status_code == 202, response.text
    assert response.headers["cache-control"] == "no-store"
    result = response.json()
    conforms("IngestResult", result)
    assert (result["accepted"], result["rejected"]) == (3, 7)
    errors = [(e["index"], e["id"], e["error"]) for e in result["errors"]]
    assert errors[:3] == [
        (1, "no-amount", "events[1].data: object missing required field amount"),
        (3, "refund-1", "events[3].type: unknown event type 'refund' (registered: order)"),
        (
            4,
            "mars",
            "events[4].data.region: invalid enum value 'mars' "
            '(expected one of: "eu", "us", "apac")',
        ),
    ]
    assert errors[3][:2] == (5, "future")
    assert re.fullmatch(
        r"events\[5\]\.time: \w+ ahead of the server clock; at most 5m is accepted "
        r"\(max_future\)",
        errors[3][2],
    ), errors[3][2]
    assert errors[4] == (6, None, "events[6]: object missing required field id")
    assert errors[5][:2] == (7, "bad-time")
    assert errors[5][2].startswith("events[7].time: ")
    assert errors[5][2].endswith("; expected RFC 3339 with an offset or epoch milliseconds")
    assert errors[6:] == [(8, None, "events[8]: expected object, got int")]
    # the good events of the same request count
    poll(lambda: total(server, "revenue", start) == 112.5 or None, "revenue to be 112.5")
    assert total(server, "orders", start) == 3
    assert total(server, "big_orders", start) == 1


def test_ndjson_and_gzip_bodies_are_accepted(server: Server) -> None:
    start = now_ms()
    lines = [json.dumps(order(1.0)), "", json.dumps(order(2.0)), '{"id": "x", oops', ""]
    ndjson = "\n".join(lines).encode()
    response = post(server, ndjson, headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 202, response.text
    # blank lines are skipped: the bad line is the third event
    assert response.json() == {
        "accepted": 2,
        "rejected": 1,
        "errors": [
            {
                "index": 2,
                "id": None,
                "error": "events[2]: not valid JSON "
                "(JSON is malformed: object keys must be strings (byte 12))",
            }
        ],
    }
    gz = gzip.compress(json.dumps([order(4.0), order(8.0)]).encode())
    headers = {"content-type": "application/json; charset=utf-8", "content-encoding": "gzip"}
    response = post(server, gz, headers=headers)
    assert response.json() == {"accepted": 2, "rejected": 0, "errors": []}
    gz_lines = gzip.compress(f"{json.dumps(order(16.0))}\n".encode())
    headers = {"content-type": "application/ndjson", "content-encoding": "gzip"}
    assert post(server, gz_lines, headers=headers).json()["accepted"] == 1
    # no Content-Type at all is read as JSON
    response = httpx.post(f"{server.url}/v1/events", content=json.dumps([order(32.0)]).encode())
    assert response.json()["accepted"] == 1
    poll(lambda: total(server, "revenue", start) == 63.0 or None, "revenue to be 63")


def test_errors_are_listed_up_to_100_while_rejected_counts_all(server: Server) -> None:
    start = now_ms()
    body: list[Any] = []
    for i in range(155):
        if i % 31 == 0:
            body.append(order(1.0))
        else:
            body.append({"id": f"bad{i}", "type": "order", "time": start, "data": {}})
    response = post(server, body)
    assert response.status_code == 202
    result = response.json()
    conforms("IngestResult", result)
    assert (result["accepted"], result["rejected"]) == (5, 150)
    bad = [i for i in range(155) if i % 31]
    assert [e["index"] for e in result["errors"]] == bad[:100]
    assert [e["id"] for e in result["errors"]] == [f"bad{i}" for i in bad[:100]]
    poll(lambda: total(server, "orders", start) == 5 or None, "5 orders")
    metrics = prometheus(server)
    assert metrics[REJECTED] == 150
    assert metrics[ACCEPTED] == 5
    assert metrics["pulseboard_dead_letters_total"] == 150


# --- ingest: errors -------------------------------------------------------------------------


def test_400_when_the_body_is_not_json_names_the_byte(shared: Server) -> None:
    body = b'[{"id": "a"} {"id": "b"}]'
    message = error_of(post(shared, body, headers={"content-type": "application/json"}), 400)
    assert message == (
        "request body is not valid JSON: JSON is malformed: expected ',' or ']' (byte 13)"
    )
    assert body[13:14] == b"{"
    gz = {"content-type": "application/json", "content-encoding": "gzip"}
    message = error_of(post(shared, b"not gzip", headers=gz), 400)
    assert message.startswith("the body is not valid gzip: ")


def test_400_when_the_body_ends_early_names_the_position(shared: Server) -> None:
    body = b'[{"id": "a", "type": "order"'
    message = error_of(post(shared, body, headers={"content-type": "application/json"}), 400)
    assert message.startswith("request body is not valid JSON: ")
    # a truncated body is the commonest parse failure: the message must say where it broke
    assert message.endswith(f"(the body ends at byte {len(body)} before the JSON is complete)")


def test_400_when_the_json_is_not_an_array(shared: Server) -> None:
    message = error_of(post(shared, {"id": "a", "type": "order", "time": 1, "data": {}}), 400)
    assert message == "expected a JSON array of event objects: Expected `array`, got `object`"
    message = error_of(post(shared, "hello"), 400)
    assert message == "expected a JSON array of event objects: Expected `array`, got `str`"


def test_413_over_max_request_bytes_as_sent_streamed_or_inflated(shared: Server) -> None:
    before = prometheus(shared).get(ACCEPTED, 0.0)
    padded = json.dumps([order(1.0)]).encode() + b" " * LIMIT
    message = error_of(post(shared, padded, headers={"content-type": "application/json"}), 413)
    assert message == (
        f"the body is {len(padded)} bytes; at most {LIMIT} are accepted "
        "(limits.max_request_bytes); split it into smaller requests"
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts as it reads
        yield padded[:40_000]
        yield padded[40_000:]

    response = httpx.post(
        f"{shared.url}/v1/events",
        content=chunks(),
        headers={"content-type": "application/json"},
        timeout=10,
    )
    message = error_of(response, 413)
    assert message == (
        f"the body is over {LIMIT} bytes (limits.max_request_bytes); split it into smaller requests"
    )
    bomb = gzip.compress(padded)
    assert len(bomb) < 1000
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    message = error_of(post(shared, bomb, headers=headers), 413)
    assert message == (f"the body inflates to more than {LIMIT} bytes (limits.max_request_bytes)")
    # nothing of a refused body was accepted; a body just under the limit is
    fits = json.dumps([order(2.0)]).encode()
    fits += b" " * (LIMIT - len(fits))
    assert post(shared, fits, headers={"content-type": "application/json"}).status_code == 202
    assert prometheus(shared)[ACCEPTED] == before + 1


def test_415_for_other_content_types_and_encodings(shared: Server) -> None:
    body = json.dumps([order(1.0)]).encode()
    message = error_of(post(shared, body, headers={"content-type": "text/plain"}), 415)
    assert message == (
        "Content-Type 'text/plain' is not accepted; send application/json (an array of "
        "events) or application/x-ndjson (one event per line)"
    )
    headers = {"content-type": "application/json", "content-encoding": "br"}
    message = error_of(post(shared, body, headers=headers), 415)
    assert message == "Content-Encoding 'br' is not accepted; use gzip or none"


def test_503_with_retry_after_while_the_processor_is_behind(serve: Serve) -> None:
    server = serve(CONFIG.replace("max_request_bytes: 65536", "max_backlog_events: 10"))
    start = now_ms()
    assert post(server, [order(1.0)]).status_code == 202
    poll(lambda: total(server, "orders", start) == 1 or None, "the first order")
    pid = processor_pid(server)
    accepted = 1
    os.kill(pid, signal.SIGSTOP)
    try:
        for _ in range(20):
            response = post(server, [order(1.0) for _ in range(4)])
            if response.status_code != 202:
                break
            accepted += response.json()["accepted"]
        message = error_of(response, 503)
        assert response.headers["retry-after"] == "2"
        assert re.fullmatch(
            r"the processor is (\d+) events behind \(limits.max_backlog_events = 10\)", message
        ), message
        assert accepted - 1 > 10  # it refused only once the backlog was over the limit
        # a stopped processor also makes the service unready and its values stale
        ready = poll(
            lambda: ((r := get(server, "/readyz")).status_code == 503 and r.json()) or None,
            "/readyz to answer 503",
        )
        conforms("Ready", ready)
        assert ready == {
            "ready": False,
            "checks": {"log": "ok", "state": "ok", "processor": "not reporting"},
        }
        assert window_value(server, "orders")["stale"] is True
    finally:
        os.kill(pid, signal.SIGCONT)
    response = poll(
        lambda: ((r := post(server, [order(1.0)])).status_code == 202 and r) or None,
        "ingest to recover",
    )
    accepted += 1
    poll(lambda: get(server, "/readyz").status_code == 200 or None, "/readyz to recover")
    # every 202 counts, and nothing of the refused request does
    poll(lambda: total(server, "orders", start) == accepted or None, f"{accepted} orders")


# --- auth -----------------------------------------------------------------------------------


def ws_refusal(url: str) -> int:
    """How a WebSocket without a usable key is refused: the HTTP status of the handshake, or
    the close code when the server accepts and then closes."""
    try:
        with connect(url, open_timeout=10) as ws:
            ws.send(json.dumps({"subscribe": ["orders"]}))
            ws.recv(timeout=10)
    except InvalidStatus as exc:
        return exc.response.status_code
    except ConnectionClosed as exc:
        assert exc.rcvd is not None
        return exc.rcvd.code
    raise AssertionError("the WebSocket was not refused")


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    """A server that requires keys, and a key of each scope (made while it runs)."""
    for server in running(tmp_path_factory.mktemp("keyed"), "--require-keys"):
        store = SqliteKeys(server.data_dir / META_FILE)
        try:
            keys = {scope: create_key(store, [scope]) for scope in ("ingest", "read", "admin")}
        finally:
            store.close()
        yield server, keys


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_401_without_a_valid_key(keyed: tuple[Server, dict[str, str]]) -> None:
    server, keys = keyed
    required = (
        "an API key is required: send 'Authorization: Bearer <key>' "
        "(create one with 'pulseboard keys create --scope ...')"
    )
    assert error_of(get(server, "/v1/metrics"), 401) == required
    assert error_of(post(server, [order(1.0)]), 401) == required
    assert error_of(get(server, "/v1/metrics", headers={"authorization": "Basic x"}), 401) == (
        required
    )
    malformed = "the API key is malformed; expected pb_<id>_<secret>"
    assert error_of(get(server, "/v1/metrics", headers=bearer("secret")), 401) == malformed
    unknown = "the API key is unknown or revoked"
    assert error_of(get(server, "/v1/metrics", headers=bearer("pb_0000_x")), 401) == unknown
    wrong_secret = keys["read"].rsplit("_", 1)[0] + "_not-the-secret"
    assert error_of(get(server, "/v1/metrics", headers=bearer(wrong_secret)), 401) == unknown
    for path in ("/v1/metrics/orders", "/v1/metrics/orders/series", "/metrics"):
        assert error_of(get(server, path), 401) == required
    assert error_of(get(server, "/v1/live/sse", params={"metrics": "orders"}), 401) == required
    # operations and the document stay open
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert get(server, path).status_code == 200
    assert ws_refusal(ws_url(server)) == 401


def test_403_for_a_key_without_the_scope(keyed: tuple[Server, dict[str, str]]) -> None:
    server, keys = keyed
    message = error_of(get(server, "/v1/metrics", headers=bearer(keys["ingest"])), 403)
    assert message == "the API key has scopes ['ingest']; this needs 'read'"
    message = error_of(post(server, [order(1.0)], headers=bearer(keys["read"])), 403)
    assert message == "the API key has scopes ['read']; this needs 'ingest'"
    message = error_of(get(server, "/metrics", params={"key": keys["ingest"]}), 403)
    assert message == "the API key has scopes ['ingest']; this needs 'read'"
    assert ws_refusal(ws_url(server, f"?key={keys['ingest']}")) in (403, 4403)
    # the right scopes pass, as a header or as ?key=; admin passes everywhere
    assert post(server, [order(1.0)], headers=bearer(keys["ingest"])).status_code == 202
    assert post(server, [order(1.0)], headers=bearer(keys["admin"])).status_code == 202
    assert get(server, "/v1/metrics", headers=bearer(keys["read"])).status_code == 200
    assert get(server, "/v1/metrics", params={"key": keys["read"]}).status_code == 200
    assert get(server, "/metrics", headers=bearer(keys["admin"])).status_code == 200
    with connect(ws_url(server, f"?key={keys['read']}"), open_timeout=10) as ws:
        ws.send(json.dumps({"subscribe": ["nope"]}))
        assert recv_json(ws) == {"error": "unknown metrics ['nope']"}


# --- reads ----------------------------------------------------------------------------------


def test_404_for_an_unknown_metric_lists_the_known_ones(shared: Server) -> None:
    known = ", ".join(METRICS)
    message = error_of(get(shared, "/v1/metrics/revnue"), 404)
    assert message == f"no metric named 'revnue'; the config defines: {known}"
    message = error_of(get(shared, "/v1/metrics/revnue/series", params={"from": "-5m"}), 404)
    assert message == f"no metric named 'revnue'; the config defines: {known}"
    message = error_of(get(shared, "/v1/live/sse", params={"metrics": "orders,revnue"}), 400)
    assert message == "metrics='orders,revnue': unknown metrics ['revnue']"
    message = error_of(get(shared, "/v1/live/sse", params={"metrics": ""}), 400)
    assert message == "metrics='': no metrics given; name at least one"
    # names are trimmed
    with httpx.stream("GET", f"{shared.url}/v1/live/sse?metrics=%20orders", timeout=5) as sse:
        assert sse.status_code == 200
    # unknown routes and methods answer in JSON too
    assert error_of(get(shared, "/v1/nothing"), 404) == (
        "no route GET /v1/nothing; see /openapi.json"
    )
    response = httpx.post(f"{shared.url}/v1/metrics", timeout=5)
    assert error_of(response, 405) == "POST is not allowed on /v1/metrics; allowed: GET, HEAD"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"from": "yesterday"},
            "from='yesterday' is not a time; expected epoch milliseconds, RFC 3339 with an "
            "offset (2026-11-27T10:00:00Z), 'now', or a time relative to now such as -1h",
        ),
        (
            {"to": "2026-11-27T10:00:00"},
            "to='2026-11-27T10:00:00' is not a time; expected epoch milliseconds, RFC 3339 "
            "with an offset (2026-11-27T10:00:00Z), 'now', or a time relative to now such as -1h",
        ),
        (
            {"from": "-5x"},
            "from='-5x': '5x' is not a duration; expected a whole number and a unit, "
            "e.g. 500ms, 30s, 1m, 2h, 90d",
        ),
        (
            {"step": "3s"},
            "step='3s' is not a multiple of metric 'revenue''s window (2s); use e.g. step=2s "
            "or step=10s",
        ),
        (
            {"step": "0"},
            "step='0' must be positive, a multiple of the window",
        ),
        (
            {"step": "soon"},
            "step='soon': 'soon' is not a duration; expected a whole number and "
            "a unit, e.g. 500ms, 30s, 1m, 2h, 90d",
        ),
        (
            {"from": "1795773600000", "to": "1795773600000"},
            "from (1795773600000) must be before to (1795773600000), both epoch ms",
        ),
        (
            {"from": "1795773600000", "to": "1795773660000", "step": "2s"},
            None,  # 30 points: fine
        ),
        (
            {"from": "1795773600000", "to": "1795813602000"},
            "the range holds 20001 points of 2s; at most 20000 are served, so widen step or "
            "narrow the range",
        ),
    ],
)
def test_400_for_series_parameters(
    shared: Server, params: dict[str, str], message: str | None
) -> None:
    response = get(shared, "/v1/metrics/revenue/series", params=params)
    if message is None:
        assert response.status_code == 200
    else:
        assert error_of(response, 400) == message


def test_metrics_lists_every_metric_with_its_definition(server: Server) -> None:
    response = get(server, "/v1/metrics")
    assert response.headers["cache-control"] == "no-store"  # the tick is 200 ms
    body = response.json()
    conforms("MetricList", body)
    definitions = {
        m["name"]: {k: v for k, v in m.items() if k != "current"} for m in body["metrics"]
    }
    assert list(definitions) == METRICS
    common: dict[str, Any] = {
        "event": "order",
        "field": None,
        "every_ms": None,
        "group_by": [],
        "where": None,
    }
    assert definitions == {
        "orders": {**common, "name": "orders", "agg": "count", "window_ms": 2000,
                   "group_by": ["region"]},
        "revenue": {**common, "name": "revenue", "agg": "sum", "field": "amount",
                    "window_ms": 2000},
        "orders_slide": {**common, "name": "orders_slide", "agg": "count", "window_ms": 4000,
                         "every_ms": 1000},
        "big_orders": {**common, "name": "big_orders", "agg": "count", "window_ms": 2000,
                       "where": "amount >= 100"},
        "revenue_1m": {**common, "name": "revenue_1m", "agg": "sum", "field": "amount",
                       "window_ms": 60000},
    }  # fmt: skip
    wait_for_window_start(60_000, 5_000)
    post(server, [order(3.0), order(4.5)])

    def current() -> dict[str, Any] | None:
        metrics = get(server, "/v1/metrics").json()["metrics"]
        found = next(m["current"] for m in metrics if m["name"] == "revenue_1m")
        return found if found is not None and found["values"] else None

    value = poll(current, "revenue_1m's current value in the list")
    conforms("MetricValue", value)
    assert value["metric"] == "revenue_1m"
    assert [v["value"] for v in value["values"]] == [7.5]


def test_a_metric_reads_as_its_current_window(server: Server) -> None:
    wait_for_window_start(4000, 3000)
    posted = now_ms()
    post(server, [order(1.0, "eu"), order(2.0, "eu"), order(4.0, "us"), order(8.0, None)])
    poll(lambda: current_of(server, "orders", {"region": "eu"}) == 2 or None, "eu orders")
    response = get(server, "/v1/metrics/orders")
    assert response.headers["cache-control"] == "no-store"  # the tick is 200 ms
    body = response.json()
    conforms("MetricValue", body)
    start = posted - posted % 2000
    assert {k: body[k] for k in ("metric", "agg", "window_ms", "every_ms", "stale")} == {
        "metric": "orders",
        "agg": "count",
        "window_ms": 2000,
        "every_ms": None,
        "stale": False,
    }
    assert body["as_of"] >= posted and body["stream_time"] >= posted
    by_region = {v["labels"]["region"]: v["value"] for v in body["values"]}
    assert by_region == {"eu": 2, "us": 1, None: 1}  # None: the field was absent
    for value in body["values"]:
        assert list(value["labels"]) == ["region"]
        assert (value["window_start"], value["window_end"]) == (start, start + 2000)
        assert value["status"] == "open"
    # a sliding metric: the last 4 s, ending with the 1 s step that holds stream time
    slide = poll(
        lambda: ((b := window_value(server, "orders_slide"))["values"] and b) or None, "a slide"
    )
    assert slide["every_ms"] == 1000
    (value,) = slide["values"]
    assert value["window_end"] - value["window_start"] == 4000
    assert value["window_end"] % 1000 == 0 and value["window_start"] <= posted
    assert value["value"] == 4


def test_series_are_open_then_final_then_revised_and_stitched(server: Server) -> None:
    wait_for_window_start(2000, 1500)
    first = now_ms() - now_ms() % 2000
    post(server, [order(10.0, "eu"), order(20.0, "eu"), order(5.0, "us")])
    query = {"from": str(first - 4000), "to": str(first + 60_000)}

    def revenue_at(t: int, status: str) -> float | None:
        found = points(series(server, "revenue", **query)).get(t)
        return found[0] if found is not None and found[1] == status else None

    seen = poll(lambda: points(series(server, "revenue", **query)).get(first), "the first window")
    assert seen == (35.0, "open")
    assert poll(lambda: revenue_at(first, "final"), "the first window to be final") == 35.0
    body = series(server, "orders", **query)
    assert body["step_ms"] == 2000 and body["from"] == first - 4000
    assert [s["labels"] for s in body["series"]] == [{"region": "eu"}, {"region": "us"}]
    assert points(body, {"region": "eu"}) == {first: (2, "final")}
    assert points(body, {"region": "us"}) == {first: (1, "final")}

    # history and open windows read as one series
    posted = now_ms()
    assert post(server, [order(4.0, at=posted)]).status_code == 202
    second = posted - posted % 2000
    assert second > first
    assert poll(lambda: revenue_at(second, "open"), "the second window, open") == 4.0
    assert points(series(server, "revenue", **query))[first] == (35.0, "final")

    # a late event is accepted, counted as late, and reconciled into history
    response = post(server, [order(1.5, at=first + 500)])
    assert response.json() == {"accepted": 1, "rejected": 0, "errors": []}
    assert poll(lambda: revenue_at(first, "revised"), "the first window revised") == 36.5
    assert prometheus(server)["pulseboard_late_events_total"] >= 1

    # a step of several windows merges them, aligned to multiples of the step
    poll(lambda: revenue_at(second, "final"), "the second window to be final")
    by_window = points(series(server, "revenue", **query))
    expected: dict[int, float] = {}
    for t, (value, _) in by_window.items():
        expected[t - t % 8000] = expected.get(t - t % 8000, 0.0) + value
    for step in ("8s", "8000"):
        merged = series(server, "revenue", **query, step=step)
        assert merged["step_ms"] == 8000 and merged["from"] % 8000 == 0
        assert {t: v for t, (v, _) in points(merged).items()} == expected


def test_series_accept_every_time_form(server: Server) -> None:
    start = now_ms()
    post(server, [order(2.0, at=start)])
    poll(lambda: total(server, "revenue", start) == 2.0 or None, "revenue")
    window = start - start % 2000
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(window / 1000 - 10))
    for since in (str(window - 10_000), f"{iso}Z", f"{iso}+00:00", "-1m", "now-1m"):
        body = series(server, "revenue", **{"from": since, "to": "now"})
        assert points(body)[window][0] == 2.0, since
    # a range that ends before the window leaves it out
    assert points(series(server, "revenue", **{"from": "-1h", "to": str(window)})) == {}
    response = get(server, "/v1/metrics/revenue/series")
    assert response.headers["cache-control"] == "no-store"  # the tick is 200 ms
    assert window in points(response.json())  # defaults: the last hour, one window per point


# --- operations -----------------------------------------------------------------------------


def test_health_readiness_and_the_openapi_document(shared: Server) -> None:
    response = get(shared, "/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert response.headers["cache-control"] == "no-store"
    response = get(shared, "/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "ready": True,
        "checks": {"log": "ok", "state": "ok", "processor": "ok"},
    }
    assert get(shared, "/openapi.json").json() == OPENAPI


def test_prometheus_metrics_name_what_happened(server: Server) -> None:
    before = prometheus(server)
    for name in (
        "pulseboard_log_backlog_events",
        "pulseboard_processing_lag_seconds",
        "pulseboard_late_events_total",
        "pulseboard_dead_letters_total",
        "pulseboard_live_clients",
        "pulseboard_ingest_request_seconds_count",
    ):
        assert name in before, name
    assert before["pulseboard_live_clients"] == 0
    start = now_ms()
    post(server, [order(1.0), order(2.0), {"id": "x", "type": "refund", "time": 1, "data": {}}])
    post(server, [order(1.0), {"id": "y", "type": "order", "time": start, "data": {}}])
    poll(lambda: total(server, "orders", start) == 3 or None, "3 orders")
    with connect(ws_url(server), open_timeout=10) as ws:
        ws.send(json.dumps({"subscribe": ["orders"]}))
        recv_json(ws)
        after = poll(
            lambda: ((m := prometheus(server))["pulseboard_live_clients"] == 1 and m) or None,
            "a live client",
        )
    assert after[ACCEPTED] == 3
    assert after[REJECTED] == 1
    assert after['pulseboard_events_ingested_total{status="rejected",type="(unknown)"}'] == 1
    assert after["pulseboard_dead_letters_total"] == 2
    assert after["pulseboard_ingest_request_seconds_count"] == 2
    assert after['pulseboard_ingest_request_seconds_bucket{le="+Inf"}'] == 2
    assert after["pulseboard_log_backlog_events"] == 0
    assert after["pulseboard_processing_lag_seconds"] == 0
    assert after["pulseboard_events_processed_total"] == 3


# --- live -----------------------------------------------------------------------------------


def test_websocket_subscribe_gets_the_current_value_then_updates(server: Server) -> None:
    wait_for_window_start(60_000, 5_000)
    post(server, [order(10.0)])
    poll(lambda: current_of(server, "revenue_1m") == 10.0 or None, "revenue_1m = 10")
    with connect(ws_url(server), open_timeout=10) as ws:
        ws.send(json.dumps({"subscribe": ["revenue_1m"]}))
        now = recv_json(ws)  # nothing changes meanwhile: this is the answer to the subscribe
        conforms("MetricValue", now)
        assert now["metric"] == "revenue_1m" and now["values"][0]["value"] == 10.0
        # mistakes get an error message and the socket stays open
        ws.send(json.dumps({"subscribe": ["revenue_1m", "nope"]}))
        assert recv_json(ws) == {"error": "unknown metrics ['nope']"}
        ws.send("subscribe me")
        assert recv_json(ws)["error"].startswith("JSON is malformed")
        ws.send(json.dumps({"metrics": ["revenue_1m"]}))
        assert recv_json(ws) == {
            "error": 'expected {"subscribe": ["metric", ...]} or {"dashboard": "id"}'
        }
        ws.send(json.dumps({"dashboard": "sales"}))
        assert recv_json(ws) == {"error": "no dashboard 'sales'; known: ops"}
        post(server, [order(5.0), order(2.5)])
        update = recv_until(ws, value_is("revenue_1m", 17.5))
        assert update["as_of"] > now["as_of"] and update["stale"] is False


def test_websocket_dashboard_subscribes_to_its_panels(server: Server) -> None:
    wait_for_window_start(60_000, 5_000)
    post(server, [order(6.0, "us")])
    poll(lambda: current_of(server, "revenue_1m") == 6.0 or None, "revenue_1m = 6")
    poll(lambda: window_value(server, "orders")["as_of"], "orders to have a value")
    with connect(ws_url(server), open_timeout=10) as ws:
        ws.send(json.dumps({"dashboard": "ops"}))
        first = [recv_json(ws), recv_json(ws)]
        assert sorted(m["metric"] for m in first) == ["orders", "revenue_1m"]
        post(server, [order(1.0, "us")])
        recv_until(ws, value_is("revenue_1m", 7.0))
        assert recv_until(ws, lambda m: m.get("metric") in ("revenue", "orders"))["metric"] == (
            "orders"
        )  # orders is on the dashboard; revenue is not


def test_sse_streams_the_same_messages(server: Server) -> None:
    wait_for_window_start(60_000, 5_000)
    post(server, [order(3.0)])
    poll(lambda: current_of(server, "revenue_1m") == 3.0 or None, "revenue_1m = 3")
    url = f"{server.url}/v1/live/sse"
    timeout = httpx.Timeout(10.0)
    with httpx.stream("GET", url, params={"metrics": "revenue_1m"}, timeout=timeout) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        lines = response.iter_lines()
        assert next(lines) == "retry: 2000"
        assert next(lines) == ""
        data = next(lines)
        assert data.startswith("data: ")
        message = json.loads(data.removeprefix("data: "))
        conforms("MetricValue", message)
        assert message["metric"] == "revenue_1m" and message["values"][0]["value"] == 3.0
        post(server, [order(4.0)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = next(lines)
            if line.startswith("data: "):
                message = json.loads(line.removeprefix("data: "))
                if value_is("revenue_1m", 7.0)(message):
                    break
        else:
            raise AssertionError("no SSE update with the new value")
