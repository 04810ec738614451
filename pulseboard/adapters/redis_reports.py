"""Processor reports in Redis (``RedisKeys.processors``): each processor of the distributed
mode rewrites ``{"at": epoch ms, "stats": DistributedProcessor.stats_dict()}`` under its
consumer name every tick while it works; the API processes read them all to tell whether
processors are alive (a report whose ``at`` changed recently) and to sum their counters for
the pipeline page and ``/metrics``. A processor removes its report when it stops cleanly; a
crashed one's report stays, unchanging, and readers ignore it once stale (and drop it when it
is older than ``FORGET_MS``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from pulseboard.adapters.redis_conn import RedisStore, text

FORGET_MS = 86_400_000
"""A report not rewritten for this long is deleted by ``all``'s callers (``drop``)."""


class RedisProcessorReports(RedisStore):
    """Write one processor's report, read everyone's. Every error is ``StoreUnavailable``."""

    what = "Redis processor reports"

    def ping(self) -> None:
        """One round trip; ``StoreUnavailable`` when Redis does not answer."""
        with self._translate("cannot reach"):
            self.client.ping()

    def report(self, consumer: str, at_ms: int, stats: dict[str, Any]) -> None:
        """Store ``consumer``'s report (one HSET)."""
        body = msgspec.json.encode({"at": at_ms, "stats": stats})
        with self._translate("cannot write a report to"):
            self.client.hset(self.keys.processors, consumer, body)

    def drop(self, consumer: str) -> None:
        """Remove ``consumer``'s report (a clean stop, or a long-dead processor)."""
        with self._translate("cannot remove a report from"):
            self.client.hdel(self.keys.processors, consumer)

    def all(self) -> dict[str, tuple[int, dict[str, Any]]]:
        """Every report: consumer -> (at, stats); unreadable ones are left out."""
        with self._translate("cannot read reports from"):
            raw: Any = self.client.hgetall(self.keys.processors)
        out: dict[str, tuple[int, dict[str, Any]]] = {}
        for name, body in raw.items():
            try:
                report = msgspec.json.decode(body)
                out[text(name)] = (int(report["at"]), dict(report["stats"]))
            except (msgspec.DecodeError, KeyError, TypeError, ValueError):
                continue
        return out
