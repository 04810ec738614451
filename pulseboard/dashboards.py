"""Dashboards: one definition check for the config file and for ``PUT /v1/dashboards/{id}``,
the pipeline stats a panel may show, and the JSON form the API serves.

A dashboard is a title, an initial time range and panels; a panel shows one metric (or one
pipeline stat) as a stat, time series, bars or table, optionally divided by another metric
(a ratio) and compared with the same metric some time ago. No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from pulseboard.config import Config, DashboardSpec, MetricSpec, PanelKind, PanelSpec
from pulseboard.config_values import (
    Problems,
    at,
    check_keys,
    describe,
    hint,
    read_duration,
    read_key,
    read_list,
    read_mapping,
    read_name,
    read_panel_kind,
    read_string,
    valid_names,
)
from pulseboard.durations import format_duration_ms

PIPELINE_PREFIX = "pipeline."
"""Panel metrics that start with this name a pipeline stat, not a metric of the config."""

PIPELINE_STATS = (
    "events_per_second",
    "rejected_per_second",
    "processed_per_second",
    "backlog_events",
    "lag_ms",
    "late_events",
    "reconciled",
    "dead_letters",
    "live_clients",
    "memory_bytes",
)
"""The stats of one pipeline sample (see :mod:`pulseboard.pipeline_stats`)."""

DEFAULT_RANGE_MS = 5 * 60_000
MAX_RANGE_MS = 366 * 86_400_000
MAX_PANELS = 50
MAX_TITLE_CHARS = 200

DASHBOARD_KEYS = ("id", "title", "range", "panels")
PANEL_KEYS = ("metric", "kind", "title", "compare", "divide_by")
Metrics = Mapping[str, MetricSpec | None] | None
"""The config's metrics by name (None for one that is named but invalid), or None when the
metrics section could not be read: references are checked only as far as they can be."""


class DashboardError(ValueError):
    """A dashboard body that is not valid; ``problems`` each say where and what."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def pipeline_stat(name: str) -> str | None:
    """The stat a ``pipeline.<stat>`` panel metric names, or None for a config metric."""
    return name[len(PIPELINE_PREFIX) :] if name.startswith(PIPELINE_PREFIX) else None


def _read_title(p: Problems, value: object, loc: str) -> str | None:
    title = read_string(p, value, loc)
    if title is not None and len(title) > MAX_TITLE_CHARS:
        p.add(loc, f"is {len(title)} characters long; at most {MAX_TITLE_CHARS} are allowed")
        return None
    return title


def _read_span(p: Problems, value: object, loc: str) -> int | None:
    ms = read_duration(p, value, loc)
    if ms is not None and ms > MAX_RANGE_MS:
        p.add(loc, f"{value!r} is longer than the longest range, 366d")
        return None
    return ms


def _check_metric_name(p: Problems, name: str, loc: str, metrics: Metrics) -> None:
    stat = pipeline_stat(name)
    if stat is not None:
        if stat not in PIPELINE_STATS:
            choices = [PIPELINE_PREFIX + s for s in PIPELINE_STATS]
            p.add(loc, f"unknown pipeline stat {name!r}" + hint(name, choices))
    elif metrics is not None and name not in metrics:
        choices = valid_names(sorted(metrics))
        p.add(loc, f"unknown metric {name!r}" + hint(name, choices))


def _window_text(spec: MetricSpec) -> str:
    text = format_duration_ms(spec.window_ms)
    return text if spec.every_ms is None else f"{text} every {format_duration_ms(spec.every_ms)}"


def _ratio_problem(top: MetricSpec | None, bottom: MetricSpec | None) -> str | None:
    """Why ``top / bottom`` cannot be shown window by window and label set by label set."""
    if top is None or bottom is None:
        return None  # unknown or invalid: reported elsewhere
    if (top.window_ms, top.every_ms) != (bottom.window_ms, bottom.every_ms):
        return (
            f"a ratio needs windows that match: {top.name!r} has {_window_text(top)}, "
            f"{bottom.name!r} has {_window_text(bottom)}"
        )
    if bottom.group_by and bottom.group_by != top.group_by:
        by = ", ".join(bottom.group_by)
        return (
            f"{bottom.name!r} is grouped by {by} and {top.name!r} "
            + (f"by {', '.join(top.group_by)}" if top.group_by else "is not")
            + "; divide by a metric without group_by or with the same group_by"
        )
    return None


def check_panel(p: Problems, value: object, loc: str, metrics: Metrics) -> PanelSpec | None:
    """One panel, checked against the config's metric names (None when they are unknown)."""
    mapping = read_mapping(p, value, loc, "a mapping like {metric: ..., kind: timeseries}")
    if mapping is None:
        return None
    mark = len(p)
    check_keys(p, mapping, loc, PANEL_KEYS, required=("metric",))
    metric = None
    if "metric" in mapping:
        metric = read_string(p, mapping["metric"], at(loc, "metric"), "a metric name")
    if metric is not None:
        _check_metric_name(p, metric, at(loc, "metric"), metrics)
    kind: PanelKind | None = read_key(p, mapping, loc, "kind", read_panel_kind, "timeseries")
    title = read_key(p, mapping, loc, "title", _read_title)
    compare_ms = read_key(p, mapping, loc, "compare", _read_span)
    divide_by = read_key(p, mapping, loc, "divide_by", read_string)
    if divide_by is not None:
        if pipeline_stat(divide_by) is not None:
            p.add(at(loc, "divide_by"), "expected a metric of the config, not a pipeline stat")
        else:
            _check_metric_name(p, divide_by, at(loc, "divide_by"), metrics)
        if metric is not None and metrics is not None:
            problem = _ratio_problem(metrics.get(metric), metrics.get(divide_by))
            if problem is not None:
                p.add(at(loc, "divide_by"), problem)
    if metric is not None and pipeline_stat(metric) is not None:
        if compare_ms is not None:
            p.add(at(loc, "compare"), "pipeline stats keep 15 minutes of history; no compare")
        if divide_by is not None:
            p.add(at(loc, "divide_by"), "a pipeline stat cannot be divided by a metric")
    if len(p) > mark or metric is None or kind is None:
        return None
    return PanelSpec(
        metric=metric, kind=kind, title=title, compare_ms=compare_ms, divide_by=divide_by
    )


