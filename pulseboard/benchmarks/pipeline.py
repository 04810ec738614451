"""``pulseboard bench pipeline``: a real server, real producers, POST to live WebSocket.

The benchmark starts ``pulseboard serve`` (its own process group, a throwaway data dir, a free
loopback port) with ``pipeline.yaml`` and runs two phases against it:

1. **Throughput.** Producer processes post 1,000-event JSON array bodies, one request after
   another on a keep-alive connection each, as fast as the server takes them (a 503 is retried
   after its ``Retry-After``). The result is end to end: accepted events divided by the time
   from the first post until the processor reports, on ``/metrics``, that it aggregated all of
   them. The ingest-only rate (202s per second) is reported beside it.
2. **Freshness.** The producers post at a steady rate (50,000 events/s by default). Every
   batch ends with a ``probe`` event carrying its producer and sequence number ``k``; the
   metric ``bench_freshness`` is the max of ``seq`` by producer. A WebSocket client subscribed
   on ``/v1/live`` sees batch ``k`` of a producer once that producer's pushed value reaches
   ``k`` (a producer posts its batches one after another and the processor reads the log in
   order). Freshness is the time from the batch's 202 to that push.

Bodies are encoded before the clock starts; a producer only writes the current time into
each body before posting it (one ``bytes.replace``), so every event is on time and producers
take little CPU from the server they share the machine with. Event ids are unique.

The server process, the live client and the producer processes are in
:mod:`pulseboard.benchmarks.harness`; this module holds the workload, the phases and the report.

The baseline is plain msgspec JSON decoding of the same bytes in this process, measured before
the server starts and again after it stops; the report gives the better of the two (the one
least disturbed by other tenants of a shared machine) and the ratio to it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import msgspec
import numpy as np

from pulseboard.benchmarks.harness import BenchError, BenchServer, Crew, LiveWatcher, ProducerSpec
from pulseboard.benchmarks.workload import make_event

BATCH_EVENTS = 1_000
"""Events per request: 999 shop events and one probe."""
DEFAULT_EVENTS = 2_000_000
DEFAULT_PRODUCERS = 4
FRESHNESS_RATE = 50_000
"""Events per second of the freshness phase."""
FRESHNESS_S = 20.0
TARGET_EVENTS_PER_S = 200_000
TARGET_FRESHNESS_P99_MS = 1_500
TEMPLATES = 16
"""Distinct bodies each producer cycles through (their ids differ per batch)."""
CONFIG_PATH = Path(__file__).with_name("pipeline.yaml")
FRESHNESS_METRIC = "bench_freshness"

_BATCH_TOKEN = b"#######"
_TIME_TOKEN = b'"time":8888888888888'
_SEQ_TOKEN = b'"seq":7777777'
_PROCESSED = "pulseboard_events_processed_total"


# --- bodies ---------------------------------------------------------------------------------


def make_templates(label: str, count: int, seed: int) -> list[bytes]:
    """``count`` bodies of ``BATCH_EVENTS`` events, with placeholders for the batch number
    (in every id), the event time and the probe's ``seq``."""
    rng = random.Random(seed)
    out = []
    for t in range(count):
        events: list[dict[str, object]] = []
        for i in range(BATCH_EVENTS - 1):
            event = make_event(rng, t * BATCH_EVENTS + i, 8_888_888_888_888, 50_000)
            event["id"] = f"{label}-{_BATCH_TOKEN.decode()}-{i:03d}"
            events.append(event)
        probe_id = f"{label}-{_BATCH_TOKEN.decode()}-probe"
        data = {"producer": label, "seq": 7_777_777}
        events.append({"id": probe_id, "type": "probe", "time": 8_888_888_888_888, "data": data})
        out.append(msgspec.json.encode(events))
    return out


def batch_body(template: bytes, seq: int) -> bytes:
    """The body of a producer's batch number ``seq`` (1, 2, ...): unique ids, ``seq`` set."""
    if seq >= 10**7:
        raise ValueError(f"batch number {seq} does not fit the 7-digit id field")
    return template.replace(_BATCH_TOKEN, b"%07d" % seq).replace(_SEQ_TOKEN, b'"seq":%d' % seq)


