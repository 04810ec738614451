"""Durations as written in the config (``500ms``, ``30s``, ``1m``, ``2h``, ``90d``), in ms."""

from __future__ import annotations

import re
from math import isqrt
from typing import Final

_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")

MAX_DURATION_MS: Final = 36_500 * _UNIT_MS["d"]
"""The longest accepted duration, 36500d (100 years): far beyond any sensible window or
retention, and small enough that window arithmetic in ms stays exact in 64-bit ints and floats."""

# Round steps preferred when suggesting an `every` that divides a window.
_ROUND_STEPS_MS: Final = (
    *(n * 1_000 for n in (1, 2, 5, 10, 15, 30)),
    *(n * 60_000 for n in (1, 2, 5, 10, 15, 30)),
    3_600_000,
)


def parse_duration_ms(text: str) -> int:
    """Parse ``<integer><unit>`` (units ms, s, m, h, d) into milliseconds, 1 to MAX_DURATION_MS.

    Raises ``ValueError`` naming the expected form when ``text`` is not one, and the bounds
    when it is zero or longer than :data:`MAX_DURATION_MS`.
    """
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration; expected a whole number and a unit, "
            "e.g. 500ms, 30s, 1m, 2h, 90d"
        )
    digits = match.group(1).lstrip("0") or "0"
    # Checked on the digits first: int() refuses texts of thousands of digits.
    value = int(digits) * _UNIT_MS[match.group(2)] if len(digits) <= 20 else MAX_DURATION_MS + 1
    if value <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    if value > MAX_DURATION_MS:
        raise ValueError(
            f"{text!r} is longer than the maximum duration, "
            f"{format_duration_ms(MAX_DURATION_MS)} (100 years)"
        )
    return value


def format_duration_ms(value_ms: int) -> str:
    """The shortest exact spelling of ``value_ms`` in the config's units (``300000`` -> ``5m``)."""
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_MS[unit]
        if value_ms % size == 0 and value_ms >= size:
            return f"{value_ms // size}{unit}"
    return f"{value_ms}ms"


def dividing_step_ms(window_ms: int, step_ms: int) -> int:
    """A step that divides ``window_ms`` exactly, close to ``step_ms`` (both positive).

    The longest round step (1s, 5s, 1m, ...) not longer than ``step_ms`` that divides the
    window; when none does, the divisor of the window nearest to ``step_ms`` (the shorter on
    a tie). There is always one: 1ms divides every window.
    """
    round_steps = [s for s in _ROUND_STEPS_MS if s <= step_ms and window_ms % s == 0]
    if round_steps:
        return round_steps[-1]
    divisors = (
        d for i in range(1, isqrt(window_ms) + 1) if window_ms % i == 0 for d in (i, window_ms // i)
    )
    return min(divisors, key=lambda d: (abs(d - step_ms), d))
