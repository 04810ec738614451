"""The client against a small real HTTP peer on a loopback port, scripted per request."""

from __future__ import annotations

import gzip
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pulseboard.client import (
    BACKOFF_CAP_S,
    Client,
    ClientError,
    ClientStats,
    Rejection,
    backoff_s,
    events_url,
    parse_retry_after,
)


@dataclass
class Received:
    """One request as the peer saw it; ``at`` is ``time.monotonic()`` on arrival."""

    path: str
    headers: dict[str, str]
    raw: bytes
    events: list[dict[str, Any]]
    at: float


@dataclass
class Reply:
    """A scripted answer: a status and JSON body, or ``drop`` (close without answering).
    ``gate``, when given, is waited for before answering."""

    status: int = 202
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    gate: threading.Event | None = None


def accept_all(request: Received) -> Reply:
    return Reply(202, {"accepted": len(request.events), "rejected": 0, "errors": []})


class Peer:
    """An HTTP/1.1 server on a free loopback port that records every request.

    Answers with the scripted replies in order, then with ``default(request)``.
    """

    def __init__(self, default: Callable[[Received], Reply] = accept_all) -> None:
        self.requests: list[Received] = []
        self.script: deque[Reply] = deque()
        self.default = default
        self._lock = threading.Lock()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                body = gzip.decompress(raw) if self.headers["Content-Encoding"] == "gzip" else raw
                request = Received(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    raw,
                    json.loads(body),
                    time.monotonic(),
                )
                reply = peer._answer(request)
                if reply.gate is not None:
                    reply.gate.wait(30)
                if reply.drop:
                    self.close_connection = True
                    return
                payload = json.dumps(reply.body or {}).encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _answer(self, request: Received) -> Reply:
        with self._lock:
            self.requests.append(request)
            return self.script.popleft() if self.script else self.default(request)

    def events(self) -> list[dict[str, Any]]:
        """Every event received, in order, retries included."""
        return [e for r in self.requests for e in r.events]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def peer() -> Iterator[Peer]:
    server = Peer()
    yield server
    server.stop()


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def track_many(client: Client, count: int, prefix: str = "e") -> list[str]:
    return [
        client.track("order", {"amount": i}, time=1_000 + i, id=f"{prefix}{i}")
        for i in range(count)
    ]


def test_events_are_batched_and_flush_sends_the_rest(peer: Peer) -> None:
    with Client(peer.url, batch_size=20, flush_interval_s=5.0) as client:
        ids = track_many(client, 50)
        assert client.flush(timeout=30)
        stats = client.stats
    assert [len(r.events) for r in peer.requests] == [20, 20, 10]
    assert [e["id"] for e in peer.events()] == ids
    assert peer.requests[0].path == "/v1/events"
    assert peer.events()[3] == {"id": "e3", "type": "order", "time": 1_003, "data": {"amount": 3}}
    assert stats == ClientStats(queued=0, sent=50, accepted=50, rejected=0, failed=0, retries=0)


def test_a_partial_batch_goes_out_after_the_flush_interval(peer: Peer) -> None:
    with Client(peer.url, batch_size=100, flush_interval_s=0.05) as client:
        track_many(client, 3)
        wait_until(lambda: len(peer.requests) == 1)
        assert len(peer.requests[0].events) == 3
        wait_until(lambda: client.stats.accepted == 3)


def test_retries_resend_the_same_events_with_the_same_ids(peer: Peer) -> None:
    peer.script.extend(
        [Reply(503, {"error": "log full"}, {"Retry-After": "0"}), Reply(drop=True), Reply(429)]
    )
    with Client(peer.url, batch_size=10) as client:
        ids = track_many(client, 5)
        assert client.flush(timeout=30)
        stats = client.stats
    assert len(peer.requests) == 4
    assert all(r.events == peer.requests[0].events for r in peer.requests)
    assert [e["id"] for e in peer.requests[-1].events] == ids
    assert stats.retries == 3
    assert (stats.sent, stats.accepted, stats.failed) == (5, 5, 0)


