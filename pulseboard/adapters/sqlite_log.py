"""The embedded event log in ``log.db``: accepted batches (group-committed) and dead letters.

The API process is the only writer (one thread, many requests per transaction); the processor
reads entries in position order and trims them by age. Schema and file names are in
``pulseboard.adapters.sqlite``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulseboard.adapters.sqlite import LOG_SCHEMA, StoreUnavailable, connect, now_ms, transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected event, kept with the reason and the event as it arrived."""

    received_ms: int
    event_index: int
    event_id: str | None
    error: str
    raw: bytes
    id: int = 0
    replayed_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Append:
    """One ingest request's share of a group commit: its accepted batch (if any) and its
    rejected events."""

    received_ms: int
    events: int
    min_time_ms: int
    max_time_ms: int
    payload: bytes | None
    dead: Sequence[DeadLetter]


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One accepted batch as stored: its position and its wire-format payload."""

    pos: int
    received_ms: int
    events: int
    payload: bytes


_STOP = object()


class SqliteLogWriter:
    """Appends ingest requests to ``log.db`` from one thread, many requests per transaction.

    ``append`` resolves once the request's batch is committed with ``synchronous = FULL``,
    i.e. on disk: that is when ingest may answer 202. Requests that queue while a commit runs
    share the next one (group commit), so the cost of a commit is spread over them.
    """

    def __init__(self, path: Path, *, max_group: int = 256) -> None:
        self._path = path
        self._max_group = max_group
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._conn = connect(path, LOG_SCHEMA, large_pages=True)
        self.last_pos = self._conn.execute("SELECT COALESCE(MAX(pos), 0) FROM log").fetchone()[0]
        self.appended_events = 0
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()
        self.on_commit: Any = None
        """Called on the writer thread after each commit with the last position."""

    def refusing(self) -> bool:
        """True once a commit failed (``error`` says how), until one succeeds."""
        return self.error is not None

    async def append(self, item: Append) -> int:
        """Make ``item`` durable; returns the log position of its batch (0 if it had none)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._queue.put((item, future, loop))
        return await future

    def close(self) -> None:
        """Commit what is queued, then stop the thread and close the file."""
        self._queue.put(_STOP)
        self._thread.join(timeout=30)
        self._conn.close()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            group = [first]
            while len(group) < self._max_group:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    self._queue.put(_STOP)
                    break
                group.append(nxt)
            self._commit(group)

    def _commit(self, group: list[Any]) -> None:
        results: list[int | BaseException] = []
        try:
            with transaction(self._conn) as conn:
                for item, _, _ in group:
                    results.append(self._insert(conn, item))
            self.error = None
        except sqlite3.Error as exc:
            self.error = f"the event log {self._path} cannot take writes: {exc}"
            log.error("%s", self.error)
            failure = StoreUnavailable(self.error)
            results = [failure] * len(group)
        else:
            self.last_pos = max([self.last_pos, *(r for r in results if isinstance(r, int))])
            self.appended_events += sum(item.events for item, _, _ in group)
            if self.on_commit is not None:
                self.on_commit(self.last_pos)
        for (_, future, loop), result in zip(group, results, strict=True):
            loop.call_soon_threadsafe(_resolve, future, result)

    @staticmethod
    def _insert(conn: sqlite3.Connection, item: Append) -> int:
        if item.dead:
            conn.executemany(
                "INSERT INTO dead_letters (received_ms, event_index, event_id, error, raw) "
                "VALUES (?, ?, ?, ?, ?)",
                [(d.received_ms, d.event_index, d.event_id, d.error, d.raw) for d in item.dead],
            )
        if item.payload is None:
            return 0
        cursor = conn.execute(
            "INSERT INTO log (received_ms, events, min_time_ms, max_time_ms, payload) "
            "VALUES (?, ?, ?, ?, ?)",
            (item.received_ms, item.events, item.min_time_ms, item.max_time_ms, item.payload),
        )
        return int(cursor.lastrowid or 0)


def _resolve(future: asyncio.Future[int], result: int | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class SqliteLogReader:
    """Reads ``log.db`` in position order (the processor), and trims it by age."""

    def __init__(self, path: Path) -> None:
        self._conn = connect(path, LOG_SCHEMA, large_pages=True)

    def read(self, after: int, max_events: int) -> list[LogEntry]:
        """Entries after position ``after``, in order, holding about ``max_events`` events
        (at least one entry when there is one)."""
        rows = self._conn.execute(
            "SELECT pos, received_ms, events, payload FROM log WHERE pos > ? ORDER BY pos LIMIT ?",
            (after, max(1, max_events // 100)),
        ).fetchall()
        out: list[LogEntry] = []
        total = 0
        for pos, received, events, payload in rows:
            if out and total + events > max_events:
                break
            out.append(LogEntry(pos, received, events, payload))
            total += events
        return out

    def backlog(self, after: int) -> tuple[int, int]:
        """(entries, events) in the log after position ``after``."""
        row = self._conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(events), 0) FROM log WHERE pos > ?", (after,)
        ).fetchone()
        return int(row[0]), int(row[1])

    def overlapping(self, start_ms: int, end_ms: int, through: int) -> Iterator[LogEntry]:
        """Entries up to position ``through`` holding events with times in
        ``[start_ms, end_ms)``, in position order."""
        cursor = self._conn.execute(
            "SELECT pos, received_ms, events, payload FROM log "
            "WHERE max_time_ms >= ? AND min_time_ms < ? AND pos <= ? ORDER BY pos",
            (start_ms, end_ms, through),
        )
        for pos, received, events, payload in cursor:
            yield LogEntry(pos, received, events, payload)

    def trim(self, before_ms: int, through: int) -> int:
        """Delete entries appended before ``before_ms`` and at or before position ``through``
        (so nothing the processor still needs goes), and dead letters received before
        ``before_ms``; returns how many entries went."""
        with transaction(self._conn) as conn:
            cursor = conn.execute(
                "DELETE FROM log WHERE received_ms < ? AND pos <= ?", (before_ms, through)
            )
            conn.execute("DELETE FROM dead_letters WHERE received_ms < ?", (before_ms,))
        return cursor.rowcount

    def close(self) -> None:
        self._conn.close()


class SqliteDeadLetters:
    """The dead-letter store in ``log.db``: listing and marking replayed."""

    def __init__(self, path: Path) -> None:
        self._conn = connect(path, LOG_SCHEMA, large_pages=True)

    def list(self, *, limit: int, include_replayed: bool = False) -> list[DeadLetter]:
        """The oldest dead letters first, up to ``limit``."""
        where = "" if include_replayed else "WHERE replayed_ms IS NULL"
        rows = self._conn.execute(
            "SELECT id, received_ms, event_index, event_id, error, raw, replayed_ms "
            f"FROM dead_letters {where} ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
        return [DeadLetter(r[1], r[2], r[3], r[4], bytes(r[5]), r[0], r[6]) for r in rows]

    def count(self) -> int:
        """Dead letters not yet replayed."""
        row = self._conn.execute(
            "SELECT COUNT(*) FROM dead_letters WHERE replayed_ms IS NULL"
        ).fetchone()
        return int(row[0])

    def mark_replayed(self, ids: Sequence[int]) -> None:
        with transaction(self._conn) as conn:
            conn.executemany(
                "UPDATE dead_letters SET replayed_ms = ? WHERE id = ?",
                [(now_ms(), i) for i in ids],
            )

    def close(self) -> None:
        self._conn.close()
