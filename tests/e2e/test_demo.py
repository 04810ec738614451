"""``pulseboard demo``: a server with simulated traffic, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.e2e.conftest import free_port


def _wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _orders_seen(url: str) -> bool:
    try:
        metrics = httpx.get(f"{url}/v1/metrics", timeout=2).json()["metrics"]
    except httpx.TransportError:
        return False
    views = next(m for m in metrics if m["name"] == "page_views_by_device")
    current = views["current"]
    return current is not None and sum(v["value"] for v in current["values"]) > 0


def test_demo_serves_simulated_traffic_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "demo-data"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "pulseboard.cli", "demo", "--port", str(port)),
            *("--data-dir", str(data_dir), "--rate", "300"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: _orders_seen(url), 60, "simulated page views in the demo's metrics")
        # the demo's tick is 1 s: reads may be reused for that long
        assert httpx.get(f"{url}/v1/metrics/orders").headers["cache-control"] == "max-age=1"
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text
    assert f"Pulseboard demo is running: {url}" in text
    assert "events sent" in text.lower() or "sent" in text  # the simulator's report
    # everything it wrote is in its data dir
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-data"]
    assert {"log.db", "state.db", "meta.db"} <= {p.name for p in data_dir.iterdir()}


def _simulators_of(url: str) -> list[int]:
    """Pids of ``pulseboard simulate`` processes sending to ``url``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"simulate" in argv and url.encode() in argv:
            pids.append(int(entry.name))
    return pids


def test_the_simulator_stops_when_the_demo_is_killed(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "pulseboard.cli", "demo", "--port", str(port)),
            *("--data-dir", str(tmp_path / "demo-data"), "--rate", "100"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # once its events are counted, the simulator would retry a lost server for ever
        _wait_for(lambda: _orders_seen(url), 60, "simulated page views in the demo's metrics")
        (simulator,) = _simulators_of(url)
        os.killpg(proc.pid, signal.SIGKILL)  # a crash: nobody stops the simulator
        proc.wait(timeout=30)
        _wait_for(lambda: not _simulators_of(url), 30, "the orphaned simulator to stop")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in _simulators_of(url):
            os.kill(pid, signal.SIGKILL)
    assert simulator > 0
