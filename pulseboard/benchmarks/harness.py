"""The machinery of ``pulseboard bench pipeline``: the server under test, the live client and
the producer processes. It knows nothing of the workload's bodies or metrics; the benchmark
passes them in.

- :class:`BenchServer` runs the server on a free loopback port, each process in its own process
  group: ``pulseboard serve`` on a throwaway data dir (embedded), or one ``serve --role api``
  and N ``serve --role processor`` (distributed). It reads ``/metrics`` and the CPU time of
  the API process and of the processors, and stops every group.
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
from collections.abc import Callable, Iterator
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
    """The server under test on a free loopback port, each process in its own process group.

    Embedded (``processors`` 0): one ``pulseboard serve`` on a throwaway data dir, whose
    processor is its child. Distributed (``processors`` N >= 1, a config whose stores are
    Redis and PostgreSQL): one ``serve --role api`` and N ``serve --role processor``. Each
    process logs to its own file in ``workdir``. ``proc`` is the process serving HTTP."""

    def __init__(self, config_path: Path, workdir: Path, *, processors: int = 0) -> None:
        if processors < 0:
            raise ValueError(f"processors must be 0 (embedded) or more, got {processors}")
        self.host = "127.0.0.1"
        self.port = free_port()
        self.url = f"http://{self.host}:{self.port}"
        self.distributed = processors > 0
        self.workdir = workdir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        serve = [sys.executable, "-m", "pulseboard.cli", "serve", "--config", str(config_path)]
        http = [*serve, "--port", str(self.port)]
        try:
            if self.distributed:
                self._start("api", [*http, "--role", "api"])
                for i in range(1, processors + 1):
                    self._start(f"processor_{i}", [*serve, "--role", "processor"])
            else:
                self._start("api", [*http, "--data-dir", str(workdir / "data")])
        except BaseException:
            self.stop()
            raise
        self.proc = self.processes["api"]

    def _start(self, name: str, command: list[str]) -> None:
        with (self.workdir / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
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

    def exited(self) -> str | None:
        """Which process exited and with what code, None while all run."""
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                return f"the {name.replace('_', ' ')} process exited with {proc.returncode}"
        return None

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Poll ``/readyz`` until it answers 200; BenchError if a process exits or time runs
        out. (Distributed: ready once the stores answer and one processor has reported.)"""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            gone = self.exited()
            if gone is not None:
                raise BenchError(f"{gone}:\n{self.logs()}")
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
        """CPU seconds used so far: ``api``, ``processor`` (embedded: the API's children;
        distributed: all processors together) and, distributed, ``processor_1`` .. N."""
        api = self.processes["api"].pid
        out = {"api": _proc_cpu_s(api)}
        if not self.distributed:
            out["processor"] = sum(_proc_cpu_s(pid) for pid in _children(api))
            return out
        each = {n: _proc_cpu_s(p.pid) for n, p in self.processes.items() if n != "api"}
        out["processor"] = sum(each.values())
        out.update(each)
        return out

    def stop(self) -> None:
        """SIGTERM to every group, then SIGKILL to those not stopped within 60 s; returns once
        no process of any group is left (a processor child of the embedded API included)."""
        for proc in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        for proc in self.processes.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
        deadline = time.monotonic() + 30
        groups = [proc.pid for proc in self.processes.values()]
        while groups and time.monotonic() < deadline:  # children left in a group
            groups = [g for g in groups if _group_alive(g)]
            time.sleep(0.05)
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)

    def logs(self) -> str:
        """The last 4,000 characters of each process's log."""
        parts = []
        for name in self.processes:
            try:
                text = (self.workdir / f"{name}.log").read_text(errors="replace")[-4000:]
            except OSError:
                text = "(no log)"
            parts.append(text if len(self.processes) == 1 else f"[{name}]\n{text}")
        return "\n".join(parts)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def interrupted_by_signals() -> Iterator[None]:
    """While it lasts, SIGTERM and SIGHUP raise ``KeyboardInterrupt`` as Ctrl-C does, so the
    caller's cleanup (stopping the server's process groups, which Ctrl-C on a terminal does
    not reach) runs for them too. Only in the main thread; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def busy_seconds(stat_text: str, ticks_per_s: float) -> float:
    """CPU seconds every CPU of the machine spent busy since boot, from the text of
    ``/proc/stat`` (its ``cpu`` line: user, nice, system, idle, iowait, irq, softirq, steal;
    everything but idle and iowait counts as busy)."""
    for line in stat_text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(f) for f in fields[1:9]]
            return (sum(ticks) - ticks[3] - ticks[4]) / ticks_per_s
    raise ValueError("no 'cpu' line in /proc/stat")


def machine_busy_s() -> float:
    """``busy_seconds`` of this machine now (0 where /proc is not available): with the CPU
    time of the processes under test, it tells what other tenants of the machine took."""
    try:
        text = Path("/proc/stat").read_text()
    except OSError:
        return 0.0
    return busy_seconds(text, os.sysconf("SC_CLK_TCK"))


def own_cpu_s() -> float:
    """CPU seconds of this process (all its threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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
        cpu0 = own_cpu_s()
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
            "cpu_s": own_cpu_s() - cpu0,
        }
        results.put(("done", spec.label, outcome))
    except Exception as exc:  # reported to the parent, which stops the run
        results.put(("error", spec.label, f"{type(exc).__name__}: {exc}"))


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