def stamp(body: bytes, time_ms: int) -> bytes:
    """``body`` with every event's time set to ``time_ms`` (epoch ms)."""
    return body.replace(_TIME_TOKEN, b'"time":%d' % time_ms)


def producer_bodies(label: str, batches: int, seed: int) -> list[bytes]:
    """The bodies of a producer's batches 1..``batches``, cycling through ``TEMPLATES``
    templates; run in the producer process (see ``ProducerSpec``)."""
    templates = make_templates(label, TEMPLATES, seed)
    return [batch_body(templates[k % TEMPLATES], k) for k in range(1, batches + 1)]


def decode_baseline(bodies: Sequence[bytes], passes: int = 3) -> float:
    """Events/s of plain msgspec decoding of ``bodies`` into Python objects (best pass)."""
    decoder = msgspec.json.Decoder()
    best = math.inf
    for _ in range(passes):
        start = time.perf_counter()
        for body in bodies:
            decoder.decode(body)
        best = min(best, time.perf_counter() - start)
    return len(bodies) * BATCH_EVENTS / best


def visible_at(
    acks: Sequence[tuple[int, float]], seen: Sequence[tuple[float, float]]
) -> list[float | None]:
    """For each acknowledged batch ``(seq, ack time)``, the time of the first pushed value
    ``(time, value)`` that reached ``seq`` (None if none did); ``seen`` in arrival order."""
    if not seen:
        return [None] * len(acks)
    arrived = np.array([t for t, _ in seen], dtype=np.float64)
    reached = np.maximum.accumulate(np.array([v for _, v in seen], dtype=np.float64))
    first = np.searchsorted(reached, [seq for seq, _ in acks], side="left").tolist()
    return [float(arrived[i]) if i < len(seen) else None for i in first]


def latencies_ms(
    acks: Sequence[tuple[int, float]], seen: Sequence[tuple[float, float]]
) -> list[float]:
    """Milliseconds from each batch's 202 to its first visible push (unseen batches left out)."""
    return [
        (t - ack) * 1000
        for (_, ack), t in zip(acks, visible_at(acks, seen), strict=True)
        if t is not None
    ]


