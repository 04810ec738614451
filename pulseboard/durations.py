"""Durations as written in the config (``500ms``, ``30s``, ``1m``, ``2h``, ``90d``), in ms."""

from __future__ import annotations

import re

_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")


def parse_duration_ms(text: str) -> int:
    """Parse ``<integer><unit>`` (units ms, s, m, h, d) into a positive number of milliseconds.

    Raises ``ValueError`` naming the expected form when ``text`` is not one.
    """
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration; expected a whole number and a unit, "
            "e.g. 500ms, 30s, 1m, 2h, 90d"
        )
    value = int(match.group(1)) * _UNIT_MS[match.group(2)]
    if value <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return value


def format_duration_ms(value_ms: int) -> str:
    """The shortest exact spelling of ``value_ms`` in the config's units (``300000`` -> ``5m``)."""
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_MS[unit]
        if value_ms % size == 0 and value_ms >= size:
            return f"{value_ms // size}{unit}"
    return f"{value_ms}ms"
