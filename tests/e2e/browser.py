"""Helpers of the browser tests (``test_browser.py``): Chromium, real servers, the DOM contract.

- :func:`launch_chromium` starts the system Chromium through Playwright (browsers are never
  downloaded). :func:`require` skips a test when something it needs is missing, and fails it
  instead under ``CI=true``, so that a CI run cannot pass by skipping.
- :class:`TrafficServer` is ``pulseboard serve`` on the demo config with ``pulseboard simulate``
  sending shop traffic to it.
- :class:`UI` wraps a Playwright page with the waits and reads of the UI's ``data-testid``
  contract, and saves full-page screenshots of each step under ``test-artifacts/browser/``.

Waits are for conditions with timeouts (Playwright's ``wait_for_function`` and ``expect``); a
timeout is a correctness bound, never a speed assertion.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, Playwright, WebSocket
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout

import pulseboard
from pulseboard.benchmarks.web import CHROMIUM_ARGS
from pulseboard.demo import DEMO_CONFIG
from tests.e2e.conftest import Server

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "browser"
STATIC_INDEX = Path(pulseboard.__file__).resolve().parent / "static" / "index.html"

CHROMIUM = os.environ.get("PULSEBOARD_CHROMIUM", "/usr/bin/chromium")

TEMPLATES = ("operations", "management", "engineering")
RANGES = ["5m", "15m", "1h", "6h", "24h", "7d"]
PIPELINE_STATS = (
    "events_per_second",
    "processed_per_second",
    "lag_ms",
    "late_events",
    "reconciled",
    "dead_letters",
    "live_clients",
    "backlog_events",
    "memory_bytes",
)

# A value the UI shows, read in the page: the panel's headline number and its status.
_PANEL_VALUE_JS = """
(metric) => {
  const panel = [...document.querySelectorAll('[data-testid="panel"]')]
    .find((p) => p.getAttribute('data-metric') === metric);
  if (!panel) return null;
  const value = panel.querySelector('[data-testid="panel-value"]');
  return {
    value: value ? value.getAttribute('data-value') : undefined,
    text: value ? value.textContent : undefined,
    status: panel.getAttribute('data-status'),
  };
}
"""

_IS_NUMBER_JS = "(raw) => raw !== null && raw !== undefined && raw.trim() !== '' \
&& Number.isFinite(Number(raw))"


def demo_config() -> dict[str, Any]:
    """The built-in demo config as parsed YAML."""
    loaded: dict[str, Any] = yaml.safe_load(DEMO_CONFIG.read_text())
    return loaded


def demo_dashboards() -> dict[str, dict[str, Any]]:
    """The demo's dashboards by id."""
    return {d["id"]: d for d in demo_config()["dashboards"]}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require(ok: bool, reason: str) -> None:
    """Skip (locally) or fail (under ``CI=true``) the test when ``ok`` is false."""
    if ok:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the browser tests must run)", pytrace=False)
    pytest.skip(reason)


def require_browser_prerequisites() -> None:
    """Chromium is installed and the web UI is built."""
    require(
        os.access(CHROMIUM, os.X_OK),
        f"no Chromium at {CHROMIUM} (install the distribution's chromium package, or set "
        "PULSEBOARD_CHROMIUM to its executable)",
    )
    require(
        STATIC_INDEX.is_file(),
        "the web UI is not built: run `cd web && npm ci && npm run build` "
        f"(it writes {STATIC_INDEX.relative_to(REPO)})",
    )


def launch_chromium(playwright: Playwright) -> Browser:
    """The system Chromium, headless, with networking chores of its own turned off."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), headless=True, timeout=60_000
    )


def artifact_prefix(test_name: str) -> str:
    """A file-name-safe prefix for a test's screenshots; old ones of that test are removed."""
    prefix = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name).strip("_")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for pattern in (f"{prefix}--*.png", f"{prefix}-[0-9]*--*.png"):
        for old in ARTIFACTS.glob(pattern):
            old.unlink()
    return prefix


# --- servers ----------------------------------------------------------------------------------


