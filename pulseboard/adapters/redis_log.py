"""The event log on Redis Streams, for the distributed mode (not yet wired into the server).

- **Entries.** One stream entry per accepted ingest batch, in the stream ``RedisKeys.log``, with
  the content of a ``sqlite_log`` row: ``received_ms``, ``events``, ``min_time_ms``,
  ``max_time_ms``, ``payload`` (bytes, as received), plus ``seq`` and ``events_total``: the
  entry's number and the events appended up to and including it, kept by one Lua script that
  appends the entry, bumps ``RedisKeys.log_counters`` and adds the request's dead letters to
  their own stream, in one step (a script is not interrupted by other clients).
- **Durability** is Redis's: the append returns once Redis has applied it. With
  ``appendonly yes`` and ``appendfsync always`` the AOF is written and fsynced before the
  reply: nothing answered is lost. With ``appendfsync everysec`` (Redis's default) a crash of
  the machine may lose about the last second of answered appends (up to 2 s when the disk is
  slow); a crash of redis-server alone loses nothing, the AOF being written (not fsynced)
  before the reply, except while a slow disk makes Redis postpone that write. Without AOF,
  everything since the last RDB snapshot. ``append_many`` sends many requests in one round
  trip, so one fsync covers them all (group commit). A reply lost to a timeout leaves it
  unknown whether the entry was appended: a retry may append it twice, which the processor's
  dedupe by event id absorbs.
- **Readers** are the processors, in one consumer group (``RedisKeys.log_group``) created at
  ``0`` so that nothing appended before the first processor is skipped. A consumer reads its
  own pending entries first (those it read before a restart and never acknowledged), then new
  ones; it acknowledges (``ack``) only once their effect is committed. A dead consumer's
  entries are taken over by a living one with ``claim_idle``.
- **Errors.** Every driver error leaves as ``StoreUnavailable`` naming the URL with its password
  masked and saying what to do. Nothing is retried here (see ``RedisSettings.client``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.exceptions import NoScriptError

from pulseboard.adapters.base import StoreUnavailable
from pulseboard.adapters.redis_conn import RedisSettings, RedisStore, next_id, parse_id, text
from pulseboard.adapters.sqlite_log import Append, LogEntry

log = logging.getLogger(__name__)

MAX_READ_ENTRIES = 1_000
"""Most entries one XREADGROUP asks for, whatever ``max_events`` asks."""
CLAIM_BATCH = 100
"""Entries one XAUTOCLAIM call examines at most."""
BLOCK_MARGIN_S = 1.0
"""A blocking read must end this long before the socket timeout would cut it."""

# KEYS: log, counters, dead letters. ARGV: has_batch, received_ms, events, min, max, payload,
# dead-letter count, then six per dead letter (received_ms, index, has_id, id, error, raw).
# The batch goes first and its counters are read before and written after the XADD, so that a
# failing XADD (a key of the wrong type, out of memory) writes nothing: Redis does not roll a
# script back. Returns the entry's id, or false without a batch.
APPEND_SCRIPT = """
local id = false
if ARGV[1] == '1' then
  local c = redis.call('HMGET', KEYS[2], 'entries', 'events')
  -- string.format: Lua would print a large number as 1e+15
  local seq = string.format('%d', (tonumber(c[1]) or 0) + 1)
  local total = string.format('%d', (tonumber(c[2]) or 0) + tonumber(ARGV[3]))
  id = redis.call('XADD', KEYS[1], '*', 'received_ms', ARGV[2], 'events', ARGV[3],
    'min_time_ms', ARGV[4], 'max_time_ms', ARGV[5], 'seq', seq, 'events_total', total,
    'payload', ARGV[6])
  redis.call('HSET', KEYS[2], 'entries', seq, 'events', total)
