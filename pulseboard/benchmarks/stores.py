"""The stores of ``pulseboard bench pipeline --distributed``, and what Redis says it did.

- :class:`BenchStores` takes a throwaway place on existing servers, on loopback only: a key
  prefix of its own on Redis (``?prefix=bench-<random>:`` in the URL the server processes are
  given) and a fresh database on PostgreSQL (``CREATE DATABASE pbbench_<random>``). ``close``
  deletes every key under the prefix and drops the database, whatever happened.
- :func:`parse_info` reads ``INFO commandstats cpu`` into a :class:`RedisSample`, and
  :func:`redis_usage` turns two samples into what a phase cost Redis, per 1,000 events.

What ``INFO commandstats`` counts (checked on Redis 7.0): every command Redis executed,
including each ``redis.call`` a Lua script makes: an ``EVALSHA`` whose script runs three
commands adds one ``evalsha`` call and one call to each of the three. A script's ``usec``
includes the time of the commands it ran, so ``usec`` is never summed over commands; Redis's
own CPU time comes from ``INFO cpu``. The counters are the server's, so another client of the
same server during a phase is counted too (``connected_clients`` before the run tells).
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql

from pulseboard.adapters.base import StoreUnavailable
from pulseboard.adapters.redis_conn import RedisSettings
from pulseboard.adapters.redis_reports import RedisProcessorReports
from pulseboard.benchmarks.harness import BenchError
from pulseboard.config import mask_url

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SCRIPT_COMMANDS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})
"""Commands that run a script or function: each is one request of a client, however many
commands the script runs."""
TOP_COMMANDS = 12
"""Commands listed by name in a phase's report (the most called)."""


# --- pure: URLs ----------------------------------------------------------------------------


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def with_prefix(redis_url: str, prefix: str) -> str:
    """``redis_url`` with its ``prefix`` option set to ``prefix`` (other options kept)."""
    parts = urlsplit(redis_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "prefix"]
    query.append(("prefix", prefix))
    return urlunsplit(parts._replace(query=urlencode(query, safe=":")))


def with_database(postgres_url: str, name: str) -> str:
    """``postgres_url`` naming database ``name`` instead."""
    return urlunsplit(urlsplit(postgres_url)._replace(path=f"/{name}"))


def config_text(redis_url: str, history_url: str, workload_yaml: str) -> str:
    """A server config: ``storage`` with the log and the hot store at ``redis_url`` and
    history at ``history_url``, then ``workload_yaml`` (which has no ``storage`` of its own)."""
    return (
        "storage:\n"
        f"  log: {_quoted(redis_url)}\n"
        f"  hot: {_quoted(redis_url)}\n"
        f"  history: {_quoted(history_url)}\n" + workload_yaml
    )


# --- pure: INFO ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RedisSample:
    """``INFO commandstats cpu`` at one moment: per command (``config|get`` style names for
    subcommands), its calls and microseconds since the last stats reset; the server's CPU
    seconds (all threads) and those of its main thread, which runs every command."""

    commands: Mapping[str, tuple[int, int]]
    cpu_s: float
    main_thread_cpu_s: float


def parse_info(text: str) -> RedisSample:
    """Read the text of ``INFO commandstats cpu`` (lines ``cmdstat_<name>:calls=N,usec=M,...``
    and ``used_cpu_<kind>:<seconds>``); lines of other sections are ignored. ValueError
    names a line that has the expected key but not the expected form."""
    commands: dict[str, tuple[int, int]] = {}
    cpu: dict[str, float] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if not sep or key.startswith("#"):
            continue
        if key.startswith("cmdstat_"):
            fields = dict(item.partition("=")[::2] for item in value.split(","))
            try:
                commands[key[len("cmdstat_") :]] = (int(fields["calls"]), int(fields["usec"]))
            except (KeyError, ValueError):
                raise ValueError(
                    f"INFO commandstats: expected '{key}:calls=<n>,usec=<n>,...', got {line!r}"
                ) from None
        elif key.startswith("used_cpu_"):
            try:
                cpu[key] = float(value)
            except ValueError:
                raise ValueError(f"INFO cpu: expected '{key}:<seconds>', got {line!r}") from None
    return RedisSample(
        commands,
        cpu.get("used_cpu_user", 0.0) + cpu.get("used_cpu_sys", 0.0),
        cpu.get("used_cpu_user_main_thread", 0.0) + cpu.get("used_cpu_sys_main_thread", 0.0),
    )


