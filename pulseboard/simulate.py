"""``pulseboard simulate``: realistic shop traffic for the demo config, sent to a running server.

The building blocks are reusable on their own:

- ``Traffic`` makes the events: visitors in sessions browse pages, some add to cart, some of
  those check out and order, new visitors sometimes sign up, and a small share of requests
  fail. On top, requested shares of the events are *late* (stamped 1 to 10 minutes ago),
  *duplicates* (an event sent again a few seconds later, same id and content) or *malformed*
  (invalid for the demo config, one problem each, still a JSON object).
- ``Schedule`` says how many events per second to send at a moment: a daily curve by the local
  wall-clock hour (quiet at night, peaks at midday and in the evening) with short bursts of 2-3x,
  normalised so that the long-run mean is the requested rate.
- ``TokenBucket`` turns that rate into whole events due, over real time.

``run_simulate`` paces ``Traffic`` with them, sends through ``pulseboard.client.Client`` and
prints a report.
"""

from __future__ import annotations

import heapq
import math
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, Literal, TextIO

from pulseboard.client import Client

Kind = Literal["normal", "late", "duplicate", "malformed"]
KINDS: tuple[Kind, ...] = ("normal", "late", "duplicate", "malformed")

LATE_MIN_MS = 60_000
LATE_MAX_MS = 600_000
DUPLICATE_DELAY_MS = (500, 5_000)
ERROR_SHARE = 0.01  # of the valid new events, failed requests
SIGNUP_SHARE = 0.1  # of new visitors
RETURNING_SHARE = 0.7  # of sessions, visitors seen before
THINK_TIME_S = 5.0  # mean time between two events of one session, which sizes the sessions
SEND_RETRIES = 5
DRAIN_TIMEOUT_S = 30.0
TICK_S = 0.01

REGIONS = (("eu", "us", "apac"), (0.45, 0.8, 1.0))  # values and cumulative weights
DEVICES = (("desktop", "mobile", "tablet"), (0.5, 0.92, 1.0))
PLANS = (("free", "pro", "team"), (0.8, 0.95, 1.0))
ERROR_CODES = ((500, 502, 503, 404), (0.3, 0.45, 0.55, 1.0))
SERVICES = (("web", "checkout", "search", "api"), (0.35, 0.5, 0.7, 1.0))
PATHS = ("/", "/search", "/product", "/cart", "/checkout")
# lognormal latency per path: (mu, sigma) of ln(ms); checkout talks to payment, so it is slower
LATENCY = {
    "/": (4.0, 0.5),
    "/search": (4.6, 0.6),
    "/product": (4.3, 0.5),
    "/cart": (4.2, 0.5),
    "/checkout": (5.5, 0.6),
}

_START, _END = "start", "end"
# a session as a Markov chain: state -> (next states, cumulative weights); a state is a page
# (a page_view event), "add_to_cart" or "order"
_FLOW: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    _START: (("/", "/search", "/product"), (0.55, 0.8, 1.0)),
    "/": (("/search", "/product", _END), (0.35, 0.8, 1.0)),
    "/search": (("/search", "/product", "/", _END), (0.2, 0.75, 0.8, 1.0)),
    "/product": (("add_to_cart", "/product", "/search", "/", _END), (0.22, 0.52, 0.77, 0.85, 1.0)),
    "add_to_cart": (("/cart", "/product", "/search", _END), (0.45, 0.75, 0.85, 1.0)),
    "/cart": (("/checkout", "/product", _END), (0.6, 0.8, 1.0)),
    "/checkout": (("order", _END), (0.7, 1.0)),
    "order": (("/", _END), (0.15, 1.0)),
}

