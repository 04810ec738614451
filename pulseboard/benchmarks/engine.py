"""``pulseboard bench engine``: decode + aggregate throughput over the 10-metric shop workload.

The input is what ingest requests carry: JSON array bodies of 1,000 events in the ordinary
envelope, with 1% duplicates and up to 2 s of disorder. The baseline, measured in the same run
over the same bytes, is the fastest plain msgspec decode of those bodies into Python objects.

With ``workers=2`` the work is split as the service splits it: one process decodes and validates
each body into a columnar batch (the ingest side), the other decodes that batch and aggregates it
(the processor side); the two run concurrently, one core each.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
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


def _rate(events: int, run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return events / (time.perf_counter() - start)


def decode_baselines(bodies: Sequence[bytes], events: int) -> dict[str, float]:
    """Events/s of plain decoding into builtins and of validated decoding into columns."""
    config = workload_config()
    plain = msgspec.json.Decoder()
    typed = EventDecoder(config)

    def run_plain() -> None:
        for body in bodies:
            plain.decode(body)

    def run_typed() -> None:
        for body in bodies:
            typed.decode(body, _NOW_MS)

    return {"plain": _rate(events, run_plain), "validated": _rate(events, run_typed)}


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


def _processor(inbox: Connection, outbox: Connection) -> None:
    config = workload_config()
    engine = Engine(config)
    count = 0
    outbox.send("ready")
    pending: list[Batch] = []
    while True:
        data = inbox.recv_bytes()
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
    outbox.send((count, tick.stream_time_ms, engine.duplicates))


def _widen(conn: Connection, size: int = 1 << 20) -> None:
    """Let the pipe hold about one processor step, so that the decoding side runs ahead while
    the processor aggregates (the log does this in the service). Linux only; harmless elsewhere."""
    try:
        fcntl.fcntl(conn.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except OSError:
        pass


def aggregate_in_two(config: Config, bodies: Sequence[bytes]) -> float:
    """Decode here and aggregate in a second process; returns the seconds it took.

    The processor's start-up (imports, config) happens before the clock starts.
    """
    context = multiprocessing.get_context("spawn")
    data_out, data_in = context.Pipe(duplex=False)[::-1]
    result_in, result_out = context.Pipe(duplex=False)
    _widen(data_out)
    child = context.Process(target=_processor, args=(data_in, result_out), daemon=True)
    child.start()
    if result_in.recv() != "ready":
        raise RuntimeError("the processor process did not start")
    decoder = EventDecoder(config)
    start = time.perf_counter()
    for body in bodies:
        data_out.send_bytes(encode_batch(decoder.decode(body, _NOW_MS)))
    data_out.send_bytes(b"")
    result_in.recv()
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


def run_engine_bench(*, events: int, workers: int, repeat: int, as_json: bool, out: TextIO) -> int:
    """Measure and print the engine benchmark; returns 0.

    Each of ``repeat`` rounds measures the baseline and then the engine on the same bodies.
    The report gives the best round of each, the least disturbed by other work on a shared
    machine, and their ratio; every round is listed too."""
    config = workload_config()
    bodies = make_bodies(events)
    rounds = []
    for _ in range(repeat):
        baselines = decode_baselines(bodies, events)
        if workers >= 2:
            seconds = aggregate_in_two(config, bodies)
        else:
            start = time.perf_counter()
            aggregate_in_process(config, bodies)
            seconds = time.perf_counter() - start
        rounds.append((events / seconds, baselines["plain"], baselines["validated"]))
    rate, plain, validated = (max(r[i] for r in rounds) for i in range(3))
    report: dict[str, Any] = {
        "name": "engine",
        "events": events,
        "seconds": round(events / rate, 3),
        "events_per_s": round(rate),
        "baseline": {"name": "decode", "events_per_s": round(plain)},
        "ratio": round(rate / plain, 3),
        "workers": workers,
        "metrics": len(config.metrics),
        "rounds": [{"events_per_s": round(r[0]), "baseline": round(r[1])} for r in rounds],
        "validated_decode_events_per_s": round(validated),
        "stage_ns_per_event": stage_costs(config, bodies, events),
    }
    out.write(json.dumps(report, indent=None if as_json else 2) + "\n")
    return 0
