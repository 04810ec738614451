"""Real servers for the integration tests: a throwaway PostgreSQL cluster and Redis servers.

- ``postgres_url`` (session): a cluster made by ``initdb`` in a temporary directory and run by
  ``postgres`` on a free loopback port, stopped and removed after the session. ``pg_url``
  (per test): a fresh database on it, dropped after the test.
- ``redis_url`` (session): ``redis-server`` without persistence on a free port;
  ``redis_factory`` starts more (``appendonly=True`` for crash tests: ``kill()`` then
  ``start()`` again on the same directory); ``clean_redis_url`` (per test) empties the database.
- ``PULSEBOARD_TEST_POSTGRES_URL`` / ``PULSEBOARD_TEST_REDIS_URL`` use existing servers instead
  (the PostgreSQL user must be allowed to create databases).

PostgreSQL refuses to run as root, so as root the cluster is made and run as the ``postgres``
system user, else as ``nobody``, with a directory owned by that user. Missing binaries or users
skip the tests that need them, with the reason; under ``CI=true`` they fail instead, so a CI
machine that lost its servers cannot pass by skipping.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from psycopg import sql

POSTGRES_ENV = "PULSEBOARD_TEST_POSTGRES_URL"
REDIS_ENV = "PULSEBOARD_TEST_REDIS_URL"
START_TIMEOUT_S = 60.0
# UTF8 whatever the machine's locale (labels are unicode); no fsync: the cluster is thrown away.
INITDB_ARGS = ("-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
SERVER_SETTINGS = (
    *("-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off"),
    *("-c", "full_page_writes=off", "-c", "max_connections=200"),
)


def in_ci() -> bool:
    """True on CI (``CI=true``), where an integration test may not skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> NoReturn:
    """Skip with ``reason``, or fail under ``CI=true``."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: integration tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_binary(name: str) -> str | None:
    """``name`` on PATH, else in Debian's versioned PostgreSQL directories (newest first)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def stop_process(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout_s: float) -> None:
    """Send ``sig`` and wait; SIGKILL if it is still running after ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- PostgreSQL -----------------------------------------------------------------------------


def _unprivileged_user() -> pwd.struct_passwd | None:
    """Who runs PostgreSQL: None (ourselves) unless we are root, else ``postgres``/``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    unavailable("running as root and neither a 'postgres' nor a 'nobody' user to run PostgreSQL")


class PostgresCluster:
    """A throwaway cluster: ``initdb`` into a temporary directory, ``postgres`` on a free port."""

    def __init__(self, initdb: str, postgres: str) -> None:
        self.initdb = initdb
        self.postgres = postgres
        self.user = _unprivileged_user()
        self.root = Path(tempfile.mkdtemp(prefix="pulseboard-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log_path = self.root / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_user(self) -> dict[str, object]:
        """Popen arguments that drop root for the server's user (nothing when not root)."""
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def init(self) -> None:
        self.sockets.mkdir()
        if self.user is not None:
            for path in (self.root, self.sockets):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        done = subprocess.run(
            [self.initdb, *INITDB_ARGS, "-D", str(self.data)],
            capture_output=True,
            timeout=120,
            env={**os.environ, "LC_ALL": "C"},
            cwd=self.root,
            check=False,
            **self._as_user(),
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stderr.decode()}")

    def start(self) -> None:
        """Start on a free port (another try on a fresh port if that one was taken)."""
        for _ in range(3):
            self.port = free_port()
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [
                        self.postgres,
                        "-D",
                        str(self.data),
                        "-p",
                        str(self.port),
                        "-k",
                        str(self.sockets),
                        *SERVER_SETTINGS,
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.root,
                    env={**os.environ, "LC_ALL": "C"},
                    **self._as_user(),
                )
            if self._wait_ready():
                return
        raise RuntimeError(f"PostgreSQL did not start:\n{self.log()}")

    def _wait_ready(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                time.sleep(0.1)
        stop_process(self.proc, signal.SIGINT, 10)
        return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back, disconnect, stop), then remove the directory."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGINT, 30)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server for the session: ``PULSEBOARD_TEST_POSTGRES_URL`` or our own."""
    existing = os.environ.get(POSTGRES_ENV)
    if existing:
        yield existing
        return
    initdb, postgres = find_binary("initdb"), find_binary("postgres")
    if initdb is None or postgres is None:
        unavailable(f"PostgreSQL binaries (initdb, postgres) not found; or set {POSTGRES_ENV}")
    cluster = PostgresCluster(initdb, postgres)
    try:
        cluster.init()
        cluster.start()
        yield cluster.url
    finally:
        cluster.stop()


def database_url(url: str, dbname: str) -> str:
    """``url`` pointing at database ``dbname`` instead."""
    if "://" not in url:
        return psycopg.conninfo.make_conninfo(url, dbname=dbname)
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


@pytest.fixture
def own_postgres(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[PostgresCluster, Callable[[], None]]]:
    """A cluster of the test's own, to stop and start (outage tests), with ``restart()``:
    start it again on the same port."""
    initdb, postgres = find_binary("initdb"), find_binary("postgres")
    if initdb is None or postgres is None:
        unavailable("PostgreSQL binaries (initdb, postgres) not found")
    cluster = PostgresCluster(initdb, postgres)

    def restart() -> None:
        port = cluster.port
        monkeypatch.setattr(sys.modules[__name__], "free_port", lambda: port)
        cluster.start()

    try:
        cluster.init()
        cluster.start()
        yield cluster, restart
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped after it."""
    name = f"pbtest_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url(postgres_url, name)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# --- Redis ----------------------------------------------------------------------------------


class RedisServer:
    """One ``redis-server`` on a free loopback port with its own directory.

    ``kill()`` is a crash (SIGKILL); ``start()`` again restarts it on the same port and
    directory, so with ``appendonly=True`` it reloads what it had acknowledged.
    """

    def __init__(self, binary: str, directory: Path, *, appendonly: bool) -> None:
        self.binary = binary
        self.dir = directory
        self.appendonly = appendonly
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--dir", str(self.dir), "--protected-mode", "no"]
        args += ["--appendonly", "yes" if self.appendonly else "no"]
        if self.appendonly:
            args += ["--appendfsync", "always"]
        with (self.dir / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        client = redis.Redis.from_url(self.url, socket_timeout=2)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        log_text = (self.dir / "redis.log").read_text(errors="replace")
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log_text}")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGKILL, 10)

    def stop(self) -> None:
        """SIGTERM: Redis finishes what it must write and exits."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM, 30)


@pytest.fixture(scope="session")
def redis_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., RedisServer]]:
    """``start(appendonly=False) -> RedisServer``: started now, stopped after the session."""
    started: list[RedisServer] = []

    def start(*, appendonly: bool = False) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable(f"redis-server not found; or set {REDIS_ENV}")
        server = RedisServer(binary, tmp_path_factory.mktemp("redis"), appendonly=appendonly)
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_factory: Callable[..., RedisServer]) -> str:
    """A Redis server for the session: ``PULSEBOARD_TEST_REDIS_URL`` or our own."""
    return os.environ.get(REDIS_ENV) or redis_factory().url


@pytest.fixture
def clean_redis_url(redis_url: str) -> str:
    """``redis_url`` with its database emptied before the test."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_url
