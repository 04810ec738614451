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

The server part is either embedded (one ``pulseboard serve``) or, with :class:`Distributed`,
one ``serve --role api`` and N ``serve --role processor`` on a throwaway key prefix of a Redis
and a throwaway database on a PostgreSQL server (:mod:`pulseboard.benchmarks.stores`); the
phases are the same. Each phase also reports the CPU of every process, of this one and of the
whole machine (what other tenants took), and, distributed, what Redis did (``INFO
commandstats`` and ``cpu``, per 1,000 events). "Processed" is the API's
``pulseboard_events_processed_total`` in both modes: in distributed mode the API sums the
processors' reports into it.

The server processes, the live client and the producer processes are in
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

from pulseboard.benchmarks.harness import (
    BenchError,
    BenchServer,
    Crew,
    LiveWatcher,
    ProducerSpec,
    interrupted_by_signals,
    machine_busy_s,
    own_cpu_s,
)
from pulseboard.benchmarks.stores import (
    DEFAULT_POSTGRES_URL,
    DEFAULT_REDIS_URL,
    BenchStores,
    RedisSample,
    redis_usage,
)
from pulseboard.benchmarks.workload import make_event
from pulseboard.config import mask_url

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


@dataclass(frozen=True, slots=True)
class Reading:
    """The meters at one moment (``at``, monotonic): events processed (``/metrics``), CPU
    seconds by process (``bench``: this process; ``machine``: every CPU of the machine busy)
    and, distributed, Redis's counters."""

    at: float
    processed: float
    cpu_s: dict[str, float]
    redis: RedisSample | None


@dataclass(frozen=True, slots=True)
class _Meters:
    """What a phase reads as it starts and ends: the server's ``/metrics`` and CPU times
    and, distributed, what Redis counts (``stores``)."""

    server: BenchServer
    stores: BenchStores | None = None

    def read(self) -> Reading:
        redis = None if self.stores is None else self.stores.sample()
        processed = self.server.telemetry()[_PROCESSED]
        cpu = {**self.server.cpu_s(), "bench": own_cpu_s(), "machine": machine_busy_s()}
        return Reading(time.monotonic(), processed, cpu, redis)


def _cpu_between(before: Reading, after: Reading) -> dict[str, float]:
    """CPU seconds by process between two readings (Redis's too, distributed)."""
    cpu = {name: after.cpu_s[name] - before.cpu_s[name] for name in after.cpu_s}
    if before.redis is not None and after.redis is not None:
        cpu["redis"] = max(0.0, after.redis.cpu_s - before.redis.cpu_s)
    return cpu


def drain_stats(
    start: Reading, end: Reading, done_s: float, processed_when_done: float
) -> dict[str, Any]:
    """From ``start`` (the producers seen done) to ``done_s`` (the counter first showed
    ``processed_when_done``): the rate at which the backlog was worked off with no ingest
    competing, and the cores each process used from ``start`` to ``end``."""
    seconds = done_s - start.at
    left = max(0.0, processed_when_done - start.processed)
    return {
        "seconds": round(seconds, 2),
        "events": round(left),
        "events_per_s": round(left / seconds) if seconds > 0 else None,
        "cores": cores({**_cpu_between(start, end), "wall": end.at - start.at}),
    }