def _percentiles(values_ms: Sequence[float]) -> dict[str, Any]:
    if not values_ms:
        return {"p50": None, "p90": None, "p99": None, "max": None, "min": None, "count": 0}
    array = np.asarray(values_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(array, [50, 90, 99]).tolist()
    return {
        "p50": round(p50, 1),
        "p90": round(p90, 1),
        "p99": round(p99, 1),
        "max": round(float(array.max()), 1),
        "min": round(float(array.min()), 1),
        "count": len(values_ms),
    }


# --- the two phases -------------------------------------------------------------------------


@dataclass(slots=True)
class _Watch:
    """What polling ``/metrics`` saw during a phase."""

    processed: float = 0.0
    max_backlog_events: float = 0.0
    ticks_ms: list[float] = field(default_factory=list)
    """Durations of the processor's ticks, as far as polling saw them change."""

    def sample(self, server: BenchServer, processed_before: float) -> float:
        """Poll once; returns the events processed since the phase began."""
        telemetry = server.telemetry()
        self.processed = telemetry[_PROCESSED] - processed_before
        self.max_backlog_events = max(
            self.max_backlog_events, telemetry.get("pulseboard_log_backlog_events", 0.0)
        )
        tick = telemetry.get("pulseboard_processor_tick_milliseconds")
        if tick is not None and (not self.ticks_ms or tick != self.ticks_ms[-1]):
            self.ticks_ms.append(tick)
        return self.processed

    def ticks(self) -> dict[str, Any]:
        stats = _percentiles(self.ticks_ms)
        return {k: stats[k] for k in ("p50", "max", "count")}


def _specs(
    server: BenchServer, prefix: str, batches: int, producers: int, rate: float | None
) -> list[ProducerSpec]:
    host, port, seed = server.host, server.port, ord(prefix[0]) * 1_000
    split = [batches // producers + (i < batches % producers) for i in range(producers)]
    return [
        ProducerSpec(
            f"{prefix}{i}", i, producers, n, host, port, producer_bodies, stamp, rate, seed + i
        )
        for i, n in enumerate(split)
        if n
    ]


def _common(
    server: BenchServer, crew: Crew, watch: _Watch, cpu_before: dict[str, float], wall_s: float
) -> dict[str, Any]:
    """The fields both phases report."""
    outcomes = crew.outcomes
    cpu_after = server.cpu_s()
    cpu = {name: round(cpu_after[name] - cpu_before[name], 2) for name in cpu_after}
    return {
        "events": sum(o["accepted"] for o in outcomes),
        "events_processed": round(watch.processed),
        "producers": len(outcomes),
        "responses_503": sum(o["unavailable"] for o in outcomes),
        "post_ms": _percentiles([s * 1000 for o in outcomes for s in o["post_s"]]),
        "max_backlog_events": round(watch.max_backlog_events),
        "tick_ms": watch.ticks(),
        "cpu_s": {
            **cpu,
            "producers": round(sum(o["cpu_s"] for o in outcomes), 2),
            "wall": round(wall_s, 2),
        },
    }


def _wait_processed(
    server: BenchServer, crew: Crew, watch: _Watch, before: float, timeout_s: float
) -> float:
    """Poll until the producers are done and everything they had accepted is processed;
    returns the monotonic time at which that was first seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        crew.collect(0.1)
        processed = watch.sample(server, before)
        now = time.monotonic()
        if crew.done and processed >= sum(o["accepted"] for o in crew.outcomes):
            return now
        if now > deadline:
            raise BenchError(
                f"after {timeout_s:.0f} s, {processed:.0f} events were processed and "
                f"{len(crew.outcomes)} of {len(crew.specs)} producers had finished"
            )
        if server.proc.poll() is not None:
            raise BenchError(f"the server exited with {server.proc.returncode}")


def throughput_phase(server: BenchServer, events: int, producers: int) -> dict[str, Any]:
    """Post ``events`` (whole batches) flat out; end to end and ingest-only rates."""
    batches = max(1, math.ceil(events / BATCH_EVENTS))
    crew = Crew(_specs(server, "t", batches, producers, None))
    try:
        crew.prepare()
        watch = _Watch()
        before = server.telemetry()[_PROCESSED]
        cpu_before = server.cpu_s()
        start = crew.go()
        end = _wait_processed(server, crew, watch, before, 120.0 + events / 5_000)
    finally:
        crew.close()
    common = _common(server, crew, watch, cpu_before, end - start)
    accepted = common["events"]
    last_ack = max(o["last_ack"] for o in crew.outcomes)
    return {
        "events_per_s": round(accepted / (end - start)),
        "seconds": round(end - start, 3),
        "ingest_events_per_s": round(accepted / (last_ack - start)),
        "ingest_seconds": round(last_ack - start, 3),
        **common,
    }


def freshness_phase(
    server: BenchServer, rate: int, seconds: float, producers: int
) -> dict[str, Any]:
    """Post at ``rate`` events/s for ``seconds``; time from each 202 to its live push."""
    batches = max(producers, round(rate * seconds / BATCH_EVENTS))
    crew = Crew(_specs(server, "f", batches, producers, rate / BATCH_EVENTS))
    try:
        crew.prepare()
        watch = _Watch()
        before = server.telemetry()[_PROCESSED]
        cpu_before = server.cpu_s()
        with LiveWatcher(server.url, FRESHNESS_METRIC) as live:
            start = crew.go(lead_s=0.2)
            end = _wait_processed(server, crew, watch, before, 120.0 + seconds * 2)
            expected = {o["label"]: o["batches"] for o in crew.outcomes}
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline and live.error is None:
                latest = live.latest()
                if all(latest.get(label, 0) >= n for label, n in expected.items()):
                    break
                time.sleep(0.05)
            if live.error is not None:
                raise BenchError(f"the live WebSocket failed: {live.error}")
    finally:
        crew.close()
    latencies: list[float] = []
    unseen = 0
    for outcome in crew.outcomes:
        seen = [(t, v) for t, producer, v in live.seen if producer == outcome["label"]]
        found = latencies_ms(outcome["acks"], seen)
        latencies.extend(found)
        unseen += len(outcome["acks"]) - len(found)
    common = _common(server, crew, watch, cpu_before, end - start)
    last_ack = max(o["last_ack"] for o in crew.outcomes)
    return {
        "freshness_ms": _percentiles(latencies),
        "target_events_per_s": rate,
        "events_per_s": round(common["events"] / (last_ack - start)),
        "seconds": round(last_ack - start, 3),
        "batches": sum(o["batches"] for o in crew.outcomes),
        "unseen_batches": unseen,
        "live_messages": live.messages,
        **common,
    }


# --- the command ----------------------------------------------------------------------------


def run_pipeline_bench(
    events: int | None,
    as_json: bool,
    out: TextIO,
    *,
    producers: int = DEFAULT_PRODUCERS,
    freshness_rate: int = FRESHNESS_RATE,
    freshness_s: float = FRESHNESS_S,
    config_path: Path = CONFIG_PATH,
) -> int:
    """Run both phases against a fresh server and print the report; returns 0.

    ``events`` (default 2,000,000) is rounded up to whole batches of 1,000. The server, its
    data dir and the producers are gone when this returns, whatever happened."""
    events = events or DEFAULT_EVENTS
    load = os.getloadavg()[0]
    baseline_bodies = [
        stamp(batch_body(t, k), time.time_ns() // 1_000_000)
        for k, t in enumerate(make_templates("t0", TEMPLATES, 0) * 4, start=1)
    ][: max(1, min(64, events // BATCH_EVENTS))]
    baselines = [decode_baseline(baseline_bodies, passes=5)]
    workdir = Path(tempfile.mkdtemp(prefix="pulseboard-bench-"))
    server = None
    try:
        server = BenchServer(config_path, workdir)
        server.wait_ready()
        throughput = throughput_phase(server, events, producers)
        freshness = freshness_phase(server, freshness_rate, freshness_s, producers)
        final = server.telemetry()
    except BenchError as exc:
        logs = server.logs() if server is not None else ""
        raise BenchError(f"{exc}\n--- server log (tail) ---\n{logs}") from exc
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    baselines.append(decode_baseline(baseline_bodies, passes=5))
    report = _report(throughput, freshness, baselines, final, config_path)
    report["machine"]["load_average_1m"] = round(load, 2)
    out.write(json.dumps(report, indent=None if as_json else 2) + "\n")
    return 0


def _report(
    throughput: dict[str, Any],
    freshness: dict[str, Any],
    baselines: list[float],
    final: dict[str, float],
    config_path: Path,
) -> dict[str, Any]:
    rate = throughput["events_per_s"]
    baseline = max(baselines)
    p99 = freshness["freshness_ms"]["p99"]
    return {
        "name": "pipeline",
        "events_per_s": rate,
        "freshness_ms": freshness.pop("freshness_ms"),
        **throughput,
        "batch_events": BATCH_EVENTS,
        "baseline": {
            "name": "decode",
            "events_per_s": round(baseline),
            "before_after": [round(b) for b in baselines],
        },
        "ratio": round(rate / baseline, 3),
        "freshness": freshness,
        "processor_rss_bytes": round(final.get("pulseboard_processor_memory_bytes", 0.0)),
        "targets": {
            "events_per_s": TARGET_EVENTS_PER_S,
            "freshness_p99_ms": TARGET_FRESHNESS_P99_MS,
            "freshness_at_events_per_s": FRESHNESS_RATE,
        },
        "met": {
            "events_per_s": rate >= TARGET_EVENTS_PER_S,
            "freshness_p99_ms": p99 is not None
            and p99 <= TARGET_FRESHNESS_P99_MS
            and freshness["target_events_per_s"] >= FRESHNESS_RATE,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "msgspec": msgspec.__version__,
        },
        "config": config_path.name,
    }
