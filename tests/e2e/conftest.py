"""Real server processes for end-to-end tests: ``pulseboard serve`` on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One ``pulseboard serve`` process group with its own config, data dir and port.

    ``kill()`` sends SIGKILL to the whole group (API and processor), as a crash would;
    ``start()`` again resumes on the same data dir and port.
    """

    def __init__(self, config_path: Path, data_dir: Path, *extra: str) -> None:
        self.config_path = config_path
        self.data_dir = data_dir
        self.extra = extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pulseboard.cli",
                "serve",
                "--config",
                str(self.config_path),
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                *self.extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready within {timeout_s} s:\n{self.logs()}")

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        code = self.proc.wait(timeout_s)
        self._reap_group()
        return code

    def kill(self) -> None:
        """SIGKILL the whole process group, like a crash."""
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)
        self._reap_group()

    def _reap_group(self) -> None:
        """Wait until no process of the group is left (the processor child included)."""
        assert self.proc is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not _live_members(self.proc.pid):
                return
            time.sleep(0.05)
        os.killpg(self.proc.pid, signal.SIGKILL)

    def logs(self) -> str:
        try:
            return self.log_path.read_text()[-5000:]
        except OSError:
            return "(no log)"


def _live_members(group: int) -> list[int]:
    """Processes of process group ``group`` that still run (zombies waiting to be reaped by
    whoever adopted them do not count: they hold no files and take no requests)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(entry.name))
    return members


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """A factory: ``serve(config_text, *extra_args)`` starts a server and stops it afterwards."""
    started: list[Server] = []

    def start(config_text: str, *extra: str) -> Server:
        config_path = tmp_path / f"config-{len(started)}.yaml"
        config_path.write_text(config_text)
        server = Server(config_path, tmp_path / f"data-{len(started)}", *extra)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