# malformations, each against the demo config
_REQUIRED = {
    "page_view": ("path", "user"),
    "add_to_cart": ("sku", "user", "price"),
    "order": ("order_id", "user", "amount", "region"),
    "signup": ("user",),
    "error": ("code",),
}
_WRONG_TYPE: dict[str, tuple[str, object]] = {
    "page_view": ("latency_ms", "slow"),
    "add_to_cart": ("price", "9.99"),
    "order": ("amount", "12.50"),
    "signup": ("user", 42),
    "error": ("code", "500"),
}
_BAD_ENUM = {
    "page_view": ("device", "watch"),
    "order": ("region", "latam"),
    "signup": ("plan", "enterprise"),
    "error": ("service", "billing"),
}
_UNKNOWN_TYPES = ("purchase", "pageview", "add-to-cart", "logout")


# -- rate over time ------------------------------------------------------------------------

_PEAKS = ((8.5, 1.5, 0.4), (12.5, 2.5, 1.0), (20.5, 2.0, 1.1))  # (hour, width h, height)
_NIGHT = 0.15


def _daily_shape(hour: float) -> float:
    total = _NIGHT
    for centre, width, height in _PEAKS:
        distance = abs(hour - centre) % 24.0
        distance = min(distance, 24.0 - distance)  # the day wraps around
        total += height * math.exp(-0.5 * (distance / width) ** 2)
    return total


_DAILY_MEAN = sum(_daily_shape(minute / 60) for minute in range(24 * 60)) / (24 * 60)


def daily_factor(hour: float) -> float:
    """How busy the shop is at ``hour`` (0-24, local time, fractional) relative to its daily
    mean: about 0.25 at night, about 2 at the midday and evening peaks; averages 1 over a day."""
    return _daily_shape(hour % 24.0) / _DAILY_MEAN


class Bursts:
    """Short bursts of extra traffic at random: on average every ``mean_gap_s`` seconds, a burst
    of 2-6 s at 2-3x. ``factor`` must be asked with non-decreasing times (seconds)."""

    def __init__(self, rng: random.Random, mean_gap_s: float = 90.0) -> None:
        self._rng = rng
        self._mean_gap_s = mean_gap_s
        self._start_s = self._end_s = -math.inf
        self._next_s: float | None = None
        self._height = 1.0
        self.mean = 1.0 + (2.5 - 1.0) * 4.0 / (4.0 + mean_gap_s)
        """The long-run mean of ``factor``."""

    def factor(self, now_s: float) -> float:
        """The traffic multiplier at ``now_s``: 1, or 2-3 during a burst."""
        rng = self._rng
        if self._next_s is None:
            self._next_s = now_s + rng.expovariate(1 / self._mean_gap_s)
        while now_s >= self._next_s:
            self._start_s = self._next_s
            self._end_s = self._start_s + rng.uniform(2.0, 6.0)
            self._height = rng.uniform(2.0, 3.0)
            self._next_s = self._end_s + rng.expovariate(1 / self._mean_gap_s)
        return self._height if self._start_s <= now_s < self._end_s else 1.0


class Schedule:
    """Events per second to send at a moment, averaging ``rate`` in the long run.

    ``rate`` x ``daily_factor`` of the local hour x the burst factor (divided by the bursts'
    mean, so that they do not raise the average). Either shaping can be turned off.
    """

    def __init__(
        self, rate: float, rng: random.Random, *, daily: bool = True, bursts: bool = True
    ) -> None:
        self.rate = rate
        self._daily = daily
        self._bursts = Bursts(rng) if bursts else None

    def daily(self, wall_s: float) -> float:
        """The daily factor at epoch time ``wall_s`` (1 when the curve is off)."""
        if not self._daily:
            return 1.0
        local = time.localtime(wall_s)
        return daily_factor(local.tm_hour + local.tm_min / 60 + (local.tm_sec + wall_s % 1) / 3600)

    def rate_at(self, wall_s: float) -> float:
        """Events per second at epoch time ``wall_s`` (seconds; ask in non-decreasing order)."""
        rate = self.rate * self.daily(wall_s)
        if self._bursts is not None:
            rate *= self._bursts.factor(wall_s) / self._bursts.mean
        return rate


