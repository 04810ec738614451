"""The embedded adapters: the event log, dead letters, history, hot windows and API keys in SQLite.

Four files under the data directory, each with one writer, so writers never wait on each
other: ``log.db`` (the API process appends accepted batches and dead letters), ``state.db``
(the processor commits its position, history, open windows and late events),
``checkpoint.db`` (the processor's engine snapshots, written on a thread of their own) and
``meta.db`` (API keys). Every file is in WAL mode, so readers never block the writer.
All table names of the embedded deployment are in this module; the log's reader and writer are
in ``sqlite_log``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pulseboard.adapters.base import LateRow as LateRow

# Re-exported: these lived here before the server adapters existed.
from pulseboard.adapters.base import StoreUnavailable as StoreUnavailable
from pulseboard.adapters.base import WindowRow as WindowRow
from pulseboard.adapters.base import now_ms as now_ms

LOG_FILE = "log.db"
STATE_FILE = "state.db"
META_FILE = "meta.db"
CHECKPOINT_FILE = "checkpoint.db"

LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms INTEGER NOT NULL,
    events INTEGER NOT NULL,
    min_time_ms INTEGER NOT NULL,
    max_time_ms INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS log_by_received ON log (received_ms);
CREATE INDEX IF NOT EXISTS log_by_max_time ON log (max_time_ms);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms INTEGER NOT NULL,
    event_index INTEGER NOT NULL,
    event_id TEXT,
    error TEXT NOT NULL,
    raw BLOB NOT NULL,
    replayed_ms INTEGER
);
"""

_STATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS progress (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pos INTEGER NOT NULL,
    stream_time_ms INTEGER,
    committed_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    metric TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    labels TEXT NOT NULL,
    window_end INTEGER NOT NULL,
    value,
    state BLOB NOT NULL,
    status TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (metric, window_start, labels)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS history_by_end ON history (window_end);
CREATE TABLE IF NOT EXISTS hot (
    metric TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    labels TEXT NOT NULL,
    window_end INTEGER NOT NULL,
    value,
    state BLOB NOT NULL,
    PRIMARY KEY (metric, window_start, labels)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS current (
    metric TEXT PRIMARY KEY,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS late (
    metric TEXT NOT NULL,
    event_id TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    window_end INTEGER NOT NULL,
    labels TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    value,
    noted_ms INTEGER NOT NULL,
    applied_ms INTEGER,
    PRIMARY KEY (metric, event_id, window_start)
);
CREATE INDEX IF NOT EXISTS late_pending ON late (applied_ms, metric);
"""

_CHECKPOINT_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pos INTEGER NOT NULL,
    snapshot BLOB NOT NULL,
    saved_ms INTEGER NOT NULL
);
"""

_META_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    scopes TEXT NOT NULL,
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
CREATE TABLE IF NOT EXISTS dashboards (
    id TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    updated_ms INTEGER NOT NULL
);
"""


def connect(
    path: Path, schema: str, *, readonly: bool = False, large_pages: bool = False
) -> sqlite3.Connection:
    """A connection in WAL mode with the schema applied (unless read-only). ``large_pages``
    (64 KiB, set when the file is created) suits files of large blobs: a log entry of ~100 KB
    then spans 2 pages instead of a chain of 25, which halves the cost of reading it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 30000")
        if not readonly:
            if large_pages:
                conn.execute("PRAGMA page_size = 65536")
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit is on disk when it returns, which is what a 202 promises
            conn.execute("PRAGMA synchronous = FULL")
            conn.executescript(schema)
        else:
            conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot open {path}: {exc}") from exc
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# --- the processor's state -----------------------------------------------------------------


@dataclass(slots=True)
class Commit:
    """What the processor commits in one transaction."""

    pos: int
    stream_time_ms: int | None
    final: list[WindowRow]
    late: list[LateRow]
    hot: dict[str, list[WindowRow]]
    """Every open window of each listed metric (replacing what was stored for it)."""
    current: dict[str, bytes]


class SqliteState:
    """``state.db``: the processor's position, history, open windows, late events.

    The processor is its only writer; the API and the CLI read it (and ``reconcile`` writes
    revised windows when run by hand, waiting for the file lock like any writer).
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        if readonly and not path.exists():
            connect(path, _STATE_SCHEMA).close()
        self._conn = connect(path, _STATE_SCHEMA, readonly=readonly)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def progress(self) -> tuple[int, int | None, int] | None:
        """(position, stream time, committed at) of the last commit."""
        with self._lock:
            row = self._conn.execute(
                "SELECT pos, stream_time_ms, committed_ms FROM progress WHERE id = 1"
            ).fetchone()
        return None if row is None else (int(row[0]), row[1], int(row[2]))

    def commit(self, c: Commit) -> None:
        """Apply ``c`` atomically. A final window never overwrites a revised one: revised
        values are recomputed from the log and stay right when a restart replays the log."""
        stamp = now_ms()
        with self._lock, transaction(self._conn) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO progress (id, pos, stream_time_ms, committed_ms) "
                "VALUES (1, ?, ?, ?)",
                (c.pos, c.stream_time_ms, stamp),
            )
            conn.executemany(
                "INSERT INTO history (metric, window_start, labels, window_end, value, state, "
                "status, updated_ms) VALUES (?, ?, ?, ?, ?, ?, 'final', ?) "
                "ON CONFLICT DO UPDATE SET value = excluded.value, state = excluded.state, "
                "updated_ms = excluded.updated_ms WHERE status != 'revised'",
                [_history_params(r, stamp) for r in c.final],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO late (metric, event_id, window_start, window_end, labels, "
                "time_ms, value, noted_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.metric,
                        r.event_id,
                        r.window_start_ms,
                        r.window_end_ms,
                        r.labels,
                        r.time_ms,
                        r.value,
                        stamp,
                    )
                    for r in c.late
                ],
            )
            for metric, rows in c.hot.items():
                conn.execute("DELETE FROM hot WHERE metric = ?", (metric,))
                conn.executemany(
                    "INSERT INTO hot (metric, window_start, labels, window_end, value, state) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (r.metric, r.window_start_ms, r.labels, r.window_end_ms, r.value, r.state)
                        for r in rows
                    ],
                )
            conn.executemany(
                "INSERT OR REPLACE INTO current (metric, payload) VALUES (?, ?)",
                list(c.current.items()),
            )

    def current(self) -> dict[str, bytes]:
        """The last committed current value of every metric (the JSON the API serves)."""
        with self._lock:
            rows = self._conn.execute("SELECT metric, payload FROM current").fetchall()
        return {m: bytes(p) for m, p in rows}

    def windows(
        self, metric: str, start_ms: int, end_ms: int, window_ms: int, step_ms: int = 0
    ) -> tuple[list[WindowRow], list[WindowRow]]:
        """(history, open) windows of ``metric`` of length ``window_ms`` starting in
        ``[start_ms, end_ms)`` and aligned to ``window_ms``, read in one snapshot of the file
        (``step_ms`` is for stores with rollups; this one has none)."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                final = self._conn.execute(
                    "SELECT labels, window_start, window_end, value, state, status FROM history "
                    "WHERE metric = ? AND window_start >= ? AND window_start < ? "
                    "AND window_end - window_start = ? AND window_start % ? = 0",
                    (metric, start_ms, end_ms, window_ms, window_ms),
                ).fetchall()
                hot = self._conn.execute(
                    "SELECT labels, window_start, window_end, value, state, 'open' FROM hot "
                    "WHERE metric = ? AND window_start >= ? AND window_start < ?",
                    (metric, start_ms, end_ms),
                ).fetchall()
            finally:
                self._conn.execute("COMMIT")
        return (
            [WindowRow(metric, r[0], r[1], r[2], r[3], bytes(r[4]), r[5]) for r in final],
            [WindowRow(metric, r[0], r[1], r[2], r[3], bytes(r[4]), r[5]) for r in hot],
        )

    def pending_late(self, limit: int = 100_000) -> list[LateRow]:
        """Late events not yet reconciled."""
        rows = self._conn.execute(
            "SELECT metric, event_id, window_start, window_end, labels, time_ms, value FROM late "
            "WHERE applied_ms IS NULL LIMIT ?",
            (limit,),
        ).fetchall()
        return [LateRow(*r) for r in rows]

    def late_counts(self) -> tuple[int, int]:
        """(all late events kept, those not yet reconciled)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT COUNT(*), COUNT(*) - COUNT(applied_ms) FROM late"
            ).fetchone()
        return int(row[0]), int(row[1])

    def revise(self, rows: list[WindowRow], applied: list[LateRow]) -> None:
        """Store recomputed windows as revised and mark their late events applied, atomically."""
        stamp = now_ms()
        with self._lock, transaction(self._conn) as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO history (metric, window_start, labels, window_end, "
                "value, state, status, updated_ms) VALUES (?, ?, ?, ?, ?, ?, 'revised', ?)",
                [_history_params(r, stamp) for r in rows],
            )
            conn.executemany(
                "UPDATE late SET applied_ms = ? "
                "WHERE metric = ? AND event_id = ? AND window_start = ?",
                [(stamp, r.metric, r.event_id, r.window_start_ms) for r in applied],
            )

    def trim(self, history_before_ms: int, late_before_ms: int) -> None:
        """Drop history windows that ended before ``history_before_ms`` and reconciled late
        events noted before ``late_before_ms``."""
        with self._lock, transaction(self._conn) as conn:
            conn.execute("DELETE FROM history WHERE window_end < ?", (history_before_ms,))
            conn.execute(
                "DELETE FROM late WHERE applied_ms IS NOT NULL AND noted_ms < ?",
                (late_before_ms,),
            )


class SqliteHistory:
    """The ``history`` table of ``state.db`` as a ``HistoryStore`` (``ports.py``).

    The same table and the same statements as ``SqliteState`` (which keeps writing history in
    its per-tick commit), so either can read what the other wrote. Windows are keyed by
    (metric, start, labels): unlike the PostgreSQL adapter, a window of another length starting
    at the same instant replaces the stored one, which a metric never does (one length each).
    """

    def __init__(self, path: Path) -> None:
        self._conn = connect(path, _STATE_SCHEMA)
        self._lock = threading.Lock()

    def write_final(self, rows: list[WindowRow]) -> None:
        """Upsert ``rows`` as final; a revised window is left untouched."""
        stamp = now_ms()
        with self._lock, transaction(self._conn) as conn:
            conn.executemany(_UPSERT_FINAL, [_history_params(r, stamp) for r in rows])

    def revise(self, rows: list[WindowRow]) -> None:
        """Upsert ``rows`` as revised, replacing final and revised windows alike."""
        stamp = now_ms()
        with self._lock, transaction(self._conn) as conn:
            conn.executemany(_UPSERT_REVISED, [_history_params(r, stamp) for r in rows])

    def windows(self, metric: str, start_ms: int, end_ms: int, window_ms: int) -> list[WindowRow]:
        """Windows of ``metric`` of length ``window_ms``, aligned to it, starting in
        ``[start_ms, end_ms)``, by (start, labels)."""
        if window_ms <= 0:
            raise ValueError(f"window_ms must be positive, got {window_ms}")
        with self._lock:
            rows = self._conn.execute(
                "SELECT labels, window_start, window_end, value, state, status FROM history "
                "WHERE metric = ? AND window_start >= ? AND window_start < ? "
                "AND window_end - window_start = ? AND window_start % ? = 0 "
                "ORDER BY window_start, labels",
                (metric, start_ms, end_ms, window_ms, window_ms),
            ).fetchall()
        return [WindowRow(metric, r[0], r[1], r[2], r[3], bytes(r[4]), r[5]) for r in rows]

    def trim(self, before_ms: int) -> int:
        """Delete the windows that ended before ``before_ms``; returns how many."""
        with self._lock, transaction(self._conn) as conn:
            cursor = conn.execute("DELETE FROM history WHERE window_end < ?", (before_ms,))
        return cursor.rowcount

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


# The statements of ``SqliteState.commit`` and ``SqliteState.revise``, so both classes keep
# one semantics (tests/integration checks that each reads what the other wrote).
_UPSERT_FINAL = (
    "INSERT INTO history (metric, window_start, labels, window_end, value, state, "
    "status, updated_ms) VALUES (?, ?, ?, ?, ?, ?, 'final', ?) "
    "ON CONFLICT DO UPDATE SET value = excluded.value, state = excluded.state, "
    "updated_ms = excluded.updated_ms WHERE status != 'revised'"
)
_UPSERT_REVISED = (
    "INSERT OR REPLACE INTO history (metric, window_start, labels, window_end, "
    "value, state, status, updated_ms) VALUES (?, ?, ?, ?, ?, ?, 'revised', ?)"
)


class SqliteCheckpoints:
    """``checkpoint.db``: the processor's last engine snapshot and the log position it
    belongs to. A file of its own, so writing a large snapshot never holds up a tick's commit."""

    def __init__(self, path: Path) -> None:
        self._conn = connect(path, _CHECKPOINT_SCHEMA, large_pages=True)

    def load(self) -> tuple[int, bytes] | None:
        """The last checkpoint: (log position, engine snapshot)."""
        row = self._conn.execute("SELECT pos, snapshot FROM checkpoint WHERE id = 1").fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def save(self, pos: int, snapshot: bytes) -> None:
        with transaction(self._conn) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO checkpoint (id, pos, snapshot, saved_ms) "
                "VALUES (1, ?, ?, ?)",
                (pos, snapshot, now_ms()),
            )

    def close(self) -> None:
        self._conn.close()


def _history_params(r: WindowRow, stamp: int) -> tuple[Any, ...]:
    return (r.metric, r.window_start_ms, r.labels, r.window_end_ms, r.value, r.state, stamp)


# --- API keys ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A stored API key: its public id, the hash of its secret and its scopes."""

    key_id: str
    secret_hash: str
    scopes: frozenset[str]
    name: str
    created_ms: int
    revoked_ms: int | None


class SqliteKeys:
    """``meta.db``: API keys (hashed)."""

    def __init__(self, path: Path) -> None:
        self._conn = connect(path, _META_SCHEMA)
        self._lock = threading.Lock()

    def add(self, record: KeyRecord) -> None:
        with self._lock, transaction(self._conn) as conn:
            conn.execute(
                "INSERT INTO api_keys (key_id, secret_hash, scopes, name, created_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    record.key_id,
                    record.secret_hash,
                    ",".join(sorted(record.scopes)),
                    record.name,
                    record.created_ms,
                ),
            )

    def get(self, key_id: str) -> KeyRecord | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT key_id, secret_hash, scopes, name, created_ms, revoked_ms "
                "FROM api_keys WHERE key_id = ?",
                (key_id,),
            ).fetchone()
        if row is None:
            return None
        return KeyRecord(row[0], row[1], frozenset(row[2].split(",")), row[3], row[4], row[5])

    def all(self) -> list[KeyRecord]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT key_id, secret_hash, scopes, name, created_ms, revoked_ms FROM api_keys "
                "ORDER BY created_ms"
            ).fetchall()
        return [KeyRecord(r[0], r[1], frozenset(r[2].split(",")), r[3], r[4], r[5]) for r in rows]

    def revoke(self, key_id: str) -> bool:
        with self._lock, transaction(self._conn) as conn:
            cursor = conn.execute(
                "UPDATE api_keys SET revoked_ms = ? WHERE key_id = ? AND revoked_ms IS NULL",
                (now_ms(), key_id),
            )
        return cursor.rowcount > 0

    def close(self) -> None:
        self._conn.close()


