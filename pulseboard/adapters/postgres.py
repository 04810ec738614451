"""History on PostgreSQL: the ``HistoryStore`` port (``ports.py``) for the distributed mode.

- **Partitions.** ``history`` is partitioned by range of ``window_start``, one partition per UTC
  day, named ``history_pYYYYMMDD``. A writer creates the partitions its rows need before writing
  them, in a transaction of their own holding an advisory lock, so processes creating the same
  day at once queue instead of failing; a duplicate error from a creator that did not take the
  lock is taken as success. Retention drops whole partitions, which is cheap and gives the space
  back at once, and deletes rows only in the partitions that straddle the cutoff.
- **Names.** Every table name is built here, by ``_partition_name`` from a day number, and
  checked against ``_NAME_RE`` before it reaches SQL (as a quoted identifier); nothing a caller
  passes ever becomes an identifier.
- **Migrations.** ``postgres_migrations/NNNN_name.sql`` are applied in order when a store opens,
  in one transaction holding an advisory lock, and recorded in ``schema_migrations``: two
  servers starting at once apply each migration once, the second waiting for the first.
- **Errors.** Every driver error leaves this module as ``StoreUnavailable``, naming the URL with
  its password masked (``config.mask_url``) and the password scrubbed from the driver's text.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.resources
import numbers
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg
import psycopg_pool
from psycopg import sql

from pulseboard.adapters.base import StoreUnavailable, WindowRow, now_ms
from pulseboard.adapters.ports import HistoryStore
from pulseboard.config import mask_url

HISTORY_TABLE = "history"
HOUR_MS = 3_600_000
PARTITION_PREFIX = "history_p"
MIGRATIONS_TABLE = "schema_migrations"
DAY_MS = 86_400_000

# Advisory lock keys (per database): arbitrary constants, "pbmg" and "pbpt" in ASCII.
_MIGRATION_LOCK = 0x70626D67
_PARTITION_LOCK = 0x70627074

_NAME_RE = re.compile(r"^(history|schema_migrations|history_p[0-9]{8})$")
_MIGRATION_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_EPOCH = dt.date(1970, 1, 1)
_INT64 = range(-(2**63), 2**63)
_CONNECT_TIMEOUT_S = 10

_COLUMNS = (
    "metric, window_ms, window_start, labels, value_int, value_float, state, status, updated_ms"
)
_UPSERT_FINAL = (
    f"INSERT INTO {HISTORY_TABLE} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, 'final', %s) "
    "ON CONFLICT (metric, window_ms, window_start, labels) DO UPDATE SET "
    "value_int = excluded.value_int, value_float = excluded.value_float, "
    "state = excluded.state, updated_ms = excluded.updated_ms "
    f"WHERE {HISTORY_TABLE}.status <> 'revised'"
)
_UPSERT_REVISED = (
    f"INSERT INTO {HISTORY_TABLE} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, 'revised', %s) "
    "ON CONFLICT (metric, window_ms, window_start, labels) DO UPDATE SET "
    "value_int = excluded.value_int, value_float = excluded.value_float, "
    "state = excluded.state, status = 'revised', updated_ms = excluded.updated_ms"
)
WINDOWS_QUERY = (
    "SELECT labels, window_start, value_int, value_float, state, status "
    f"FROM {HISTORY_TABLE} "
    "WHERE metric = %s AND window_ms = %s AND window_start >= %s AND window_start < %s "
    "AND window_start %% window_ms = 0 "
    "ORDER BY window_start, labels"
)
"""The series query; parameters (metric, window_ms, start_ms, end_ms). Public so that tests
can EXPLAIN exactly what ``windows`` runs."""

# --- hourly rollups (migration 0003) ---
_TOUCH_HOURS = (
    "INSERT INTO history_rollup_hours (metric, window_ms, hour_start) VALUES (%s, %s, %s) "
    "ON CONFLICT (metric, window_ms, hour_start) DO UPDATE "
    "SET version = history_rollup_hours.version + 1"
)
_HOURS_TO_ROLL = (
    "SELECT h.metric, h.window_ms, h.hour_start, h.version FROM history_rollup_hours h "
    "JOIN unnest(%s::text[], %s::bigint[]) AS k(metric, window_ms) "
    "ON h.metric = k.metric AND h.window_ms = k.window_ms "
    "WHERE h.rolled IS DISTINCT FROM h.version AND h.hour_start + 3600000 <= %s "
    "ORDER BY h.hour_start LIMIT %s"
)
_MARK_ROLLED = (
    "UPDATE history_rollup_hours SET rolled = version "
    "WHERE metric = %s AND window_ms = %s AND hour_start = %s AND version = %s"
)
_INSERT_ROLLUP = (
    "INSERT INTO history_rollup (metric, window_ms, hour_start, labels, value_int, "
    "value_float, state, status) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
ROLLED_HOURS_QUERY = (
    "SELECT hour_start FROM history_rollup_hours "
    "WHERE metric = %s AND window_ms = %s AND hour_start >= %s AND hour_start <= %s "
    "AND rolled = version ORDER BY hour_start"
)
"""The hours rolled up at their current version; parameters (metric, window_ms, first hour,
last hour). Public so that tests can EXPLAIN it."""
ROLLUP_QUERY = (
    "SELECT labels, hour_start, value_int, value_float, state, status FROM history_rollup "
    "WHERE metric = %s AND window_ms = %s AND hour_start = ANY(%s) ORDER BY hour_start, labels"
)
"""The rollup rows of the given hours; parameters (metric, window_ms, hours)."""


def rollable(window_ms: int) -> bool:
    """Whether windows of this length are rolled up by the hour: shorter than an hour and
    dividing it, so an hour's aligned windows are exactly the ones it holds."""
    return 0 < window_ms < HOUR_MS and HOUR_MS % window_ms == 0


