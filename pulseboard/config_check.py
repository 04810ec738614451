"""Checking loaded config data: every problem in one pass, each with its location.

One function per section; each reads what it knows with the readers of
:mod:`pulseboard.config_values`, reports what is wrong to a shared
:class:`~pulseboard.config_values.Problems` list, and carries on, so one run lists every
mistake. Cross-references (metric -> event, field; panel -> metric; window -> hot retention)
use whatever parts of the other sections were readable: a field whose type could be read is
type-checked even if its spec has other problems, and ``retention.hot`` is checked against even
if another pipeline setting is wrong. What could not be read is skipped, so one mistake does not
cascade into a page of follow-up problems.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pulseboard import expr
from pulseboard.config import (
    AggName,
    Config,
    DashboardSpec,
    EventSpec,
    FieldSpec,
    FieldType,
    LimitsSpec,
    MetricSpec,
    PipelineSpec,
    RetentionSpec,
    StorageSpec,
)
from pulseboard.config_values import (
    Problems,
    at,
    bare_name_problem,
    check_keys,
    comparison_problem,
    describe,
    hint,
    read_agg,
    read_backend,
    read_bool,
    read_duration,
    read_enum,
    read_field_type,
    read_key,
    read_list,
    read_mapping,
    read_name,
    read_positive_int,
    read_string,
    valid_names,
)
from pulseboard.dashboards import Metrics, check_dashboard
from pulseboard.durations import dividing_step_ms, format_duration_ms
from pulseboard.errors import ConfigError, ExprError

Spec = TypeVar("Spec")

_NUMERIC_AGGS = frozenset(("sum", "avg", "min", "max", "p50", "p90", "p95", "p99"))
_GROUPABLE_TYPES = ("string", "int", "bool")

_TOP_KEYS = ("storage", "pipeline", "limits", "events", "metrics", "dashboards")
_LIMITS_KEYS = ("max_request_bytes", "max_backlog_events")
_STORAGE_KEYS = ("data_dir", "log", "hot", "history")
_PIPELINE_KEYS = (
    "tick",
    "lateness",
    "max_future",
    "reconcile_every",
    "takeover_after",
    "distinct_exact_threshold",
    "retention",
)
_RETENTION_KEYS = ("hot", "history", "log")
_EVENT_KEYS = ("fields",)
_FIELD_KEYS = ("type", "required", "enum")
_METRIC_KEYS = (
    "name",
    "event",
    "agg",
    "field",
    "window",
    "every",
    "group_by",
    "where",
    "max_label_sets",
)

_DEFAULT_STORAGE = StorageSpec()
_DEFAULT_PIPELINE = PipelineSpec()
_DEFAULT_RETENTION = RetentionSpec()
_DEFAULT_MAX_LABEL_SETS = MetricSpec(name="m", event="e", agg="count", window_ms=1).max_label_sets


@dataclass
class _Event:
    """An event type as far as it could be read; ``fields`` is None when unreadable.

    A field mapped to None exists but its type could not be read: references to it are
    accepted without type checks. A field whose spec has other problems still has its spec
    here, for type checks; it never reaches a Config, as the config then has problems.
    """

    name: str
    fields: dict[str, FieldSpec | None] | None


def _check_named_items(
    p: Problems,
    items: Sequence[object],
    section: str,
    check: Callable[[object, str], tuple[Spec | None, str | None]],
    key: str,
    what: str,
) -> tuple[list[Spec], set[str]]:
    """The specs ``check`` builds from ``items``, and every name seen, valid spec or not.

    ``check`` returns an item's spec (None if it has problems) and its name; a name seen
    before is reported at the item's ``key``.
    """
    specs: list[Spec] = []
    first: dict[str, str] = {}  # name -> the location of the item that used it first
    for index, item in enumerate(items):
        loc = f"{section}[{index}]"
        spec, name = check(item, loc)
        if spec is not None:
            specs.append(spec)
        if name is None:
            continue
        if name in first:
            p.add(at(loc, key), f"duplicate {what} {name!r} (first at {first[name]})")
        else:
            first[name] = loc
    return specs, set(first)


# --- storage and pipeline ------------------------------------------------------------------


def _check_storage(p: Problems, value: object) -> StorageSpec | None:
    if value is None:
        return _DEFAULT_STORAGE
    loc = "storage"
    mapping = read_mapping(p, value, loc, "a mapping of data_dir, log, hot and history")
    if mapping is None:
        return None
    check_keys(p, mapping, loc, _STORAGE_KEYS)
    default = _DEFAULT_STORAGE
    data_dir: str | None = default.data_dir
    if "data_dir" in mapping:
        data_dir = read_string(p, mapping["data_dir"], at(loc, "data_dir"), "a directory path")

    def backend(role: str, fallback: str) -> str | None:
        return read_backend(p, mapping[role], at(loc, role), role) if role in mapping else fallback

    log = backend("log", default.log)
    hot = backend("hot", default.hot)
    history = backend("history", default.history)
    if data_dir is None or log is None or hot is None or history is None:
        return None
    return StorageSpec(data_dir=data_dir, log=log, hot=hot, history=history)


def _check_retention(
    p: Problems, value: object, loc: str
) -> tuple[RetentionSpec | None, int | None]:
    """The retention (None if it has problems) and ``hot`` in ms, if that alone was readable."""
    mapping = read_mapping(p, value, loc, "a mapping of hot, history and log durations")
    if mapping is None:
        return None, None
    check_keys(p, mapping, loc, _RETENTION_KEYS)
    default = _DEFAULT_RETENTION
    hot = read_key(p, mapping, loc, "hot", read_duration, default.hot_ms)
    history = read_key(p, mapping, loc, "history", read_duration, default.history_ms)
    log = read_key(p, mapping, loc, "log", read_duration, default.log_ms)
    if hot is None or history is None or log is None:
        return None, hot
    return RetentionSpec(hot_ms=hot, history_ms=history, log_ms=log), hot


def _check_pipeline(p: Problems, value: object) -> tuple[PipelineSpec | None, int | None]:
    """The pipeline (None if it has problems) and ``retention.hot`` in ms, if readable."""
    if value is None:
        return _DEFAULT_PIPELINE, _DEFAULT_RETENTION.hot_ms
    loc = "pipeline"
    mapping = read_mapping(p, value, loc, "a mapping of pipeline settings")
    if mapping is None:
        return None, None
    check_keys(p, mapping, loc, _PIPELINE_KEYS)
    default = _DEFAULT_PIPELINE

    def duration(key: str, fallback: int) -> int | None:
        return read_key(p, mapping, loc, key, read_duration, fallback)

    tick = duration("tick", default.tick_ms)
    lateness = duration("lateness", default.lateness_ms)
    max_future = duration("max_future", default.max_future_ms)
    reconcile = duration("reconcile_every", default.reconcile_every_ms)
    takeover = duration("takeover_after", default.takeover_after_ms)
    threshold = read_key(
        p,
        mapping,
        loc,
        "distinct_exact_threshold",
        read_positive_int,
        default.distinct_exact_threshold,
    )
    retention: RetentionSpec | None = default.retention
    hot_ms: int | None = default.retention.hot_ms
    if "retention" in mapping:
        retention, hot_ms = _check_retention(p, mapping["retention"], at(loc, "retention"))
    if tick is None or lateness is None or max_future is None or reconcile is None:
        return None, hot_ms
    if takeover is None:
        return None, hot_ms
    if threshold is None or retention is None:
        return None, hot_ms
    spec = PipelineSpec(
        tick_ms=tick,
        lateness_ms=lateness,
        max_future_ms=max_future,
        reconcile_every_ms=reconcile,
        takeover_after_ms=takeover,
        retention=retention,
        distinct_exact_threshold=threshold,
    )
    return spec, hot_ms


def _check_limits(p: Problems, value: object) -> LimitsSpec | None:
    default = LimitsSpec()
    if value is None:
        return default
    loc = "limits"
    mapping = read_mapping(p, value, loc, "a mapping of max_request_bytes and max_backlog_events")
    if mapping is None:
        return None
    check_keys(p, mapping, loc, _LIMITS_KEYS)
    size = read_key(
        p, mapping, loc, "max_request_bytes", read_positive_int, default.max_request_bytes
    )
    backlog = read_key(
        p, mapping, loc, "max_backlog_events", read_positive_int, default.max_backlog_events
    )
    if size is None or backlog is None:
        return None
    return LimitsSpec(max_request_bytes=size, max_backlog_events=backlog)


# --- events --------------------------------------------------------------------------------


def _check_field(p: Problems, name: str, value: object, loc: str) -> FieldSpec | None:
    mapping = read_mapping(p, value, loc, "a mapping like {type: string}")
    if mapping is None:
        return None
    check_keys(p, mapping, loc, _FIELD_KEYS, required=("type",))
    ftype: FieldType | None = read_key(p, mapping, loc, "type", read_field_type)
    required = read_key(p, mapping, loc, "required", read_bool, False)
    mark = len(p)
    enum = read_enum(p, mapping["enum"], ftype, at(loc, "enum")) if "enum" in mapping else None
    if ftype is None:
        return None
    # A spec with problems is still returned for type checks; a wrong enum is left out of it,
    # so a value the author meant to list is not also reported as missing from it.
    enum = enum if len(p) == mark else None
    return FieldSpec(name=name, type=ftype, required=bool(required), enum=enum)


def _check_event(p: Problems, name: str, value: object, loc: str) -> _Event:
    """An event type; a null body or null ``fields`` declares no fields, like an empty one."""
    mapping = read_mapping(p, {} if value is None else value, loc, "a mapping like {fields: {...}}")
    if mapping is None:
        return _Event(name, None)
    check_keys(p, mapping, loc, _EVENT_KEYS)
    fields_loc = at(loc, "fields")
    raw_fields = mapping.get("fields")
    raw = read_mapping(
        p, {} if raw_fields is None else raw_fields, fields_loc, "a mapping of field names to specs"
    )
    if raw is None:
        return _Event(name, None)
    fields: dict[str, FieldSpec | None] = {}
    for key, spec in raw.items():
        field_loc = at(fields_loc, key)
        field_name = read_name(p, key, field_loc, "field")
        if field_name is not None:
            fields[field_name] = _check_field(p, field_name, spec, field_loc)
    return _Event(name, fields)


def _check_events(p: Problems, value: object) -> dict[str, _Event] | None:
    """The event types by name, or None when the section is unreadable (skip references)."""
    mapping = read_mapping(p, value, "events", "a mapping of event type names to {fields: ...}")
    if mapping is None:
        return None
    if not mapping:
        p.add("events", "no event types defined; add at least one")
        return None
    events: dict[str, _Event] = {}
    for key, spec in mapping.items():
        name = read_name(p, key, at("events", key), "event")
        if name is not None:
            events[name] = _check_event(p, name, spec, at("events", name))
    return events


# --- metrics -------------------------------------------------------------------------------


@dataclass
class _MetricContext:
    """What a metric is checked against: None marks what could not be read."""

    events: dict[str, _Event] | None
    hot_ms: int | None  # pipeline.retention.hot


def _lookup_field(
    p: Problems, event: _Event | None, name: str, loc: str
) -> tuple[bool, FieldSpec | None]:
    """(known, spec): unknown names are reported; spec is None when its type is unknowable."""
    if event is None or event.fields is None:
        return True, None
    if name in event.fields:
        return True, event.fields[name]
    if event.fields:
        choices = valid_names(event.fields)
        p.add(loc, f"event {event.name!r} has no field {name!r}" + hint(name, choices))
    else:
        p.add(loc, f"event {event.name!r} has no fields, so no field {name!r}")
    return False, None


def _metric_event(
    p: Problems, mapping: Mapping[object, object], loc: str, events: dict[str, _Event] | None
) -> tuple[str | None, _Event | None]:
    if "event" not in mapping:
        return None, None
    name = read_string(p, mapping["event"], at(loc, "event"), "an event type name")
    if name is None or events is None:
        return name, None
    if name not in events:
        p.add(at(loc, "event"), f"unknown event type {name!r}" + hint(name, valid_names(events)))
        return name, None
    return name, events[name]


def _numeric_fields(event: _Event | None) -> str:
    if event is None or event.fields is None:
        return ""
    numeric = [n for n, s in event.fields.items() if s is not None and s.type in ("int", "float")]
    numeric = valid_names(numeric)
    if not numeric:
        return f"; event {event.name!r} has no int or float field"
    return f", e.g. {', '.join(numeric)}"


def _metric_field(
    p: Problems,
    mapping: Mapping[object, object],
    loc: str,
    agg: AggName | None,
    event: _Event | None,
) -> str | None:
    if "field" not in mapping:
        if agg in _NUMERIC_AGGS:
            p.add(loc, f"agg {agg!r} needs a 'field', an int or float one{_numeric_fields(event)}")
        elif agg == "distinct":
            p.add(loc, "agg 'distinct' needs a 'field' whose distinct values to count")
        return None
    floc = at(loc, "field")
    name = read_string(p, mapping["field"], floc, "a field name")
    if name is None:
        return None
    _known, spec = _lookup_field(p, event, name, floc)
    if spec is not None and agg in _NUMERIC_AGGS and spec.type not in ("int", "float"):
        p.add(floc, f"agg {agg!r} needs an int or float field; {name!r} is a {spec.type} field")
    return name


def _metric_window(
    p: Problems, mapping: Mapping[object, object], loc: str, hot_ms: int | None
) -> tuple[int | None, int | None]:
    """(window_ms, every_ms); every_ms is None for a tumbling window."""
    window = read_key(p, mapping, loc, "window", read_duration)
    every = read_key(p, mapping, loc, "every", read_duration)
    if window is not None and hot_ms is not None and window > hot_ms:
        p.add(
            at(loc, "window"),
            f"{format_duration_ms(window)} is longer than pipeline.retention.hot "
            f"({format_duration_ms(hot_ms)}), so the hot store cannot hold "
            "one window; raise pipeline.retention.hot or shorten the window",
        )
    if window is None or every is None:
        return window, every
    shown = format_duration_ms(every), format_duration_ms(window)
    if every > window:
        p.add(at(loc, "every"), f"{shown[0]} is longer than the window ({shown[1]})")
    elif window % every:
        p.add(
            at(loc, "every"),
            f"{shown[0]} does not divide the window ({shown[1]}) evenly; "
            f"e.g. every: {format_duration_ms(dividing_step_ms(window, every))}",
        )
    return window, (every if every < window else None)


def _metric_group_by(
    p: Problems, mapping: Mapping[object, object], loc: str, event: _Event | None
) -> tuple[str, ...]:
    if "group_by" not in mapping:
        return ()
    gloc = at(loc, "group_by")
    items = read_list(p, mapping["group_by"], gloc, "a list of field names like [region]")
    names: list[str] = []
    for index, item in enumerate(items or ()):
        iloc = f"{gloc}[{index}]"
        name = read_string(p, item, iloc, "a field name")
        if name is None:
            continue
        if name in names:
            p.add(iloc, f"{name!r} is listed twice")
            continue
        names.append(name)
        _known, spec = _lookup_field(p, event, name, iloc)
        if spec is not None and spec.type not in _GROUPABLE_TYPES:
            p.add(
                iloc,
                f"cannot group by {name!r}, a {spec.type} field: every distinct number would "
                "become its own label set; group by a string, int or bool field",
            )
    return tuple(names)


def _metric_where(
    p: Problems, mapping: Mapping[object, object], loc: str, event: _Event | None
) -> expr.Expr | None:
    if "where" not in mapping:
        return None
    wloc = at(loc, "where")
    text = read_string(p, mapping["where"], wloc, 'an expression such as "amount >= 100"')
    if text is None:
        return None
    try:
        parsed = expr.parse(text)
    except ExprError as exc:
        p.add(wloc, f"{exc.message} (column {exc.column})")
        return None
    specs: dict[str, FieldSpec | None] = {}
    for name in sorted(parsed.names()):
        _known, specs[name] = _lookup_field(p, event, name, wloc)
    # A bare name of a non-bool field gets its own message instead of "compared with true".
    found: list[str | None] = []
    bare: set[str] = set()
    for name in sorted(parsed.bare_names()):
        spec = specs.get(name)
        if spec is not None and spec.type != "bool":
            bare.add(name)
            found.append(bare_name_problem(spec))
    for name, literal in parsed.comparisons():
        spec = specs.get(name)
        if spec is not None and not (name in bare and literal is True):
            found.append(comparison_problem(spec, literal))
    for problem in dict.fromkeys(filter(None, found)):
        p.add(wloc, problem)
    return parsed


def _check_metric(
    p: Problems, value: object, loc: str, ctx: _MetricContext
) -> tuple[MetricSpec | None, str | None]:
    """The metric (None if it has problems) and its name, as far as it could be read."""
    mapping = read_mapping(p, value, loc, "a mapping like {name: ..., event: ..., agg: ...}")
    if mapping is None:
        return None, None
    mark = len(p)
    check_keys(p, mapping, loc, _METRIC_KEYS, required=("name", "event", "agg", "window"))
    name = read_name(p, mapping["name"], at(loc, "name"), "metric") if "name" in mapping else None
    event_name, event = _metric_event(p, mapping, loc, ctx.events)
    agg: AggName | None = read_key(p, mapping, loc, "agg", read_agg)
    field_name = _metric_field(p, mapping, loc, agg, event)
    window, every = _metric_window(p, mapping, loc, ctx.hot_ms)
    group_by = _metric_group_by(p, mapping, loc, event)
    where = _metric_where(p, mapping, loc, event)
    max_label_sets = read_key(
        p, mapping, loc, "max_label_sets", read_positive_int, _DEFAULT_MAX_LABEL_SETS
    )
    if len(p) > mark or name is None or event_name is None or agg is None or window is None:
        return None, name
    if max_label_sets is None:
        return None, name
    spec = MetricSpec(
        name=name,
        event=event_name,
        agg=agg,
        window_ms=window,
        field=field_name,
        every_ms=every,
        group_by=group_by,
        where=where,
        max_label_sets=max_label_sets,
    )
    return spec, name


def _check_metrics(
    p: Problems, value: object, ctx: _MetricContext
) -> tuple[list[MetricSpec], set[str] | None]:
    """The valid metrics, and every metric name seen (None when the section is unreadable)."""
    items = read_list(p, value, "metrics", "a list of metrics")
    if items is None:
        return [], None
    if not items:
        p.add("metrics", "no metrics defined: nothing to compute; add at least one")
    return _check_named_items(
        p,
        items,
        "metrics",
        lambda item, loc: _check_metric(p, item, loc, ctx),
        "name",
        "metric name",
    )


# --- dashboards ----------------------------------------------------------------------------


def _check_dashboards(p: Problems, value: object, metrics: Metrics) -> list[DashboardSpec]:
    if value is None:
        return []
    items = read_list(p, value, "dashboards", "a list of dashboards")
    specs, _ids = _check_named_items(
        p,
        items or [],
        "dashboards",
        lambda item, loc: check_dashboard(p, item, loc, metrics),
        "id",
        "dashboard id",
    )
    return specs


# --- the whole document --------------------------------------------------------------------


def check_config(data: object, source: str) -> Config:
    """Check ``data`` (loaded YAML) and build its :class:`Config`; see ``parse_config``."""
    top = "a mapping with at least 'events' and 'metrics'"
    if data is None:
        raise ConfigError([f"{source}: the document is empty; expected {top}"])
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: expected {top} at the top level, got {describe(data)}"])
    p = Problems(source)
    check_keys(p, data, "", _TOP_KEYS, required=("events", "metrics"))
    storage = _check_storage(p, data.get("storage"))
    pipeline, hot_ms = _check_pipeline(p, data.get("pipeline"))
    limits = _check_limits(p, data.get("limits"))
    events = _check_events(p, data["events"]) if "events" in data else None
    ctx = _MetricContext(events, hot_ms)
    metrics, names = _check_metrics(p, data["metrics"], ctx) if "metrics" in data else ([], None)
    specs = {m.name: m for m in metrics}
    known = None if names is None else {name: specs.get(name) for name in names}
    dashboards = _check_dashboards(p, data.get("dashboards"), known)
    if p.items or storage is None or pipeline is None or events is None or limits is None:
        raise ConfigError(p.items)
    return Config(
        events={
            name: EventSpec(name, tuple(s for s in (event.fields or {}).values() if s is not None))
            for name, event in events.items()
        },
        metrics=tuple(metrics),
        storage=storage,
        pipeline=pipeline,
        dashboards=tuple(dashboards),
        limits=limits,
    )