end
for i = 0, tonumber(ARGV[7]) - 1 do
  local b = 8 + i * 6
  if ARGV[b + 2] == '1' then
    redis.call('XADD', KEYS[3], '*', 'received_ms', ARGV[b], 'event_index', ARGV[b + 1],
      'event_id', ARGV[b + 3], 'error', ARGV[b + 4], 'raw', ARGV[b + 5])
  else
    redis.call('XADD', KEYS[3], '*', 'received_ms', ARGV[b], 'event_index', ARGV[b + 1],
      'error', ARGV[b + 4], 'raw', ARGV[b + 5])
  end
end
return id
"""

# KEYS: log. ARGV: group, idle ms, then the names to keep. Removes the group's other consumers
# idle that long with nothing pending; returns their names. XINFO CONSUMERS replies name,
# pending, idle (and in newer servers more) as a flat list of field-value pairs.
FORGET_CONSUMERS_SCRIPT = """
local keep = {}
for i = 3, #ARGV do keep[ARGV[i]] = true end
local gone = {}
for _, row in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local c = {}
  for i = 1, #row, 2 do c[row[i]] = row[i + 1] end
  if tonumber(c['pending']) == 0 and tonumber(c['idle']) >= tonumber(ARGV[2])
      and not keep[c['name']] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], c['name'])
    table.insert(gone, c['name'])
  end
end
return gone
"""


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One accepted batch as stored in the stream.

    ``id`` is the stream id (``"<ms>-<n>"``, Redis's clock at append); ``seq`` numbers the
    entries from 1 in append order (the SQLite log's position); ``events_total`` counts the
    events appended up to and including this entry.
    """

    id: str
    received_ms: int
    events: int
    min_time_ms: int
    max_time_ms: int
    payload: bytes
    seq: int
    events_total: int

    def to_log_entry(self) -> LogEntry:
        """The entry as ``sqlite_log.LogEntry`` (position = ``seq``), for code written for it."""
        return LogEntry(self.seq, self.received_ms, self.events, self.payload)


@dataclass(frozen=True, slots=True)
class Backlog:
    """What the group has not acknowledged: ``lag_*`` never delivered to any consumer (exact),
    ``pending_*`` delivered and not acknowledged. ``pending_events`` is exact when the pending
    entries are contiguous (one consumer acknowledging in order), else an estimate: their
    number times the mean events per entry between the oldest and newest pending one."""

    lag_entries: int
    lag_events: int
    pending_entries: int
    pending_events: int

    @property
    def entries(self) -> int:
        return self.lag_entries + self.pending_entries

    @property
    def events(self) -> int:
        return self.lag_events + self.pending_events


@dataclass
class _Reader:
    """One consumer's reading state in this process: where its own pending entries are read
    up to (None once they all were), and entries delivered by Redis but not yet returned."""

    pending_after: str | None = "0"
    buffer: deque[StreamEntry] = field(default_factory=deque)