@dataclass(slots=True)
class TokenBucket:
    """Whole events due at a varying rate over real time.

    Tokens accrue at the rate in force; at most ``capacity_s`` seconds' worth (and at least
    one) are kept, so that a stall is not followed by an outsized burst.
    """

    capacity_s: float = 0.25
    tokens: float = 0.0
    last_s: float | None = None

    def take(self, now_s: float, rate: float) -> int:
        """The whole events due at ``now_s`` (seconds, monotonic) at ``rate`` events/s."""
        if self.last_s is not None:
            limit = max(1.0, rate * self.capacity_s)
            self.tokens = min(limit, self.tokens + (now_s - self.last_s) * rate)
        self.last_s = now_s
        due = int(self.tokens)
        self.tokens -= due
        return due

    def wait_s(self, rate: float) -> float:
        """Seconds until the next whole event is due at ``rate`` (infinite at rate 0)."""
        return (1.0 - self.tokens) / rate if rate > 0 else math.inf


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One event to send, and which kind of traffic it stands for. ``time_ms`` is epoch ms."""

    kind: Kind
    id: str
    type: str
    time_ms: int
    data: dict[str, Any]

    def envelope(self) -> dict[str, Any]:
        """The event as the ingest API takes it."""
        return {"id": self.id, "type": self.type, "time": self.time_ms, "data": self.data}


@dataclass(slots=True)
class _Session:
    id: str
    user: str
    device: str
    region: str
    signup: bool  # a new visitor who signs up after the first page
    state: str = _START
    last_ms: int = 0
    cart: list[float] = field(default_factory=list)


def _pick(rng: random.Random, table: tuple[tuple[Any, ...], tuple[float, ...]]) -> Any:
    values, cumulative = table
    return rng.choices(values, cum_weights=cumulative)[0]


class Traffic:
    """Generates shop traffic for the demo config, event by event, deterministic for a seed.

    ``late``, ``duplicates`` and ``malformed`` are the shares of all events that are of that
    kind; the rest are normal. Late events are stamped 1-10 minutes before now; a duplicate
    repeats an earlier valid event 0.5-5 s after it (by the ``now_ms`` given to ``events``).
    ``sessions`` is how many visitors are active at once. Ids are ``<run_id>-<n>``; the run id
    is random unless given, so that two runs with one seed do not collide on the server.
    """

    def __init__(
        self,
        *,
        late: float = 0.01,
        duplicates: float = 0.01,
        malformed: float = 0.001,
        seed: int | None = None,
        sessions: int = 200,
        run_id: str | None = None,
    ) -> None:
        for name, share in (("late", late), ("duplicates", duplicates), ("malformed", malformed)):
            if not 0.0 <= share < 1.0:
                raise ValueError(f"{name} must be a share from 0 up to 1, got {share}")
        if late + duplicates + malformed >= 1.0:
            raise ValueError("late + duplicates + malformed must be below 1")
        if duplicates > (1.0 - malformed) / 2:
            raise ValueError("duplicates can be at most half of the valid events")
        if sessions < 1:
            raise ValueError(f"sessions must be at least 1, got {sessions}")
        fresh = 1.0 - duplicates  # the share of events that are not re-sends
        self._p_malformed = malformed / fresh
        self._p_late = self._p_malformed + late / fresh
        self._p_duplicate = duplicates / (fresh - malformed)  # re-sends per valid new event
        self._rng = random.Random(seed)
        self._sessions = sessions
        self._users = sessions * 20  # the returning visitors
        self._active: list[_Session] = []
        self._active_users: set[str] = set()
        self._pending: list[tuple[int, int, SimEvent]] = []  # duplicates by due time
        self.run_id = run_id if run_id is not None else uuid.uuid4().hex[:8]
        self._seq = 0
        self._orders = 0
        self._visitors = 0

    def events(self, now_ms: int, count: int) -> list[SimEvent]:
        """The next ``count`` events to send at epoch ``now_ms`` (non-decreasing over calls)."""
        out: list[SimEvent] = []
        pending = self._pending
        for _ in range(count):
            if pending and pending[0][0] <= now_ms:
                original = heapq.heappop(pending)[2]
                out.append(
                    SimEvent(
                        "duplicate", original.id, original.type, original.time_ms, original.data
                    )
                )
            else:
                out.append(self._fresh(now_ms))
        return out

    def _fresh(self, now_ms: int) -> SimEvent:
        rng = self._rng
        roll = rng.random()
        if roll < self._p_malformed:
            return self._malformed(now_ms)
        if rng.random() < ERROR_SHARE:
            kind, data, time_ms = "error", self._error_data(), now_ms - rng.randrange(250)
        else:
            kind, data, time_ms = self._session_event(now_ms)
        event = SimEvent("normal", self._next_id(), kind, time_ms, data)
        if roll < self._p_late:
            late_ms = rng.randrange(LATE_MIN_MS, LATE_MAX_MS + 1)
            event = SimEvent("late", event.id, kind, now_ms - late_ms, data)
        if rng.random() < self._p_duplicate:
            due = now_ms + rng.randrange(*DUPLICATE_DELAY_MS)
            heapq.heappush(self._pending, (due, self._seq, event))
        return event

    def _next_id(self) -> str:
        self._seq += 1
        return f"{self.run_id}-{self._seq}"

    # -- sessions --

    def _session_event(self, now_ms: int) -> tuple[str, dict[str, Any], int]:
        rng = self._rng
        slot = rng.randrange(self._sessions)
        if slot >= len(self._active):
            slot = len(self._active)
            self._active.append(self._new_session())
        session = self._active[slot]
        if session.signup and session.state != _START:
            session.signup = False
            kind, data = "signup", {"user": session.user, "plan": _pick(rng, PLANS)}
        else:
            state = _pick(rng, _FLOW[session.state])
            if state == _END:
                self._active_users.discard(session.user)
                session = self._active[slot] = self._new_session()
                state = _pick(rng, _FLOW[_START])
            session.state = state
            kind, data = self._act(session, state)
        # a session's events keep their order in time despite the jitter, never ahead of now
        session.last_ms = min(now_ms, max(now_ms - rng.randrange(250), session.last_ms + 1))
        return kind, data, session.last_ms

    def _new_session(self) -> _Session:
        rng = self._rng
        user = f"u{rng.randrange(self._users)}"
        new_visitor = rng.random() >= RETURNING_SHARE or user in self._active_users
        if new_visitor:
            self._visitors += 1
            user = f"{self.run_id}-v{self._visitors}"
        self._active_users.add(user)
        return _Session(
            id=uuid.UUID(int=rng.getrandbits(128)).hex[:16],
            user=user,
            device=_pick(rng, DEVICES),
            region=_pick(rng, REGIONS),
            signup=new_visitor and rng.random() < SIGNUP_SHARE,
        )

    def _act(self, session: _Session, state: str) -> tuple[str, dict[str, Any]]:
        rng = self._rng
        if state == "add_to_cart":
            price = round(rng.lognormvariate(3.0, 0.9), 2)
            session.cart.append(price)
            sku = f"sku-{int(1000 ** rng.random())}"  # a few products are far more popular
            data = {"sku": sku, "user": session.user, "session": session.id, "price": price}
            return "add_to_cart", data
        if state == "order":
            self._orders += 1
            data = {
                "order_id": f"{self.run_id}-o{self._orders}",
                "user": session.user,
                "amount": round(sum(session.cart), 2),
                "region": session.region,
                "items": len(session.cart),
            }
            session.cart = []
            return "order", data
        mu, sigma = LATENCY[state]
        return "page_view", {
            "path": state,
            "user": session.user,
            "session": session.id,
            "device": session.device,
            "latency_ms": round(rng.lognormvariate(mu, sigma), 1),
        }

    def _error_data(self) -> dict[str, Any]:
        rng = self._rng
        return {
            "code": _pick(rng, ERROR_CODES),
            "path": rng.choice(PATHS),
            "service": _pick(rng, SERVICES),
        }

    # -- malformed --

    def _malformed(self, now_ms: int) -> SimEvent:
        """A new event with exactly one problem: a required field missing, a value of the wrong
        type, an unknown event type, or a value outside a field's enum."""
        rng = self._rng
        problem = rng.randrange(4)
        kind = rng.choice(tuple(_BAD_ENUM) if problem == 3 else tuple(_REQUIRED))
        data = self._sample_data(kind)
        if problem == 0:
            del data[rng.choice(_REQUIRED[kind])]
        elif problem == 1:
            name, value = _WRONG_TYPE[kind]
            data[name] = value
        elif problem == 2:
            kind = rng.choice(_UNKNOWN_TYPES)
        else:
            name, value = _BAD_ENUM[kind]
            data[name] = value
        return SimEvent("malformed", self._next_id(), kind, now_ms, data)

    def _sample_data(self, kind: str) -> dict[str, Any]:
        """Valid data of event type ``kind``, outside any session."""
        rng = self._rng
        user = f"u{rng.randrange(self._users)}"
        samples: dict[str, dict[str, Any]] = {
            "page_view": {"path": "/", "user": user, "device": "mobile", "latency_ms": 80.0},
            "add_to_cart": {"sku": "sku-1", "user": user, "price": 9.99},
            "order": {"order_id": "o-0", "user": user, "amount": 12.5, "region": "eu"},
            "signup": {"user": user, "plan": "free"},
            "error": {"code": 500, "path": "/", "service": "web"},
        }
        return samples[kind]


