"""Generated shop traffic in the ordinary envelope, as the JSON bodies an ingest request carries."""

from __future__ import annotations

import random

import msgspec

REGIONS = ("eu", "us", "apac")
DEVICES = ("desktop", "mobile", "tablet")
SERVICES = ("web", "checkout", "search", "api")
PLANS = ("free", "pro", "team")
PATHS = ("/", "/search", "/product", "/cart", "/checkout")


def make_event(rng: random.Random, seq: int, time_ms: int, users: int) -> dict[str, object]:
    """One event of a random type, with realistic shares: mostly page views, some orders."""
    user = f"u{rng.randrange(users)}"
    roll = rng.random()
    if roll < 0.6:
        kind = "page_view"
        data: dict[str, object] = {
            "path": rng.choice(PATHS),
            "user": user,
            "device": rng.choice(DEVICES),
            "latency_ms": round(rng.lognormvariate(4.0, 0.6), 3),
        }
    elif roll < 0.8:
        kind = "add_to_cart"
        data = {
            "sku": f"sku{rng.randrange(500)}",
            "user": user,
            "price": round(rng.uniform(2, 200), 2),
        }
    elif roll < 0.9:
        kind = "order"
        data = {
            "order_id": f"o{seq}",
            "user": user,
            "amount": round(rng.lognormvariate(3.5, 0.8), 2),
            "region": rng.choice(REGIONS),
            "items": rng.randrange(1, 6),
        }
    elif roll < 0.95:
        kind = "signup"
        data = {"user": user, "plan": rng.choice(PLANS)}
    else:
        kind = "error"
        data = {
            "code": rng.choice((500, 502, 503)),
            "service": rng.choice(SERVICES),
            "path": "/api",
        }
    return {"id": f"e{seq:012d}", "type": kind, "time": time_ms, "data": data}


def make_bodies(
    events: int,
    batch_size: int = 1_000,
    *,
    start_ms: int = 1_767_225_600_000,
    events_per_s: int = 20_000,
    jitter_ms: int = 2_000,
    duplicates: float = 0.01,
    late: float = 0.0,
    users: int = 50_000,
    seed: int = 7,
) -> list[bytes]:
    """``events`` events in JSON array bodies of ``batch_size``.

    Event times advance at ``events_per_s`` of event time and arrive up to ``jitter_ms`` out of
    order; a share ``duplicates`` of the events is sent a second time in a later body, and a
    share ``late`` is stamped 3 minutes in the past, so that its window has closed.
    """
    rng = random.Random(seed)
    out: list[dict[str, object]] = []
    for seq in range(events):
        time_ms = start_ms + seq * 1_000 // events_per_s - rng.randrange(jitter_ms + 1)
        if late and rng.random() < late:
            time_ms -= 180_000
        out.append(make_event(rng, seq, time_ms, users))
        if out and rng.random() < duplicates:
            out.append(out[rng.randrange(max(0, len(out) - batch_size), len(out))])
    out = out[:events]
    encode = msgspec.json.encode
    return [encode(out[i : i + batch_size]) for i in range(0, len(out), batch_size)]
