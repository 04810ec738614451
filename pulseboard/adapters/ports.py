"""The ports: what the pipeline needs of a store, whatever the store is.

Each port is a ``typing.Protocol``, so an adapter satisfies it by shape alone (no base class to
inherit); ``tests/integration/test_history_contract.py`` runs one suite against every adapter
so they agree on the semantics written here, not only on the signatures.
"""

from __future__ import annotations

from typing import Protocol

from pulseboard.adapters.base import WindowRow


class HistoryStore(Protocol):
    """Closed windows of every metric: written final by the processor, revised by
    reconciliation, read by series queries, trimmed by retention.

    A window is identified by (metric, labels, window start); a metric has one window length
    at a time (what happens to two windows of one metric and label set that start together but
    differ in length is the adapter's: PostgreSQL keeps both, SQLite one). Values are ``int``,
    ``float`` or ``None`` and read back as the same type; states are opaque bytes.
    Every method raises ``StoreUnavailable`` when the store cannot be reached or written.
    """

    def write_final(self, rows: list[WindowRow]) -> None:
        """Store ``rows`` as final, atomically. Idempotent: writing a window again replaces its
        value and state, except that a window already ``revised`` is left as it is (a restart
        replays the log and must not undo reconciliation). ``rows[i].status`` is ignored."""
        ...

    def revise(self, rows: list[WindowRow]) -> None:
        """Store ``rows`` with status ``revised``, atomically, replacing whatever was stored
        for those windows (final or revised). ``rows[i].status`` is ignored."""
        ...

    def windows(self, metric: str, start_ms: int, end_ms: int, window_ms: int) -> list[WindowRow]:
        """The stored windows of ``metric`` of length ``window_ms`` whose start is aligned to
        ``window_ms`` (``start % window_ms == 0``) and lies in ``[start_ms, end_ms)``, ordered
        by (start, labels). ``window_ms`` must be positive."""
        ...

    def trim(self, before_ms: int) -> int:
        """Drop every window that ended before ``before_ms`` (end < before_ms) and keep the
        rest; returns how many windows were dropped."""
        ...

    def close(self) -> None:
        """Release the connections; the store is not used afterwards."""
        ...