def demo_server(workdir: Path) -> Server:
    """A started ``pulseboard serve`` on the demo config with its own data dir in ``workdir``."""
    server = Server(DEMO_CONFIG, workdir / "data")
    server.start()
    return server


class TrafficServer:
    """The demo config served with simulated shop traffic (``pulseboard simulate``)."""

    def __init__(self, workdir: Path, rate: float = 200.0) -> None:
        self.workdir = workdir
        self.server = demo_server(workdir)
        self.url = self.server.url
        self.sim_log = workdir / "simulate.log"
        with self.sim_log.open("ab") as log:
            self.simulator = subprocess.Popen(
                [
                    *(sys.executable, "-m", "pulseboard.cli", "simulate", "--url", self.url),
                    *("--rate", str(rate), "--duration", "900", "--seed", "4"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_values(self, metrics: Iterable[str], timeout_s: float = 30.0) -> set[str]:
        """Wait until each of ``metrics`` has a current value, or the timeout; returns those
        that have one (a rare event type may not have arrived yet)."""
        wanted = set(metrics)
        deadline = time.monotonic() + timeout_s
        seen: set[str] = set()
        while time.monotonic() < deadline:
            seen = metrics_with_values(self.url) & wanted
            if seen == wanted:
                break
            assert self.simulator.poll() is None, self.sim_log.read_text()[-3000:]
            time.sleep(0.25)
        return seen

    def stop(self) -> None:
        if self.simulator.poll() is None:
            os.killpg(self.simulator.pid, signal.SIGTERM)
            try:
                self.simulator.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.simulator.pid, signal.SIGKILL)
                self.simulator.wait(30)
        if self.server.proc is not None and self.server.proc.poll() is None:
            self.server.stop()


def metrics_with_values(url: str) -> set[str]:
    """Names of the metrics whose current value is a number (per ``GET /v1/metrics``)."""
    try:
        metrics = httpx.get(f"{url}/v1/metrics", timeout=5).json()["metrics"]
    except httpx.TransportError:
        return set()
    out = set()
    for metric in metrics:
        current = metric["current"]
        if current and any(v["value"] is not None for v in current["values"]):
            out.add(metric["name"])
    return out


def post_events(url: str, events: Sequence[tuple[str, dict[str, Any]]], id_prefix: str) -> int:
    """POST one event per (type, data), all at the current time, with ids ``{id_prefix}-{k}``;
    returns the event time (epoch ms). Asserts that every event was accepted."""
    now_ms = time.time_ns() // 1_000_000
    body = [
        {"id": f"{id_prefix}-{k}", "type": kind, "time": now_ms, "data": data}
        for k, (kind, data) in enumerate(events)
    ]
    answer = httpx.post(f"{url}/v1/events", json=body, timeout=10)
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == len(body), answer.text
    return now_ms


def wait_clear_of_minute_end(margin_s: float = 10.0) -> None:
    """Return at once unless the current minute ends within ``margin_s``; then wait for the next
    minute to begin. Metrics with 1-minute tumbling windows show the open window's value: events
    sent now must still be in the open window when the UI is read a few seconds later."""
    into_minute = time.time() % 60
    if into_minute > 60 - margin_s:
        time.sleep(60 - into_minute + 0.2)


# --- the page ---------------------------------------------------------------------------------


@dataclass
class UI:
    """A page of the app with what the tests read of it: errors thrown in the page, WebSockets
    opened, requests sent."""

    page: Page
    prefix: str
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    websockets: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    steps: int = 0

    def __post_init__(self) -> None:
        self.page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        self.page.on("console", self._console)
        self.page.on("websocket", self._websocket)
        self.page.on("request", lambda request: self.requests.append(request.url))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def _websocket(self, socket: WebSocket) -> None:
        self.websockets.append(socket.url)

    # navigation and artifacts

    def open(self, base_url: str, route: str = "#/") -> None:
        self.page.goto(f"{base_url}/{route}")
        self.page.get_by_test_id("app").wait_for(state="visible", timeout=10_000)

    def shot(self, step: str) -> Path:
        """A full-page screenshot of this step, numbered in the order taken."""
        self.steps += 1
        path = ARTIFACTS / f"{self.prefix}--{self.steps:02d}-{step}.png"
        self.page.screenshot(path=path, full_page=True)
        return path

    def shot_failure(self) -> None:
        try:
            self.page.screenshot(path=ARTIFACTS / f"{self.prefix}--FAILED.png", full_page=True)
        except PlaywrightError:
            pass  # the page or browser is gone: nothing to show

    # the connection

    def connection(self) -> Locator:
        return self.page.get_by_test_id("connection")

    def wait_connection(self, state: str, timeout_ms: float = 10_000) -> None:
        try:
            self.page.wait_for_function(
                """(state) => document.querySelector('[data-testid="connection"]')
                     ?.getAttribute('data-state') === state""",
                arg=state,
                timeout=timeout_ms,
            )
        except PlaywrightTimeout:
            actual = self._attribute('[data-testid="connection"]', "data-state")
            raise AssertionError(
                f"connection data-state is {actual!r}, expected {state!r} "
                f"within {timeout_ms / 1000:g} s"
            ) from None

    def wait_connection_not(self, state: str, timeout_ms: float = 10_000) -> str:
        """Wait until the connection's data-state is no longer ``state``; returns the new one."""
        try:
            self.page.wait_for_function(
                """(state) => {
                     const el = document.querySelector('[data-testid="connection"]');
                     return el !== null && el.getAttribute('data-state') !== state;
                   }""",
                arg=state,
                timeout=timeout_ms,
            )
        except PlaywrightTimeout:
            raise AssertionError(
                f"connection data-state stayed {state!r} for {timeout_ms / 1000:g} s"
            ) from None
        return self._attribute('[data-testid="connection"]', "data-state") or ""

    def _attribute(self, selector: str, name: str) -> str | None:
        value: str | None = self.page.evaluate(
            "([s, n]) => document.querySelector(s)?.getAttribute(n) ?? null", [selector, name]
        )
        return value

    # panels

    def panels(self) -> Locator:
        return self.page.get_by_test_id("dashboard").get_by_test_id("panel")

    def panel(self, metric: str) -> Locator:
        return self.page.locator(f'[data-testid="panel"][data-metric="{metric}"]')

    def panel_state(self, metric: str) -> dict[str, Any] | None:
        """``{"value": data-value, "text": shown text, "status": data-status}`` of the panel."""
        state: dict[str, Any] | None = self.page.evaluate(_PANEL_VALUE_JS, metric)
        return state

    def panel_list(self) -> list[dict[str, Any]]:
        """Every panel of the dashboard shown, in order: metric, kind and title text."""
        panels: list[dict[str, Any]] = self.page.evaluate(
            """() => [...document.querySelectorAll(
                   '[data-testid="dashboard"] [data-testid="panel"]')].map((p) => ({
                 metric: p.getAttribute('data-metric'),
                 kind: p.getAttribute('data-kind'),
                 title: p.querySelector('[data-testid="panel-title"]')?.textContent?.trim(),
               }))"""
        )
        return panels

    def wait_value(self, metric: str, expected: float, timeout_ms: float = 3_000) -> None:
        """Wait until the panel of ``metric`` shows exactly ``expected`` as its data-value."""
        try:
            self.page.wait_for_function(
                f"""([metric, expected]) => {{
                      const state = ({_PANEL_VALUE_JS})(metric);
                      return state !== null && ({_IS_NUMBER_JS})(state.value)
                        && Number(state.value) === expected;
                    }}""",
                arg=[metric, expected],
                timeout=timeout_ms,
            )
        except PlaywrightTimeout:
            raise AssertionError(
                f"panel {metric!r} did not show {expected!r} within {timeout_ms / 1000:g} s; "
                f"it shows {self.panel_state(metric)!r}"
            ) from None

    def wait_numeric(self, metric: str, timeout_ms: float = 10_000) -> float:
        """Wait until the panel of ``metric`` has a numeric data-value; returns it."""
        try:
            self.page.wait_for_function(
                f"""(metric) => {{
                      const state = ({_PANEL_VALUE_JS})(metric);
                      return state !== null && ({_IS_NUMBER_JS})(state.value);
                    }}""",
                arg=metric,
                timeout=timeout_ms,
            )
        except PlaywrightTimeout:
            raise AssertionError(
                f"panel {metric!r} has no numeric data-value after {timeout_ms / 1000:g} s; "
                f"it shows {self.panel_state(metric)!r}"
            ) from None
        state = self.panel_state(metric)
        assert state is not None
        return float(state["value"])

    def wait_status(self, metric: str, status: str, timeout_ms: float = 10_000) -> None:
        try:
            self.page.wait_for_function(
                f"""([metric, status]) => ({_PANEL_VALUE_JS})(metric)?.status === status""",
                arg=[metric, status],
                timeout=timeout_ms,
            )
        except PlaywrightTimeout:
            raise AssertionError(
                f"panel {metric!r} did not reach data-status {status!r} within "
                f"{timeout_ms / 1000:g} s; it shows {self.panel_state(metric)!r}"
            ) from None

    def wait_value_changes(self, metric: str, timeout_ms: float = 10_000) -> tuple[float, float]:
        """Wait until the panel's numeric data-value differs from the one shown now."""
        before = self.wait_numeric(metric)
        try:
            self.page.wait_for_function(
                f"""([metric, before]) => {{
                      const state = ({_PANEL_VALUE_JS})(metric);
                      return state !== null && ({_IS_NUMBER_JS})(state.value)
                        && Number(state.value) !== before;
                    }}""",
                arg=[metric, before],
                timeout=timeout_ms,
            )
        except PlaywrightTimeout:
            raise AssertionError(
                f"panel {metric!r} kept the value {before!r} for {timeout_ms / 1000:g} s"
            ) from None
        return before, self.wait_numeric(metric)

    def assert_no_page_errors(self) -> None:
        assert self.page_errors == [], f"uncaught errors in the page: {self.page_errors}"

    def live_sockets(self) -> list[str]:
        return [url for url in self.websockets if "/v1/live" in url]


# Scripts run in the page before the app's own code, to take WebSocket away from it.

# The constructor throws, as where WebSocket is disabled by policy.
WEBSOCKET_THROWS = """
(() => {
  window.__wsAttempts = 0;
  class ThrowingWebSocket extends EventTarget {
    static CONNECTING = 0; static OPEN = 1; static CLOSING = 2; static CLOSED = 3;
    constructor() {
      super();
      window.__wsAttempts += 1;
      throw new DOMException('WebSocket is disabled by the test', 'SecurityError');
    }
  }
  window.WebSocket = ThrowingWebSocket;
})();
"""

# The handshake fails, as behind a proxy that refuses upgrades: the socket never opens, fires
# `error` and then `close` with code 1006, like a real refused handshake.
WEBSOCKET_REFUSED = """
(() => {
  window.__wsAttempts = 0;
  class RefusedWebSocket extends EventTarget {
    static CONNECTING = 0; static OPEN = 1; static CLOSING = 2; static CLOSED = 3;
    constructor(url) {
      super();
      window.__wsAttempts += 1;
      this.url = String(url);
      this.readyState = 0;
      this.protocol = '';
      this.extensions = '';
      this.bufferedAmount = 0;
      this.binaryType = 'blob';
      this.onopen = null; this.onmessage = null; this.onerror = null; this.onclose = null;
      setTimeout(() => {
        this.readyState = 3;
        const error = new Event('error');
        this.dispatchEvent(error);
        if (typeof this.onerror === 'function') this.onerror(error);
        const close = new CloseEvent('close', {code: 1006, reason: '', wasClean: false});
        this.dispatchEvent(close);
        if (typeof this.onclose === 'function') this.onclose(close);
      }, 20);
    }
    send() { throw new DOMException('not open', 'InvalidStateError'); }
    close() { this.readyState = 3; }
  }
  window.WebSocket = RefusedWebSocket;
})();
"""
