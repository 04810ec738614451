"""``pulseboard demo``: the built-in shop config fed simulated traffic, printed as windows close.

Until the service exists this runs the engine in the terminal: it generates shop events
(with duplicates and disorder), decodes them as ingest would, aggregates them and prints each
minute's headline numbers when that minute becomes final.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from pulseboard.benchmarks.workload import make_bodies
from pulseboard.config import Config, load_config
from pulseboard.engine import Engine, WindowValue
from pulseboard.events import EventDecoder

HEADLINES = ("orders", "revenue", "avg_order_value", "checkout_p95", "errors")


def demo_config() -> Config:
    """The built-in e-commerce config shipped with the package."""
    return load_config(Path(__file__).with_name("demo.yaml"))


def _format(values: list[WindowValue]) -> str:
    parts = []
    for v in sorted(values, key=lambda v: sorted(map(str, v.labels.values()))):
        label = ",".join(str(x) for x in v.labels.values())
        shown = f"{v.value:.2f}" if isinstance(v.value, float) else str(v.value)
        parts.append(f"{label}={shown}" if label else shown)
    return " ".join(parts)


def _print_minute(
    out: TextIO, start_ms: int, rows: dict[str, list[WindowValue]], partial: bool
) -> None:
    stamp = datetime.fromtimestamp(start_ms / 1000, UTC).strftime("%H:%M")
    cells = [f"{name} {_format(rows[name])}" for name in HEADLINES if name in rows]
    note = "  (partial: the simulation ended in this minute)" if partial else ""
    out.write(f"{stamp}  " + " | ".join(cells) + note + "\n")


def run_demo(*, events: int, seed: int, out: TextIO) -> int:
    """Simulate ``events`` shop events and print every final minute; returns 0."""
    config = demo_config()
    decoder = EventDecoder(config)
    engine = Engine(config)
    rate = 500
    # start the traffic an hour ago, just after a minute boundary (beyond the 2 s of disorder)
    start_ms = int(time.time() * 1000) // 60_000 * 60_000 - 3_600_000 + 2_000
    end_ms = start_ms + events * 1_000 // rate
    bodies = make_bodies(events, start_ms=start_ms, events_per_s=rate, late=0.002, seed=seed)
    now_ms = start_ms + 7_200_000
    out.write(
        f"pulseboard demo: {events:,} simulated shop events at {rate}/s of event time, "
        f"{len(config.metrics)} metrics; one line per minute (UTC) once it is final\n"
    )
    began = time.perf_counter()
    late = rejected = 0

    def emit(final: list[WindowValue]) -> None:
        minutes: dict[int, dict[str, list[WindowValue]]] = defaultdict(lambda: defaultdict(list))
        for value in final:
            if value.metric in HEADLINES and value.window_end_ms - value.window_start_ms == 60_000:
                minutes[value.window_start_ms][value.metric].append(value)
        for start in sorted(minutes):
            _print_minute(out, start, minutes[start], partial=start + 60_000 > end_ms)

    for i, body in enumerate(bodies, 1):
        batch = decoder.decode(body, now_ms)
        rejected += len(batch.errors)
        engine.process(batch)
        if i % 10 == 0:
            tick = engine.advance()
            late += len(tick.late)
            emit(tick.final)
    engine.advance(now_ms=0)
    tick = engine.advance(now_ms=3_600_000)
    emit(tick.final)
    seconds = time.perf_counter() - began
    summary: dict[str, Any] = {
        "events": events,
        "duplicates dropped": engine.duplicates,
        "late arrivals (counted once per metric)": late + len(tick.late),
        "rejected": rejected,
        "events/s": round(events / seconds),
    }
    out.write("done: " + ", ".join(f"{k} {v:,}" for k, v in summary.items()) + "\n")
    return 0