def check_dashboard(
    p: Problems, value: object, loc: str, metrics: Metrics
) -> tuple[DashboardSpec | None, str | None]:
    """One dashboard and its id (the id even when the rest is invalid, for duplicate checks)."""
    mapping = read_mapping(p, value, loc, "a mapping like {id: ..., title: ..., panels: [...]}")
    if mapping is None:
        return None, None
    mark = len(p)
    check_keys(p, mapping, loc, DASHBOARD_KEYS, required=("id", "title", "panels"))
    ident = read_name(p, mapping["id"], at(loc, "id"), "dashboard") if "id" in mapping else None
    title = read_key(p, mapping, loc, "title", _read_title)
    range_ms = read_key(p, mapping, loc, "range", _read_span, DEFAULT_RANGE_MS)
    panels: list[PanelSpec | None] = []
    if "panels" in mapping:
        ploc = at(loc, "panels")
        items = read_list(p, mapping["panels"], ploc, "a list of panels")
        if items == []:
            p.add(ploc, "a dashboard needs at least one panel")
        elif items is not None and len(items) > MAX_PANELS:
            p.add(ploc, f"has {len(items)} panels; at most {MAX_PANELS} are allowed")
            items = []
        for index, item in enumerate(items or ()):
            panels.append(check_panel(p, item, f"{ploc}[{index}]", metrics))
    if len(p) > mark or ident is None or title is None or range_ms is None:
        return None, ident
    spec = DashboardSpec(
        id=ident, title=title, panels=tuple(filter(None, panels)), range_ms=range_ms
    )
    return spec, ident


def parse_dashboard(ident: str, body: bytes, config: Config) -> DashboardSpec:
    """The dashboard a ``PUT /v1/dashboards/{ident}`` body describes; ``DashboardError`` lists
    every problem (a body ``id``, if given, must equal ``ident``)."""
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise DashboardError([f"dashboard: the body is not valid JSON: {exc}"]) from exc
    if not isinstance(data, dict):
        raise DashboardError(
            [f"dashboard: expected a JSON object {{title, panels, ...}}, got {describe(data)}"]
        )
    if data.get("id", ident) != ident:
        raise DashboardError([f"id: {data['id']!r} in the body differs from {ident!r} in the path"])
    # null means "not set" (the served form spells every key), and the server's own keys,
    # sent back by a client that edits what it read, are ignored
    fields = _without_nulls(data, ("source", "updated_ms", "problems"))
    if isinstance(fields.get("panels"), list):
        fields["panels"] = [
            _without_nulls(panel) if isinstance(panel, dict) else panel
            for panel in fields["panels"]
        ]
    fields["id"] = ident
    p = Problems("dashboard")
    spec, _ = check_dashboard(p, fields, "", {m.name: m for m in config.metrics})
    if p.items or spec is None:
        raise DashboardError(p.items or ["dashboard: invalid"])
    return spec


def _without_nulls(data: dict[str, Any], ignored: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None and k not in ignored}


def dashboard_json(spec: DashboardSpec) -> dict[str, Any]:
    """The stored and served form of ``spec`` (durations as text such as ``5m``)."""
    return {
        "id": spec.id,
        "title": spec.title,
        "range": format_duration_ms(spec.range_ms),
        "panels": [
            {
                "metric": panel.metric,
                "kind": panel.kind,
                "title": panel.title,
                "compare": (
                    format_duration_ms(panel.compare_ms) if panel.compare_ms is not None else None
                ),
                "divide_by": panel.divide_by,
            }
            for panel in spec.panels
        ],
    }


def stored_dashboard(ident: str, body: bytes, updated_ms: int, config: Config) -> dict[str, Any]:
    """A saved user dashboard as served: checked again against the running config, so one that
    names a metric the config no longer has is still listed, with its ``problems``."""
    try:
        out = dashboard_json(parse_dashboard(ident, body, config))
        problems: list[str] = []
    except DashboardError as exc:
        raw = msgspec.json.decode(body)
        out = dict(raw) if isinstance(raw, Mapping) else {"id": ident, "panels": []}
        problems = exc.problems
    out.update(source="user", updated_ms=updated_ms, problems=problems)
    return out


def config_dashboard(spec: DashboardSpec) -> dict[str, Any]:
    """A dashboard of the config file as served (read-only)."""
    out = dashboard_json(spec)
    out.update(source="config", updated_ms=None, problems=[])
    return out