def test_retry_after_is_honoured(peer: Peer) -> None:
    peer.script.append(Reply(503, {"error": "log full"}, {"Retry-After": "1"}))
    with Client(peer.url) as client:
        track_many(client, 2)
        assert client.flush(timeout=30)
    first, retry = peer.requests
    assert retry.at - first.at >= 1.0
    assert retry.events == first.events


def test_client_errors_are_not_retried_and_count_as_failed(
    peer: Peer, caplog: pytest.LogCaptureFixture
) -> None:
    bad = Reply(400, {"error": "request body is not valid JSON"})
    peer.script.extend([bad, bad])
    with Client(peer.url, batch_size=3, flush_interval_s=5.0) as client:
        track_many(client, 6)
        assert client.flush(timeout=30)
        stats = client.stats
        last_error = client.last_error
    assert len(peer.requests) == 2  # one per batch, none repeated
    assert (stats.failed, stats.accepted, stats.retries, stats.queued) == (6, 0, 0, 0)
    assert last_error is not None
    assert "400" in last_error and "request body is not valid JSON" in last_error
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the same error again is not logged again


def test_an_auth_failure_tells_what_to_check(peer: Peer) -> None:
    peer.script.append(Reply(401, {"error": "missing api key"}))
    with Client(peer.url) as client:
        track_many(client, 1)
        assert client.flush(timeout=30)
        assert client.last_error is not None
        assert client.last_error.endswith("missing api key; check the api key")


def test_rejections_in_an_acknowledgement_are_counted_and_kept(peer: Peer) -> None:
    errors = [{"index": 1, "id": "e1", "error": "events[1].data.amount: expected float"}]
    peer.script.append(Reply(202, {"accepted": 2, "rejected": 1, "errors": errors}))
    with Client(peer.url) as client:
        track_many(client, 3)
        assert client.flush(timeout=30)
        assert (client.stats.accepted, client.stats.rejected, client.stats.failed) == (2, 1, 0)
        assert client.rejections == [Rejection("e1", "events[1].data.amount: expected float")]


def test_flush_returns_only_after_the_acknowledgement(peer: Peer) -> None:
    gate = threading.Event()
    peer.script.append(Reply(202, {"accepted": 4, "rejected": 0, "errors": []}, gate=gate))
    with Client(peer.url) as client:
        track_many(client, 4)
        assert not client.flush(timeout=0.3)
        assert len(peer.requests) == 1  # sent, but not acknowledged yet
        assert client.stats.accepted == 0
        gate.set()
        assert client.flush(timeout=30)
        assert client.stats.accepted == 4


def test_track_blocks_while_the_queue_is_full(peer: Peer) -> None:
    gate = threading.Event()
    peer.script.append(Reply(202, {"accepted": 1}, gate=gate))
    with Client(peer.url, batch_size=1, max_queue=1, flush_interval_s=0) as client:
        client.track("order", {}, id="a")
        wait_until(lambda: len(peer.requests) == 1)  # "a" is in flight
        client.track("order", {}, id="b")  # fills the queue
        third = threading.Thread(target=client.track, args=("order", {}), kwargs={"id": "c"})
        third.start()
        third.join(0.3)
        assert third.is_alive()
        gate.set()
        third.join(30)
        assert client.flush(timeout=30)
    assert [e["id"] for e in peer.events()] == ["a", "b", "c"]


def test_close_is_idempotent_and_stops_tracking(peer: Peer) -> None:
    client = Client(peer.url)
    client.track("order", {}, id="x")
    assert client.close(timeout=30)
    assert client.close(timeout=30)
    with pytest.raises(ClientError, match="closed"):
        client.track("order", {})
    assert [e["id"] for e in peer.events()] == ["x"]
    with Client(peer.url) as other:
        other.track("order", {}, id="y")
    assert [e["id"] for e in peer.events()] == ["x", "y"]  # leaving the block flushed


def test_bodies_are_gzipped_and_carry_the_bearer_key(peer: Peer) -> None:
    with Client(peer.url, api_key="s3cret") as client:
        client.track("signup", {"user": "ann"}, id="g")
    request = peer.requests[0]
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["authorization"] == "Bearer s3cret"
    assert json.loads(gzip.decompress(request.raw))[0]["data"] == {"user": "ann"}


