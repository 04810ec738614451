"""``pulseboard bench web``: what the web UI costs a browser on its first load.

A demo server (the built-in config, a throwaway data dir, a short burst of simulated traffic
first so that metrics have values, then quiet) is opened ``runs`` times, each time in a fresh
browser context (empty cache, no cookies or storage), at ``/`` — the first dashboard. Each run
measures:

- the transfer of the first load: every request the page made until the first live values
  were shown and the network went idle, with its bytes as they went over the wire (compressed
  bodies where the server compresses, plus response headers), by kind — ``html``, ``js``,
  ``css``, ``api`` (JSON answers) and ``other``. The live WebSocket is not counted (its
  messages are not a load);
- the time from navigation start to ``performance.mark("pulseboard:first-values")``, which the
  app sets once every panel of the first dashboard shows its live value (or is empty), and to
  the first contentful paint.

The browser is the system Chromium driven by Playwright (never downloaded). Playwright is a
development dependency: it is imported when the benchmark runs, not when this module is.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from pulseboard.benchmarks.harness import BenchError, BenchServer
from pulseboard.demo import DEMO_CONFIG

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Request, ViewportSize

# Headless, and nothing Chromium would fetch on its own (updates, sync, background requests):
# the measurement must count only what the page loads, and test machines have no internet.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
FIRST_VALUES_MARK = "pulseboard:first-values"
KINDS = ("html", "js", "css", "api", "other")
# The targets: the first load at most 150 KB compressed (HTML + JS + CSS + API, bodies
# as sent), the first render with live values within 1 s.
TARGET_FIRST_LOAD_BYTES = 150_000
TARGET_FIRST_VALUES_MS = 1_000.0
VIEWPORT: ViewportSize = {"width": 1366, "height": 768}

_TIMINGS_JS = """
(mark) => {
  const at = (entries) => (entries.length ? entries[0].startTime : null);
  const nav = performance.getEntriesByType('navigation')[0];
  return {
    first_values_ms: at(performance.getEntriesByName(mark)),
    first_contentful_paint_ms: at(performance.getEntriesByName('first-contentful-paint')),
    dom_content_loaded_ms: nav ? nav.domContentLoadedEventEnd : null,
  };
}
"""


def kind_of(resource_type: str, content_type: str) -> str:
    """The kind a response counts under: html, js, css, api (JSON) or other."""
    content_type = content_type.split(";")[0].strip().lower()
    if resource_type == "document" or content_type == "text/html":
        return "html"
    if resource_type == "script" or content_type in ("text/javascript", "application/javascript"):
        return "js"
    if resource_type == "stylesheet" or content_type == "text/css":
        return "css"
    if content_type == "application/json" or content_type.endswith("+json"):
        return "api"
    return "other"


def _tally(requests: Sequence[Request]) -> dict[str, dict[str, int]]:
    """Requests, wire bytes (body + headers), compressed body bytes and decoded body bytes by
    kind; requests that got no response (failed or aborted) are left out."""
    out = {
        kind: {"requests": 0, "bytes": 0, "body_bytes": 0, "decoded_bytes": 0, "compressed": 0}
        for kind in KINDS
    }
    for request in requests:
        response = request.response()
        if response is None:
            continue
        headers = response.headers
        sizes = request.sizes()
        body = max(0, sizes["responseBodySize"])
        row = out[kind_of(request.resource_type, headers.get("content-type", ""))]
        row["requests"] += 1
        row["body_bytes"] += body
        row["bytes"] += body + max(0, sizes["responseHeadersSize"])
        row["compressed"] += int(headers.get("content-encoding", "identity") != "identity")
        try:
            row["decoded_bytes"] += len(response.body())
        except Exception:  # a body the browser did not keep (e.g. a redirect)
            row["decoded_bytes"] += body
    return out


def measure_first_load(browser: Browser, url: str, timeout_ms: float = 30_000) -> dict[str, Any]:
    """Open ``url`` + ``/`` in a fresh context of ``browser``; returns the transfer by kind,
    the totals and the timings (ms from navigation start) of this one first load."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        finished: list[Request] = []
        page.on("requestfinished", lambda request: finished.append(request))
        response = page.goto(f"{url}/", wait_until="load", timeout=timeout_ms)
        if response is None or response.status != 200:
            status = None if response is None else response.status
            raise BenchError(
                f"GET {url}/ answered {status}; is the web UI built "
                "(`cd web && npm ci && npm run build`)?"
            )
        try:
            page.wait_for_function(
                "(name) => performance.getEntriesByName(name).length > 0",
                arg=FIRST_VALUES_MARK,
                timeout=timeout_ms,
            )
        except Exception as exc:
            raise BenchError(
                f"the page never set performance.mark({FIRST_VALUES_MARK!r}) within "
                f"{timeout_ms / 1000:g} s: {exc}"
            ) from exc
        page.wait_for_load_state("networkidle", timeout=timeout_ms)
        timings: dict[str, float | None] = page.evaluate(_TIMINGS_JS, FIRST_VALUES_MARK)
        transfer = _tally(finished)
    finally:
        context.close()
    return {
        "transfer": transfer,
        "total_bytes": sum(row["bytes"] for row in transfer.values()),
        "total_body_bytes": sum(row["body_bytes"] for row in transfer.values()),
        **{name: None if v is None else round(v, 1) for name, v in timings.items()},
    }