@dataclass(frozen=True, slots=True)
class RollupHour:
    """An hour of one metric's windows whose rollup is missing or older than its windows."""

    metric: str
    window_ms: int
    start_ms: int
    version: int


def _ident(name: str) -> sql.Identifier:
    """``name`` as a quoted identifier, once it is known to be one of ours."""
    if not _NAME_RE.match(name):
        raise ValueError(f"not a table name of the history store: {name!r}")
    return sql.Identifier(name)


def _partition_name(day: int) -> str:
    """The partition holding windows starting on ``day`` (days since the epoch, UTC)."""
    try:
        date = _EPOCH + dt.timedelta(days=day)
    except OverflowError:
        raise ValueError(f"window start out of range: day {day} since the epoch") from None
    if date.year < 1000:  # keeps the name at 8 digits, so names sort like days
        raise ValueError(f"window start out of range: {date.isoformat()}")
    return f"{PARTITION_PREFIX}{date:%Y%m%d}"


def _partition_day(name: str) -> int | None:
    """The day number of a partition name, or None for a table that is not one of ours."""
    if not name.startswith(PARTITION_PREFIX) or not _NAME_RE.match(name):
        return None
    try:
        date = dt.datetime.strptime(name[len(PARTITION_PREFIX) :], "%Y%m%d").date()
    except ValueError:
        return None
    return (date - _EPOCH).days


def _split_value(value: Any) -> tuple[int | None, float | None]:
    """(value_int, value_float) for a window value, so each reads back as its own type."""
    if value is None:
        return None, None
    if isinstance(value, bool):
        raise TypeError("a window value is an int, a float or None, not a bool")
    if isinstance(value, numbers.Integral):
        if int(value) not in _INT64:
            raise ValueError(f"window value {value} does not fit in 64 bits")
        return int(value), None
    if isinstance(value, numbers.Real):
        return None, float(value)
    raise TypeError(f"a window value is an int, a float or None, not {type(value).__name__}")


def _params(row: WindowRow, stamp: int) -> tuple[Any, ...]:
    length = row.window_end_ms - row.window_start_ms
    if length <= 0:
        raise ValueError(f"window of {row.metric!r} ends before it starts: {row}")
    value_int, value_float = _split_value(row.value)
    return (
        row.metric,
        length,
        row.window_start_ms,
        row.labels,
        value_int,
        value_float,
        row.state,
        stamp,
    )


def _window_rows(metric: str, window_ms: int, rows: list[Any]) -> list[WindowRow]:
    """``WINDOWS_QUERY``'s rows as ``WindowRow``."""
    return [
        WindowRow(
            metric,
            labels,
            start,
            start + window_ms,
            value_int if value_int is not None else value_float,
            bytes(state),
            status,
        )
        for labels, start, value_int, value_float, state, status in rows
    ]


