"""A brute-force oracle for end-to-end tests: metric series recomputed from the raw events.

It shares no code with the engine. Each event id counts once, at its first arrival (in the order
the events are given), and nothing is late: that is the batch recomputation the design promises
history equals after reconciliation. A series point at ``t`` covers ``[t, t + window)`` with
``t`` a multiple of the window, for tumbling and sliding metrics alike (series points of a
sliding metric are its windows aligned to the window length).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

Event = Mapping[str, Any]
LabelsKey = str
"""Labels as canonical JSON (sorted keys), the key of one series."""

QUANTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}
QUANTILE_RELATIVE_ERROR = 0.01
"""The sketch's guarantee: an estimate within 1% of the exact value at the quantile's rank."""
AVG_RELATIVE_ERROR = 1e-9


@dataclass(frozen=True)
class Metric:
    """A metric as the config defines it, plus its ``where`` as a Python predicate."""

    name: str
    event: str
    agg: str
    window_ms: int
    field: str | None = None
    every_ms: int | None = None
    group_by: tuple[str, ...] = ()
    where: str | None = None
    where_fn: Callable[[Mapping[str, Any]], bool] | None = None

    def config(self) -> dict[str, Any]:
        """The metric's entry in a config's ``metrics:`` list."""
        out: dict[str, Any] = {
            "name": self.name,
            "event": self.event,
            "agg": self.agg,
            "window": f"{self.window_ms}ms",
        }
        if self.field is not None:
            out["field"] = self.field
        if self.every_ms is not None:
            out["every"] = f"{self.every_ms}ms"
        if self.group_by:
            out["group_by"] = list(self.group_by)
        if self.where is not None:
            out["where"] = self.where
        return out

    def counts(self, event: Event) -> bool:
        """Whether ``event`` (valid, first arrival) contributes to this metric."""
        if event["type"] != self.event:
            return False
        data = event["data"]
        if self.where_fn is not None and not self.where_fn(data):
            return False
        return self.field is None or data.get(self.field) is not None

    def point(self, event: Event) -> int:
        """The start of the series point holding ``event``."""
        t = time_ms(event)
        return t - t % self.window_ms

    def labels(self, event: Event) -> LabelsKey:
        return labels_key({g: event["data"].get(g) for g in self.group_by})


def labels_key(labels: Mapping[str, Any]) -> LabelsKey:
    return json.dumps(dict(labels), sort_keys=True)


def time_ms(event: Event) -> int:
    """An event's time in epoch ms (integer ms, or RFC 3339 with whole milliseconds)."""
    t = event["time"]
    if isinstance(t, int):
        return t
    moment = datetime.fromisoformat(str(t).replace("Z", "+00:00"))
    return round(moment.timestamp() * 1000)


def first_arrivals(events: Iterable[Event]) -> list[Event]:
    """Each id once: its first arrival."""
    seen: set[str] = set()
    out = []
    for event in events:
        if event["id"] not in seen:
            seen.add(event["id"])
            out.append(event)
    return out


def exact_quantile(values: list[float], q: float) -> float:
    """The value at 0-based rank ``floor(q * (n - 1))`` of the sorted values, as
    ``pulseboard/aggregates.py`` defines it (``numpy.quantile(..., method="lower")``)."""
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def aggregate(agg: str, values: list[Any]) -> Any:
    """The exact value of ``agg`` over ``values`` (the field values; events for a count)."""
    if agg == "count":
        return len(values)
    if agg == "distinct":
        return len(set(values))
    numbers = [float(v) for v in values]
    if agg == "sum":
        return math.fsum(numbers)  # correctly rounded, as the server's exact sum
    if agg == "avg":
        return float(sum(map(Fraction, numbers)) / len(numbers))
    if agg == "min":
        return min(numbers)
    if agg == "max":
        return max(numbers)
    return exact_quantile(numbers, QUANTILES[agg])


def expected_series(metric: Metric, events: Iterable[Event]) -> dict[LabelsKey, dict[int, Any]]:
    """``{labels: {t: value}}`` of ``metric`` over ``events`` (already deduplicated)."""
    inputs: dict[LabelsKey, dict[int, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for event in events:
        if metric.counts(event):
            value = event if metric.field is None else event["data"][metric.field]
            inputs[metric.labels(event)][metric.point(event)].append(value)
    return {
        labels: {t: aggregate(metric.agg, values) for t, values in points.items()}
        for labels, points in inputs.items()
    }


def value_matches(agg: str, got: Any, want: float) -> bool:
    """Exact for count, distinct, sum, min, max; 1e-9 relative for avg; 1% for quantiles."""
    if got is None or isinstance(got, bool):
        return False
    if agg in ("count", "distinct"):
        return isinstance(got, int) and got == want
    if agg in ("sum", "min", "max"):
        return float(got) == want
    if agg == "avg":
        return math.isclose(float(got), want, rel_tol=AVG_RELATIVE_ERROR, abs_tol=0.0)
    return abs(float(got) - want) <= QUANTILE_RELATIVE_ERROR * abs(want) * (1 + 1e-12)


def series_points(body: Mapping[str, Any]) -> dict[LabelsKey, dict[int, tuple[Any, str]]]:
    """``{labels: {t: (value, status)}}`` of a ``GET /v1/metrics/{name}/series`` body."""
    return {
        labels_key(s["labels"]): {p["t"]: (p["value"], p["status"]) for p in s["points"]}
        for s in body["series"]
    }


def compare(
    metric: Metric,
    want: Mapping[LabelsKey, Mapping[int, Any]],
    body: Mapping[str, Any],
    allowed_status: Callable[[LabelsKey, int], frozenset[str]],
) -> list[str]:
    """Every difference between a series body and the oracle, as readable lines (empty when
    they agree): missing or extra points, wrong values, statuses outside ``allowed_status``."""
    got = series_points(body)
    problems = []
    for labels in sorted(set(want) | set(got)):
        w, g = want.get(labels, {}), got.get(labels, {})
        for t in sorted(set(w) | set(g)):
            where = f"{metric.name} {labels} t={t}"
            if t not in g:
                problems.append(f"{where}: missing, expected {w[t]!r}")
            elif t not in w:
                problems.append(f"{where}: unexpected point {g[t]!r}")
            else:
                value, status = g[t]
                if not value_matches(metric.agg, value, w[t]):
                    problems.append(f"{where}: value {value!r}, expected {w[t]!r} ({metric.agg})")
                allowed = allowed_status(labels, t)
                if status not in allowed:
                    problems.append(f"{where}: status {status!r}, expected one of {allowed}")
    return problems