# -- the command ----------------------------------------------------------------------------


def sessions_for(rate: float) -> int:
    """How many visitors are active at once at ``rate`` events/s (a few seconds between the
    clicks of one visitor)."""
    return max(10, min(50_000, round(rate * THINK_TIME_S)))


def run_simulate(
    *,
    url: str,
    rate: float,
    duration_s: float,
    late: float = 0.01,
    duplicates: float = 0.01,
    malformed: float = 0.001,
    api_key: str | None = None,
    seed: int | None = None,
    stop_with_parent: bool = False,
    out: TextIO,
) -> int:
    """Send simulated shop traffic to the server at ``url`` for ``duration_s`` seconds.

    ``rate`` is the mean in events/s over a day; at a given moment it is scaled by the daily
    curve and bursts (see ``Schedule``). ``late``, ``duplicates`` and ``malformed`` are shares of
    the events sent (see ``Traffic``). Ctrl-C stops sending early; either way what was queued is
    delivered (for at most ``DRAIN_TIMEOUT_S`` seconds) and a report is printed to ``out``.
    With ``stop_with_parent`` it also stops when the process that started it is gone (the demo,
    killed with SIGKILL, cannot stop it otherwise).

    Returns 0 when every event was acknowledged (accepted or rejected), 1 when some could not
    be delivered, 2 for invalid arguments, 130 when interrupted.
    """
    if not rate > 0 or not duration_s > 0:
        out.write(
            f"pulseboard simulate: rate and duration must be positive, got {rate}, {duration_s}\n"
        )
        return 2
    try:
        traffic = Traffic(
            late=late,
            duplicates=duplicates,
            malformed=malformed,
            seed=seed,
            sessions=sessions_for(rate),
        )
    except ValueError as exc:
        out.write(f"pulseboard simulate: {exc}\n")
        return 2
    schedule = Schedule(rate, random.Random(None if seed is None else seed + 1))
    client = Client(url, api_key, max_retries=SEND_RETRIES)
    out.write(
        f"pulseboard simulate: sending shop traffic at a mean of {rate:g} events/s "
        + (f"for {duration_s:g} s" if duration_s < 86_400 else "until stopped")
        + f" (now x{schedule.daily(time.time()):.2f} by the daily curve); "
        "Ctrl-C stops\n"
    )
    run = _Run(started_s=monotonic())
    parent = os.getppid()
    orphaned = (lambda: os.getppid() != parent) if stop_with_parent else (lambda: False)
    try:
        _pace(client, traffic, schedule, run.started_s + duration_s, run, orphaned)
    except KeyboardInterrupt:
        run.interrupted = True
    run.sending_s = monotonic() - run.started_s
    try:
        settled = client.close(timeout=DRAIN_TIMEOUT_S)
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting for acknowledgements
        run.interrupted = True
        settled = client.close(timeout=0)
    _write_report(out, run, client, rate)
    if run.refused:
        out.write(
            f"pulseboard simulate: stopped early, nothing was accepted: {client.last_error}\n"
        )
    if run.interrupted:
        return 130
    return 0 if settled and client.stats.failed == 0 else 1


