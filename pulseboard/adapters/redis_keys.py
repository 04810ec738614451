"""Every Redis key and channel name Pulseboard uses, built here from one prefix and nowhere else.

One deployment's names all start with its prefix (default ``pulseboard:``, set with the
``?prefix=`` option of the Redis URL: ``redis_conn.RedisSettings``), so two deployments can
share a server, and ``SCAN MATCH pulseboard:*`` finds everything of one. The prefix matters
even across database numbers: pub/sub channels are global to a server, not per database.

=====================  ===========  =========================================================
name                   type         written by / read by
=====================  ===========  =========================================================
``{p}log``             stream       the event log: one entry per accepted ingest batch. Appended
                                    by the API processes (``redis_log.RedisEventLog.append``),
                                    read by the processors through the consumer group
                                    ``processors`` (``LOG_GROUP``), trimmed by age.
``{p}log:counters``    hash         ``entries``, ``events``: totals ever appended, incremented by
                                    the append script in the same step as the entry (so each
                                    entry carries its running totals: ``backlog`` uses them).
``{p}dlq``             stream       dead letters (rejected events with the reason), appended by
                                    the API processes, listed and replayed by the operator's
                                    commands, trimmed by retention (``retention.log``).
``{p}dlq:replayed``    hash         dead-letter id -> replayed at (epoch ms); written by
                                    ``dlq replay``, trimmed with the dead letters.
``{p}win:{metric}``    hash         (reserved, unused: the hot store keeps buckets, below).
``{p}applied``         sorted set   log entry ids whose effect is committed (score: the id's
                                    milliseconds), written by the hot store's commit together
                                    with the effect, so a redelivered entry is recognised;
                                    trimmed by the commit to ``applied_keep_ms``.
``{p}dedupe:{bucket}`` set          event ids counted, by event-time bucket (epoch ms of its
                                    start), added by the commit that counts them; dropped when
                                    stream time passes them by the dedupe horizon.
``{p}dedupe:index``    sorted set   the starts of the live ``dedupe:{bucket}`` sets.
``{p}stream_time``     hash         the shared clock: ``stream`` (stream time, epoch ms),
                                    ``max_event``, ``busy`` and the idle-advance anchor
                                    ``anchor_wall`` / ``anchor_event``; commit and advance.
``{p}late``            stream       late events awaiting reconciliation: appended by the
                                    commit, consumed by reconciliation.
``{p}hot:{metric}:labels``  hash    label sets interned: ``j:{json}`` -> id, ``i:{id}`` ->
                                    json, ``next``, ``admitted`` (the label set cap).
``{p}hot:{metric}:index``   zset    the starts of the metric's buckets.
``{p}hot:{metric}:b:{start}``  hash one bucket of one metric: field ``{label id}`` or
                                    ``{label id}:{component}`` -> part of the aggregate state
                                    (``redis_hot_ops``); a distinct label keeps its hashes in
                                    the set ``…:b:{start}:d:{label id}`` or its HyperLogLog
                                    registers in the hash ``…:b:{start}:r:{label id}``.
``{p}final_through``   hash         metric -> final-through time (epoch ms): every window
                                    ending at or before it is final; moved by ``finalize``.
``{p}pending_history`` list         finalised windows not yet in history: jobs
                                    ``metric\tlow\thigh``, removed once written.
``{p}changed``         set          metrics whose open windows changed since the tick notifier
                                    last took the set.
``{p}current``         hash         metric -> its current value, the JSON body of
                                    ``GET /v1/metrics/{name}`` (``processor.current_payload``),
                                    written by a processor's tick for the metrics that changed,
                                    read by the API processes when a tick message names them.
``{p}ticks``           channel      pub/sub: ``{"tick": T, "metrics": [...]}``, published by a
                                    processor's tick together with the ``current`` values it
                                    wrote (``dist_processor``), received by the API processes.
``{p}processors``      hash         consumer name -> ``{"at": epoch ms, "stats": {...}}``: each
                                    processor's report, rewritten every tick while it works
                                    (``redis_reports``), read by the API processes for
                                    ``/readyz`` and the pipeline page; removed at a clean stop.
``{p}lease:reconcile`` string       the processor reconciling late events now (its consumer
                                    name), with an expiry: one reconciler at a time.
=====================  ===========  =========================================================

Every name is built by a method of ``RedisKeys``; a prefix is checked once when the keys are
made, a metric name or a bucket each time a name is built, so nothing a caller passes can make
a name outside the prefix's space.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pulseboard.config import NAME_PATTERN

DEFAULT_PREFIX = "pulseboard:"
MAX_PREFIX_LENGTH = 64
LOG_GROUP = "processors"
"""The consumer group of the processors on the log stream (a group name, not a key: it lives
inside the stream, so it needs no prefix)."""

_METRIC_RE = re.compile(NAME_PATTERN)


def check_prefix(prefix: str) -> str:
    """``prefix`` if it is a valid key prefix, else ``ValueError`` saying what is expected:
    1 to 64 printable characters, none of them whitespace."""
    if not prefix or len(prefix) > MAX_PREFIX_LENGTH:
        raise ValueError(
            f"invalid Redis key prefix {prefix!r}: expected 1 to {MAX_PREFIX_LENGTH} printable "
            "characters without spaces, such as 'pulseboard:' or 'shop-prod:'"
        )
    bad = [c for c in prefix if not c.isprintable() or c.isspace()]
    if bad:
        raise ValueError(
            f"invalid Redis key prefix {prefix!r}: {bad[0]!r} is not allowed (expected printable "
            "characters without spaces, such as 'pulseboard:' or 'shop-prod:')"
        )
    return prefix


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """The names of one deployment, all starting with ``prefix`` (checked by ``check_prefix``).

    For Redis Cluster, a prefix with a hash tag (``{pulseboard}:``) would put every key in one
    slot, which the multi-key scripts (append, the tick commit) need; a single server does not.
    """

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_prefix(self.prefix)

    # --- the event log ----------------------------------------------------------------------

    @property
    def log(self) -> str:
        """Stream: the event log (one entry per accepted batch)."""
        return f"{self.prefix}log"

    @property
    def log_counters(self) -> str:
        """Hash: totals of entries and events ever appended to the log."""
        return f"{self.prefix}log:counters"

    @property
    def log_group(self) -> str:
        """The processors' consumer group on ``log`` (a group, not a key)."""
        return LOG_GROUP

    @property
    def dead_letters(self) -> str:
        """Stream: dead letters."""
        return f"{self.prefix}dlq"

    @property
    def dead_letters_replayed(self) -> str:
        """Hash: dead-letter id -> replayed at (epoch ms)."""
        return f"{self.prefix}dlq:replayed"

    # --- the hot store (``redis_hot.py``) --------------------------------------------------

    def windows(self, metric: str) -> str:
        """Hash: the open windows of ``metric`` (a config metric name, checked here)."""
        if not _METRIC_RE.fullmatch(metric):
            raise ValueError(f"not a metric name: {metric!r} (expected {NAME_PATTERN})")
        return f"{self.prefix}win:{metric}"

    @property
    def applied(self) -> str:
        """Sorted set: ids of the log entries whose effect is committed."""
        return f"{self.prefix}applied"

    def dedupe(self, bucket_ms: int) -> str:
        """Set: event ids seen in the event-time bucket starting at ``bucket_ms`` (epoch ms,
        non-negative)."""
        if isinstance(bucket_ms, bool) or not isinstance(bucket_ms, int) or bucket_ms < 0:
            raise ValueError(f"a dedupe bucket is a non-negative epoch ms, not {bucket_ms!r}")
        return f"{self.prefix}dedupe:{bucket_ms}"

    @property
    def stream_time(self) -> str:
        """Hash: the shared clock (``stream``, ``max_event``, ``busy``, the idle anchor)."""
        return f"{self.prefix}stream_time"

    @property
    def late(self) -> str:
        """Stream: late events awaiting reconciliation."""
        return f"{self.prefix}late"

    # --- the hot store's own keys -------------------------------------------------------------

    def hot_base(self) -> str:
        """The start of every hot-store metric key; the scripts append ``{metric}:…`` to it
        exactly as ``hot_labels``, ``hot_index`` and ``hot_bucket`` do."""
        return f"{self.prefix}hot:"

    def _metric(self, metric: str) -> str:
        if not _METRIC_RE.fullmatch(metric):
            raise ValueError(f"not a metric name: {metric!r} (expected {NAME_PATTERN})")
        return f"{self.prefix}hot:{metric}"

    def hot_labels(self, metric: str) -> str:
        """Hash: the label sets of ``metric`` interned (JSON <-> short id)."""
        return f"{self._metric(metric)}:labels"

    def hot_index(self, metric: str) -> str:
        """Sorted set: the starts of ``metric``'s buckets in the hot store."""
        return f"{self._metric(metric)}:index"

    def hot_bucket_base(self, metric: str) -> str:
        """The name of ``metric``'s bucket keys without the bucket start."""
        return f"{self._metric(metric)}:b:"

    def hot_bucket(self, metric: str, start_ms: int) -> str:
        """Hash: the bucket of ``metric`` starting at ``start_ms`` (epoch ms)."""
        return f"{self.hot_bucket_base(metric)}{int(start_ms)}"

    def dedupe_base(self) -> str:
        """``dedupe(bucket)`` without the bucket (the commit script appends it)."""
        return f"{self.prefix}dedupe:"

    @property
    def dedupe_index(self) -> str:
        """Sorted set: the starts of the live dedupe sets."""
        return f"{self.prefix}dedupe:index"

    @property
    def final_through(self) -> str:
        """Hash: metric -> final-through time (epoch ms)."""
        return f"{self.prefix}final_through"

    @property
    def pending_history(self) -> str:
        """List: finalised window ranges not yet written to history."""
        return f"{self.prefix}pending_history"

    @property
    def changed(self) -> str:
        """Set: metrics whose open windows changed since the tick notifier last looked."""
        return f"{self.prefix}changed"

    @property
    def current(self) -> str:
        """Hash: metric -> its current value (encoded ``processor.current_payload``)."""
        return f"{self.prefix}current"

    @property
    def processors(self) -> str:
        """Hash: consumer name -> the processor's last report (``redis_reports``)."""
        return f"{self.prefix}processors"

    @property
    def reconcile_lease(self) -> str:
        """String: the consumer name of the processor reconciling now (expires)."""
        return f"{self.prefix}lease:reconcile"

    @property
    def ticks(self) -> str:
        """Pub/sub channel: ``{"tick": T, "metrics": [...]}`` after each processor tick."""
        return f"{self.prefix}ticks"
