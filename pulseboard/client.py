"""The Python client of the ingest API: ``track`` events from any thread, delivered in batches.

``track`` only encodes the event and puts it on an in-memory queue; one background thread takes
batches off the queue and POSTs them to ``/v1/events``. A batch that could not be delivered
(connection error, timeout, 429, 5xx) is sent again with exactly the same bytes, so the same
event ids: the server drops events whose id it has seen, which makes retries safe. Other 4xx
answers are final: the batch's events count as failed.

Every tracked event ends in exactly one of ``accepted``, ``rejected`` (the server found it
invalid) or ``failed`` (never acknowledged); ``stats`` shows the counts.
"""

from __future__ import annotations

import email.utils
import gzip
import logging
import math
import random
import threading
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from time import monotonic
from time import time as wall_clock_s
from types import TracebackType
from typing import Any, Literal

import httpx
import msgspec

from pulseboard.config import mask_url
from pulseboard.errors import PulseboardError
from pulseboard.events import MAX_ID_LENGTH

log = logging.getLogger(__name__)

EVENTS_PATH = "/v1/events"
BACKOFF_START_S = 0.1
BACKOFF_CAP_S = 10.0
KEPT_REJECTIONS = 20
_JOIN_GRACE_S = 0.5  # for the sender to record what it abandoned once close() gave up waiting
_HINTS = {
    401: "; check the api key",
    403: "; check that the api key may write events",
    413: "; lower batch_size",
    415: "; the client sent a content type the server does not accept",
}


class ClientError(PulseboardError):
    """The client cannot take an event: it has been closed."""


@dataclass(frozen=True, slots=True)
class ClientStats:
    """Counts of events since the client was created.

    ``queued`` are tracked but not settled yet (waiting or in flight); ``sent`` were POSTed at
    least once (a retry does not count them again); ``accepted``, ``rejected`` and ``failed``
    are final; ``retries`` counts requests repeated after a retryable failure (not events).
    """

    queued: int
    sent: int
    accepted: int
    rejected: int
    failed: int
    retries: int


@dataclass(frozen=True, slots=True)
class Rejection:
    """An event the server refused, with its reason as the server put it."""

    id: str | None
    error: str


class _Envelope(msgspec.Struct):
    id: str
    type: str
    time: int | str | datetime
    data: dict[str, Any]


class _ErrorItem(msgspec.Struct):
    index: int = -1
    id: str | None = None
    error: str = ""


class _Ack(msgspec.Struct):
    accepted: int
    rejected: int = 0
    errors: list[_ErrorItem] = []


class _ErrorBody(msgspec.Struct):
    error: str


@dataclass(frozen=True, slots=True)
class _Reply:
    """What one POST of a batch came to."""

    outcome: Literal["ack", "retry", "fail"]
    message: str = ""
    retry_after_s: float | None = None
    accepted: int | None = None  # None: the server did not say, so all that it did not reject
    rejected: int = 0
    rejections: tuple[Rejection, ...] = ()


def backoff_s(attempt: int, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0).

    Exponential from ``BACKOFF_START_S``, doubling per attempt up to ``BACKOFF_CAP_S``, with
    jitter: a uniform draw from the upper half, so that clients that failed together spread out.
    """
    base = min(BACKOFF_CAP_S, BACKOFF_START_S * 2.0 ** min(attempt, 64))
    return base * (0.5 + rng.random() / 2)


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """The seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date).

    None when the header is absent or unreadable; never negative.
    """
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - now_s
        except (TypeError, ValueError, IndexError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def events_url(url: str) -> str:
    """The ingest endpoint for ``url``: a server's base URL gets ``/v1/events`` appended."""
    stripped = url.rstrip("/")
    return stripped if stripped.endswith(EVENTS_PATH) else stripped + EVENTS_PATH