def redis_usage(
    before: RedisSample, after: RedisSample, events: int, *, own: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """What Redis did between two samples, in total and per 1,000 ``events``.

    ``calls`` counts every command, those run by scripts included; ``script_calls`` the
    EVAL/EVALSHA/FCALL among them (one client request each); ``commands`` the most called,
    with their calls and microseconds (a script's include those of the commands it ran).
    ``own`` (command -> calls) is subtracted: the sampler's own ``INFO``. A counter that went
    down (someone reset the stats) counts from zero and sets ``stats_reset``."""
    own = own or {}
    reset = False
    delta: dict[str, tuple[int, int]] = {}
    for name, (calls, usec) in after.commands.items():
        old_calls, old_usec = before.commands.get(name, (0, 0))
        if calls < old_calls:
            reset, old_calls, old_usec = True, 0, 0
        calls_delta = calls - old_calls - own.get(name, 0)
        if calls_delta > 0:
            delta[name] = (calls_delta, max(0, usec - old_usec))
    per = 1000 / events if events > 0 else 0.0
    total = sum(c for c, _ in delta.values())
    scripts = sum(c for n, (c, _) in delta.items() if n in SCRIPT_COMMANDS)
    script_usec = sum(u for n, (_, u) in delta.items() if n in SCRIPT_COMMANDS)
    ranked = sorted(delta.items(), key=lambda item: (-item[1][0], item[0]))[:TOP_COMMANDS]
    cpu = max(0.0, after.cpu_s - before.cpu_s)
    main = max(0.0, after.main_thread_cpu_s - before.main_thread_cpu_s)
    return {
        "calls": total,
        "calls_per_1000_events": round(total * per, 2),
        "script_calls": scripts,
        "script_calls_per_1000_events": round(scripts * per, 2),
        "script_ms_per_1000_events": round(script_usec * per / 1000, 3),
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_1000_events": round(cpu * 1000 * per, 3),
        "main_thread_cpu_s": round(main, 3),
        "commands": {
            name: {
                "calls": calls,
                "per_1000_events": round(calls * per, 2),
                "usec_per_1000_events": round(usec * per),
            }
            for name, (calls, usec) in ranked
        },
        "stats_reset": reset,
    }


# --- the stores ------------------------------------------------------------------------------


class BenchStores:
    """A key prefix of its own on the Redis at ``redis_url`` and a fresh database on the
    PostgreSQL server at ``postgres_url`` (whose user may create databases), both on loopback;
    ``close`` removes both. ``redis_url`` and ``history_url`` are what the servers are given."""

    def __init__(self, redis_url: str, postgres_url: str) -> None:
        for url, what, schemes in (
            (redis_url, "--redis-url", ("redis",)),
            (postgres_url, "--postgres-url", ("postgresql", "postgres")),
        ):
            parts = urlsplit(url)
            if parts.scheme not in schemes or not is_loopback_host(parts.hostname):
                raise BenchError(
                    f"{what} {mask_url(url)}: expected a {schemes[0]}:// URL of a server on "
                    "this machine (localhost, 127.0.0.1 or ::1): the benchmark writes and "
                    "deletes data there and measures it as a local server"
                )
        token = secrets.token_hex(4)
        self.prefix = f"bench-{token}:"
        self.database = f"pbbench_{token}"
        self.redis_url = with_prefix(redis_url, self.prefix)
        self.history_url = with_database(postgres_url, self.database)
        self._admin_url = postgres_url
        self._settings = RedisSettings.from_url(self.redis_url)
        self._redis = self._settings.client(name="pulseboard-bench")
        self._redis.set_response_callback("INFO", lambda response, **_: response)
        self._created = False
        try:
            self.redis_version = str(self._info("server").get("redis_version", "?"))
            self.connected_clients = int(self._info("clients").get("connected_clients", 0))
            with self._admin() as conn:
                try:
                    conn.execute(
                        sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database))
                    )
                except psycopg.Error as exc:
                    raise BenchError(
                        f"cannot create database {self.database} at "
                        f"{mask_url(self._admin_url)}: {exc} (the user of --postgres-url must "
                        "be allowed to create databases)"
                    ) from exc
            self._created = True
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> BenchStores:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _admin(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self._admin_url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise BenchError(
                f"cannot reach PostgreSQL at {mask_url(self._admin_url)}: {exc} (start it, or "
                "name another server with --postgres-url)"
            ) from exc

    def _info(self, *sections: str) -> dict[str, str]:
        text = self._raw_info(*sections)
        return dict(
            line.partition(":")[::2]
            for line in text.splitlines()
            if ":" in line and not line.startswith("#")
        )

    def _raw_info(self, *sections: str) -> str:
        try:
            raw: Any = self._redis.execute_command("INFO", *sections)  # type: ignore[no-untyped-call]
        except redis.RedisError as exc:
            raise BenchError(
                f"cannot reach Redis at {mask_url(self.redis_url)}: {exc} (start it, or name "
                "another server with --redis-url)"
            ) from exc
        return bytes(raw).decode()

    def config_text(self, workload_yaml: str) -> str:
        """A server config on these stores running the workload ``workload_yaml``."""
        return config_text(self.redis_url, self.history_url, workload_yaml)

    def sample(self) -> RedisSample:
        """``INFO commandstats cpu`` now (one ``info`` call, which the next sample counts)."""
        return parse_info(self._raw_info("commandstats", "cpu"))

    def wait_processors(
        self, count: int, alive: Callable[[], str | None], timeout_s: float = 60.0
    ) -> None:
        """Wait until ``count`` processors have reported (each reports every tick once it
        works); ``alive()`` returns why the server is gone, or None while it runs."""
        reports = RedisProcessorReports(self._settings, client=self._redis)
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            gone = alive()
            if gone is not None:
                raise BenchError(gone)
            try:
                seen = len(reports.all())
            except StoreUnavailable as exc:
                raise BenchError(str(exc)) from exc
            if seen >= count:
                return
            time.sleep(0.1)
        raise BenchError(f"{seen} of {count} processors reported within {timeout_s:.0f} s")

    def close(self) -> None:
        """Delete every key under the prefix and drop the database (idempotent); BenchError
        says what is left behind, and how to remove it, if either fails."""
        left = []
        try:
            keys = list(self._redis.scan_iter(match=f"{self.prefix}*", count=1000))
            for i in range(0, len(keys), 1000):
                self._redis.unlink(*keys[i : i + 1000])
        except redis.RedisError as exc:
            left.append(
                f"the keys {self.prefix}* at {mask_url(self.redis_url)} ({exc}; delete them with "
                f"redis-cli --scan --pattern '{self.prefix}*' | xargs redis-cli unlink)"
            )
        finally:
            self._redis.close()
        if self._created:
            try:
                with self._admin() as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(self.database)
                        )
                    )
                self._created = False
            except (psycopg.Error, BenchError) as exc:
                left.append(
                    f"the database {self.database} at {mask_url(self._admin_url)} ({exc}; drop "
                    "it with DROP DATABASE)"
                )
        if left:
            raise BenchError("the benchmark could not remove " + " and ".join(left))


def _quoted(text: str) -> str:
    # a YAML double-quoted scalar: JSON's escaping is a subset of it
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