@dataclass(slots=True)
class _Run:
    """What one ``run_simulate`` did: events tracked by kind, and how many were due (a
    fraction, by the schedule), over ``sending_s`` seconds."""

    started_s: float
    kinds: Counter[str] = field(default_factory=Counter)
    scheduled: float = 0.0
    sending_s: float = 0.0
    interrupted: bool = False
    refused: bool = False


def _pace(
    client: Client,
    traffic: Traffic,
    schedule: Schedule,
    end_s: float,
    run: _Run,
    orphaned: Callable[[], bool],
) -> None:
    """Track events as the schedule makes them due, until monotonic time ``end_s`` (or until
    ``orphaned()``)."""
    bucket = TokenBucket()
    kinds = run.kinds
    while (now := monotonic()) < end_s and not orphaned():
        stats = client.stats
        if stats.failed and not stats.accepted and not stats.rejected:
            # nothing ever got through and the client gave up: the server refuses us
            # (a missing api key, a wrong URL); sending on would only fail the same way
            run.refused = True
            return
        wall_s = time.time()
        rate = schedule.rate_at(wall_s)
        if bucket.last_s is not None:
            run.scheduled += (now - bucket.last_s) * rate
        due = bucket.take(now, rate)
        if due:
            for event in traffic.events(int(wall_s * 1000), due):
                client.track(event.type, event.data, time=event.time_ms, id=event.id)
                kinds[event.kind] += 1
        pause = max(TICK_S, bucket.wait_s(rate))
        time.sleep(max(0.0, min(pause, end_s - monotonic())))


