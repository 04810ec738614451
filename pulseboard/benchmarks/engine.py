"""``pulseboard bench engine``: decode + aggregate throughput over the 10-metric shop workload.

The input is what ingest requests carry: JSON array bodies of 1,000 events in the ordinary
envelope, with 1% duplicates and up to 2 s of disorder. The baseline, measured in the same run
over the same bytes, is the fastest plain msgspec decode of those bodies into Python objects.

With ``workers=2`` the work is split as the service splits it: one process decodes and validates
each body into a columnar batch (the ingest side), the other decodes that batch and aggregates it
(the processor side); the two run concurrently, one core each.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TextIO

import msgspec

from pulseboard.benchmarks.workload import make_bodies
from pulseboard.config import Config, load_config
from pulseboard.engine import Engine
from pulseboard.events import Batch, EventDecoder, decode_batch, encode_batch

TICK_BODIES = 20
"""Bodies between two ``advance`` calls: about 1 s of stream time at the workload's rate."""
STEP_BODIES = 10
"""Bodies the processor aggregates in one step, as it reads several log entries at once."""

_NOW_MS = 1_767_225_600_000 + 10**9  # a clock far enough ahead that max_future never bites


def workload_config() -> Config:
    """The benchmark's config: 5 event types, 10 metrics."""
    return load_config(Path(__file__).with_name("engine.yaml"))


def _best_rate(events: int, run: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return events / best


def decode_baselines(bodies: Sequence[bytes], events: int) -> dict[str, float]:
    """Events/s of plain decoding into builtins and of typed decoding into structs."""
    config = workload_config()
    plain = msgspec.json.Decoder()
    typed = EventDecoder(config)

    def run_plain() -> None:
        for body in bodies:
            plain.decode(body)

    def run_typed() -> None:
        for body in bodies:
            typed.decode(body, _NOW_MS)

    return {"plain": _best_rate(events, run_plain), "validated": _best_rate(events, run_typed)}


def aggregate_in_process(config: Config, bodies: Sequence[bytes]) -> Engine:
    """Decode and aggregate every body in this process; returns the engine at the end."""
    decoder = EventDecoder(config)
    engine = Engine(config)
    for i in range(0, len(bodies), STEP_BODIES):
        step = bodies[i : i + STEP_BODIES]
        engine.process(Batch.concat([decoder.decode(body, _NOW_MS) for body in step]))
        if (i + STEP_BODIES) % TICK_BODIES == 0:
            engine.advance()
    engine.advance()
    return engine


def _receive(conn: Connection, inbox: queue.Queue[bytes]) -> None:
    """Drain the pipe as fast as the sender writes, so that neither side waits on the other's
    step: the log does this decoupling in the service."""
    while True:
        data = conn.recv_bytes()
        inbox.put(data)
        if not data:
            return


def _processor(conn: Connection) -> None:
    config = workload_config()
    engine = Engine(config)
    inbox: queue.Queue[bytes] = queue.Queue(maxsize=256)
    threading.Thread(target=_receive, args=(conn, inbox), daemon=True).start()
    count = 0
    conn.send("ready")
    pending: list[Batch] = []
    while True:
        data = inbox.get()
        if data:
            pending.append(decode_batch(data, config))
            count += 1
        if pending and (len(pending) == STEP_BODIES or not data):
            engine.process(Batch.concat(pending))
            pending = []
            if count % TICK_BODIES == 0:
                engine.advance()
        if not data:
            break
    tick = engine.advance()
    conn.send((count, tick.stream_time_ms, engine.duplicates))
    conn.close()


def aggregate_in_two(config: Config, bodies: Sequence[bytes]) -> float:
    """Decode here and aggregate in a second process; returns the seconds it took.

    The processor's start-up (imports, config) happens before the clock starts.
    """
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=_processor, args=(theirs,), daemon=True)
    child.start()
    if ours.recv() != "ready":
        raise RuntimeError("the processor process did not start")
    decoder = EventDecoder(config)
    start = time.perf_counter()
    for body in bodies:
        ours.send_bytes(encode_batch(decoder.decode(body, _NOW_MS)))
    ours.send_bytes(b"")
    ours.recv()
    seconds = time.perf_counter() - start
    child.join()
    return seconds


def stage_costs(config: Config, bodies: Sequence[bytes], events: int) -> dict[str, float]:
    """Nanoseconds per event of each stage, run one after the other in this process."""
    decoder = EventDecoder(config)
    clock = time.perf_counter
    decoding = encoding = 0.0
    wire = []
    for body in bodies:
        t0 = clock()
        batch = decoder.decode(body, _NOW_MS)
        t1 = clock()
        wire.append(encode_batch(batch))
        decoding += t1 - t0
        encoding += clock() - t1
    engine = Engine(config)
    read = aggregated = 0.0
    for i in range(0, len(wire), STEP_BODIES):
        t0 = clock()
        step = Batch.concat([decode_batch(w, config) for w in wire[i : i + STEP_BODIES]])
        t1 = clock()
        engine.process(step)
        if (i + STEP_BODIES) % TICK_BODIES == 0:
            engine.advance()
        read += t1 - t0
        aggregated += clock() - t1
    per_event = 1e9 / events
    return {
        "decode_validate": round(decoding * per_event),
        "write_columns": round(encoding * per_event),
        "read_columns": round(read * per_event),
        "aggregate": round(aggregated * per_event),
    }


def run_engine_bench(*, events: int, workers: int, as_json: bool, out: TextIO) -> int:
    """Measure and print the engine benchmark; returns 0."""
    config = workload_config()
    bodies = make_bodies(events)
    baselines = decode_baselines(bodies, events)
    if workers >= 2:
        seconds = aggregate_in_two(config, bodies)
    else:
        start = time.perf_counter()
        aggregate_in_process(config, bodies)
        seconds = time.perf_counter() - start
    rate = events / seconds
    report: dict[str, Any] = {
        "name": "engine",
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_s": round(rate),
        "workers": workers,
        "metrics": len(config.metrics),
        "baseline": {"name": "decode", "events_per_s": round(baselines["plain"])},
        "ratio": round(rate / baselines["plain"], 3),
        "validated_decode_events_per_s": round(baselines["validated"]),
        "stage_ns_per_event": stage_costs(config, bodies, events),
    }
    if as_json:
        out.write(json.dumps(report) + "\n")
    else:
        for key, value in report.items():
            out.write(f"{key:>32}: {value}\n")
    return 0