def test_plain_bodies_without_a_key(peer: Peer) -> None:
    with Client(peer.url, gzip=False) as client:
        client.track("signup", {"user": "ann"}, id="p")
    request = peer.requests[0]
    assert "content-encoding" not in request.headers
    assert "authorization" not in request.headers
    assert json.loads(request.raw)[0]["id"] == "p"


def test_retries_are_bounded_by_max_retries(peer: Peer) -> None:
    peer.default = lambda request: Reply(503, {"error": "busy"}, {"Retry-After": "0"})
    with Client(peer.url, max_retries=2) as client:
        track_many(client, 3)
        assert client.flush(timeout=30)
        stats = client.stats
        assert client.last_error is not None and "gave up after 2 retries" in client.last_error
    assert len(peer.requests) == 3
    assert (stats.failed, stats.retries, stats.accepted) == (3, 2, 0)


def test_close_gives_up_after_its_timeout_when_retrying_forever(peer: Peer) -> None:
    peer.default = lambda request: Reply(503, {"error": "busy"}, {"Retry-After": "0"})
    client = Client(peer.url, batch_size=2)
    track_many(client, 5)
    wait_until(lambda: len(peer.requests) >= 2)
    assert not client.close(timeout=0.3)
    stats = client.stats
    assert (stats.failed, stats.queued, stats.accepted) == (5, 0, 0)
    assert stats.retries >= 1
    assert client.last_error is not None and "closed" in client.last_error


def test_an_unreachable_server_counts_the_batch_failed() -> None:
    peer = Peer()
    url = peer.url
    peer.stop()  # nothing listens on the port any more
    with Client(url, max_retries=1) as client:
        track_many(client, 2)
        assert client.flush(timeout=30)
        assert client.stats.failed == 2
        assert client.last_error is not None and "ConnectError" in client.last_error


def test_times_and_ids(peer: Peer) -> None:
    aware = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=timezone(timedelta(hours=2)))
    with Client(peer.url) as client:
        before = int(time.time() * 1000)
        generated = client.track("order", {})
        after = int(time.time() * 1000)
        client.track("order", {}, time=aware, id="aware")
        client.track("order", {}, time="2026-01-02T01:04:05Z", id="text")
        with pytest.raises(ValueError, match="no time zone"):
            client.track("order", {}, time=datetime(2026, 1, 2))
        with pytest.raises(TypeError, match="epoch milliseconds"):
            client.track("order", {}, time=True)
        with pytest.raises(ValueError, match="id"):
            client.track("order", {}, id="")
    now_event, aware_event, text_event = peer.events()
    assert len(generated) == 32 and now_event["id"] == generated
    assert before <= now_event["time"] <= after
    assert aware_event["time"] == "2026-01-02T03:04:05.678000+02:00"
    assert datetime.fromisoformat(aware_event["time"]) == aware.astimezone(UTC)
    assert text_event["time"] == "2026-01-02T01:04:05Z"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("3", 3.0),
        ("0.5", 0.5),
        ("-4", 0.0),
        ("soon", None),
        ("inf", None),
        ("Thu, 01 Jan 2026 00:00:10 GMT", 10.0),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    now_s = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert parse_retry_after(value, now_s) == seconds


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(1)
    for attempt, base in [(0, 0.1), (1, 0.2), (3, 0.8), (20, BACKOFF_CAP_S)]:
        delays = [backoff_s(attempt, rng) for _ in range(200)]
        assert base / 2 <= min(delays) and max(delays) <= base
        assert max(delays) - min(delays) > base / 4  # jittered, not constant


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("http://h:8000", "http://h:8000/v1/events"),
        ("http://h:8000/", "http://h:8000/v1/events"),
        ("https://h/v1/events", "https://h/v1/events"),
    ],
)
def test_events_url(url: str, endpoint: str) -> None:
    assert events_url(url) == endpoint
