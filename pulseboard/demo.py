"""``pulseboard demo``: the shop config served on this machine, with simulated traffic.

Starts the server with the built-in e-commerce config (``demo.yaml``), waits until it is
ready, starts ``pulseboard simulate`` against it and prints the URL. Ctrl-C or SIGTERM stops
both; every acknowledged event is in the log by then and counted after the next start.
Nothing is written outside the data directory (``./pulseboard-data`` unless ``--data-dir``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from pulseboard.config import Config, load_config
from pulseboard.server import serve, with_data_dir

log = logging.getLogger(__name__)

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")


def demo_config() -> Config:
    """The built-in shop config."""
    return load_config(DEMO_CONFIG)


def _start_traffic(
    url: str, rate: float, stopped: threading.Event
) -> subprocess.Popen[bytes] | None:
    """Wait for the server to be ready, then start the simulator; None if it never got ready."""
    deadline = time.monotonic() + 60
    while not stopped.is_set() and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    else:
        return None
    command = [sys.executable, "-m", "pulseboard.cli", "simulate", "--url", url]
    command += ["--rate", str(rate), "--duration", str(10 * 365 * 86_400), "--stop-with-parent"]
    # its own session: Ctrl-C reaches the server, which stops the simulator first
    simulator = subprocess.Popen(command, start_new_session=True)
    print(
        f"\n  Pulseboard demo is running: {url}\n"
        f"  metrics: {url}/v1/metrics   API reference: {url}/openapi.json\n"
        f"  simulated shop traffic: a mean of {rate:g} events/s over a day, following a daily\n"
        "  curve (quieter at night); Ctrl-C stops everything\n",
        flush=True,
    )
    return simulator


def run_demo(*, host: str, port: int, data_dir: str | None, rate: float, verbose: bool) -> int:
    """Serve the demo until interrupted; returns the exit code."""
    config = with_data_dir(demo_config(), data_dir)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    stopped = threading.Event()
    holder: list[subprocess.Popen[bytes] | None] = []
    starter = threading.Thread(
        target=lambda: holder.append(_start_traffic(url, rate, stopped)), daemon=True
    )
    starter.start()

    def stop_traffic() -> None:
        stopped.set()
        starter.join(timeout=5)
        simulator = holder[0] if holder else None
        if simulator is not None and simulator.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(simulator.pid, signal.SIGINT)
            try:
                simulator.wait(timeout=15)
            except subprocess.TimeoutExpired:
                simulator.kill()
                simulator.wait()

    try:
        return serve(config, host=host, port=port, verbose=verbose, before_shutdown=stop_traffic)
    finally:
        stop_traffic()
