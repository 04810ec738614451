"""Series reads: a metric over a time range, history and open windows stitched into one series.

Points are ``step`` apart and aligned to multiples of ``step`` since the epoch; a point at ``t``
aggregates the metric's windows ``[t, t + step)`` (a step of k windows merges k window states,
which is exact for every aggregate because states are mergeable). A point's status is ``open``
when any of its windows is still open, else ``revised`` when any was revised, else ``final``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import msgspec

from pulseboard.adapters.base import WindowRow
from pulseboard.aggregates import Aggregator
from pulseboard.config import MetricSpec
from pulseboard.durations import format_duration_ms, parse_duration_ms
from pulseboard.errors import PulseboardError

MAX_POINTS = 20_000
"""Most points one series request may ask for (per label set)."""

_RELATIVE = re.compile(r"^now(?:\s*-\s*(.+))?$|^-(.+)$")


class WindowSource(Protocol):
    """Where a series reads windows (``SqliteState``; ``dist_service.DistributedWindows``)."""

    def windows(
        self, metric: str, start_ms: int, end_ms: int, window_ms: int, step_ms: int
    ) -> tuple[list[WindowRow], list[WindowRow]]:
        """(history, open) windows of ``metric`` of length ``window_ms`` aligned to it and
        starting in ``[start_ms, end_ms)``; a window in both is taken from history. For a
        series of points ``step_ms`` apart, history may instead give, for a whole step, windows
        that merge several (rollups: ``PostgresHistory.series_windows``)."""
        ...


class QueryError(PulseboardError):
    """A series request that cannot be answered as asked; the message says what to send."""


def parse_time(text: str, now_ms: int, name: str) -> int:
    """``text`` as epoch ms: an integer of epoch ms, RFC 3339 with an offset, ``now``, or
    relative to now (``-1h``, ``now-15m``)."""
    text = text.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    match = _RELATIVE.match(text)
    if match:
        ago = match.group(1) or match.group(2)
        if ago is None:
            return now_ms
        try:
            return now_ms - parse_duration_ms(ago.strip())
        except ValueError as exc:
            raise QueryError(f"{name}={text!r}: {exc}") from exc
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise QueryError(
            f"{name}={text!r} is not a time; expected epoch milliseconds, RFC 3339 with an "
            "offset (2026-11-27T10:00:00Z), 'now', or a time relative to now such as -1h"
        )
    return int(moment.timestamp() * 1000)


def parse_step(text: str | None, spec: MetricSpec) -> int:
    """The step in ms: a duration (``5m``) or integer ms, a multiple of the metric's window."""
    if text is None or text == "":
        return spec.window_ms
    try:
        step = int(text) if text.isdigit() else parse_duration_ms(text)
    except ValueError as exc:
        raise QueryError(f"step={text!r}: {exc}") from exc
    if step <= 0:
        raise QueryError(f"step={text!r} must be positive, a multiple of the window")
    if step % spec.window_ms:
        raise QueryError(
            f"step={text!r} is not a multiple of metric {spec.name!r}'s window "
            f"({format_duration_ms(spec.window_ms)}); use e.g. step="
            f"{format_duration_ms(spec.window_ms)} or step={format_duration_ms(spec.window_ms * 5)}"
        )
    return step


@dataclass(frozen=True, slots=True)
class SeriesRequest:
    """A checked series request: ``[from_ms, to_ms)`` in points of ``step_ms``."""

    metric: MetricSpec
    from_ms: int
    to_ms: int
    step_ms: int


def request(spec: MetricSpec, params: dict[str, str], now_ms: int) -> SeriesRequest:
    """Check ``from``, ``to`` and ``step`` (defaults: the last hour, one window per point)."""
    step = parse_step(params.get("step"), spec)
    start = parse_time(params.get("from", "-1h"), now_ms, "from")
    end = parse_time(params.get("to", "now"), now_ms, "to")
    if end <= start:
        raise QueryError(f"from ({start}) must be before to ({end}), both epoch ms")
    start -= start % step
    if (end - start) // step > MAX_POINTS:
        raise QueryError(
            f"the range holds {(end - start) // step} points of {format_duration_ms(step)}; "
            f"at most {MAX_POINTS} are served, so widen step or narrow the range"
        )
    return SeriesRequest(spec, start, end, step)


def read_series(state: WindowSource, agg: Aggregator, req: SeriesRequest) -> dict[str, Any]:
    """The series body of ``GET /v1/metrics/{name}/series``."""
    spec = req.metric
    final, hot = state.windows(spec.name, req.from_ms, req.to_ms, spec.window_ms, req.step_ms)
    # a window just closed may still be among the open ones until the next commit
    windows: dict[tuple[str, int], WindowRow] = {(r.labels, r.window_start_ms): r for r in hot}
    windows.update({(r.labels, r.window_start_ms): r for r in final})
    points: dict[str, dict[int, list[WindowRow]]] = defaultdict(lambda: defaultdict(list))
    for (labels, start), row in windows.items():
        points[labels][start - start % req.step_ms].append(row)
    series = []
    for labels in sorted(points):
        by_t = points[labels]
        series.append(
            {
                "labels": msgspec.json.decode(labels),
                "points": [_point(t, by_t[t], agg) for t in sorted(by_t)],
            }
        )
    return {
        "metric": spec.name,
        "agg": spec.agg,
        "window_ms": spec.window_ms,
        "step_ms": req.step_ms,
        "from": req.from_ms,
        "to": req.to_ms,
        "series": series,
    }


def _point(t: int, rows: list[WindowRow], agg: Aggregator) -> dict[str, Any]:
    statuses = {r.status for r in rows}
    status = "open" if "open" in statuses else "revised" if "revised" in statuses else "final"
    if len(rows) == 1:
        value = rows[0].value
    else:
        state = agg.loads(rows[0].state)
        for row in rows[1:]:
            state = agg.merge(state, agg.loads(row.state))
        value = agg.result(state)
    return {"t": t, "value": value, "status": status}