def _common(
    meters: _Meters, crew: Crew, watch: _Watch, start: Reading, end: Reading, wall_s: float
) -> dict[str, Any]:
    """The fields both phases report (distributed: also what Redis did)."""
    outcomes = crew.outcomes
    cpu = {name: round(end.cpu_s[name] - start.cpu_s[name], 2) for name in end.cpu_s}
    events = sum(o["accepted"] for o in outcomes)
    common: dict[str, Any] = {
        "events": events,
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
    busy = {name: s for name, s in common["cpu_s"].items() if name != "wall"}
    if start.redis is not None and end.redis is not None:
        common["redis"] = redis_usage(start.redis, end.redis, events, own={"info": 1})
        busy["redis"] = common["redis"]["cpu_s"]
    common["cpu_us_per_event"] = {
        name: round(seconds * 1e6 / events, 2) if events else None for name, seconds in busy.items()
    }
    common["cores"] = cores({**busy, "wall": wall_s})
    return common


def cores(cpu_s: dict[str, float]) -> dict[str, float]:
    """CPU seconds by process over ``cpu_s["wall"]`` seconds as cores used, plus ``others``:
    what the machine was busy with beyond the processes measured (``api``, ``processor``
    (all of them), ``producers``, ``redis``, ``bench``), i.e. other tenants of the machine."""
    wall = cpu_s["wall"]
    if wall <= 0:
        return {}
    out = {name: round(s / wall, 2) for name, s in cpu_s.items() if name != "wall"}
    if "machine" in cpu_s:
        ours = sum(cpu_s.get(n, 0.0) for n in ("api", "processor", "producers", "redis", "bench"))
        out["others"] = round(max(0.0, cpu_s["machine"] - ours) / wall, 2)
    return out


def _wait_processed(
    meters: _Meters, crew: Crew, watch: _Watch, before: float, timeout_s: float
) -> tuple[float, Reading | None]:
    """Poll until the producers are done and everything they had accepted is processed;
    returns the monotonic time at which that was first seen and the meters as the producers
    were seen done with a backlog left (None if there was none)."""
    server = meters.server
    deadline = time.monotonic() + timeout_s
    drain: Reading | None = None
    while True:
        crew.collect(0.1)
        processed = watch.sample(server, before)
        now = time.monotonic()
        if crew.done:
            if processed >= sum(o["accepted"] for o in crew.outcomes):
                return now, drain
            if drain is None:
                drain = meters.read()
        if now > deadline:
            raise BenchError(
                f"after {timeout_s:.0f} s, {processed:.0f} events were processed and "
                f"{len(crew.outcomes)} of {len(crew.specs)} producers had finished"
            )
        gone = server.exited()
        if gone is not None:
            raise BenchError(gone)


def throughput_phase(meters: _Meters, events: int, producers: int) -> dict[str, Any]:
    """Post ``events`` (whole batches) flat out; end to end and ingest-only rates."""
    server = meters.server
    batches = max(1, math.ceil(events / BATCH_EVENTS))
    crew = Crew(_specs(server, "t", batches, producers, None))
    try:
        crew.prepare()
        watch = _Watch()
        before = meters.read()
        start = crew.go()
        end, drain = _wait_processed(meters, crew, watch, before.processed, 120.0 + events / 5_000)
        after = meters.read()
    finally:
        crew.close()
    common = _common(meters, crew, watch, before, after, end - start)
    accepted = common["events"]
    last_ack = max(o["last_ack"] for o in crew.outcomes)
    out = {
        "events_per_s": round(accepted / (end - start)),
        "seconds": round(end - start, 3),
        "ingest_events_per_s": round(accepted / (last_ack - start)),
        "ingest_seconds": round(last_ack - start, 3),
        **common,
    }
    if drain is not None:
        out["drain"] = drain_stats(drain, after, end, before.processed + accepted)
    return out


def freshness_phase(meters: _Meters, rate: int, seconds: float, producers: int) -> dict[str, Any]:
    """Post at ``rate`` events/s for ``seconds``; time from each 202 to its live push."""
    server = meters.server
    batches = max(producers, round(rate * seconds / BATCH_EVENTS))
    crew = Crew(_specs(server, "f", batches, producers, rate / BATCH_EVENTS))
    try:
        crew.prepare()
        watch = _Watch()
        before = meters.read()
        with LiveWatcher(server.url, FRESHNESS_METRIC) as live:
            start = crew.go(lead_s=0.2)
            end, _ = _wait_processed(meters, crew, watch, before.processed, 120.0 + seconds * 2)
            expected = {o["label"]: o["batches"] for o in crew.outcomes}
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline and live.error is None:
                latest = live.latest()
                if all(latest.get(label, 0) >= n for label, n in expected.items()):
                    break
                time.sleep(0.05)
            if live.error is not None:
                raise BenchError(f"the live WebSocket failed: {live.error}")
        after = meters.read()
    finally:
        crew.close()
    latencies: list[float] = []
    unseen = 0
    for outcome in crew.outcomes:
        seen = [(t, v) for t, producer, v in live.seen if producer == outcome["label"]]
        found = latencies_ms(outcome["acks"], seen)
        latencies.extend(found)
        unseen += len(outcome["acks"]) - len(found)
    common = _common(meters, crew, watch, before, after, end - start)
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


@dataclass(frozen=True, slots=True)
class Distributed:
    """Run the server as one ``serve --role api`` and ``processors`` ``serve --role processor``
    processes on a throwaway key prefix of the Redis at ``redis_url`` and a throwaway database
    on the PostgreSQL server at ``postgres_url`` (both on this machine)."""

    processors: int = 1
    redis_url: str = DEFAULT_REDIS_URL
    postgres_url: str = DEFAULT_POSTGRES_URL


def run_pipeline_bench(
    events: int | None,
    as_json: bool,
    out: TextIO,
    *,
    producers: int = DEFAULT_PRODUCERS,
    freshness_rate: int = FRESHNESS_RATE,
    freshness_s: float = FRESHNESS_S,
    config_path: Path = CONFIG_PATH,
    distributed: Distributed | None = None,
) -> int:
    """Run both phases against a fresh server and print the report; returns 0.

    ``events`` (default 2,000,000) is rounded up to whole batches of 1,000. The server (every
    process of it), its data dir, the producers and, distributed, the Redis keys and the
    database are gone when this returns, whatever happened (SIGTERM and SIGHUP included)."""
    if distributed is not None and distributed.processors < 1:
        raise BenchError(f"--processors must be at least 1, got {distributed.processors}")
    events = events or DEFAULT_EVENTS
    load = os.getloadavg()[0]
    baseline_bodies = [
        stamp(batch_body(t, k), time.time_ns() // 1_000_000)
        for k, t in enumerate(make_templates("t0", TEMPLATES, 0) * 4, start=1)
    ][: max(1, min(64, events // BATCH_EVENTS))]
    baselines = [decode_baseline(baseline_bodies, passes=5)]
    workdir = Path(tempfile.mkdtemp(prefix="pulseboard-bench-"))
    server = None
    stores = None
    try:
        with interrupted_by_signals():
            server_config = config_path
            if distributed is not None:
                stores = BenchStores(distributed.redis_url, distributed.postgres_url)
                server_config = workdir / config_path.name
                server_config.write_text(stores.config_text(config_path.read_text()))
            processors = 0 if distributed is None else distributed.processors
            server = BenchServer(server_config, workdir, processors=processors)
            server.wait_ready()
            if stores is not None:
                stores.wait_processors(processors, server.exited)
            meters = _Meters(server, stores)
            throughput = throughput_phase(meters, events, producers)
            freshness = freshness_phase(meters, freshness_rate, freshness_s, producers)
            final = server.telemetry()
    except BenchError as exc:
        if server is None:
            raise
        raise BenchError(f"{exc}\n--- server log (tail) ---\n{server.logs()}") from exc
    finally:
        try:
            if server is not None:
                server.stop()
        finally:
            if stores is not None:
                stores.close()
            shutil.rmtree(workdir, ignore_errors=True)
    baselines.append(decode_baseline(baseline_bodies, passes=5))
    report = _report(throughput, freshness, baselines, final, config_path)
    report["machine"]["load_average_1m"] = round(load, 2)
    if distributed is not None and stores is not None:
        name = report.pop("name")
        report = {"name": name, "mode": "distributed", "processors": processors, **report}
        report["stores"] = {
            "redis": mask_url(distributed.redis_url),
            "redis_version": stores.redis_version,
            "redis_clients_before": stores.connected_clients,
            "postgresql": mask_url(distributed.postgres_url),
        }
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