def _touch_hours(conn: psycopg.Connection[Any], params: list[tuple[Any, ...]]) -> None:
    """Bump the version of the rollup hours that ``params`` (``_params`` rows) write into, in
    the caller's transaction, in key order (as the rows: concurrent writers cannot deadlock)."""
    hours = sorted({(p[0], p[1], p[2] - p[2] % HOUR_MS) for p in params if rollable(p[1])})
    if hours:
        conn.cursor().executemany(_TOUCH_HOURS, hours)


def _gaps(start_ms: int, end_ms: int, hours: list[int]) -> Iterator[tuple[int, int]]:
    """The ranges of ``[start_ms, end_ms)`` outside the hours starting at ``hours`` (sorted)."""
    at = start_ms
    for hour in hours:
        if hour > at:
            yield at, hour
        at = max(at, hour + HOUR_MS)
    if at < end_ms:
        yield at, end_ms


def _secrets(url: str) -> list[str]:
    """The password of ``url`` (userinfo or query), raw and percent-decoded, to scrub."""
    found: list[str] = []
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        if parts.password:
            found.append(parts.password)
        found.extend(parse_qs(parts.query).get("password", []))
    return [s for secret in found for s in {secret, unquote(secret)} if s]


@contextlib.contextmanager
def translate_errors(url: str, where: str, doing: str) -> Iterator[None]:
    """Driver and pool errors → ``StoreUnavailable`` saying where, what, and what to do, with
    the password of ``url`` scrubbed from the driver's message."""
    try:
        yield
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        detail = scrub(url, str(exc).strip() or type(exc).__name__)
        hint = (
            "check that the server is running, reachable and accepts these credentials"
            if isinstance(exc, psycopg.OperationalError | psycopg_pool.PoolTimeout)
            else "see the server's log"
        )
        raise StoreUnavailable(f"{doing} the {where}: {detail} ({hint})") from exc


def scrub(url: str, text: str) -> str:
    """``text`` (a driver's message) without the password of ``url``, however it appears."""
    text = text.replace(url, mask_url(url))
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


def open_migrated_pool(
    url: str,
    where: str,
    kwargs: dict[str, Any],
    *,
    name: str,
    sizes: tuple[int, int],
    wait_s: float,
) -> psycopg_pool.ConnectionPool[psycopg.Connection[Any]]:
    """Apply the migrations, then open a pool of ``sizes`` (min, max) connections made with
    ``kwargs``; a call waits at most ``wait_s`` for one. ``StoreUnavailable`` names ``where``."""
    with translate_errors(url, where, "cannot open"):
        with psycopg.connect(url, **kwargs) as conn:
            migrate(conn)
    pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] = psycopg_pool.ConnectionPool(
        url,
        kwargs=kwargs,
        min_size=sizes[0],
        max_size=sizes[1],
        open=False,
        # A server restart breaks idle connections: check each before handing it out.
        check=psycopg_pool.ConnectionPool.check_connection,
        name=name,
        timeout=wait_s,
    )
    try:
        with translate_errors(url, where, "cannot open a connection pool to"):
            pool.open(wait=True, timeout=_CONNECT_TIMEOUT_S)
    except BaseException:
        pool.close()
        raise
    return pool