def _write_report(out: TextIO, run: _Run, client: Client, rate: float) -> None:
    """The report of a run as ``name: value`` lines."""
    sent = sum(run.kinds[kind] for kind in KINDS)
    stats = client.stats
    sending_s = max(run.sending_s, 1e-9)
    lines = [
        f"sent: {sent}",
        *(f"{kind}: {run.kinds[kind]}" for kind in KINDS),
        f"accepted: {stats.accepted}",
        f"rejected: {stats.rejected}",
        f"failed: {stats.failed}",
        f"retries: {stats.retries}",
        f"rate: {sent / sending_s:.1f} events/s (scheduled {run.scheduled / sending_s:.1f} "
        f"by the daily curve and bursts; {rate:g} is the mean over a day)",
        f"elapsed: {monotonic() - run.started_s:.2f} s ({run.sending_s:.2f} s sending)",
    ]
    if stats.queued:
        lines.append(f"unacknowledged: {stats.queued} (still in flight when the wait ended)")
    if run.interrupted:
        lines.append("interrupted: sending stopped early")
    if client.last_error is not None:
        lines.append(f"last error: {client.last_error}")
    rejections = client.rejections[:5]
    if rejections:
        lines.append("first rejections:")
        lines += [f"  {r.id}: {r.error}" for r in rejections]
    out.write("".join(line + "\n" for line in lines))
