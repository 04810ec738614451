"""What every adapter shares, whatever its store: the stored window, the store error, the clock.

Kept apart from the SQLite adapter so that the ports (``ports.py``) and the server adapters
(``postgres.py``) need not import the embedded one; ``sqlite.py`` re-exports these names so the
imports written before this module existed keep working.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pulseboard.errors import PulseboardError


class StoreUnavailable(PulseboardError):
    """A store could not be read or written; the message says which and why."""


def now_ms() -> int:
    """Wall clock, epoch milliseconds."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class WindowRow:
    """One stored window of one metric and label set (labels as canonical JSON)."""

    metric: str
    labels: str
    window_start_ms: int
    window_end_ms: int
    value: Any
    state: bytes
    status: str


@dataclass(frozen=True, slots=True)
class LateRow:
    """A late event as stored for reconciliation (labels as canonical JSON)."""

    metric: str
    event_id: str
    window_start_ms: int
    window_end_ms: int
    labels: str
    time_ms: int
    value: Any
