"""``pulseboard bench engine``: check, decode and aggregate over the 10-metric shop workload.

The input is what ingest requests carry: JSON array bodies of 1,000 events in the ordinary
envelope, with 1% duplicates and up to 2 s of disorder. The baseline, measured in the same run
over the same bytes, is the fastest plain msgspec decode of those bodies into Python objects.

Every body goes the way it goes in the service: ingest validates it (``EventDecoder.check``) and
passes the accepted events on as JSON (the payload the log keeps); the processor decodes each
payload into columns (``EventDecoder.decode``), joins ``STEP_BODIES`` of them (``Batch.concat``,
as it joins the entries of one log read) and aggregates them (``Engine.process``, ``advance``).
With ``workers=2`` the two sides run concurrently in two processes, one core each, the payloads
passing through a pipe instead of the log; with ``workers=1`` one process does both.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TextIO

import msgspec

from pulseboard.benchmarks.workload import make_bodies
from pulseboard.config import Config, load_config
from pulseboard.engine import Engine, Tick
from pulseboard.events import Batch, EventDecoder

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


def ingest(decoder: EventDecoder, bodies: Sequence[bytes]) -> Iterator[bytes]:
    """The ingest side: each body checked, its accepted events as the JSON payload to log.

    A body with no accepted event yields nothing, as the service then appends nothing."""
    for body in bodies:
        payload = decoder.check(body, _NOW_MS).payload
        if payload is not None:
            yield payload


class _Processor:
    """The processor side: payloads decoded into columns, joined ``STEP_BODIES`` at a time and
    aggregated, with an ``advance`` every ``TICK_BODIES`` payloads."""

    def __init__(self, config: Config) -> None:
        self.decoder = EventDecoder(config)
        self.engine = Engine(config)
        self.count = 0
        self._pending: list[Batch] = []

    def add(self, payload: bytes) -> None:
        """Decode one payload; aggregate once a step's worth has arrived."""
        self._pending.append(self.decoder.decode(payload, _NOW_MS))
        self.count += 1
        if len(self._pending) == STEP_BODIES:
            self._step()

    def finish(self) -> Tick:
        """Aggregate what is pending and advance a last time."""
        if self._pending:
            self._step()
        return self.engine.advance()

    def _step(self) -> None:
        self.engine.process(Batch.concat(self._pending))
        self._pending = []
        if self.count % TICK_BODIES == 0:
            self.engine.advance()


def aggregate_in_process(config: Config, bodies: Sequence[bytes]) -> Engine:
    """Check, decode and aggregate every body in this process; returns the engine at the end."""
    processor = _Processor(config)
    for payload in ingest(EventDecoder(config), bodies):
        processor.add(payload)
    processor.finish()
    return processor.engine


def _processor(inbox: Connection, outbox: Connection) -> None:
    processor = _Processor(workload_config())
    outbox.send("ready")
    while payload := inbox.recv_bytes():
        processor.add(payload)
    tick = processor.finish()
    outbox.send((processor.count, tick.stream_time_ms, processor.engine.duplicates))


def _widen(conn: Connection, size: int = 1 << 20) -> None:
    """Let the pipe hold several payloads (1 MiB, the unprivileged maximum: 7 of this workload's
    134 KB bodies), so that the checking side runs ahead while the processor aggregates (the log
    does this in the service). Linux only; harmless elsewhere."""
    try:
        fcntl.fcntl(conn.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except OSError:
        pass


def aggregate_in_two(config: Config, bodies: Sequence[bytes]) -> float:
    """Check here, decode and aggregate in a second process; returns the seconds it took.

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
    for payload in ingest(decoder, bodies):
        data_out.send_bytes(payload)
    data_out.send_bytes(b"")
    result_in.recv()
    seconds = time.perf_counter() - start
    child.join()
    return seconds


def stage_costs(config: Config, bodies: Sequence[bytes], events: int) -> dict[str, float]:
    """Nanoseconds per event of each stage, run one after the other in this process:
    ``check`` (ingest), then ``decode_columns`` (decode + ``Batch.concat``) and ``aggregate``
    (``Engine.process`` + ``advance``) on the processor side."""
    decoder = EventDecoder(config)
    clock = time.perf_counter
    start = clock()
    payloads = list(ingest(decoder, bodies))
    checking = clock() - start
    engine = Engine(config)
    decoding = aggregated = 0.0
    for i in range(0, len(payloads), STEP_BODIES):
        t0 = clock()
        step = Batch.concat([decoder.decode(p, _NOW_MS) for p in payloads[i : i + STEP_BODIES]])
        t1 = clock()
        engine.process(step)
        if (i + STEP_BODIES) % TICK_BODIES == 0:
            engine.advance()
        decoding += t1 - t0
        aggregated += clock() - t1
    per_event = 1e9 / events
    return {
        "check": round(checking * per_event),
        "decode_columns": round(decoding * per_event),
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