def _stats(values: Sequence[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    if not present:
        return {"median": None, "p90": None, "max": None, "min": None, "count": 0}
    array = np.asarray(present, dtype=np.float64)
    median, p90 = np.percentile(array, [50, 90]).tolist()
    return {
        "median": round(median, 1),
        "p90": round(p90, 1),
        "max": round(float(array.max()), 1),
        "min": round(float(array.min()), 1),
        "count": len(present),
    }


def _traffic_burst(url: str, seconds: float = 5.0, rate: float = 300.0) -> None:
    """Simulated shop traffic for a moment, then wait until the processor has counted some of
    it (a short burst yields page views first; orders follow later in a session)."""
    command = [sys.executable, "-m", "pulseboard.cli", "simulate", "--url", url, "--seed", "1"]
    command += ["--rate", str(rate), "--duration", str(seconds)]
    done = subprocess.run(command, capture_output=True, timeout=120, check=False)
    if done.returncode != 0:
        raise BenchError(f"the simulator failed ({done.returncode}): {done.stdout[-2000:]!r}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{url}/v1/metrics", timeout=5).json()["metrics"]
        if any(m["current"] and m["current"]["values"] for m in metrics):
            return
        time.sleep(0.2)
    raise BenchError("the simulated traffic was not counted within 30 s")


def _report(samples: list[dict[str, Any]], chromium_version: str, runs: int) -> dict[str, Any]:
    by_kind = {
        kind: {
            field: int(np.median([s["transfer"][kind][field] for s in samples]))
            for field in ("requests", "bytes", "body_bytes", "decoded_bytes", "compressed")
        }
        for kind in KINDS
    }
    total_body = _stats([s["total_body_bytes"] for s in samples])
    first_values = _stats([s["first_values_ms"] for s in samples])
    return {
        "name": "web",
        "runs": runs,
        "transfer_bytes": {
            "total": _stats([s["total_bytes"] for s in samples]),
            "body": total_body,
            "by_kind": by_kind,
        },
        "first_values_ms": first_values,
        "first_contentful_paint_ms": _stats([s["first_contentful_paint_ms"] for s in samples]),
        "dom_content_loaded_ms": _stats([s["dom_content_loaded_ms"] for s in samples]),
        "targets": {
            "first_load_body_bytes": TARGET_FIRST_LOAD_BYTES,
            "first_values_ms": TARGET_FIRST_VALUES_MS,
        },
        "met": {
            "first_load_body_bytes": total_body["max"] is not None
            and total_body["max"] <= TARGET_FIRST_LOAD_BYTES,
            "first_values_ms": first_values["p90"] is not None
            and first_values["p90"] < TARGET_FIRST_VALUES_MS,
        },
        "samples": samples,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "chromium": chromium_version,
            "playwright": metadata.version("playwright"),
            "viewport": f"{VIEWPORT['width']}x{VIEWPORT['height']}",
        },
    }


def run_web_bench(*, chromium: str = "/usr/bin/chromium", runs: int = 5) -> dict[str, Any]:
    """Measure ``runs`` first loads of the web UI against a fresh demo server.

    ``chromium`` is the browser executable Playwright drives. Returns a JSON-ready dict:
    ``transfer_bytes`` (``total`` wire bytes and compressed ``body`` bytes per load as
    median/p90/max/min, and the median per kind), ``first_values_ms`` and
    ``first_contentful_paint_ms`` (median/p90/max/min), the targets and whether they were met,
    every run's sample, and the machine (CPU count, Chromium and Playwright versions). Raises
    :class:`BenchError` when Playwright or the browser is missing, the UI is not built, or the
    page never shows its first values. The server and its data dir are gone when this returns.
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise BenchError(
            "the web benchmark needs Playwright: install the development dependencies "
            "(`pip install -e '.[dev]'`)"
        ) from exc
    if not os.access(chromium, os.X_OK):
        raise BenchError(f"no browser executable at {chromium}")
    workdir = Path(tempfile.mkdtemp(prefix="pulseboard-bench-web-"))
    server = None
    try:
        server = BenchServer(DEMO_CONFIG, workdir)
        server.wait_ready()
        _traffic_burst(server.url)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, args=list(CHROMIUM_ARGS), headless=True
            )
            try:
                version = browser.version
                samples = [measure_first_load(browser, server.url) for _ in range(runs)]
            finally:
                browser.close()
    except BenchError as exc:
        logs = server.logs() if server is not None else ""
        raise BenchError(f"{exc}\n--- server log (tail) ---\n{logs}") from exc
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return _report(samples, version, runs)