@dataclass(frozen=True, slots=True)
class StoredDashboard:
    """A dashboard saved by a user: its id, its JSON body and when it was last saved."""

    id: str
    body: bytes
    updated_ms: int


class SqliteDashboards:
    """``meta.db``: dashboards saved through the API (the config's own are not stored)."""

    def __init__(self, path: Path) -> None:
        self._conn = connect(path, _META_SCHEMA)
        self._lock = threading.Lock()

    def all(self) -> list[StoredDashboard]:
        """Every saved dashboard, by id."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, body, updated_ms FROM dashboards ORDER BY id"
            ).fetchall()
        return [StoredDashboard(r[0], bytes(r[1]), r[2]) for r in rows]

    def get(self, ident: str) -> StoredDashboard | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT id, body, updated_ms FROM dashboards WHERE id = ?", (ident,)
            ).fetchone()
        return None if row is None else StoredDashboard(row[0], bytes(row[1]), row[2])

    def put(self, dashboard: StoredDashboard, *, create_only: bool = False) -> bool | None:
        """Save ``dashboard``, replacing one with its id; True if it is new. With
        ``create_only``, an existing one is left as it is and None is returned."""
        with self._lock, transaction(self._conn) as conn:
            existed = conn.execute(
                "SELECT 1 FROM dashboards WHERE id = ?", (dashboard.id,)
            ).fetchone()
            if existed is not None and create_only:
                return None
            conn.execute(
                "INSERT OR REPLACE INTO dashboards (id, body, updated_ms) VALUES (?, ?, ?)",
                (dashboard.id, dashboard.body, dashboard.updated_ms),
            )
        return existed is None

    def delete(self, ident: str) -> bool:
        """Delete the dashboard ``ident``; False if there was none."""
        with self._lock, transaction(self._conn) as conn:
            cursor = conn.execute("DELETE FROM dashboards WHERE id = ?", (ident,))
        return cursor.rowcount > 0

    def close(self) -> None:
        self._conn.close()


if TYPE_CHECKING:
    from pulseboard.adapters.ports import HistoryStore

    def _is_a_history_store(store: SqliteHistory) -> HistoryStore:
        return store  # mypy checks here that the class meets the port