class Client:
    """Sends events to a Pulseboard server in the background; thread-safe.

    ``url`` is the server's base URL (or the full ``.../v1/events``); ``api_key`` is sent as
    ``Authorization: Bearer <key>``. A batch holds at most ``batch_size`` events and is sent at
    most ``flush_interval_s`` seconds after its first event was taken up (sooner when full, or
    when ``flush`` or ``close`` is waiting). At most ``max_queue`` events wait to be sent; beyond
    that ``track`` blocks. ``timeout_s`` bounds each HTTP request. A retryable failure is
    retried ``max_retries`` times (None: until ``close``'s timeout), after which the batch's
    events count as failed. ``gzip`` compresses request bodies.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
        max_queue: int = 100_000,
        timeout_s: float = 10.0,
        max_retries: int | None = None,
        gzip: bool = True,
    ) -> None:
        if batch_size < 1 or max_queue < 1:
            raise ValueError(
                f"batch_size and max_queue must be at least 1, got {batch_size}, {max_queue}"
            )
        if flush_interval_s < 0 or timeout_s <= 0 or (max_retries is not None and max_retries < 0):
            raise ValueError(
                "flush_interval_s and max_retries must not be negative, timeout_s must be positive"
            )
        self._url = events_url(url)
        self._shown_url = mask_url(self._url)
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._max_queue = max_queue
        self._max_retries = max_retries
        self._gzip = gzip
        self._encode = msgspec.json.Encoder().encode
        self._decode_ack = msgspec.json.Decoder(_Ack).decode
        self._decode_error = msgspec.json.Decoder(_ErrorBody).decode
        self._rng = random.Random()
        headers = {"Content-Type": "application/json", "User-Agent": "pulseboard-client"}
        if gzip:
            headers["Content-Encoding"] = "gzip"
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(headers=headers, timeout=timeout_s)

        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)  # the sender waits for events
        self._not_full = threading.Condition(self._lock)  # track waits for room
        self._progress = threading.Condition(self._lock)  # flush waits for settled events
        self._abandon = threading.Event()  # close gave up: fail what is left, stop retrying
        self._queue: deque[bytes] = deque()
        self._closed = False
        self._tracked = self._taken = self._settled = self._flush_wanted = 0
        self._sent = self._accepted = self._rejected = self._failed = self._retries = 0
        self._rejections: list[Rejection] = []
        self._last_error: str | None = None
        self._logged_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="pulseboard-client", daemon=True)
        self._thread.start()

    # -- the caller's side ------------------------------------------------------------------

    def track(
        self,
        type: str,
        data: Mapping[str, Any],
        time: datetime | int | str | None = None,
        id: str | None = None,
    ) -> str:
        """Queue one event for sending and return its id; does no I/O.

        ``id`` defaults to a random uuid4 hex; give your own to make re-tracking the same
        event idempotent. ``time`` is an aware datetime, integer epoch milliseconds or an
        RFC 3339 string (sent as given); None means now. Blocks while ``max_queue`` events are
        waiting (never drops). Raises ``ValueError``/``TypeError`` for an event that cannot be
        encoded, ``ClientError`` once the client is closed.
        """
        event_id = uuid.uuid4().hex if id is None else id
        if not isinstance(type, str) or not type:
            raise ValueError(f"event type must be a non-empty string, got {type!r}")
        if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_ID_LENGTH:
            raise ValueError(f"event id must be a string of 1 to {MAX_ID_LENGTH} characters")
        body = data if isinstance(data, dict) else dict(data)
        encoded = self._encode(_Envelope(event_id, type, _event_time(time), body))
        with self._lock:
            while len(self._queue) >= self._max_queue and not self._closed:
                self._not_full.wait()
            if self._closed:
                raise ClientError("the client is closed; create a new one to track more events")
            self._queue.append(encoded)
            self._tracked += 1
            waiting = len(self._queue)
            if waiting == 1 or waiting == self._batch_size:
                self._not_empty.notify()
        return event_id

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event tracked before the call is settled: accepted, rejected or
        failed for good. ``timeout`` in seconds (None: no limit); returns False on timeout."""
        with self._lock:
            target = self._tracked
            if self._settled >= target:
                return True
            self._flush_wanted = max(self._flush_wanted, target)
            self._not_empty.notify()
            return self._progress.wait_for(lambda: self._settled >= target, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush, stop the sender thread and close the connection; idempotent.

        After ``timeout`` seconds (None: no limit) retrying stops and events still waiting
        count as failed; a request in flight at that moment is left to finish on its own.
        Returns True when every event was settled in time. ``track`` raises afterwards.
        """
        deadline = None if timeout is None else monotonic() + timeout
        with self._lock:
            self._closed = True
            self._not_full.notify_all()
            self._not_empty.notify()
        done = self.flush(timeout)
        if not done:
            self._abandon.set()
        with self._lock:
            self._not_empty.notify()
        grace = None if deadline is None else max(0.0, deadline - monotonic()) + _JOIN_GRACE_S
        self._thread.join(grace)
        return done

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def stats(self) -> ClientStats:
        """The event counts at this moment (see ``ClientStats``)."""
        with self._lock:
            return ClientStats(
                queued=self._tracked - self._settled,
                sent=self._sent,
                accepted=self._accepted,
                rejected=self._rejected,
                failed=self._failed,
                retries=self._retries,
            )

    @property
    def last_error(self) -> str | None:
        """Why the last batch that failed for good failed; None while none has."""
        with self._lock:
            return self._last_error

    @property
    def rejections(self) -> list[Rejection]:
        """The first ``KEPT_REJECTIONS`` events the server rejected, with its reasons."""
        with self._lock:
            return list(self._rejections)

    # -- the sender thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while (chunk := self._next_batch()) is not None:
                try:
                    self._deliver(chunk)
                except Exception as exc:  # a bug here must not leave flush() waiting forever
                    log.exception("sending a batch of %d events failed", len(chunk))
                    self._settle(len(chunk), failed_because=f"{type(exc).__name__}: {exc}")
        finally:
            self._http.close()

    def _next_batch(self) -> list[bytes] | None:
        """The next batch to send, after lingering for more events; None when it is time to
        stop (closed and nothing left, or close gave up)."""
        with self._lock:
            while not self._queue and not self._closed:
                self._not_empty.wait()
            deadline = monotonic() + self._flush_interval_s
            while (
                len(self._queue) < self._batch_size
                and not self._closed
                and self._flush_wanted <= self._taken
                and (left := deadline - monotonic()) > 0
            ):
                self._not_empty.wait(left)
            if not self._abandon.is_set():
                count = min(self._batch_size, len(self._queue))
                chunk = [self._queue.popleft() for _ in range(count)]
                self._taken += count
                self._sent += count
                self._not_full.notify_all()
                return chunk or None
            left_over = len(self._queue)
            self._queue.clear()
        if left_over:
            self._settle(left_over, failed_because="the client closed before sending them")
        return None

    def _deliver(self, chunk: list[bytes]) -> None:
        """POST one batch until it is acknowledged or failed for good, and record which."""
        body = b"[" + b",".join(chunk) + b"]"
        if self._gzip:
            body = gzip.compress(body, compresslevel=6, mtime=0)
        attempt = 0
        while True:
            reply = self._post(body)
            if reply.outcome == "ack":
                self._settle(len(chunk), reply=reply)
                return
            if reply.outcome == "fail":
                self._settle(len(chunk), failed_because=reply.message)
                return
            if self._max_retries is not None and attempt >= self._max_retries:
                message = f"{reply.message} (gave up after {attempt} retries)"
                self._settle(len(chunk), failed_because=message)
                return
            delay = max(backoff_s(attempt, self._rng), reply.retry_after_s or 0.0)
            log.debug("%s; retrying in %.2f s", reply.message, delay)
            if self._abandon.wait(delay):
                message = f"the client closed while retrying ({reply.message})"
                self._settle(len(chunk), failed_because=message)
                return
            attempt += 1
            with self._lock:
                self._retries += 1

    def _post(self, body: bytes) -> _Reply:
        try:
            response = self._http.post(self._url, content=body)
        except httpx.TransportError as exc:  # refused, reset, timed out: worth another try
            return _Reply("retry", f"POST {self._shown_url} failed: {type(exc).__name__}: {exc}")
        status = response.status_code
        if 200 <= status < 300:
            return self._read_ack(response)
        message = f"POST {self._shown_url} answered {status}: {self._error_text(response)}"
        if status == 429 or status >= 500:
            wait_s = parse_retry_after(response.headers.get("retry-after"), wall_clock_s())
            return _Reply("retry", message, retry_after_s=wait_s)
        return _Reply("fail", message + _HINTS.get(status, ""))

    def _read_ack(self, response: httpx.Response) -> _Reply:
        try:
            ack = self._decode_ack(response.content)
        except msgspec.DecodeError:
            # the server took the batch but said nothing usable about it: count all accepted
            log.warning("POST %s: unreadable acknowledgement %r", self._shown_url, response.text)
            return _Reply("ack")
        kept = tuple(Rejection(e.id, e.error) for e in ack.errors[:KEPT_REJECTIONS])
        return _Reply("ack", accepted=ack.accepted, rejected=ack.rejected, rejections=kept)

    def _error_text(self, response: httpx.Response) -> str:
        try:
            return self._decode_error(response.content).error
        except msgspec.DecodeError:
            return response.text[:200] or response.reason_phrase

    def _settle(
        self, count: int, *, reply: _Reply | None = None, failed_because: str | None = None
    ) -> None:
        with self._lock:
            to_log = self._settle_locked(count, reply=reply, failed_because=failed_because)
        if to_log is not None:
            log.warning("%d events not delivered: %s", count, to_log)

    def _settle_locked(
        self, count: int, *, reply: _Reply | None = None, failed_because: str | None = None
    ) -> str | None:
        """Count ``count`` events as settled; returns the error to log, if it is a new one."""
        to_log = None
        if reply is not None:
            accepted = count - reply.rejected if reply.accepted is None else reply.accepted
            self._accepted += accepted
            self._rejected += reply.rejected
            room = KEPT_REJECTIONS - len(self._rejections)
            self._rejections.extend(reply.rejections[: max(0, room)])
        if failed_because is not None:
            self._failed += count
            self._last_error = failed_because
            if failed_because != self._logged_error:  # a persistent error is logged once
                self._logged_error = to_log = failed_because
        self._settled += count
        self._progress.notify_all()
        return to_log


def _event_time(value: datetime | int | str | None) -> datetime | int | str:
    if value is None:
        return int(wall_clock_s() * 1000)
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise ValueError(f"event time {value.isoformat()} has no time zone; use an aware one")
        return value
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(
            "event time must be a datetime, epoch milliseconds or an RFC 3339 string, "
            f"got {value!r}"
        )
    return value