class RedisEventLog(RedisStore):
    """The event log on a Redis stream: appends (API processes), group reads, acknowledgements,
    claims, backlog and retention (processors). Thread-safe for appends and acknowledgements;
    reading keeps per-consumer state, so one consumer name is read from one thread."""

    what = "Redis event log"

    def __init__(self, settings: RedisSettings, *, client: redis.Redis | None = None) -> None:
        super().__init__(settings, client=client)
        self._script = self.client.register_script(APPEND_SCRIPT)
        self._forget_script = self.client.register_script(FORGET_CONSUMERS_SCRIPT)
        self._readers: dict[str, _Reader] = {}
        self._events_per_entry = 0.0
        block_limit_ms = int((settings.socket_timeout_s - BLOCK_MARGIN_S) * 1000)
        self.max_block_ms = max(0, block_limit_ms)
        """The longest ``block_ms`` ``read`` accepts: below the socket timeout, which would
        otherwise cut a blocking read short and fail it."""

    # --- appending (API processes) -----------------------------------------------------------

    def append(self, item: Append) -> str | None:
        """Append ``item``'s batch (if any) and its dead letters in one step; returns the
        entry's stream id (None without a batch). Durable once it returns, as far as Redis's
        persistence settings make it (see the module docstring)."""
        return self.append_many([item])[0]

    def append_many(self, items: Sequence[Append]) -> list[str | None]:
        """Append several requests in one round trip (group commit: with
        ``appendfsync always`` one fsync covers them all); returns each one's stream id.

        Each request is appended whole or not at all; if any fails, ``StoreUnavailable`` is
        raised and the others may have been appended (they are independent requests: the
        caller answers each of them as failed, and their retries are absorbed by dedupe).
        """
        if not items:
            return []
        keys = [self.keys.log, self.keys.log_counters, self.keys.dead_letters]
        argvs = [_append_args(item) for item in items]
        with self._translate("cannot append to"):
            pipe = self.client.pipeline(transaction=False)
            for argv in argvs:
                pipe.evalsha(self._script.sha, len(keys), *keys, *argv)
            results: list[Any] = pipe.execute(raise_on_error=False)
            # NOSCRIPT (Redis restarted or its script cache was flushed) means that call did
            # nothing, so it is safe to run again with the script's text.
            for i, result in enumerate(results):
                if isinstance(result, NoScriptError):
                    results[i] = self.client.eval(APPEND_SCRIPT, len(keys), *keys, *argvs[i])
            for result in results:
                if isinstance(result, Exception):
                    raise result
        return [None if r is None else text(r) for r in results]

    # --- the consumer group (processors) -----------------------------------------------------

    def ensure_group(self) -> bool:
        """Create the processors' group (and the stream if missing) at id ``0``, so that
        entries appended before the first processor are delivered too. Idempotent: returns
        True if it created the group, False if it was there."""
        with self._translate("cannot create the consumer group in"):
            try:
                self.client.xgroup_create(self.keys.log, self.keys.log_group, "0", mkstream=True)
            except redis.ResponseError as exc:
                if str(exc).startswith("BUSYGROUP"):
                    return False
                raise
        return True

    def read(self, consumer: str, max_events: int, block_ms: int = 0) -> list[StreamEntry]:
        """Entries for ``consumer``, holding about ``max_events`` events (at least one entry
        when there is one; an entry is never split).

        In order: entries claimed or read ahead earlier and not yet returned; then, once per
        ``RedisEventLog`` (i.e. after a restart) or ``rewind``, the consumer's own pending
        entries, those it read and never acknowledged; then new entries (``>``), waiting up to
        ``block_ms`` (0: not at all; at most ``max_block_ms``) only when nothing else came.
        Every entry returned stays pending until ``ack``. A pending entry that was deleted
        (by XDEL; ``trim`` never deletes one) is acknowledged away and not returned.
        """
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, got {max_events}")
        if not 0 <= block_ms <= self.max_block_ms:
            raise ValueError(
                f"block_ms must be from 0 to {self.max_block_ms} (below the socket timeout of "
                f"{self.settings.socket_timeout_s} s), got {block_ms}"
            )
        reader = self._readers.setdefault(consumer, _Reader())
        out: list[StreamEntry] = []
        room = self._take(reader.buffer, out, max_events)
        with self._translate("cannot read from"):
            if not self._events_per_entry:
                self._events_per_entry = self._mean_events_per_entry()
            while room and reader.pending_after is not None:
                got = self._read_group(consumer, reader.pending_after, room, None)
                if not got:
                    reader.pending_after = None
                    break
                reader.pending_after = text(got[-1][0])
                # Entries claimed before this read are pending with this consumer too: once.
                have = {e.id for e in reader.buffer} | {e.id for e in out}
                reader.buffer.extend(e for e in self._entries(got) if e.id not in have)
                room = self._take(reader.buffer, out, max_events)
            # New entries, until about max_events: a few reads at most, since each asks for
            # as many entries as the mean batch size says fit.
            for _ in range(4):
                # Stop when a batch like the last one would not fit: reading it would only
                # hold it back, pending, until the next read.
                if not room or (out and room < out[-1].events):
                    break
                block = block_ms if (block_ms and not out) else None
                got = self._read_group(consumer, ">", room, block)
                reader.buffer.extend(self._entries(got))
                room = self._take(reader.buffer, out, max_events)
                if not got:
                    break
        return out

    def rewind(self, consumer: str) -> None:
        """Read ``consumer``'s pending entries again from the first: after its commit failed
        and it went back to its last committed state. Entries read ahead are dropped (they are
        pending, so they come again)."""
        self._readers.pop(consumer, None)

    def ack(self, ids: Sequence[str]) -> int:
        """Acknowledge entries (XACK): they are never delivered again. Call it only once their
        effect is committed. Returns how many were pending (an id acknowledged already, or
        unknown, counts 0)."""
        if not ids:
            return 0
        with self._translate("cannot acknowledge entries in"):
            return int(self.client.xack(self.keys.log, self.keys.log_group, *ids))

    def ack_command(self, ids: Sequence[str]) -> tuple[str, ...]:
        """The XACK command for ``ids`` as arguments, to run inside the commit that makes
        their effect durable (MULTI/EXEC, or ``redis.call(unpack(...))`` in a script), so that
        an entry is acknowledged if and only if its effect is committed."""
        if not ids:
            raise ValueError("XACK needs at least one id")
        return ("XACK", self.keys.log, self.keys.log_group, *ids)

    def claim_idle(self, consumer: str, min_idle_ms: int, count: int) -> int:
        """Take over up to ``count`` entries pending for at least ``min_idle_ms`` with any
        consumer (one that died, or is stuck), with XAUTOCLAIM; they are returned by
        ``consumer``'s next ``read``s, oldest first. Returns how many were claimed.

        ``min_idle_ms`` must exceed the longest time a living consumer holds entries before
        acknowledging them (a tick plus its commit), else they are processed twice (which the
        commit's applied marks are there to absorb). Deleted entries met on the way are
        acknowledged away (Redis 7 already drops them from the pending list).
        """
        if min_idle_ms < 0 or count < 1:
            raise ValueError(f"need min_idle_ms >= 0 and count >= 1, got {min_idle_ms}, {count}")
        reader = self._readers.setdefault(consumer, _Reader())
        held = {entry.id for entry in reader.buffer}
        claimed: list[StreamEntry] = []
        start = "0-0"
        with self._translate("cannot claim entries in"):
            while len(claimed) < count:
                reply = self.client.xautoclaim(
                    self.keys.log,
                    self.keys.log_group,
                    consumer,
                    min_idle_ms,
                    start_id=start,
                    count=min(CLAIM_BATCH, count - len(claimed)),
                )
                start = text(reply[0])
                deleted = [text(i) for i in (reply[2] if len(reply) > 2 else [])]
                if deleted:
                    self.ack(deleted)
                entries = [e for e in self._entries(reply[1]) if e.id not in held]
                claimed.extend(entries)
                if start == "0-0":
                    break
        reader.buffer.extendleft(reversed(claimed))
        return len(claimed)

    def consumers(self) -> dict[str, tuple[int, int]]:
        """Each consumer of the group: (pending entries, idle ms since its last command)."""
        with self._translate("cannot read consumers of"):
            rows = self.client.xinfo_consumers(self.keys.log, self.keys.log_group)
        return {text(r["name"]): (int(r["pending"]), int(r["idle"])) for r in rows}

    def forget_idle_consumers(self, idle_ms: int, keep: Collection[str] = ()) -> list[str]:
        """Remove from the group the consumers not in ``keep`` idle for ``idle_ms`` or more
        with nothing pending (processors that stopped or died, once their entries were taken
        over); returns their names. Checked and removed in one script, so a consumer that reads
        meanwhile is kept: removing one with pending entries would strand them. (Removing a
        living one with nothing pending is harmless, its next read makes it again; ``keep``
        names those known to live, whose idle time a blocking read may not refresh.)"""
        with self._translate("cannot remove idle consumers of"):
            if self._group() is None:
                return []
            args: list[str | int] = [self.keys.log_group, idle_ms, *keep]
            names: Any = self._forget_script(keys=[self.keys.log], args=args)
        return [text(n) for n in names]

    # --- backlog and retention ----------------------------------------------------------------

    def backlog(self) -> Backlog:
        """Entries and events the group has not acknowledged (see ``Backlog``); all zero when
        the stream or the group does not exist. Two round trips of a few commands, whatever
        the backlog's size: counts come from the entries' running totals, not a scan."""
        with self._translate("cannot measure the backlog of"):
            group = self._group()
            if group is None:
                return Backlog(0, 0, 0, 0)
            pending = self.client.xpending(self.keys.log, self.keys.log_group)
            count = int(pending["pending"])
            pipe = self.client.pipeline(transaction=False)
            pipe.hmget(self.keys.log_counters, "entries", "events")
            pipe.xrange(self.keys.log, f"({text(group['last-delivered-id'])}", "+", count=1)
            if count:
                pipe.xrange(self.keys.log, pending["min"], pending["min"], count=1)
                pipe.xrange(self.keys.log, pending["max"], pending["max"], count=1)
            replies = pipe.execute()
        last_seq, last_total = (int(v or 0) for v in replies[0])
        lag_entries = lag_events = 0
        if replies[1]:
            first = self._entry(*replies[1][0])
            lag_entries = last_seq - first.seq + 1
            lag_events = last_total - (first.events_total - first.events)
        pending_events = 0
        if count:
            oldest = self._entries(replies[2])
            newest = self._entries(replies[3])
            if oldest and newest:
                span = newest[0].seq - oldest[0].seq + 1
                events = newest[0].events_total - oldest[0].events_total + oldest[0].events
                pending_events = round(count * events / max(span, count))
            else:  # one end was deleted: fall back on the log's mean batch
                pending_events = round(count * (last_total / last_seq if last_seq else 0))
        return Backlog(lag_entries, lag_events, count, pending_events)

    def trim(self, older_than_ms: int) -> int:
        """Delete entries appended before ``older_than_ms`` (epoch ms, by the stream id, which
        is Redis's clock at append), but never one the group has not acknowledged: the cut is
        the oldest of that time, the oldest pending entry and the first undelivered one.
        Without a group nothing is deleted (no processor has started: all of it is to read).
        Returns how many entries went.

        Reading the group and trimming are two steps, which is safe: meanwhile entries can only
        become delivered (after the cut), claimed (same ids) or acknowledged, so the oldest
        unacknowledged entry can only move later than what was read.
        """
        with self._translate("cannot trim"):
            group = self._group()
            if group is None:
                return 0
            pending = self.client.xpending(self.keys.log, self.keys.log_group)
            bounds = [(older_than_ms, 0), parse_id(next_id(group["last-delivered-id"]))]
            if int(pending["pending"]):
                bounds.append(parse_id(pending["min"]))
            ms, seq = min(bounds)
            return int(self.client.xtrim(self.keys.log, minid=f"{ms}-{seq}", approximate=False))

    def overlapping(
        self, start_ms: int, end_ms: int, since_ms: int, *, chunk: int = 500
    ) -> Iterator[StreamEntry]:
        """Entries appended at or after ``since_ms`` (epoch ms, by stream id: streams have no
        index by event time) that may hold events with times in ``[start_ms, end_ms)`` (by
        their min and max event time), in append order, acknowledged or not. Read ``chunk``
        entries per round trip; entries appended while iterating may be included."""
        after = f"{max(0, since_ms)}-0"
        while True:
            with self._translate("cannot read from"):
                rows: Any = self.client.xrange(self.keys.log, after, "+", count=chunk)
            if not rows:
                return
            for stream_id, fields in rows:
                entry = self._entry(stream_id, fields)
                if entry.max_time_ms >= start_ms and entry.min_time_ms < end_ms:
                    yield entry
            if len(rows) < chunk:
                return
            after = f"({text(rows[-1][0])}"

    def length(self) -> int:
        """Entries in the stream (acknowledged or not, until trimmed)."""
        with self._translate("cannot read from"):
            return int(self.client.xlen(self.keys.log))

    # --- internals -----------------------------------------------------------------------------

    def _group(self) -> dict[str, Any] | None:
        """The group's XINFO GROUPS row, or None without the stream or the group."""
        try:
            groups = self.client.xinfo_groups(self.keys.log)
        except redis.ResponseError as exc:
            if "no such key" in str(exc):
                return None
            raise
        for group in groups:
            if text(group["name"]) == self.keys.log_group:
                return dict(group)
        return None

    def _mean_events_per_entry(self) -> float:
        """Events per entry over the log's life (from the counters), 100 before any."""
        counters: Any = self.client.hmget(self.keys.log_counters, "entries", "events")
        entries, events = counters
        return int(events) / int(entries) if entries and int(entries) else 100.0

    def _read_group(
        self, consumer: str, after: str, max_events: int, block: int | None
    ) -> list[tuple[Any, dict[bytes, bytes]]]:
        """One XREADGROUP for about ``max_events`` events' worth of entries."""
        count = min(MAX_READ_ENTRIES, max(1, int(max_events / self._events_per_entry)))
        reply: Any = self.client.xreadgroup(
            self.keys.log_group,
            consumer,
            {self.keys.log: after},
            count=count,
            block=block,
        )
        if not reply:
            return []
        # RESP2 replies [[stream, rows]]; redis-py's RESP3 form is {stream: rows}.
        got: list[tuple[Any, dict[bytes, bytes]]]
        got = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        return got

    def _entries(self, rows: Sequence[tuple[Any, dict[bytes, bytes]]]) -> list[StreamEntry]:
        """Rows as entries; rows of deleted entries (no fields) are acknowledged away."""
        gone = [text(i) for i, fields in rows if not fields]
        if gone:
            log.warning("acknowledging %d deleted log entries: %s", len(gone), gone[:5])
            self.client.xack(self.keys.log, self.keys.log_group, *gone)
        entries = [self._entry(i, fields) for i, fields in rows if fields]
        if entries:  # how many entries to ask for next time
            mean = sum(e.events for e in entries) / len(entries)
            self._events_per_entry = 0.5 * self._events_per_entry + 0.5 * max(mean, 1.0)
        return entries

    def _entry(self, stream_id: Any, fields: dict[bytes, bytes]) -> StreamEntry:
        try:
            return StreamEntry(
                id=text(stream_id),
                received_ms=int(fields[b"received_ms"]),
                events=int(fields[b"events"]),
                min_time_ms=int(fields[b"min_time_ms"]),
                max_time_ms=int(fields[b"max_time_ms"]),
                payload=bytes(fields[b"payload"]),
                seq=int(fields[b"seq"]),
                events_total=int(fields[b"events_total"]),
            )
        except (KeyError, ValueError) as exc:
            raise StoreUnavailable(
                f"entry {text(stream_id)} of {self.keys.log} in the {self.what} at "
                f"{self.settings.masked()} is not a Pulseboard log entry ({exc!r}; fields "
                f"{sorted(k.decode(errors='replace') for k in fields)}): it was written by "
                "something else or a newer Pulseboard; remove it with XACK and XDEL"
            ) from None

    @staticmethod
    def _take(buffer: deque[StreamEntry], out: list[StreamEntry], max_events: int) -> int:
        """Move entries from ``buffer`` to ``out`` while they fit in ``max_events`` (the first
        always does); returns the room left (0 when an entry did not fit)."""
        total = sum(e.events for e in out)
        while buffer:
            if out and total + buffer[0].events > max_events:
                return 0
            entry = buffer.popleft()
            out.append(entry)
            total += entry.events
        return max(0, max_events - total)


def _append_args(item: Append) -> list[bytes | int | str]:
    """The append script's ARGV for one request."""
    argv: list[bytes | int | str] = (
        ["0", 0, 0, 0, 0, b""]
        if item.payload is None
        else ["1", item.received_ms, item.events, item.min_time_ms, item.max_time_ms, item.payload]
    )
    argv.append(len(item.dead))
    for d in item.dead:
        has_id = d.event_id is not None
        argv += [d.received_ms, d.event_index, "1" if has_id else "0", d.event_id or "", d.error]
        argv.append(d.raw)
    return argv
