"""The machinery of ``pulseboard bench pipeline``: the server under test, the live client and
the producer processes. It knows nothing of the workload's bodies or metrics; the benchmark
passes them in.

- :class:`BenchServer` runs ``pulseboard serve`` in its own process group on a free loopback
  port and a throwaway data dir, reads ``/metrics`` and the CPU time of the API process and of
  the processor, and stops the whole group.
- :class:`LiveWatcher` subscribes to one metric on ``/v1/live`` on a background thread and
  records every pushed value with its arrival time.
- :class:`Crew` starts producer processes (spawn start method), waits until each has encoded
  its bodies, releases them at once and collects their outcomes. Each producer posts its
  bodies one after another on one keep-alive connection, flat out or on a schedule, stamping
  the current time into each body just before it is sent.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import multiprocessing
import os
import queue
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from pulseboard.errors import PulseboardError


class BenchError(PulseboardError):
    """The benchmark could not run to the end; the message says what broke."""


# --- the server -----------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BenchServer:
    """``pulseboard serve`` in its own process group on a throwaway data dir."""

    def __init__(self, config_path: Path, workdir: Path) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.url = f"http://{self.host}:{self.port}"
        self.log_path = workdir / "server.log"
        command = [sys.executable, "-m", "pulseboard.cli", "serve", "--port", str(self.port)]
        command += ["--config", str(config_path), "--data-dir", str(workdir / "data")]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def get(self, path: str) -> tuple[int, bytes]:
        """``GET path`` on a fresh connection; returns (status, body)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Poll ``/readyz`` until it answers 200; BenchError if the server exits or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the server exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise BenchError(f"the server was not ready within {timeout_s:.0f} s:\n{self.logs()}")

    def telemetry(self) -> dict[str, float]:
        """``/metrics`` as {sample name with labels: value}."""
        status, body = self.get("/metrics")
        if status != 200:
            raise BenchError(f"GET /metrics answered {status}")
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds used so far by the API process and by its children (the processor)."""
        children = _children(self.proc.pid)
        return {
            "api": _proc_cpu_s(self.proc.pid),
            "processor": sum(_proc_cpu_s(pid) for pid in children),
        }

    def stop(self) -> None:
        """SIGTERM to the group, then SIGKILL if it does not stop within 60 s."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the processor child, same group
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def logs(self) -> str:
        """The last 4,000 characters of the server's log."""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` from /proc (0 where /proc is not available)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry.parent.name))
    return out


# --- the live client ------------------------------------------------------------------------


class LiveWatcher:
    """A WebSocket client on ``/v1/live`` subscribed to ``metric``, recording every pushed value
    as (monotonic time, its ``producer`` label, value); ``error`` is set if the socket fails."""

    def __init__(self, url: str, metric: str) -> None:
        self.url = url.replace("http://", "ws://") + "/v1/live"
        self.metric = metric
        self.seen: list[tuple[float, str, float]] = []
        self.messages = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-live", daemon=True)

    def __enter__(self) -> LiveWatcher:
        self._thread.start()
        if not self._subscribed.wait(30):
            raise BenchError(f"could not subscribe on {self.url}: {self.error}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def latest(self) -> dict[str, float]:
        """The highest value pushed so far, by producer."""
        out: dict[str, float] = {}
        for _, producer, value in list(self.seen):
            out[producer] = max(out.get(producer, -math.inf), value)
        return out

    def _run(self) -> None:
        from websockets.sync.client import connect

        try:
            with connect(self.url, max_size=None) as ws:
                ws.send(json.dumps({"subscribe": [self.metric]}))
                self._subscribed.set()
                while not self._stop.is_set():
                    try:
                        text = ws.recv(timeout=0.2)
                    except TimeoutError:
                        continue
                    arrived = time.monotonic()
                    self._record(arrived, msgspec.json.decode(text))
        except Exception as exc:  # reported by the freshness phase
            self.error = f"{type(exc).__name__}: {exc}"
            self._subscribed.set()

    def _record(self, arrived: float, message: Any) -> None:
        if not isinstance(message, dict) or message.get("metric") != self.metric:
            return
        self.messages += 1
        for item in message.get("values", []):
            value = item.get("value")
            if value is not None:
                self.seen.append((arrived, str(item["labels"]["producer"]), float(value)))


# --- producers ------------------------------------------------------------------------------


BodyMaker = Callable[[str, int, int], list[bytes]]
"""``(label, batches, seed)`` -> the bodies of batches 1..``batches``, in posting order."""
Stamper = Callable[[bytes, int], bytes]
"""``(body, time_ms)`` -> ``body`` with every event's time set to ``time_ms`` (epoch ms)."""


@dataclass(frozen=True, slots=True)
class ProducerSpec:
    """What one producer process sends: batches 1..``batches`` labelled ``label``, encoded by
    ``make_bodies`` in the producer process before the start and stamped by ``stamp`` just
    before each post; with ``batches_per_s`` (all producers together) it keeps to a schedule,
    else it goes flat out. Both functions must be module-level: spawn pickles them by name."""

    label: str
    index: int
    producers: int
    batches: int
    host: str
    port: int
    make_bodies: BodyMaker
    stamp: Stamper
    batches_per_s: float | None = None
    seed: int = 0


class _Poster:
    """One keep-alive HTTP/1.1 connection posting bodies to ``/v1/events``."""

    def __init__(self, host: str, port: int, stamp: Stamper) -> None:
        self._conn = http.client.HTTPConnection(host, port, timeout=120)
        self._stamp = stamp
        self.unavailable = 0

    def post(self, body: bytes) -> int:
        """Post until accepted (503s are retried after Retry-After); returns events accepted
        (the body is re-stamped with the current time before each attempt)."""
        while True:
            self._conn.request(
                "POST",
                "/v1/events",
                body=self._stamp(body, time.time_ns() // 1_000_000),
                headers={"Content-Type": "application/json"},
            )
            response = self._conn.getresponse()
            data = response.read()
            if response.status == 202:
                return int(msgspec.json.decode(data)["accepted"])
            if response.status != 503:
                raise RuntimeError(f"POST /v1/events answered {response.status}: {data[:300]!r}")
            self.unavailable += 1
            time.sleep(float(response.getheader("Retry-After") or "1"))

    def close(self) -> None:
        self._conn.close()


def _produce(spec: ProducerSpec, start: Any, t0: Any, results: Any) -> None:
    """A producer process: encode the bodies, report ready, wait for the start, post them."""
    try:
        bodies = spec.make_bodies(spec.label, spec.batches, spec.seed)
        poster = _Poster(spec.host, spec.port, spec.stamp)
        results.put(("ready", spec.label, None))
        start.wait()
        cpu0 = _self_cpu_s()
        acks: list[tuple[int, float]] = []
        posts: list[float] = []
        accepted = 0
        first = time.monotonic()
        for k, body in enumerate(bodies, start=1):
            if spec.batches_per_s is not None:
                due = t0.value + ((k - 1) * spec.producers + spec.index) / spec.batches_per_s
                time.sleep(max(0.0, due - time.monotonic()))
            sent = time.monotonic()
            accepted += poster.post(body)
            acked = time.monotonic()
            acks.append((k, acked))
            posts.append(acked - sent)
        poster.close()
        outcome = {
            "label": spec.label,
            "batches": spec.batches,
            "accepted": accepted,
            "unavailable": poster.unavailable,
            "first_post": first,
            "last_ack": acks[-1][1] if acks else first,
            "acks": acks,
            "post_s": posts,
            "cpu_s": _self_cpu_s() - cpu0,
        }
        results.put(("done", spec.label, outcome))
    except Exception as exc:  # reported to the parent, which stops the run
        results.put(("error", spec.label, f"{type(exc).__name__}: {exc}"))


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Crew:
    """Producer processes, started together, released at once, their outcomes collected."""

    def __init__(self, specs: list[ProducerSpec]) -> None:
        self.specs = specs
        self.context = multiprocessing.get_context("spawn")
        self.processes: list[Any] = []
        self.outcomes: list[dict[str, Any]] = []
        self.start_event = self.context.Event()
        self.t0 = self.context.Value("d", 0.0)
        self.results = self.context.Queue()

    def prepare(self, timeout_s: float = 300.0) -> None:
        """Start the processes and wait until each has encoded its bodies."""
        for spec in self.specs:
            process = self.context.Process(
                target=_produce,
                args=(spec, self.start_event, self.t0, self.results),
                name=f"bench-producer-{spec.label}",
                daemon=True,
            )
            process.start()
            self.processes.append(process)
        ready = 0
        deadline = time.monotonic() + timeout_s
        while ready < len(self.specs):
            if time.monotonic() > deadline:
                raise BenchError(f"the producers were not ready within {timeout_s:.0f} s")
            ready += self.collect(0.5).count("ready")

    def go(self, lead_s: float = 0.0) -> float:
        """Release the producers; returns the start time (monotonic)."""
        self.t0.value = time.monotonic() + lead_s
        self.start_event.set()
        return float(self.t0.value)

    @property
    def done(self) -> bool:
        """Whether every producer has reported its outcome."""
        return len(self.outcomes) == len(self.specs)

    def collect(self, timeout_s: float) -> list[str]:
        """Take the messages that arrive within ``timeout_s``; returns their kinds."""
        kinds = []
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                kind, label, payload = self.results.get(
                    timeout=max(0.001, deadline - time.monotonic())
                )
            except queue.Empty:
                break
            if kind == "error":
                raise BenchError(f"producer {label} failed: {payload}")
            if kind == "done":
                self.outcomes.append(payload)
            kinds.append(kind)
        if not kinds and any(p.exitcode not in (None, 0) for p in self.processes):
            raise BenchError("a producer process died")
        return kinds

    def close(self) -> None:
        """Wait for the processes to exit; kill those still running after 5 s."""
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
