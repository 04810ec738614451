"""Dead letters on a Redis stream: rejected events with their reason, for the distributed mode.

They are appended with the accepted batch of their request, in one step, by
``redis_log.RedisEventLog.append``; this module lists, counts, marks replayed and trims them,
as ``sqlite_log.SqliteDeadLetters`` and ``pulseboard dlq`` do for the embedded log. A stream
cannot change an entry, so "replayed" is a mark in a hash beside it
(``RedisKeys.dead_letters_replayed``: stream id -> replayed at, epoch ms).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pulseboard.adapters.redis_conn import RedisStore, parse_id, text
from pulseboard.adapters.sqlite_log import DeadLetter

_DEAD_LETTER_ID_SCALE = 1_000_000


def dead_letter_number(stream_id: bytes | str) -> int:
    """A dead letter's stream id as the integer ``DeadLetter.id`` holds: ms * 10**6 + seq
    (readable: 1718000000000000042 is ``1718000000000-42``). ``ValueError`` past 999,999
    entries in one millisecond, which one Redis cannot append."""
    ms, seq = parse_id(stream_id)
    if seq >= _DEAD_LETTER_ID_SCALE:
        raise ValueError(f"stream id {text(stream_id)} has no dead-letter number")
    return ms * _DEAD_LETTER_ID_SCALE + seq


def dead_letter_stream_id(number: int) -> str:
    """The inverse of ``dead_letter_number``."""
    if number < 0:
        raise ValueError(f"a dead-letter number is not negative, got {number}")
    return f"{number // _DEAD_LETTER_ID_SCALE}-{number % _DEAD_LETTER_ID_SCALE}"


class RedisDeadLetters(RedisStore):
    """The dead letters on their own stream (appended with the log's ``append``): listing,
    counting and marking replayed, like ``SqliteDeadLetters``, and retention by age.
    ``DeadLetter.id`` is ``dead_letter_number`` of the stream id."""

    what = "Redis dead-letter store"

    def list(self, *, limit: int, include_replayed: bool = False) -> list[DeadLetter]:
        """The oldest dead letters first, up to ``limit``, without the replayed ones unless
        ``include_replayed``."""
        out: list[DeadLetter] = []
        start = "-"
        with self._translate("cannot read from"):
            while len(out) < limit:
                rows: Any = self.client.xrange(self.keys.dead_letters, start, "+", count=limit)
                if not rows:
                    break
                start = f"({text(rows[-1][0])}"
                ids = [text(i) for i, _ in rows]
                marks: Any = self.client.hmget(self.keys.dead_letters_replayed, ids)
                for (stream_id, fields), mark in zip(rows, marks, strict=True):
                    if mark is None or include_replayed:
                        out.append(_dead_letter(stream_id, fields, mark))
        return out[:limit]

    def count(self) -> int:
        """Dead letters not yet replayed (exact but for marks of dead letters that retention
        removed while they were being marked, until the next ``trim``)."""
        with self._translate("cannot read from"):
            pipe = self.client.pipeline(transaction=False)
            pipe.xlen(self.keys.dead_letters)
            pipe.hlen(self.keys.dead_letters_replayed)
            total, replayed = pipe.execute()
        return max(0, int(total) - int(replayed))

    def mark_replayed(self, ids: Sequence[int], *, now_ms: int) -> int:
        """Mark dead letters (``DeadLetter.id``) replayed at ``now_ms``; ids not stored (or no
        longer) are skipped. Returns how many were marked now."""
        stream_ids = [dead_letter_stream_id(i) for i in ids]
        if not stream_ids:
            return 0
        with self._translate("cannot mark dead letters in"):
            pipe = self.client.pipeline(transaction=False)
            for sid in stream_ids:
                pipe.xrange(self.keys.dead_letters, sid, sid, count=1)
            found = [sid for sid, rows in zip(stream_ids, pipe.execute(), strict=True) if rows]
            for sid in found:
                pipe.hsetnx(self.keys.dead_letters_replayed, sid, now_ms)
            return sum(int(r) for r in pipe.execute()) if found else 0

    def trim(self, older_than_ms: int) -> int:
        """Delete dead letters appended before ``older_than_ms`` (epoch ms, Redis's clock at
        append) and their replay marks; returns how many dead letters went."""
        with self._translate("cannot trim"):
            removed = int(
                self.client.xtrim(
                    self.keys.dead_letters, minid=f"{older_than_ms}-0", approximate=False
                )
            )
            marks = self.client.hkeys(self.keys.dead_letters_replayed)
            old = [m for m in marks if parse_id(m)[0] < older_than_ms]
            if old:
                self.client.hdel(self.keys.dead_letters_replayed, *old)
        return removed


def _dead_letter(stream_id: Any, fields: dict[bytes, bytes], mark: bytes | None) -> DeadLetter:
    event_id = fields.get(b"event_id")
    return DeadLetter(
        received_ms=int(fields[b"received_ms"]),
        event_index=int(fields[b"event_index"]),
        event_id=None if event_id is None else event_id.decode("utf-8", "replace"),
        error=fields[b"error"].decode("utf-8", "replace"),
        raw=bytes(fields[b"raw"]),
        id=dead_letter_number(stream_id),
        replayed_ms=None if mark is None else int(mark),
    )