def load_migrations() -> list[tuple[int, str, str]]:
    """The packaged migrations as (version, name, SQL), by version; versions run 1, 2, … n."""
    folder = importlib.resources.files("pulseboard.adapters").joinpath("postgres_migrations")
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_FILE_RE.match(entry.name)
        if match:
            found.append((int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort()
    if [v for v, _, _ in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration versions are not 1..n: {[v for v, _, _ in found]}")
    return found


def migrate(conn: psycopg.Connection[Any]) -> list[int]:
    """Apply the migrations ``conn``'s database lacks, in one transaction under an advisory
    lock; returns the versions applied (none when another server got there first)."""
    migrations = load_migrations()
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(_ident(MIGRATIONS_TABLE))
        )
        query = sql.SQL("SELECT version FROM {}").format(_ident(MIGRATIONS_TABLE))
        done = {int(row[0]) for row in conn.execute(query)}
        if done and max(done) > len(migrations):
            raise StoreUnavailable(
                f"the database's history schema is at version {max(done)}, newer than this "
                f"Pulseboard knows ({len(migrations)}); upgrade Pulseboard"
            )
        for version, name, text in migrations:
            if version in done:
                continue
            # No parameters, so psycopg sends the file as one simple query: several statements.
            conn.execute(text.encode())
            conn.execute(
                sql.SQL("INSERT INTO {} (version, name) VALUES (%s, %s)").format(
                    _ident(MIGRATIONS_TABLE)
                ),
                (version, name),
            )
            applied.append(version)
    return applied


class PostgresHistory:
    """History windows in PostgreSQL (``HistoryStore``), shared by any number of processes.

    Opening connects once to apply migrations (failing fast with ``StoreUnavailable`` when the
    server cannot be reached), then opens a pool of ``pool_min`` to ``pool_max`` connections.
    Thread-safe. Windows are keyed by (metric, window length, start, labels).
    """

    def __init__(
        self, url: str, *, pool_min: int = 1, pool_max: int = 4, wait_s: float = 30.0
    ) -> None:
        """Open (and migrate) the store at ``url``; a call waits at most ``wait_s`` seconds for
        a pooled connection before raising ``StoreUnavailable`` (a processor retries later)."""
        self._url = url
        self._where = f"PostgreSQL history store at {mask_url(url)}"
        self._known_days: set[int] = set()
        self._days_lock = threading.Lock()
        # Autocommit: a read is one statement, and every write opens its own transaction
        # (``conn.transaction()``), never nested in one left open by a previous statement.
        kwargs: dict[str, Any] = {"autocommit": True}
        try:
            settings = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise StoreUnavailable(
                f"invalid URL for the {self._where}: {self._scrub(str(exc).strip())} (expected "
                "postgresql://user:password@host:port/database?sslmode=…)"
            ) from exc
        if "connect_timeout" not in settings:
            kwargs["connect_timeout"] = _CONNECT_TIMEOUT_S
        self._pool = open_migrated_pool(
            url,
            self._where,
            kwargs,
            name="pulseboard-history",
            sizes=(pool_min, pool_max),
            wait_s=wait_s,
        )

    # --- the port --------------------------------------------------------------------------

    def write_final(self, rows: list[WindowRow]) -> None:
        """Upsert ``rows`` as final, in one transaction; a revised window is left untouched."""
        self._upsert(_UPSERT_FINAL, rows)

    def revise(self, rows: list[WindowRow]) -> None:
        """Upsert ``rows`` as revised, in one transaction, replacing whatever was stored."""
        self._upsert(_UPSERT_REVISED, rows)

    def windows(self, metric: str, start_ms: int, end_ms: int, window_ms: int) -> list[WindowRow]:
        """Windows of ``metric`` of length ``window_ms``, aligned to it, starting in
        ``[start_ms, end_ms)``, by (start, labels)."""
        if window_ms <= 0:
            raise ValueError(f"window_ms must be positive, got {window_ms}")
        with self._translate("cannot read from"), self._pool.connection() as conn:
            rows = conn.execute(WINDOWS_QUERY, (metric, window_ms, start_ms, end_ms)).fetchall()
        return _window_rows(metric, window_ms, rows)

    def trim(self, before_ms: int) -> int:
        """Drop the windows that ended before ``before_ms``; returns how many.

        A partition whose day ended by the cutoff is dropped whole (unless it holds a window
        longer than the gap, which still runs past the cutoff); in the others that start before
        the cutoff, the windows that ended are deleted. Each partition is handled in a
        transaction of its own that waits at most 5 s for its locks: dropping a partition locks
        the parent table, and readers queued behind a waiting drop would stall; what is left
        over is trimmed the next time.
        """
        removed = 0
        with self._translate("cannot trim"), self._pool.connection() as conn:
            # an hour that lost windows keeps no rollup: its series reads what is left
            with conn.transaction():
                for table in ("history_rollup", "history_rollup_hours"):
                    conn.execute(f"DELETE FROM {table} WHERE hour_start < %s", (before_ms,))
            for day in self._stored_days(conn):
                if day * DAY_MS >= before_ms:
                    break
                try:
                    removed += self._trim_partition(conn, day, before_ms)
                except psycopg.errors.LockNotAvailable:
                    break
        return removed

    def close(self) -> None:
        """Close the pool and its connections."""
        self._pool.close()

    # --- beyond the port -------------------------------------------------------------------

    def bulk_load(self, rows: Iterable[WindowRow]) -> int:
        """Insert ``rows`` as final with one COPY (backfills, benchmarks); returns how many.
        Unlike ``write_final`` this is not an upsert: a window already stored fails the whole
        load (``StoreUnavailable``) and nothing is written."""
        stamp = now_ms()
        params = [_params(r, stamp) for r in rows]
        self._ensure_partitions({p[2] // DAY_MS for p in params})
        query = sql.SQL("COPY {} ({}) FROM STDIN").format(_ident(HISTORY_TABLE), sql.SQL(_COLUMNS))
        with self._translate("cannot load into"), self._pool.connection() as conn:
            with conn.transaction():
                with conn.cursor().copy(query) as copy:
                    for p in params:
                        copy.write_row((*p[:7], "final", p[7]))
                _touch_hours(conn, params)
        return len(params)

    def hours_to_roll(
        self, windows: Iterable[tuple[str, int]], before_ms: int, limit: int
    ) -> list[RollupHour]:
        """Up to ``limit`` hours, oldest first, ending at or before ``before_ms``, of the given
        (metric, window length) pairs, whose rollup is missing or older than their windows."""
        pairs = list(windows)
        if not pairs:
            return []
        metrics = [m for m, _ in pairs]
        lengths = [w for _, w in pairs]
        with self._translate("cannot read from"), self._pool.connection() as conn:
            rows = conn.execute(_HOURS_TO_ROLL, (metrics, lengths, before_ms, limit)).fetchall()
        return [RollupHour(m, w, h, v) for m, w, h, v in rows]

    def write_rollup(self, hour: RollupHour, rows: list[WindowRow]) -> bool:
        """Store ``rows`` (one per label set, each the merge of the hour's windows) as the
        rollup of ``hour``, if its windows did not change since ``hour.version`` (else nothing
        is written and False returned: it is rolled up again later)."""
        params = []
        for row in rows:
            value_int, value_float = _split_value(row.value)
            status = "revised" if row.status == "revised" else "final"
            key = (hour.metric, hour.window_ms, hour.start_ms)
            params.append((*key, row.labels, value_int, value_float, row.state, status))
        key = (hour.metric, hour.window_ms, hour.start_ms)
        with self._translate("cannot write to"), self._pool.connection() as conn:
            with conn.transaction():
                if conn.execute(_MARK_ROLLED, (*key, hour.version)).rowcount != 1:
                    return False
                conn.execute(
                    "DELETE FROM history_rollup "
                    "WHERE metric = %s AND window_ms = %s AND hour_start = %s",
                    key,
                )
                conn.cursor().executemany(_INSERT_ROLLUP, params)
        return True

    def series_windows(
        self, metric: str, start_ms: int, end_ms: int, window_ms: int, step_ms: int
    ) -> list[WindowRow]:
        """``windows``, except that with a step of whole hours (and windows that divide an
        hour) each hour in ``[start_ms, end_ms)`` that is rolled up at its current version
        comes as its rollup rows (one window of an hour per label set) instead of its windows.
        The hours and both kinds of rows are read in one snapshot."""
        if not (rollable(window_ms) and step_ms % HOUR_MS == 0):
            return self.windows(metric, start_ms, end_ms, window_ms)
        out: list[WindowRow] = []
        with self._translate("cannot read from"), self._pool.connection() as conn:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                last = end_ms - HOUR_MS  # the last hour that ends within the range
                key = (metric, window_ms, start_ms, last)
                hours = [h for (h,) in conn.execute(ROLLED_HOURS_QUERY, key).fetchall()]
                for labels, hour, value_int, value_float, state, status in conn.execute(
                    ROLLUP_QUERY, (metric, window_ms, hours)
                ):
                    value = value_int if value_int is not None else value_float
                    end = hour + HOUR_MS
                    out.append(WindowRow(metric, labels, hour, end, value, bytes(state), status))
                for low, high in _gaps(start_ms, end_ms, hours):
                    rows = conn.execute(WINDOWS_QUERY, (metric, window_ms, low, high)).fetchall()
                    out.extend(_window_rows(metric, window_ms, rows))
        out.sort(key=lambda r: (r.window_start_ms, r.labels))
        return out

    def partitions(self) -> list[str]:
        """The names of the day partitions that exist, oldest first."""
        with self._translate("cannot read from"), self._pool.connection() as conn:
            return [_partition_name(day) for day in self._stored_days(conn)]

    # --- internals -------------------------------------------------------------------------

    def _translate(self, doing: str) -> contextlib.AbstractContextManager[None]:
        return translate_errors(self._url, self._where, doing)

    def _scrub(self, text: str) -> str:
        return scrub(self._url, text)

    def _upsert(self, statement: str, rows: list[WindowRow]) -> None:
        if not rows:
            return
        stamp = now_ms()
        # Sorted by key (stably, so a later copy of a window still wins) so that concurrent
        # writers lock rows in one order and cannot deadlock each other.
        params = sorted((_params(r, stamp) for r in rows), key=lambda p: (p[0], p[1], p[2], p[3]))
        days = {p[2] // DAY_MS for p in params}
        with self._translate("cannot write to"):
            for attempt in range(2):
                self._ensure_partitions(days)
                try:
                    with self._pool.connection() as conn, conn.transaction():
                        conn.cursor().executemany(statement, params)
                        _touch_hours(conn, params)
                    return
                except psycopg.errors.CheckViolation as exc:
                    # No constraint name: no partition for a row. Another process's retention
                    # dropped a partition this one had seen; forget them and create it again.
                    if attempt or exc.diag.constraint_name is not None:
                        raise
                    with self._days_lock:
                        self._known_days.clear()

    def _ensure_partitions(self, days: set[int]) -> None:
        with self._days_lock:
            missing = sorted(days - self._known_days)
        if not missing:
            return
        names = {day: _partition_name(day) for day in missing}  # ValueError before any SQL
        with self._translate("cannot create partitions in"), self._pool.connection() as conn:
            for day, name in names.items():
                self._create_partition(conn, day, name)
        with self._days_lock:
            self._known_days.update(missing)

    def _create_partition(self, conn: psycopg.Connection[Any], day: int, name: str) -> None:
        statement = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
        ).format(
            _ident(name),
            _ident(HISTORY_TABLE),
            sql.Literal(day * DAY_MS),
            sql.Literal((day + 1) * DAY_MS),
        )
        try:
            with conn.transaction():
                # Creators queue on this lock; checking first spares the parent table's lock
                # when the partition is already there, which is nearly always.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
                exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
                if not (exists and exists[0]):
                    conn.execute(statement)
        except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
            # Created at the same moment by a process not taking the lock: it is there.
            pass

    def _stored_days(self, conn: psycopg.Connection[Any]) -> list[int]:
        """Day numbers of the existing partitions, oldest first (from the catalog)."""
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s)",
            (HISTORY_TABLE,),
        ).fetchall()
        return sorted(day for (name,) in rows if (day := _partition_day(name)) is not None)

    def _trim_partition(self, conn: psycopg.Connection[Any], day: int, before_ms: int) -> int:
        """Trim one partition in its own transaction; returns the windows removed."""
        name = _partition_name(day)
        table = _ident(name)
        with conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '5s'")
            if (day + 1) * DAY_MS <= before_ms:
                found = conn.execute(
                    sql.SQL(
                        "SELECT count(*), coalesce(bool_or(window_start + window_ms >= %s), false) "
                        "FROM {}"
                    ).format(table),
                    (before_ms,),
                ).fetchone()
                count, straddles = (0, False) if found is None else found
                if not straddles:
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
                    with self._days_lock:
                        self._known_days.discard(day)
                    return int(count)
            cursor = conn.execute(
                sql.SQL("DELETE FROM {} WHERE window_start + window_ms < %s").format(table),
                (before_ms,),
            )
            return max(cursor.rowcount, 0)


if TYPE_CHECKING:

    def _is_a_history_store(store: PostgresHistory) -> HistoryStore:
        return store  # mypy checks here that the class meets the port
